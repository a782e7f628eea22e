"""Protocol 4.2 against dishonest parties (issue 16, finding 13).

(a) A key party partially decrypts only the sum of exactly every owner's contribution of a
    round it contributed to — each contribution matching the digest its owner reported to the
    manager, of the round's layout and length — and only once per round and purpose. Refused:
    a crafted ciphertext with c1 = 2^100 (its partial decryption would be 2^100·s_i plus
    noise below 2^94: the secret share in clear), one owner's own ciphertext relayed as "the
    aggregate", a replay, a round the owner did not contribute to, a contribution of another
    length.
(b) Public key shares are committed (SHA-256 of session, party id, share) before any is
    revealed, and every party checks every share against its commitment: a rogue share
    p' − Σ others, chosen after seeing the others', is refused by the centre and, if a
    colluding centre relays it, by every owner.
(c) Digests a dishonest manager relays do not match the contributions an honest centre
    relays: the owners refuse to decrypt, the session stops.

Each test also shows that the attack is real: what the refused step would have revealed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cipherseg.protocols.joint.messages as jm
from cipherseg.errors import ProtocolError
from cipherseg.protocols.delivery import deliver
from cipherseg.protocols.joint.centre import JointCentre
from cipherseg.protocols.joint.manager import JointManager
from cipherseg.protocols.joint.owner import JointOwner
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Outgoing
from cipherseg.schemes.threshold import (
    Ciphertext,
    PublicShare,
    ThresholdAggregation,
    combine,
    encrypt,
    joint_public_key,
)
from cipherseg.schemes.threshold_keys import KeyShare


def _parts(n_owners: int = 2, per_owner: int = 60) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    half = (per_owner // 2, 3)
    return [np.vstack([rng.normal(0, 1, half), rng.normal(6, 1, half)]) for _ in range(n_owners)]


class WithholdingCentre(JointCentre):
    """An honest centre that keeps the first Lloyd aggregate instead of relaying it, so that
    a test can hand the owners the genuine aggregate or forgeries of it."""

    def __init__(self) -> None:
        super().__init__()
        self.withheld: jm.Aggregate | None = None

    def handle(self, sender: str, message: Message) -> Outgoing:
        out = super().handle(sender, message)
        for _, m in out:
            if isinstance(m, jm.Aggregate) and m.purpose == "stats" and self.withheld is None:
                self.withheld = m
        return [(dst, m) for dst, m in out if m is not self.withheld]


def _stalled_session() -> tuple[JointManager, list[JointOwner], WithholdingCentre,
                                ThresholdAggregation]:
    """Two owners, given init: the session up to the first Lloyd aggregate, withheld."""
    parts = _parts()
    init = np.vstack(parts)[[0, 59]]
    manager = JointManager([1, 2], 3, 2, init="given", init_centres=init, decimals=2,
                           random_state=1)
    owners = [JointOwner(i + 1, X, random_state=i) for i, X in enumerate(parts)]
    centre = WithholdingCentre()
    parties = {manager.name: manager, centre.name: centre, **{o.name: o for o in owners}}
    deliver(parties, [(manager.name, dst, m) for dst, m in manager.start()])
    assert centre.withheld is not None and not manager.done
    assert centre.session is not None
    scheme = centre.session.scheme
    assert isinstance(scheme, ThresholdAggregation)
    return manager, owners, centre, scheme


def _crafted_c1(scheme: ThresholdAggregation, like: Ciphertext) -> Ciphertext:
    """``like`` with c1 replaced by the constant polynomial 2^100 (a whole ring element)."""
    ring = scheme.params.ring
    constant = np.zeros(scheme.params.poly_degree, dtype=object)
    constant[0] = 2**100
    c1 = ring.from_int(constant)[None]
    return dataclasses.replace(like, c1=c1, _cache={})


def test_a_crafted_c1_would_reveal_the_secret_share_and_is_refused() -> None:
    _, owners, centre, scheme = _stalled_session()
    genuine = centre.withheld
    assert genuine is not None
    own = scheme.load(genuine.contributions[0])
    crafted = _crafted_c1(scheme, own)
    # The attack is real: owner 1's partial decryption of it is 2^100·s_1 + noise < 2^94.
    key = owners[0]._key
    assert isinstance(key, KeyShare)
    h = scheme.params.ring.to_int(key.partial_decrypt(crafted).h)
    recovered = [round(int(v) / 2**100) for v in h.ravel()]
    assert recovered == key._s[:crafted.length].tolist()
    # The protocol refuses it, as the aggregate's only "contribution" or in owner 1's place.
    for contributions in ((crafted.to_bytes(),), (crafted.to_bytes(), genuine.contributions[1])):
        forged = dataclasses.replace(genuine, contributions=contributions)
        with pytest.raises(ProtocolError, match=r"contributions for 2 owners|does not match"):
            owners[0].handle(jm.CENTRE, forged)
        with pytest.raises(ProtocolError, match=r"contributions for 2 owners|does not match"):
            owners[1].handle(jm.CENTRE, forged)


def test_relaying_one_owners_own_ciphertext_as_the_aggregate_is_refused() -> None:
    manager, owners, centre, scheme = _stalled_session()
    genuine = centre.withheld
    assert genuine is not None
    mine = genuine.contributions[0]
    # The attack is real: decrypting owner 1's ciphertext alone gives its own sums and counts.
    alone = scheme.load(mine)
    partials = [o._key.partial_decrypt(alone) for o in owners]  # type: ignore[union-attr]
    assert manager._key is not None
    partials.append(manager._key.partial_decrypt(alone))
    values = scheme.fuse(alone, partials)
    assert values[-2:].sum() == owners[0].n_samples  # owner 1's own counts
    for contributions in ((mine,), (mine, mine), (genuine.contributions[1], mine)):
        forged = dataclasses.replace(genuine, contributions=contributions)
        for owner in owners:
            with pytest.raises(ProtocolError, match=r"contributions for 2 owners|does not match"):
                owner.handle(jm.CENTRE, forged)
    # The genuine aggregate is decrypted once; a replay, and a round it did not contribute
    # to, are refused.
    out = owners[0].handle(jm.CENTRE, genuine)
    assert [type(m) for _, m in out] == [jm.Partial]
    with pytest.raises(ProtocolError, match="one aggregate per round and purpose"):
        owners[0].handle(jm.CENTRE, genuine)
    with pytest.raises(ProtocolError, match="one aggregate per round and purpose"):
        owners[1].handle(jm.CENTRE, dataclasses.replace(genuine, round=genuine.round + 7))
    with pytest.raises(ProtocolError, match="one aggregate per round and purpose"):
        owners[1].handle(jm.CENTRE, dataclasses.replace(genuine, purpose="d2"))
    # Only the centre sends aggregates (the manager cannot).
    with pytest.raises(ProtocolError, match="centre only"):
        owners[1].handle(jm.MANAGER, genuine)


def test_a_contribution_of_another_length_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dishonest owner 2 appends values to its contribution (and reports its digest); the
    centre refuses it, and if the centre lets it through, owner 1 and the manager do."""

    class LongOwner(JointOwner):
        def _contribute(self, m: Message, purpose: str, vector: np.ndarray) -> Outgoing:
            return super()._contribute(m, purpose, np.concatenate([vector, [1, 2, 3]]))

    parts = _parts()
    init = np.vstack(parts)[[0, 59]]

    def run(centre: JointCentre) -> None:
        manager = JointManager([1, 2], 3, 2, init="given", init_centres=init, decimals=2)
        owners = [JointOwner(1, parts[0]), LongOwner(2, parts[1])]
        parties = {manager.name: manager, centre.name: centre, **{o.name: o for o in owners}}
        deliver(parties, [(manager.name, dst, m) for dst, m in manager.start()])

    with pytest.raises(ProtocolError, match="owner-2's 'stats' contribution holds 11 values"):
        run(JointCentre())
    import cipherseg.protocols.joint.centre as centre_module

    class AnyLength(int):
        """What a centre that lets any length through compares lengths with."""

        def __ne__(self, other: object) -> bool:
            return False

    monkeypatch.setattr(centre_module, "expected_length", lambda session, purpose: AnyLength())
    with pytest.raises(ProtocolError, match="owner 2's 'stats' contribution holds 11 values, "
                                            "expected 8; refusing to decrypt"):
        run(JointCentre())


