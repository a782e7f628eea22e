"""The terms of a joint session: what every node agreed to, checked by the manager (every
node joined with the same terms) and by each node (the manager's Setup matches them).

>>> t = JointTerms(session="a" * 32, nodes=("north", "south"), n_clusters=4,
...                features=("recency", "frequency", "monetary"))
>>> JointTerms.from_json(t.to_json()) == t, t.party_id("south")
(True, 2)
>>> JointTerms.from_json({**t.to_json(), "n_clusters": 0})
Traceback (most recent call last):
...
cipherseg.errors.ValidationError: terms: n_clusters must be an integer in [2, 64]
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from cipherseg.errors import ValidationError
from cipherseg.nodes.wire import SESSION_ID
from cipherseg.transport.tokens import OWNER_NAME

MAX_NODES = 6  # the threshold parameters' 7 parties: the manager and six owners
INITS = ("k-means++", "given")
_CONTEXT_KEYS = 16


def _int(doc: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"terms: {key} must be an integer in [{lo}, {hi}]")
    return value


@dataclass(frozen=True)
class JointTerms:
    """One joint session's terms.

    ``nodes``: the participating nodes' names, in party order (node i is owner party i+1);
    ``context``: further agreed facts the protocol does not use but the nodes do (the
    snapshot date, the time window, the services' URLs), short strings."""

    session: str
    nodes: tuple[str, ...]
    n_clusters: int
    features: tuple[str, ...]
    decimals: int = 2
    max_iter: int = 100
    tol: float = 0.0
    init: str = "k-means++"
    init_centres: tuple[float, ...] = ()
    context: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not SESSION_ID.fullmatch(self.session):
            raise ValidationError("terms: session must be 16-64 letters, digits, '-' or '_'")
        if not 1 <= len(self.nodes) <= MAX_NODES or len(set(self.nodes)) != len(self.nodes) \
                or not all(isinstance(n, str) and OWNER_NAME.fullmatch(n) for n in self.nodes):
            raise ValidationError(f"terms: nodes must be 1-{MAX_NODES} distinct node names")
        if not 2 <= self.n_clusters <= 64:
            raise ValidationError("terms: n_clusters must be an integer in [2, 64]")
        if not 1 <= len(self.features) <= 32 or not all(
                isinstance(f, str) and 0 < len(f) <= 64 for f in self.features):
            raise ValidationError("terms: features must be 1-32 names")
        if not 0 <= self.decimals <= 6 or not 1 <= self.max_iter <= 1000:
            raise ValidationError("terms: need 0 <= decimals <= 6 and 1 <= max_iter <= 1000")
        if not math.isfinite(self.tol) or self.tol < 0:
            raise ValidationError("terms: tol must be finite and >= 0")
        if self.init not in INITS:
            raise ValidationError(f"terms: init must be one of {INITS}")
        expected = self.n_clusters * len(self.features) if self.init == "given" else 0
        if len(self.init_centres) != expected or not all(
                math.isfinite(v) for v in self.init_centres):
            raise ValidationError(f"terms: init {self.init!r} needs {expected} finite "
                                  "init_centres values")
        if len(self.context) > _CONTEXT_KEYS or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in self.context.items()):
            raise ValidationError("terms: context must be at most 16 short string pairs")

    def party_id(self, node: str) -> int:
        """Owner party id (1, 2, …) of ``node``."""
        if node not in self.nodes:
            raise ValidationError(f"node {node!r} is not named in these terms")
        return self.nodes.index(node) + 1

    def to_json(self) -> dict[str, Any]:
        return {"session": self.session, "nodes": list(self.nodes),
                "n_clusters": self.n_clusters, "features": list(self.features),
                "decimals": self.decimals, "max_iter": self.max_iter, "tol": self.tol,
                "init": self.init, "init_centres": list(self.init_centres),
                "context": dict(sorted(self.context.items()))}

    def canonical(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    @classmethod
    def from_json(cls, doc: Any) -> JointTerms:
        if not isinstance(doc, dict):
            raise ValidationError("terms must be a JSON object")
        try:
            nodes, features = doc["nodes"], doc["features"]
            centres = doc.get("init_centres", [])
            context = doc.get("context", {})
            tol = doc.get("tol", 0.0)
            if not (isinstance(nodes, list) and isinstance(features, list)
                    and isinstance(centres, list) and isinstance(context, dict)
                    and isinstance(tol, (int, float)) and not isinstance(tol, bool)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                            for v in centres)):
                raise TypeError
            return cls(session=str(doc["session"]), nodes=tuple(nodes),
                       n_clusters=_int(doc, "n_clusters", 2, 64),
                       features=tuple(features), decimals=_int(doc, "decimals", 0, 6, 2),
                       max_iter=_int(doc, "max_iter", 1, 1000, 100), tol=float(tol),
                       init=str(doc.get("init", "k-means++")),
                       init_centres=tuple(float(v) for v in centres),
                       context={str(k): v for k, v in context.items()})
        except (KeyError, TypeError) as exc:
            raise ValidationError("terms: session, nodes (list), n_clusters and features "
                                  "(list) are required, with the documented types") from exc
