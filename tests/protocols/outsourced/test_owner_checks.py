"""The owner refuses decrypted replies that no centre following protocol 4.1 could produce.

A centre that alters one reply (with the public context it holds, as a faulty or crude
active centre could) makes the owner's run fail with a ProtocolError that names the reply;
honest runs, with CKKS noise, always pass the same checks (the rest of the suite).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherseg.errors import ParameterError, ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.outsourced import messages as p
from cipherseg.protocols.outsourced.centre import ComputeCentre
from cipherseg.protocols.outsourced.owner import DataOwner, KMeansRun
from cipherseg.protocols.outsourced.owner_checks import (
    check_counts,
    check_initial_centres,
    check_scores,
    check_sums,
    score_bound,
)
from cipherseg.protocols.party import Outgoing, PartyLink

Tamper = Callable[[Any, Message], Message]


class TamperingCentre(ComputeCentre):
    """Follows protocol 4.1 except that it passes replies of one type through ``tamper``."""

    def __init__(self, reply_type: type[Message], tamper: Tamper) -> None:
        super().__init__(random_state=0)
        self.reply_type, self.tamper = reply_type, tamper
        self.tampered = 0

    def handle(self, sender: str, message: Message) -> Outgoing:
        ((to, reply),) = super().handle(sender, message)
        if isinstance(reply, self.reply_type):
            self.tampered += 1
            return [(to, self.tamper(self._sessions[sender, reply.session_id].ctx, reply))]
        return [(to, reply)]


def _shift_first_slot(ctx: Any, blob: bytes, by: float) -> bytes:
    ct = ctx.ciphertext_from_bytes(blob)
    values = np.zeros(ctx.params.slot_count)
    values[0] = by
    return bytes(ctx.ciphertext_to_bytes(ctx.add_plain(ct, values)))


def _shift_every(field: str, by: float) -> Tamper:
    """A tamper that adds ``by`` to the first slot of every ciphertext in ``field``."""
    def tamper(ctx: Any, reply: Any) -> Any:
        shifted = tuple(_shift_first_slot(ctx, b, by) for b in getattr(reply, field))
        return dataclasses.replace(reply, **{field: shifted})

    return tamper


def _run(centre: ComputeCentre, init: np.ndarray | None = None) -> KMeansRun:
    X = np.vstack([np.random.default_rng(0).normal(c, 0.1, (150, 2)) for c in (-0.5, 0.5)])
    return DataOwner(random_state=0).run_kmeans(X, 2, PartyLink(centre, sender="owner"),
                                                max_iter=3, tol=0.0, init=init)


INIT = np.array([[-0.4, -0.4], [0.4, 0.4]])


def test_an_honest_centre_passes() -> None:
    centre = TamperingCentre(p.Sums, lambda ctx, reply: reply)
    run = _run(centre, INIT)
    assert centre.tampered == run.n_iter >= 1


def test_a_count_off_by_one_is_refused() -> None:
    def tamper(ctx: Any, reply: p.Sums) -> p.Sums:
        return dataclasses.replace(reply, counts=(_shift_first_slot(ctx, reply.counts[0], 1.0),))

    with pytest.raises(ProtocolError, match=r"counts for clusters 1\.\.1 are \[1\d\d\.0\], but "
                                            r"the owner assigned \[1\d\d\]"):
        _run(TamperingCentre(p.Sums, tamper), INIT)


def test_sums_out_of_the_data_range_are_refused() -> None:
    def tamper(ctx: Any, reply: p.Sums) -> p.Sums:
        return dataclasses.replace(reply, sums=(_shift_first_slot(ctx, reply.sums[0], 1e3),
                                                *reply.sums[1:]))

    with pytest.raises(ProtocolError, match=r"sum of feature 0 over cluster [01] is .* than its"):
        _run(TamperingCentre(p.Sums, tamper), INIT)


def test_scores_beyond_any_distance_are_refused() -> None:
    with pytest.raises(ProtocolError, match=r"scores reach 5\d.*largest difference"):
        _run(TamperingCentre(p.Scores, _shift_every("scores", 50.0)), INIT)


def test_initial_centres_that_are_no_records_are_refused() -> None:
    with pytest.raises(ProtocolError, match=r"initial centres lie outside \[-1, 1\]"):
        _run(TamperingCentre(p.InitDone, _shift_every("centres", 5.0)))


def test_a_masked_record_beyond_the_mask_is_refused() -> None:
    def tamper(ctx: Any, reply: p.MaskedRecord) -> p.MaskedRecord:
        values = np.full(ctx.params.slot_count, 2.0**26)
        masked = tuple(bytes(ctx.ciphertext_to_bytes(ctx.add_plain(ctx.ciphertext_from_bytes(b),
                                                                   values)))
                       for b in reply.masked)
        return dataclasses.replace(reply, masked=masked)

    with pytest.raises(ProtocolError, match=r"masked record values exceed"):
        _run(TamperingCentre(p.MaskedRecord, tamper))


def test_features_must_be_normalised() -> None:
    centre = ComputeCentre(random_state=0)
    with pytest.raises(ParameterError, match=r"\|x\| <= 1 \(max \|x\| here: 1\.5\)"):
        DataOwner().run_kmeans(np.array([[1.5, 0.0], [0.0, 0.2]]), 2,
                               PartyLink(centre, sender="owner"), max_iter=1, tol=0.0)


# --- the checks alone: CKKS-sized noise passes, anything a centre could get wrong does not ---
@given(labels=st.lists(st.integers(0, 3), min_size=1, max_size=200),
       noise=st.lists(st.floats(-1e-3, 1e-3), min_size=3, max_size=3))
def test_counts_with_noise_give_the_exact_counts(labels: list[int], noise: list[float]) -> None:
    lab = np.array(labels)
    exact = np.bincount(lab, minlength=4)[1:]
    np.testing.assert_array_equal(check_counts(exact + np.array(noise), lab, 4), exact)
    wrong = exact.astype(float)
    wrong[np.argmax(exact)] += 1.0
    with pytest.raises(ProtocolError):
        check_counts(wrong, lab, 4)


@given(st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_scores_of_any_records_and_centres_are_within_the_bound(d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (50, d))
    c = rng.uniform(-2, 2, (3, d))
    c[0] = 0.0
    # The worst honest case: a record opposite the farthest centre, the other centre on it.
    far = int(np.argmax(np.linalg.norm(c, axis=1)))
    x[0] = -c[far] / np.linalg.norm(c[far]) * np.linalg.norm(x, axis=1).max()
    sq = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    scores = (sq[:, 1:] - sq[:, :1]).T
    bound = score_bound(float(np.linalg.norm(x, axis=1).max()),
                        float(np.linalg.norm(c, axis=1).max()))
    check_scores(scores, bound)
    # The bound is tight where a centre sits at the origin: just beyond it is refused.
    worst = float(np.abs(scores).max())
    check_scores(np.array([[bound]]), bound)
    with pytest.raises(ProtocolError):
        check_scores(np.array([[bound * (1 + 1e-9) + 1e-9]]), bound)
    assert worst <= bound


@given(st.integers(0, 2**32 - 1))
def test_sums_of_records_pass_and_sums_beyond_them_do_not(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 100, 3)
    sums = np.array([rng.choice([-1.0, 1.0], (n, 2)).sum(axis=0) for n in counts])
    check_sums(sums, counts)
    j = int(rng.integers(3))
    sums[j, 0] = rng.choice([-1.0, 1.0]) * (counts[j] + 0.01)
    with pytest.raises(ProtocolError):
        check_sums(sums, counts)


def test_centres_on_the_data_edge_pass() -> None:
    check_initial_centres(np.array([[1.0, -1.0], [0.0, 1.0000001]]))
    for beyond in (np.nan, 1.01, -1.01, np.inf):
        with pytest.raises(ProtocolError):
            check_initial_centres(np.array([[beyond, 0.0]]))


def test_kmeans_plus_plus_scores_are_checked_and_a_refused_run_closes_its_session() -> None:
    centre = TamperingCentre(p.Scores, _shift_every("scores", 50.0))
    with pytest.raises(ProtocolError, match="scores reach"):  # during k-means++ (no init)
        _run(centre)
    lloyd = TamperingCentre(p.Sums, lambda ctx, r: dataclasses.replace(
        r, counts=(_shift_first_slot(ctx, r.counts[0], 1.0),)))
    with pytest.raises(ProtocolError, match="counts"):
        _run(lloyd, INIT)
    assert lloyd.contexts() == []  # closed after the refusal, not left to expire
