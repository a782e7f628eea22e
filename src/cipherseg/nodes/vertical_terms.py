"""The terms of a vertical session (protocol 4.5 across nodes): which nodes hold which
columns, k, the initialisation and the iteration budget. Every node joins the manager service
with the same terms (their SHA-256 is compared) and checks the manager's Setup against them.

>>> t = VerticalTerms(session="v" * 32, nodes=("mall", "cafe"), n_clusters=3,
...                   features=(("recency", "frequency"), ("visits",)))
>>> VerticalTerms.from_json(t.to_json()) == t, t.party_id("cafe"), t.holder_features
(True, 2, (2, 1))
>>> VerticalTerms.from_json({**t.to_json(), "nodes": ["mall"], "features": [["a"]]})
Traceback (most recent call last):
...
cipherseg.errors.ValidationError: terms: a vertical session needs 2-6 distinct node names
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from cipherseg.errors import ValidationError
from cipherseg.nodes.terms import MAX_NODES
from cipherseg.nodes.wire import SESSION_ID
from cipherseg.transport.tokens import OWNER_NAME

PROTOCOL = "kmeans-vertical"
INITS = ("k-means++", "given")
MAX_JOINED_FEATURES = 16  # the manager's bound: the blinding range must keep >= 4 bits


@dataclass(frozen=True)
class VerticalTerms:
    """One vertical session's terms.

    ``nodes``: the holders' node names in holder order (node i is ``holder-(i+1)``);
    ``features[i]``: the names of node i's columns (each node knows only its own values);
    ``init_centres``: for ``init="given"``, k rows of every joined column, row-major, in
    input units (public values both sides agreed, never derived from one side's data);
    ``context``: further agreed facts (the snapshot date, the window, the services' URLs)."""

    session: str
    nodes: tuple[str, ...]
    n_clusters: int
    features: tuple[tuple[str, ...], ...]
    max_iter: int = 100
    tol: float = 0.0
    init: str = "k-means++"
    init_centres: tuple[float, ...] = ()
    context: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not SESSION_ID.fullmatch(self.session):
            raise ValidationError("terms: session must be 16-64 letters, digits, '-' or '_'")
        if not 2 <= len(self.nodes) <= MAX_NODES or len(set(self.nodes)) != len(self.nodes) \
                or not all(isinstance(n, str) and OWNER_NAME.fullmatch(n) for n in self.nodes):
            raise ValidationError(f"terms: a vertical session needs 2-{MAX_NODES} distinct "
                                  "node names")
        if len(self.features) != len(self.nodes) or not all(
                len(cols) >= 1 for cols in self.features) or not all(
                isinstance(f, str) and 0 < len(f) <= 64 for cols in self.features for f in cols):
            raise ValidationError("terms: features must list each node's column names (one "
                                  "or more per node)")
        if self.n_features > MAX_JOINED_FEATURES:
            raise ValidationError(f"terms: at most {MAX_JOINED_FEATURES} joined columns")
        if not 2 <= self.n_clusters <= 64:
            raise ValidationError("terms: n_clusters must be an integer in [2, 64]")
        if not 1 <= self.max_iter <= 1000:
            raise ValidationError("terms: max_iter must be in [1, 1000]")
        if not math.isfinite(self.tol) or self.tol < 0:
            raise ValidationError("terms: tol must be finite and >= 0")
        if self.init not in INITS:
            raise ValidationError(f"terms: init must be one of {INITS}")
        expected = self.n_clusters * self.n_features if self.init == "given" else 0
        if len(self.init_centres) != expected or not all(
                math.isfinite(v) for v in self.init_centres):
            raise ValidationError(f"terms: init {self.init!r} needs {expected} finite "
                                  "init_centres values")
        if len(self.context) > 16 or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in self.context.items()):
            raise ValidationError("terms: context must be at most 16 short string pairs")

    @property
    def holder_features(self) -> tuple[int, ...]:
        return tuple(len(cols) for cols in self.features)

    @property
    def n_features(self) -> int:
        return sum(self.holder_features)

    def party_id(self, node: str) -> int:
        """Holder id (1, 2, …) of ``node``."""
        if node not in self.nodes:
            raise ValidationError(f"node {node!r} is not named in these terms")
        return self.nodes.index(node) + 1

    def to_json(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL, "session": self.session, "nodes": list(self.nodes),
                "n_clusters": self.n_clusters,
                "features": [list(cols) for cols in self.features],
                "max_iter": self.max_iter, "tol": self.tol, "init": self.init,
                "init_centres": list(self.init_centres),
                "context": dict(sorted(self.context.items()))}

    def canonical(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    @classmethod
    def from_json(cls, doc: Any) -> VerticalTerms:
        if not isinstance(doc, dict):
            raise ValidationError("terms must be a JSON object")
        if doc.get("protocol", PROTOCOL) != PROTOCOL:
            raise ValidationError(f"terms: not a {PROTOCOL} session")
        try:
            nodes, features = doc["nodes"], doc["features"]
            centres, context = doc.get("init_centres", []), doc.get("context", {})
            tol, k, max_iter = doc.get("tol", 0.0), doc["n_clusters"], doc.get("max_iter", 100)
            if not (isinstance(nodes, list) and isinstance(features, list)
                    and all(isinstance(c, list) for c in features)
                    and isinstance(centres, list) and isinstance(context, dict)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                            for v in [tol, *centres])
                    and all(isinstance(v, int) and not isinstance(v, bool)
                            for v in (k, max_iter))):
                raise TypeError
            return cls(session=str(doc["session"]), nodes=tuple(nodes), n_clusters=k,
                       features=tuple(tuple(c) for c in features), max_iter=max_iter,
                       tol=float(tol), init=str(doc.get("init", "k-means++")),
                       init_centres=tuple(float(v) for v in centres),
                       context={str(key): v for key, v in context.items()})
        except (KeyError, TypeError) as exc:
            raise ValidationError("terms: session, nodes (list), n_clusters and features "
                                  "(a list of column-name lists) are required, with the "
                                  "documented types") from exc
