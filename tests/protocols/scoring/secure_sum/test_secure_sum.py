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
    sm.new_message(sm.Aggregate, "s", 4, length=3, ciphertext=b"ct"),
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


def test_owner_refuses_out_of_turn_and_foreign_messages():
    net = Net(2)
    o1, o2 = net.owners
    (_, contribution), = o1.contribute([1.0])
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
    o1.handle("centre", aggregate)  # the (lying) centre's one decryption of round 1 …
    with pytest.raises(ProtocolError, match="already decrypted"):
        o1.handle("centre", aggregate)  # … and no second one
    with pytest.raises(ProtocolError, match="contributed to round 0"):
        o2.handle("centre", aggregate)  # o2 has not contributed to round 1
    fresh = SecureSumOwner(1)
    with pytest.raises(ProtocolError, match="Setup comes first"):
        fresh.contribute([1.0])
    with pytest.raises(ProtocolError, match="does not accept"):
        o1.handle("centre", sm.new_message(sm.Contribution, net.manager.session_id, 1))


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
    (_, c1), = o1.contribute([1.0, 2.0])
    (_, c2), = o2.contribute([1.0])
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
    (_, c1), = o1.contribute([5.0])
    net.run(o1.name, [("centre", c1)])
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
