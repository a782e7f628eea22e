"""Threshold secure sum (protocol 4.3's joint training): the plaintext sum, one key share per
party, typed messages, and what the parties refuse."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipherseg.errors import EncodingError, ParameterError, ProtocolError, ValidationError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady
from cipherseg.protocols.scoring.secure_sum import (
    SecureSumCentre,
    SecureSumManager,
    SecureSumOwner,
    ThresholdSecureSum,
)
from cipherseg.protocols.scoring.secure_sum import messages as sm
from cipherseg.schemes.threshold_keys import KeyShare
from object_graph import reachable

SEED = b"0123456789abcdef0123"
TOL = 1e-6  # the fixed-point step at decimals=6; sums are exact in those units


@pytest.fixture(scope="module")
def agg() -> ThresholdSecureSum:
    return ThresholdSecureSum(3, decimals=6, seed=SEED)


def test_sum_matches_plaintext_sum(agg):
    rng = np.random.default_rng(5)
    for _ in range(3):
        vectors = [rng.normal(scale=1e4, size=40).round(6) for _ in range(3)]
        assert np.allclose(agg(vectors), np.sum(vectors, axis=0), rtol=0, atol=TOL)
    extreme = [np.array([1.25, -3.5, 2.0e12]), np.array([0.000001, 7.0, -1.0e12]),
               np.array([-1.25, 0.0, 5.5])]
    assert np.allclose(agg(extreme), np.sum(extreme, axis=0), rtol=0, atol=TOL)
    report = agg.report()
    assert report["secure_sums"] == agg.calls >= 4
    assert agg.bytes_to_centre > 0 and agg.bytes_partial_decryptions > 0
    # every owner was told the same totals as the manager holds
    for owner in agg.owners:
        assert owner.totals.keys() == agg.manager.totals.keys()


def test_each_party_holds_only_its_own_key_share(agg):
    agg([np.ones(2)] * 3)  # after a sum, whatever the parties kept is in their objects
    assert agg.manager.party_id == 0
    assert [o.party_id for o in agg.owners] == [1, 2, 3]
    for party in (agg.manager, *agg.owners):
        shares = [o for o in reachable(party) if isinstance(o, KeyShare)]
        assert [s.party_id for s in shares] == [party.party_id], party.name
    assert not [o for o in reachable(agg.centre) if isinstance(o, KeyShare)]


def test_refusals_of_the_aggregator(agg):
    vectors = [np.zeros(3)] * 3
    with pytest.raises(ValidationError, match="one vector per owner"):
        agg(vectors[:2])
    with pytest.raises(ValidationError, match="same length"):
        agg([np.zeros(3), np.zeros(3), np.zeros(2)])
    with pytest.raises(EncodingError):
        agg([np.array([np.nan, 0, 0])] * 3)
    with pytest.raises(EncodingError, match="range"):
        agg([np.array([1e20, 0, 0])] * 3)
    with pytest.raises(EncodingError):  # one bad vector: no owner contributes this round
        agg([np.zeros(3), np.array([0, np.inf, 0]), np.zeros(3)])
    assert agg([np.ones(3)] * 3).tolist() == [3.0, 3.0, 3.0]
    with pytest.raises(ParameterError, match="parties"):
        ThresholdSecureSum(7)
    with pytest.raises(ParameterError):
        ThresholdSecureSum(1)
    with pytest.raises(ParameterError):
        SecureSumOwner(0)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(-1e12, 1e12, allow_nan=False), min_size=1, max_size=30),
       decimals=st.integers(0, 6))
def test_codec_round_trip(values, decimals):
    scale = 10**decimals
    expected = np.array([round(v * scale) / scale for v in values])
    assert np.array_equal(sm.decode(sm.encode(values, decimals), len(values), decimals),
                          expected)


@pytest.mark.parametrize("message", [
    sm.new_message(sm.Setup, "s", 0, params=b"p", crs_seed=b"c" * 16, owner_ids=(1, 2),
                   decimals=6),
    sm.new_message(sm.PublicKeyShare, "s", 0, party_id=2, share=b"share"),
    sm.new_message(sm.KeyShares, "s", 0, shares=(b"a", b"b", b"c")),
    sm.new_message(sm.KeyReady, "s", 0, party_id=1, key_fingerprint=b"f"),
    sm.new_message(sm.Ready, "s", 0),
    sm.new_message(sm.Contribution, "s", 4, length=3, ciphertext=b"ct"),
    sm.new_message(sm.ContributionDigest, "s", 4, party_id=3, digest=b"d" * 16),
    sm.new_message(sm.Aggregate, "s", 4, length=3, ciphertext=b"ct"),
    sm.new_message(sm.Aggregate, "s", 4, length=3, ciphertext=b"ct", parts=(b"a", b"b")),
    sm.new_message(sm.Approved, "s", 4, digest=b"d" * 16),
    sm.new_message(sm.Partial, "s", 4, party_id=2, partial=b"h"),
    sm.new_message(sm.Total, "s", 4, values=(1.5, -2.0, 1e12)),
])
def test_message_round_trip(message):
    assert Message.from_bytes(message.to_bytes()) == message


# --- parties under attack: driven message by message --------------------------------------

class Net:
    """Parties of one session, and the messages in flight (as bytes, like a network)."""

    def __init__(self, n: int = 2) -> None:
        self.manager = SecureSumManager(range(1, n + 1), crs_seed=SEED)
        self.centre = SecureSumCentre()
        self.owners = [SecureSumOwner(i) for i in range(1, n + 1)]
        self.parties = {p.name: p for p in (self.manager, self.centre, *self.owners)}
        self.run(self.manager.name, self.manager.start())

    def run(self, src, out, *, until=None):
        """Deliver until nothing is left, or hold back the first message ``until`` matches."""
        queue = [(src, dst, m.to_bytes()) for dst, m in out]
        while queue:
            src, dst, data = queue.pop(0)
            message = Message.from_bytes(data)
            if until is not None and until(src, dst, message):
                return src, dst, message
            queue += [(dst, d, m.to_bytes())
                      for d, m in self.parties[dst].handle(src, message)]
        return None


def test_parties_follow_the_sequence():
    net = Net(2)
    assert net.manager.ready and all(o._ready for o in net.owners)
    for o, v in zip(net.owners, ([1.0, 2.0], [3.0, -4.0]), strict=True):
        net.run(o.name, o.contribute(v))
    assert net.manager.totals[1].tolist() == [4.0, -2.0]
    assert [o.totals[1].tolist() for o in net.owners] == [[4.0, -2.0]] * 2


def _contribution(out):
    """The Contribution among an owner's outgoing messages (the other is its digest)."""
    [(_, contribution)] = [(d, m) for d, m in out if isinstance(m, sm.Contribution)]
    return contribution


