"""The generic process-pipe transport: any party in a child process behaves as in process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cipherseg.errors import ProtocolError
from cipherseg.protocols.party import NotReady, Party
from cipherseg.transport.pipes import PartyProcess, PartyProcessError
from transport.pipe_parties import Note


def note(text: str = "", blob: bytes = b"") -> Note:
    return Note(protocol_version=1, session_id="s", round=1, text=text, blob=blob)


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> Iterator[PartyProcess]:
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CIPHERSEG_SECRET_SETTING", "must not reach the child")
    with PartyProcess.of("pipe_parties:Relay", {"name": "relay", "to": "sink"}, name="relay",
                         label="relay party") as process:
        yield process


def test_a_child_party_is_a_party_of_this_process(relay: PartyProcess) -> None:
    assert isinstance(relay, Party)
    assert relay.status["pid"] != os.getpid()
    big = os.urandom(3 * 1024 * 1024)
    out = relay.handle("owner", note("hi", big))
    assert [(dst, m.text, m.blob == big) for dst, m in out] == [("sink", "hi", True),
                                                                ("owner", "hi", True)]


def test_not_ready_and_refusals_cross_the_pipe(relay: PartyProcess) -> None:
    with pytest.raises(NotReady, match="waiting for early"):
        relay.handle("late", note())
    relay.handle("early", note())
    assert relay.hello()["seen_early"] is True
    assert [dst for dst, _ in relay.handle("late", note())] == ["sink", "late"]
    with pytest.raises(ProtocolError, match=r"^relay party: refused as asked$"):
        relay.handle("owner", note("refuse"))
    with pytest.raises(PartyProcessError, match="RuntimeError: internal detail"):
        relay.handle("owner", note("crash"))
    assert relay.alive()  # a refusal or a failure of one message leaves the party running


def test_a_request_response_link_wants_exactly_one_reply(relay: PartyProcess) -> None:
    with pytest.raises(ProtocolError, match="2 replies to one request from 'owner'"):
        relay.link("owner").request(note(), expect=Note)


def test_the_child_has_no_cipherseg_settings_and_a_dead_child_is_reported(
        relay: PartyProcess) -> None:
    import signal

    pid = relay.status["pid"]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(PartyProcessError, match="stopped unexpectedly"):
        relay.handle("owner", note())
    assert not relay.alive()
    relay.restart()
    assert relay.alive() and relay.hello()["pid"] != pid


def test_the_factory_arguments_reach_the_child_over_stdin_not_its_command_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A party's arguments may hold a database URL: any local user can read a command line.
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    secret = "postgresql://owner:s3cret-password@db/cipherseg"
    with PartyProcess.of("pipe_parties:Relay", {"name": "relay-9f3a", "to": secret},
                         name="relay", label="relay party") as process:
        out = process.handle("owner", note("hi"))
        assert [dst for dst, _ in out] == [secret, "owner"]  # the party was built with them
        cmdline = Path(f"/proc/{process.status['pid']}/cmdline").read_bytes()
        assert b"pipe_parties:Relay" in cmdline
        assert secret.encode() not in cmdline and b"relay-9f3a" not in cmdline
