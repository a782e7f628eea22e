"""Protocol 4.5 attacked: each test plays a party that deviates or pries, as in the review of
the protocol (docs/security.md, "Protocol 4.5"), and checks the leak is closed or the lie is
refused with nothing released."""

from __future__ import annotations

from typing import Any

import numpy as np

from cipherseg.protocols.messages import Message
from cipherseg.protocols.vertical import messages as vm
from cipherseg.protocols.vertical import psi
from cipherseg.protocols.vertical.runner import Party, run_vertical
from protocols.vertical.vertical_parties import Spy


def _clusters(seed: int, n: int = 80, d: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(c, 0.3, (n, d)) for c in (-1, 0, 1)])


def _spied(tampers: dict[str, Any] | None = None) -> tuple[dict[str, Spy], Any]:
    spies: dict[str, Spy] = {}

    def wrap(name: str, party: Party) -> Party:
        spies[name] = Spy(name, party, (tampers or {}).get(name))
        return spies[name]

    return spies, wrap


def _nothing_released(spies: dict[str, Spy]) -> bool:
    return all(s.party.labels_ is None and s.party.cluster_centers_ is None
               for name, s in spies.items() if name.startswith("holder"))


# ------------------------------------------------------------------ PSI
def test_the_last_holder_of_a_ring_learns_no_pairwise_intersection() -> None:
    """Three holders: holder 3 applies the last scalar to holder 1's list. Had holder 1 sent it
    under its own scalar, holder 3 would hold holder 1's final tags beside its own and learn
    which of its customers holder 1 has, even those holder 2 lacks."""
    ids = [list(range(0, 60)), list(range(20, 80)), [*range(0, 10), *range(30, 70)]]
    # Holder 3 shares customers 0..9 with holder 1 only.
    X = np.random.default_rng(0).normal(size=(200, 3))
    blocks = [X[ids[0], :1], X[ids[1], 1:2], X[ids[2], 2:]]
    scalars: dict[str, bytes] = {}

    def keep_scalar(out: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
        if spies["holder-3"].party._scalar:
            scalars["holder-3"] = spies["holder-3"].party._scalar
        return out

    spies, wrap = _spied({"holder-3": keep_scalar})
    result = run_vertical(blocks, 2, ids=ids, init=np.array([[-1.0] * 3, [1.0] * 3]),
                          max_iter=2, wrap=wrap)
    assert result.n_shared == 30  # customers 30..59
    seen = spies["holder-3"].received
    from_1 = next(m for m in seen if isinstance(m, vm.PsiBlinded) and m.origin == 1)
    own_tags = set(psi.unpack_points(next(
        m for m in spies[vm.CENTRE].received if isinstance(m, vm.PsiTags) and m.holder_id == 3
    ).tags, "tags"))
    # What holder 3 can compute from what it saw: holder 1's list with its own scalar applied.
    finished = set(psi.blind(psi.unpack_points(from_1.points, "list"), scalars["holder-3"]))
    assert len(finished & own_tags) == 0  # before the fix: 40 (customers 0..9 and 30..59)