def test_owner_refuses_out_of_turn_and_foreign_messages():
    net = Net(2)
    o1, o2 = net.owners
    out = o1.contribute([1.0])
    assert [(d, type(m).__name__) for d, m in out] == [("centre", "Contribution"),
                                                      ("manager", "ContributionDigest")]
    contribution = _contribution(out)
    with pytest.raises(ProtocolError, match="one sum at a time"):
        o1.contribute([1.0])  # its round 1 has no total yet
    aggregate = sm.new_message(sm.Aggregate, net.manager.session_id, 1, length=1,
                               ciphertext=contribution.ciphertext)
    with pytest.raises(ProtocolError, match="comes from the centre"):
        o1.handle("owner-2", aggregate)
    with pytest.raises(ProtocolError, match="round 2"):
        o1.handle("centre", dataclasses.replace(aggregate, round=2))
    with pytest.raises(ProtocolError, match="contributed 1"):
        o1.handle("centre", dataclasses.replace(aggregate, length=2))
    with pytest.raises(ProtocolError, match="another session"):
        o1.handle("centre", dataclasses.replace(aggregate, session_id="other"))
    with pytest.raises(ProtocolError, match="contributed to round 0"):
        o2.handle("centre", aggregate)  # o2 has not contributed to round 1
    with pytest.raises(ProtocolError, match="does not accept"):
        o1.handle("centre", sm.new_message(sm.Contribution, net.manager.session_id, 1))
    fresh = SecureSumOwner(1)
    with pytest.raises(ProtocolError, match="Setup comes first"):
        fresh.contribute([1.0])


