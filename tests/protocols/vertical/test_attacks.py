"""Protocol 4.5 attacked: each test plays a party that deviates or pries, as in the review of
the protocol (docs/security.md, "Protocol 4.5"), and checks the leak is closed or the lie is
refused with nothing released."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Party
from cipherseg.protocols.vertical import messages as vm
from cipherseg.protocols.vertical import psi
from cipherseg.protocols.vertical.runner import run_vertical
from protocols.vertical.vertical_parties import Spy, replace


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


def test_holders_given_different_intersections_are_stopped() -> None:
    """A centre that gives holder 2 another shared order of the same size (one shared tag
    swapped for one of holder 2's own) would join holder 1's customer to another customer of
    holder 2 without anyone noticing; holders report a digest of their intersection to the
    manager, which refuses to go on."""
    X = _clusters(3, 60)
    ids = [list(range(0, 150)), list(range(30, 180))]

    def swap_for_holder_2(out: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
        changed = []
        for dst, m in out:
            if isinstance(m, vm.PsiResult) and dst == "holder-2":
                theirs = next(m for m in spies[vm.CENTRE].received
                              if isinstance(m, vm.PsiTags) and m.holder_id == 2)
                shared = psi.unpack_points(m.tags, "shared")
                extra = next(t for t in psi.unpack_points(theirs.tags, "own")
                             if t not in set(shared))
                m = dataclasses.replace(m, tags=b"".join(sorted([*shared[1:], extra])))
            changed.append((dst, m))
        return changed

    spies, wrap = _spied({vm.CENTRE: swap_for_holder_2})
    with pytest.raises(ProtocolError, match="different intersections"):
        run_vertical([X[ids[0], :2], X[ids[1], 2:]], 3, ids=ids, random_state=0, max_iter=3,
                     wrap=wrap)
    assert _nothing_released(spies)


def test_a_centre_announcing_another_count_to_the_manager_is_stopped() -> None:
    X = _clusters(11, 40)
    spies, wrap = _spied({vm.CENTRE: replace(
        "Aligned", lambda m: dataclasses.replace(m, n_samples=m.n_samples + 1))})
    with pytest.raises(ProtocolError, match="announced 121 shared customers"):
        run_vertical([X[:, :2], X[:, 2:]], 3, random_state=0, max_iter=2, wrap=wrap)
    assert _nothing_released(spies)


# ------------------------------------------------------------------ the manager's decryptions
def _centre(spies: dict[str, Spy]) -> Any:
    return spies[vm.CENTRE].party


def test_an_upload_passed_off_as_comparisons_is_refused_before_decryption() -> None:
    """The centre sends a holder's encrypted column where a blinded comparison belongs: the
    manager refuses it from its level and scale, without decrypting it."""
    X = _clusters(4)

    def forge(m: vm.Comparisons) -> vm.Comparisons:
        centre = _centre(spies)
        column = centre._ctx.ciphertext_to_bytes(centre._x_low[0][0])
        return dataclasses.replace(m, values=(column, *m.values[1:]))

    spies, wrap = _spied({vm.CENTRE: replace("Comparisons", forge)})
    with pytest.raises(ProtocolError, match="level and scale"):
        run_vertical([X[:, :2], X[:, 2:]], 3, init=X[[0, 100, 200]], random_state=1,
                     max_iter=3, wrap=wrap)
    assert spies[vm.MANAGER].party.log.decrypted["comparisons"] == 0
    assert _nothing_released(spies)


def test_a_raw_column_passed_off_as_a_sum_is_refused() -> None:
    """The centre adds a holder's column, brought to the level and scale of a slot sum, to a
    per-cluster sum: slot 0 (S + x_0) passes every range check, and the manager's decryption
    holds the whole column (S + x_i in slot i). A slot sum holds the same value in every slot;
    this does not, so it is refused."""
    X = _clusters(5)

    def forge(m: vm.Sums) -> vm.Sums:
        centre = _centre(spies)
        ctx = centre._ctx
        honest = ctx.ciphertext_from_bytes(m.sums[0])
        # The column at the sums' level and scale (times 1, rescaled), added to the honest sum:
        # slot 0 is S + x_0, within range; slot i holds S + x_i.
        column = ctx.rescale(ctx.multiply_plain(centre._x_low[0][0], 1.0))
        forged = ctx.add(honest, column)
        return dataclasses.replace(m, sums=(ctx.ciphertext_to_bytes(forged), *m.sums[1:]))

    spies, wrap = _spied({vm.CENTRE: replace("Sums", forge)})
    with pytest.raises(ProtocolError, match="not a slot sum"):
        run_vertical([X[:, :2], X[:, 2:]], 3, init=X[[0, 100, 200]], random_state=1,
                     max_iter=1, wrap=wrap)
    assert _nothing_released(spies)


def test_an_unmasked_block_passed_off_as_a_masked_record_is_refused() -> None:
    """k-means++: the centre sends the picked record's whole block unmasked, at the level and
    scale of a masked record. The manager would decrypt 4,096 customers' values in clear; an
    honest masked record holds the picked slot only (the rest zero), so this is refused."""
    X = _clusters(6)

    def forge(m: vm.MaskedRecord) -> vm.MaskedRecord:
        centre = _centre(spies)
        ctx = centre._ctx
        block = centre._x_top[0]
        return dataclasses.replace(m, masked=tuple(
            ctx.ciphertext_to_bytes(ctx.mod_switch_to_next(x)) for x in block))

    spies, wrap = _spied({vm.CENTRE: replace("MaskedRecord", forge)})
    with pytest.raises(ProtocolError, match="picked slot"):
        run_vertical([X[:, :2], X[:, 2:]], 3, random_state=2, max_iter=2, wrap=wrap)
    assert _nothing_released(spies)


# ------------------------------------------------------------------ the centre's checks
def test_the_centre_runs_no_iteration_beyond_max_iter() -> None:
    """Every comparison round is a decryption of fresh hyperplane tests for the manager: the
    centre stops at the public max_iter even if asked for more."""
    X = _clusters(7)

    def more(m: vm.Centroids) -> vm.Centroids:
        return dataclasses.replace(m, stage="lloyd") if m.stage == "final" else m

    spies, wrap = _spied({vm.MANAGER: replace("Centroids", more)})
    with pytest.raises(ProtocolError, match=r"centre: .*max_iter"):
        run_vertical([X[:, :2], X[:, 2:]], 3, init=X[[0, 100, 200]], random_state=1,
                     max_iter=1, wrap=wrap)
    assert _nothing_released(spies)


def test_the_centres_blinding_streams_are_keyed_with_256_bits(monkeypatch: Any) -> None:
    """The blinding factors r are secret from the manager, which sees r·(P − τ) and knows P in
    the padding slots; they come from a keyed stream cipher, not a 63-bit-seeded PCG64."""
    from cipherseg.protocols.vertical import centre_ops

    keys: list[object] = []
    task = centre_ops.comparisons_task

    def spy(args: Any) -> Any:
        keys.append(args[4])
        return task(args)

    monkeypatch.setattr(centre_ops, "comparisons_task", spy)
    X = _clusters(8)
    run_vertical([X[:, :2], X[:, 2:]], 3, init=X[[0, 100, 200]], max_iter=2)
    assert keys and all(isinstance(k, bytes) and len(k) == 32 for k in keys)
    assert len(set(keys)) == len(keys)


# ------------------------------------------------------------------ release
def test_a_result_refused_by_one_holder_is_withdrawn_from_the_others() -> None:
    X = _clusters(9)

    def break_for_holder_2(out: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
        return [(dst, dataclasses.replace(m, labels=m.labels[:-1])
                 if isinstance(m, vm.Result) and dst == "holder-2" else m) for dst, m in out]

    spies, wrap = _spied({vm.MANAGER: break_for_holder_2})
    with pytest.raises(ProtocolError, match="labels"):
        run_vertical([X[:, :2], X[:, 2:]], 3, init=X[[0, 100, 200]], max_iter=2, wrap=wrap)
    assert _nothing_released(spies)


def test_holders_receive_the_public_key_only() -> None:
    """Holders only encrypt: no relinearisation or rotation keys (1.9 MB each before)."""
    from cipherseg.schemes.ckks import CkksPublicContext

    X = _clusters(10, 20)
    spies, wrap = _spied()
    run_vertical([X[:, :2], X[:, 2:]], 3, init=X[[0, 20, 40]], max_iter=1, wrap=wrap)
    setup = next(m for m in spies["holder-1"].received if isinstance(m, vm.Setup))
    ctx = CkksPublicContext.from_bytes(setup.public_context)
    assert ctx.relin_keys is None and ctx.galois_keys is None
    assert len(setup.public_context) < 400_000
