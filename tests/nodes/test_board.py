"""A service's session board: mailboxes acknowledged by the next poll, bounded waiting,
contact deadlines (cipherseg.nodes.board)."""

from __future__ import annotations

import pytest

from cipherseg.errors import ProtocolError
from cipherseg.nodes.board import HostedSession
from cipherseg.nodes.wire import JointAborted
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing

SID = "s" * 32


def msg(round_: int = 1) -> Message:
    return Message(protocol_version=1, session_id=SID, round=round_)


class Echo:
    name = "centre"

    def handle(self, sender: str, message: Message) -> Outgoing:
        return [(sender, message)]


class NeverReady:
    name = "centre"

    def handle(self, sender: str, message: Message) -> Outgoing:
        raise NotReady


def test_a_message_stays_until_the_next_poll_acknowledges_it() -> None:
    s = HostedSession(SID, Echo(), remotes=["owner-1"], labels={"owner-1": "node north"})
    s.deliver("owner-1", msg(1))
    s.deliver("owner-1", msg(2))
    first = s.poll("owner-1", after=0, wait=0)
    assert first is not None and first.seq == 1
    again = s.poll("owner-1", after=0, wait=0)  # the reply was lost: fetched again
    assert again is not None and again.seq == 1
    second = s.poll("owner-1", after=1, wait=0)
    assert second is not None and second.seq == 2
    assert s.poll("owner-1", after=2, wait=0) is None and s.mailboxes["owner-1"].size == 0


def test_messages_waiting_for_predecessors_are_bounded_in_bytes() -> None:
    s = HostedSession(SID, NeverReady(), remotes=["owner-1"], max_mailbox_bytes=1000,
                      labels={"owner-1": "node north"})
    s.deliver("owner-1", msg(), 600)
    with pytest.raises(ProtocolError, match="1,200 bytes"):
        s.deliver("owner-1", msg(), 600)
    assert s.failure is not None and "node north" in s.failure
    with pytest.raises(JointAborted):
        s.poll("owner-1", after=0, wait=0)


def test_a_silent_party_ends_the_session_with_its_name() -> None:
    s = HostedSession(SID, Echo(), remotes=["owner-1", "owner-2"], contact_timeout=10,
                      labels={"owner-1": "node north", "owner-2": "node south"})
    start = s.started
    s.touch("owner-1")
    s.check_contacts(start + 5)
    assert s.failure is None
    s.last_contact["owner-1"] = start + 9
    s.check_contacts(start + 11)
    assert s.failure is not None and s.failure.startswith("node south stopped responding")
    # a session still waiting for its nodes to join is not timed out by contacts
    t = HostedSession(SID, Echo(), remotes=["owner-1"], contact_timeout=1)
    t.pending = True
    t.check_contacts(t.started + 100)
    assert t.failure is None