# ---------------------------------------------------------------- (b) rogue key shares
def _rogue(scheme: ThresholdAggregation, attacker: KeyShare,
           others: list[bytes]) -> bytes:
    """p' − Σ others: the joint key becomes the attacker's own p', whose secret it holds."""
    ring = scheme.params.ring
    p_hat = attacker.public_share.p_hat
    for blob in others:
        p_hat = ring.sub(p_hat, PublicShare.from_bytes(blob, scheme.crs).p_hat)
    return PublicShare(scheme.crs, jm.MANAGER_ID, p_hat).to_bytes()


def test_a_rogue_key_share_chosen_after_the_others_is_refused() -> None:
    parts = _parts()
    manager = JointManager([1, 2], 3, 2, decimals=2, random_state=1)
    owners = [JointOwner(i + 1, X) for i, X in enumerate(parts)]
    centre = JointCentre()
    first = manager.start()
    setup = first[0][1]
    commitment = next(m for _, m in first if isinstance(m, jm.KeyCommitment))
    assert centre.handle(jm.MANAGER, setup) == []
    assert centre.handle(jm.MANAGER, commitment) == []
    relayed: list[tuple[str, Message]] = []
    for owner in owners:
        (_, c), = owner.handle(jm.MANAGER, setup)
        relayed += centre.handle(owner.name, c)
    commitments = relayed[0][1]
    assert isinstance(commitments, jm.KeyCommitments)
    shares = []
    for owner in owners:
        (_, share), = owner.handle(jm.CENTRE, commitments)
        assert isinstance(share, jm.PublicKeyShare)
        shares.append(share)
        centre.handle(owner.name, share)
    # The manager, having seen the owners' shares (e.g. shown them early by a colluding
    # centre), publishes p' − Σ others for a p' it holds the secret of.
    assert centre.session is not None
    scheme = centre.session.scheme
    assert isinstance(scheme, ThresholdAggregation)
    attacker = KeyShare.for_scheme(scheme, jm.MANAGER_ID)
    rogue = _rogue(scheme, attacker, [s.share for s in shares])
    # The attack is real: with the rogue share the joint key is p', and the attacker alone
    # decrypts an owner's ciphertext (this passed the expected-party-ids check before).
    pk = joint_public_key(scheme.params, scheme.crs,
                          [PublicShare.from_bytes(b, scheme.crs)
                           for b in (rogue, *(s.share for s in shares))],
                          expected_party_ids=(0, 1, 2))
    secret_ct = encrypt(pk, np.array([4242, -7]))
    values, _ = combine(secret_ct, [attacker.partial_decrypt(secret_ct).h])
    assert values.tolist() == [4242, -7]
    # Refused: the honest centre checks the share against the commitment made before any
    # share was revealed …
    share_msg = jm.PublicKeyShare(protocol_version=jm.VERSION, session_id=manager.session_id,
                                  round=0, party_id=jm.MANAGER_ID, share=rogue)
    with pytest.raises(ProtocolError, match="does not open its commitment"):
        centre.handle(jm.MANAGER, share_msg)
    # … and if a colluding centre relays it anyway, every owner refuses the joint key.
    keyshares = jm.KeyShares(protocol_version=jm.VERSION, session_id=manager.session_id,
                             round=0, shares=(rogue, *(s.share for s in shares)))
    for owner in owners:
        with pytest.raises(ProtocolError, match="party 0's key share does not open"):
            owner.handle(jm.CENTRE, keyshares)
    # A party does not reveal its share before every party's commitment, its own unchanged.
    fresh = JointOwner(1, parts[0])
    fresh.handle(jm.MANAGER, setup)
    with pytest.raises(ProtocolError, match="refusing to reveal its share"):
        fresh.handle(jm.CENTRE, dataclasses.replace(
            commitments, commitments=commitments.commitments[:2]))
    with pytest.raises(ProtocolError, match="key shares before the key commitments"):
        fresh.handle(jm.CENTRE, keyshares)
    # Nor does a second Setup start it over (a new key share, commitments, rounds).
    with pytest.raises(ProtocolError, match="already in session"):
        fresh.handle(jm.MANAGER, dataclasses.replace(setup, session_id="again"))


