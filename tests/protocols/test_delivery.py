"""The in-process router of the party contract: order, NotReady, refusals, traffic."""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass

import pytest

from cipherseg.errors import ProtocolError
from cipherseg.protocols.delivery import Traffic, deliver
from cipherseg.protocols.messages import Message, define_protocol, register_message
from cipherseg.protocols.party import NotReady

define_protocol("delivery-test", version=1)


@register_message
@dataclass(frozen=True, slots=True)
class Note(Message):
    PROTOCOL = "delivery-test"
    text: str = ""
    blob: bytes = b""


def note(text: str, blob: bytes = b"") -> Note:
    return Note(protocol_version=1, session_id="s", round=0, text=text, blob=blob)


class Recorder:
    def __init__(self, name: str, script=None) -> None:
        self.name, self.script, self.log = name, script or {}, []

    def handle(self, sender, message):
        self.log.append((sender, message.text))
        return self.script.get(message.text, [])


class Gate(Recorder):
    """Takes "data" only after "open" (from anyone): NotReady before."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.open = False

    def handle(self, sender, message):
        if message.text == "data" and not self.open:
            raise NotReady
        if message.text == "open":
            self.open = True
        return super().handle(sender, message)


@pytest.fixture(params=[False, True], ids=["in-turn", "concurrent"])
def route(request):
    """deliver, in turn and with a thread per party: the same behaviour."""
    return functools.partial(deliver, concurrent=request.param)


def test_messages_cross_as_bytes_in_send_order_and_are_counted(route):
    b = Recorder("b", {"ping": [("a", note("pong", b"xyz")), ("c", note("fyi"))]})
    a, c = Recorder("a"), Recorder("c")
    traffic = route({"a": a, "b": b, "c": c}, [("a", "b", note("ping"))])
    assert b.log == [("a", "ping")] and a.log == [("b", "pong")] and c.log == [("b", "fyi")]
    assert traffic.messages == 3
    assert traffic.sent["b"]["Note"] == len(note("pong", b"xyz").to_bytes()) + len(
        note("fyi").to_bytes())
    assert traffic.total_bytes() == sum(traffic.received[p]["Note"] for p in "abc")
    assert set(traffic.as_dict()) >= {"bytes_sent", "seconds", "cpu_seconds", "total_bytes"}


def test_not_ready_waits_for_the_party_to_change(route):
    gate = Gate("g")
    route({"g": gate, "x": Recorder("x")},
            [("x", "g", note("data")), ("x", "g", note("open"))])
    assert gate.log == [("x", "open"), ("x", "data")]
    with pytest.raises(ProtocolError, match="never became deliverable"):
        route({"g": Gate("g"), "x": Recorder("x")}, [("x", "g", note("data"))])


def test_a_refusal_is_reported_then_raised(route):
    class Refuser(Recorder):
        def handle(self, sender, message):
            raise ProtocolError("no")

    seen = []
    with pytest.raises(ProtocolError, match="no"):
        route({"r": Refuser("r"), "x": Recorder("x")}, [("x", "r", note("hi"))],
                on_refusal=lambda party, m, exc: seen.append((party, m.text, str(exc))))
    assert seen == [("r", "hi", "no")]


def test_unknown_recipient_and_endless_runs_refused(route):
    with pytest.raises(ProtocolError, match="unknown party 'nobody'"):
        route({"x": Recorder("x")}, [("x", "nobody", note("hi"))])
    loop = Recorder("l", {"again": [("l", note("again"))]})
    with pytest.raises(ProtocolError, match="did not end"):
        route({"l": loop}, [("l", "l", note("again"))], max_messages=50)


def test_stages_by_the_given_function():
    traffic = Traffic(stage_of=lambda m: m.text)
    deliver({"x": Recorder("x")}, [("x", "x", note("setup")), ("x", "x", note("work"))],
            traffic)
    assert set(traffic.sent["x"]) == {"setup", "work"}
    assert set(traffic.seconds["x"]) == {"setup", "work"}


def test_traffic_pickles_for_runners_across_processes():
    import pickle

    traffic = deliver({"x": Recorder("x")}, [("x", "x", note("hi", b"ab"))])
    again = pickle.loads(pickle.dumps(traffic))
    assert again.as_dict() == traffic.as_dict()


def test_concurrent_delivery_lets_parties_work_at_the_same_time():
    """Parties that wait on something else (a child process) overlap; each still takes its own
    messages in the order they were sent to it."""
    class Slow(Recorder):
        def __init__(self, name):
            super().__init__(name)
            self.threads = set()

        def handle(self, sender, message):
            self.threads.add(threading.get_ident())
            time.sleep(0.3)
            return super().handle(sender, message)

    parties = {n: Slow(n) for n in ("a", "b", "c")}
    start = time.perf_counter()
    deliver(parties, [("a", n, note(str(i))) for i in range(2) for n in "abc"],
            concurrent=True)
    assert time.perf_counter() - start < 1.2  # 6 × 0.3 s in turn: 1.8 s
    for party in parties.values():
        assert [t for _, t in party.log] == ["0", "1"]
