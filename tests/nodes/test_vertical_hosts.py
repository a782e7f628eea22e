"""The services' protocol 4.5 side in-process: dispatch by protocol, the PSI relay's checks,
terms validation."""

from __future__ import annotations

import pytest

from cipherseg.errors import ProtocolError, ValidationError
from cipherseg.nodes.centre_service import JointCentreHost
from cipherseg.nodes.hosts import Hosts
from cipherseg.nodes.vertical_centre import RelayingCentre, VerticalCentreHost
from cipherseg.nodes.vertical_terms import VerticalTerms
from cipherseg.protocols.vertical import messages as vm

SID = "s" * 32


def _blinded(origin: int, hop: int) -> vm.PsiBlinded:
    return vm.new_message(vm.PsiBlinded, SID, 1, origin=origin, hop=hop, points=b"")


def test_relay_passes_lists_round_the_ring_and_refuses_the_wrong_sender() -> None:
    relay = RelayingCentre(3)
    assert relay.handle("holder-1", _blinded(1, 1)) == [("holder-2", _blinded(1, 1))]
    assert relay.handle("holder-3", _blinded(1, 3))[0][0] == "holder-1"  # back to its origin
    with pytest.raises(ProtocolError, match="must come from holder-2"):
        relay.handle("holder-3", _blinded(1, 2))
    with pytest.raises(ProtocolError, match="no place in this ring"):
        relay.handle("holder-1", _blinded(1, 4))
    with pytest.raises(ProtocolError, match="no place in this ring"):
        relay.handle("holder-1", _blinded(7, 1))


def test_hosts_dispatch_by_protocol_and_keep_sessions_apart() -> None:
    hosts = Hosts([JointCentreHost(), VerticalCentreHost()])
    assert hosts.open("manager", {"protocol": vm.PROTOCOL, "session": SID,
                                  "nodes": ["mall", "cafe"]})["state"] == "running"
    session = hosts.session(SID)
    assert session is not None and hosts.protocol_of(session) == vm.PROTOCOL
    assert hosts.party_of(session, "cafe") == "holder-2"
    assert hosts.party_of(session, "north") is None
    with pytest.raises(Exception, match="open for another protocol"):
        hosts.open("manager", {"session": SID, "nodes": ["north", "south"]})  # 4.2, same id
    with pytest.raises(ValidationError, match="does not host protocol"):
        hosts.open("manager", {"protocol": "kmeans-other", "session": "t" * 32,
                               "nodes": ["a", "b"]})
    with pytest.raises(ProtocolError, match="two or more holder"):
        hosts.open("manager", {"protocol": vm.PROTOCOL, "session": "u" * 32,
                               "nodes": ["mall"]})
    assert hosts.status()["sessions"] == {"running": 1}


def test_terms_refuse_what_a_node_must_not_accept() -> None:
    good = VerticalTerms(session=SID, nodes=("mall", "cafe"), n_clusters=3,
                         features=(("recency",), ("visits", "spend")))
    doc = good.to_json()
    assert VerticalTerms.from_json(doc).digest() == good.digest()
    for bad, match in (({"features": [["recency"]]}, "features"),
                       ({"nodes": ["mall", "mall"]}, "distinct"),
                       ({"init": "given"}, "init_centres"),
                       ({"protocol": "kmeans-joint"}, "not a kmeans-vertical"),
                       ({"n_clusters": True}, "required"),
                       ({"features": [["r"] * 9, ["v"] * 9]}, "at most 16")):
        with pytest.raises(ValidationError, match=match):
            VerticalTerms.from_json({**doc, **bad})