def test_digests_a_dishonest_manager_relays_stop_the_session() -> None:
    """An honest centre relays the genuine contributions: digests the manager alters make the
    owners refuse to decrypt (the session stops; nothing is decrypted)."""

    class LyingManager(JointManager):
        def __init__(self, *args: object, target: int, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.target = target

        def _on_digest(self, sender: str, m: jm.ContributionDigest) -> Outgoing:
            out = super()._on_digest(sender, m)
            forged = []
            for dst, relay in out:
                assert isinstance(relay, jm.ContributionDigests)
                digests = list(relay.digests)
                digests[self.target] = bytes(16)
                forged.append((dst, dataclasses.replace(relay, digests=tuple(digests))))
            return forged

    parts = _parts()
    for target, refusal in ((1, "relayed as owner 2's does not match"),
                            (0, "do not contain its own unchanged")):
        manager = LyingManager([1, 2], 3, 2, decimals=2, random_state=1, target=target)
        owners = [JointOwner(i + 1, X) for i, X in enumerate(parts)]
        parties = {manager.name: manager, "centre": JointCentre(), **{o.name: o for o in owners}}
        with pytest.raises(ProtocolError, match=refusal):
            deliver(parties, [(manager.name, dst, m) for dst, m in manager.start()])
        assert not manager.log.d2_totals  # nothing was decrypted