def test_owner_decrypts_only_the_aggregate_the_manager_approved():
    """A lying centre passes owner 1's own ciphertext off as the round's sum: without the
    manager's approval of that very ciphertext, owner 1 sends no partial decryption."""
    net = Net(2)
    o1 = net.owners[0]
    contribution = _contribution(o1.contribute([7.0]))
    fake = sm.new_message(sm.Aggregate, net.manager.session_id, 1, length=1,
                          ciphertext=contribution.ciphertext)
    assert o1.handle("centre", fake) == []  # waits for the manager
    with pytest.raises(ProtocolError, match="a second aggregate"):
        o1.handle("centre", fake)
    approval = sm.new_message(sm.Approved, net.manager.session_id, 1, digest=b"\x01" * 16)
    with pytest.raises(ProtocolError, match="comes from the manager"):
        o1.handle("centre", approval)
    with pytest.raises(ProtocolError, match="not the one the manager checked"):
        o1.handle("manager", approval)
    assert o1._decrypted == 0


def test_owner_refuses_to_contribute_before_the_key_is_confirmed():
    manager = SecureSumManager([1, 2], crs_seed=SEED)
    owner = SecureSumOwner(1)
    setup = next(m for dst, m in manager.start() if dst == "owner-1")
    owner.handle("manager", setup)
    with pytest.raises(ProtocolError, match="not confirmed"):
        owner.contribute([1.0])
    with pytest.raises(ProtocolError, match="already in session"):
        owner.handle("manager", setup)
    with pytest.raises(ProtocolError, match="not an owner"):
        SecureSumOwner(3).handle("manager", setup)
    with pytest.raises(ProtocolError, match="comes from the manager"):
        SecureSumOwner(2).handle("centre", setup)


def test_relayed_keys_without_the_own_share_refused():
    net = Net(2)
    other = Net(2)  # another session's shares: same CRS seed, other secrets
    shares = sm.new_message(sm.KeyShares, net.manager.session_id, 0,
                            shares=tuple(other.centre._shares[i] for i in (0, 1, 2)))
    fresh = SecureSumOwner(1)
    fresh.handle("manager", net.manager._setup)
    with pytest.raises(ProtocolError, match="unchanged"):
        fresh.handle("centre", shares)


def test_manager_stops_on_different_joint_keys():
    manager = SecureSumManager([1, 2], crs_seed=SEED)
    net = Net(2)  # another session: its joint key's fingerprint stands in for a forged one
    out = manager.start()
    centre = SecureSumCentre()
    owners = {f"owner-{i}": SecureSumOwner(i) for i in (1, 2)}
    parties = {"manager": manager, "centre": centre, **owners}
    queue = [("manager", d, m) for d, m in out]
    with pytest.raises(ProtocolError, match="different joint keys"):
        while queue:
            src, dst, m = queue.pop(0)
            if isinstance(m, sm.KeyReady) and m.party_id == 2:
                m = dataclasses.replace(m, key_fingerprint=net.manager.public_key.fingerprint)
            queue += [(dst, d, r) for d, r in parties[dst].handle(src, m)]


def test_centre_refuses_wrong_senders_rounds_and_lengths():
    net = Net(3)
    o1, o2, _o3 = net.owners
    c1 = _contribution(o1.contribute([1.0, 2.0]))
    c2 = _contribution(o2.contribute([1.0]))
    with pytest.raises(ProtocolError, match="not a data owner"):
        net.centre.handle("manager", c1)
    with pytest.raises(ProtocolError, match="may not send the key share"):
        net.centre.handle("owner-1", sm.new_message(sm.PublicKeyShare, c1.session_id, 0,
                                                    party_id=2, share=b""))
    with pytest.raises(ProtocolError, match="open round is 1"):
        net.centre.handle("owner-1", dataclasses.replace(c1, round=2))
    net.centre.handle("owner-1", c1)
    with pytest.raises(ProtocolError, match="two contributions"):
        net.centre.handle("owner-1", c1)
    with pytest.raises(ProtocolError, match="same positive number"):
        net.centre.handle("owner-2", c2)
    with pytest.raises(ProtocolError, match="limbs"):
        net.centre.handle("owner-3", dataclasses.replace(c2, length=2))
    with pytest.raises(ProtocolError, match="already open"):
        net.centre.handle("manager", net.manager._setup)


