"""What a node checks before it accepts an invitation (cipherseg.platform.nodes.jobs)."""

from __future__ import annotations

import types
import uuid
from datetime import date
from pathlib import Path

import pytest

from cipherseg.errors import ValidationError
from cipherseg.nodes.invitation import new_signing_key, sign_invitation
from cipherseg.nodes.terms import JointTerms
from cipherseg.platform.core.config import Settings
from cipherseg.platform.nodes.jobs import FEATURES, review_invitation

MANAGER, CENTRE = "https://manager.example:8788", "https://centre.example:8787"


def ctx(tmp_path: Path, **overrides: object) -> types.SimpleNamespace:
    values: dict[str, object] = dict(
        data_dir=tmp_path, node_name="south", node_manager_url=MANAGER,
        node_manager_token_file=tmp_path / "m.token", node_centre_url=CENTRE,
        node_centre_token_file=tmp_path / "c.token")
    values.update(overrides)
    return types.SimpleNamespace(settings=Settings(**values))  # type: ignore[arg-type]


def invitation(*, nodes: tuple[str, ...] = ("north", "south"), valid: float = 600,
               features: tuple[str, ...] = FEATURES, **context: str) -> str:
    doc = {"snapshot": date.today().isoformat(), "window_days": "365", "manager": MANAGER,
           "centre": CENTRE}
    doc.update(context)
    t = JointTerms(session=uuid.uuid4().hex, nodes=nodes, n_clusters=4, features=features,
                   context=doc)
    return sign_invitation(t, "north", new_signing_key(), valid_seconds=valid)


def test_an_invitation_this_node_can_accept(tmp_path: Path) -> None:
    inv, problems = review_invitation(ctx(tmp_path), invitation())  # type: ignore[arg-type]
    assert problems == [] and inv.inviter == "north" and len(inv.fingerprint) == 19


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"manager": "https://evil.example:8788"}, "this node uses https://manager.example"),
    ({"centre": "http://127.0.0.1:9"}, "its token is only ever sent there"),
    ({"valid": -1}, "expired"),
    ({"nodes": ("north", "east")}, "does not invite this node (south)"),
    ({"features": ("recency", "frequency")}, "feature schedule"),
    ({"window_days": "0"}, "time window"),
])
def test_what_stops_a_node_from_accepting(tmp_path: Path, kwargs: dict, problem: str  # type: ignore[type-arg]
                                          ) -> None:
    _, problems = review_invitation(ctx(tmp_path), invitation(**kwargs))  # type: ignore[arg-type]
    assert any(problem in p for p in problems), problems


def test_a_changed_invitation_is_refused(tmp_path: Path) -> None:
    token = invitation()
    head, _, sig = token.rsplit(".", 2)
    forged = invitation(nodes=("north", "south", "east"))
    mixed = ".".join([head, forged.rsplit(".", 2)[1], sig])  # other terms, old signature
    with pytest.raises(ValidationError, match="signature does not verify"):
        review_invitation(ctx(tmp_path), mixed)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="not a cipherseg invitation"):
        review_invitation(ctx(tmp_path), "hello")  # type: ignore[arg-type]


def test_an_unconfigured_platform_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CIPHERSEG_NODE_CENTRE_URL"):
        review_invitation(ctx(tmp_path, node_centre_url=None), invitation())  # type: ignore[arg-type]