def test_manager_refuses_foreign_and_duplicate_partials():
    from cipherseg.schemes.threshold import Ciphertext

    net = Net(2)
    o1, o2 = net.owners
    out1 = o1.contribute([5.0])
    c1 = _contribution(out1)
    net.run(o1.name, out1)
    held = net.run(o2.name, o2.contribute([6.0]),
                   until=lambda s, d, m: isinstance(m, sm.Partial))
    assert held is not None
    src, _, partial = held
    other = "owner-2" if src == "owner-1" else "owner-1"
    with pytest.raises(ProtocolError, match="may not send"):
        net.manager.handle(other, partial)
    with pytest.raises(ProtocolError, match="round 2"):
        net.manager.handle(src, dataclasses.replace(partial, round=2))
    # A partial decryption of another ciphertext (owner 1's own contribution, which a lying
    # centre would like decrypted) is refused: partials are bound to the aggregate's digest.
    ct = Ciphertext.from_bytes(c1.ciphertext, net.manager.public_key)
    foreign = o1._key.partial_decrypt(ct).to_bytes()
    with pytest.raises(ProtocolError, match="another ciphertext"):
        net.manager.handle("owner-1", sm.new_message(sm.Partial, c1.session_id, 1,
                                                     party_id=1, partial=foreign))
    assert 1 not in net.manager.totals
    net.manager.handle(src, partial)
    with pytest.raises(ProtocolError, match="duplicated"):
        net.manager.handle(src, partial)


def _round_to_manager(n: int = 3):
    """A session whose round 1 is contributed and committed; the centre's (honest) aggregate
    for the manager is held back and returned with the owners' contributions."""
    net = Net(n)
    outs = [o.contribute([float(o.party_id), -1.0]) for o in net.owners]
    contributions = [_contribution(out) for out in outs]
    for o, out in zip(net.owners, outs, strict=True):  # digests to the manager
        net.run(o.name, [(d, m) for d, m in out if d == "manager"])
    for o, c in zip(net.owners[:-1], contributions[:-1], strict=True):
        assert net.centre.handle(o.name, c) == []
    out = net.centre.handle(net.owners[-1].name, contributions[-1])
    [checked] = [m for d, m in out if d == "manager"]
    assert len(checked.parts) == n and all(not m.parts for d, m in out if d != "manager")
    return net, checked, contributions


def test_manager_checks_the_sum_before_anyone_decrypts():
    net, checked, contributions = _round_to_manager(3)
    one = contributions[0].ciphertext
    # one owner's vector passed off as the sum (its part list honest or not) …
    with pytest.raises(ProtocolError, match="not the sum"):
        net.manager.handle("centre", dataclasses.replace(checked, ciphertext=one))
    with pytest.raises(ProtocolError, match="not the one it committed to"):
        net.manager.handle("centre", dataclasses.replace(
            checked, ciphertext=one, parts=(one, one, one)))
    # … a contribution left out, or replaced by an encryption the centre made itself
    with pytest.raises(ProtocolError, match="with 2 contributions"):
        net.manager.handle("centre", dataclasses.replace(checked, parts=checked.parts[:2]))
    from cipherseg.schemes.threshold import encrypt

    zero = encrypt(net.manager.public_key, sm.encode([0.0, 0.0], 6)).to_bytes()
    with pytest.raises(ProtocolError, match="party 2 is not the one"):
        net.manager.handle("centre", dataclasses.replace(
            checked, parts=(checked.parts[0], zero, checked.parts[2])))
    assert net.manager._aggregate is None and not net.manager._partials
    out = net.manager.handle("centre", checked)  # the honest aggregate is approved
    assert {d for d, m in out if isinstance(m, sm.Approved)} == {"owner-1", "owner-2",
                                                                 "owner-3"}


def test_manager_waits_for_every_commitment():
    net = Net(2)
    o1, o2 = net.owners
    out1, out2 = o1.contribute([1.0]), o2.contribute([2.0])
    net.centre.handle("owner-1", _contribution(out1))
    [checked] = [m for d, m in net.centre.handle("owner-2", _contribution(out2))
                 if d == "manager"]
    net.run("owner-1", [(d, m) for d, m in out1 if d == "manager"])
    with pytest.raises(NotReady):
        net.manager.handle("centre", checked)
    with pytest.raises(ProtocolError, match="may not commit"):
        net.manager.handle("owner-1", next(m for d, m in out2 if d == "manager"))
    net.run("owner-2", [(d, m) for d, m in out2 if d == "manager"])
    assert net.manager.handle("centre", checked)  # now approved
