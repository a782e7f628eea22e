"""End to end through a real Kannel (bearerbox + smsbox + fake SMSC on loopback).

Messages go through Kannel's sendsms interface to the fake SMSC, whose handset side is our
Python client; delivery reports come back to the callback server over HTTP; opt-outs are
real inbound messages ("STOP", "退订", "TD") sent from the handset side through Kannel.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from cipherseg.errors import CipherSegError
from cipherseg.messaging import (
    DeliveryPolicy,
    EngineConfig,
    FrequencyCap,
    GatewayError,
    Recipient,
    RetryPolicy,
    SendingEngine,
    SqlMessageStore,
    StaticRecipients,
    vault_opener,
)
from cipherseg.messaging.callbacks import CallbackServer, DlrSigner, MessagingCallbacks
from cipherseg.messaging.kannel import KannelGateway
from cipherseg.messaging.store import CampaignSegment
from cipherseg.pii import PiiVault
from cipherseg.testing.kannel import FakeSmscClient, KannelHarness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MakePeople = Callable[..., list[Recipient]]
REPLY = "You will get no more messages from Joy Mall."


def phone_of(i: int) -> str:
    return f"+86139{i:08d}"


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Rig:
    store: SqlMessageStore
    vault: PiiVault
    callbacks: MessagingCallbacks
    server: CallbackServer
    signer: DlrSigner
    token: str
    harness: KannelHarness | None = None
    phone: FakeSmscClient | None = None

    def gateway(self, **kw: object) -> KannelGateway:
        assert self.harness is not None
        args: dict[str, object] = {
            "sendsms_url": self.harness.sendsms_url, "username": self.harness.username,
            "password": self.harness.password, "open_phone": vault_opener(self.vault),
            "dlr_url": self.server.dlr_url, "signer": self.signer, "sender": "JOYMALL"}
        args.update(kw)
        return KannelGateway(**args)  # type: ignore[arg-type]

    def engine(self, people: list[Recipient], gateway: KannelGateway | None = None,
               **cfg: object) -> SendingEngine:
        settings: dict[str, object] = {"rate_per_second": None, "concurrency": 8,
                                       "idle_sleep": 0.05,
                                       "report_wait": timedelta(seconds=1.5),
                                       "policy": DeliveryPolicy(quiet_hours=None)}
        settings.update(cfg)
        return SendingEngine(self.store, gateway or self.gateway(), StaticRecipients(people),
                             config=EngineConfig(**settings))  # type: ignore[arg-type]

    def campaign(self, segments: dict[str, str], name: str = "Campaign") -> int:
        """Segments named ``zh…`` are Chinese (their opt-out line is 回复TD退订)."""
        return self.store.create_campaign(
            name, [CampaignSegment(k, k.upper(), t, *(("zh", "回复TD退订") if k.startswith("zh")
                                                      else ("en", None)))
                   for k, t in segments.items()],
            shop_name="Joy Mall", opt_out_text="Reply STOP to opt out", status="draft")

    def start(self, cid: int) -> None:
        assert self.store.transition_campaign(cid, "sending", allowed_from=["draft"])


@pytest.fixture
def rig(store: SqlMessageStore, vault: PiiVault) -> Iterator[Rig]:
    signer = DlrSigner(secrets.token_bytes(32))
    token = secrets.token_urlsafe(16)
    callbacks = MessagingCallbacks(
        store, signer=signer, mo_token=token, region="CN", opt_out_reply=REPLY,
        phone_key=lambda e164: vault.pseudonym("phone", e164),
        retry=RetryPolicy(max_attempts=3, base_delay=timedelta(seconds=0.2)))
    try:
        with CallbackServer(callbacks) as server:
            yield Rig(store, vault, callbacks, server, signer, token)
    finally:
        callbacks.close()


@pytest.fixture
def fake_rig(rig: Rig, kannel: Callable[..., KannelHarness],
             handset: Callable[[int], FakeSmscClient]) -> Rig:
    rig.harness = kannel(mo_url=rig.server.mo_url(rig.token))
    rig.phone = handset(rig.harness.ports.smsc)
    rig.harness.wait_smsc_online()
    return rig


def test_campaign_through_kannel(fake_rig: Rig, make_people: MakePeople) -> None:
    rig = fake_rig
    assert rig.phone is not None
    people = make_people(40, no_consent=frozenset({1}))
    # c2 and c3 opt out by SMS before the campaign; c4 is suppressed by the business.
    rig.phone.send_mo(phone_of(2), "10086", "STOP")
    rig.phone.send_mo(phone_of(3), "10086", "退订")
    rig.store.add_suppression(people[4].phone_key, "suppressed", source="admin")
    wait_until(lambda: rig.store.suppression_counts().get("opt_out") == 2, what="opt-outs")
    # c5 got a message yesterday; the cap allows one per week.
    cap = DeliveryPolicy(quiet_hours=None, frequency_cap=FrequencyCap(1, timedelta(days=7)))
    earlier = rig.campaign({"all": "Welcome! {{ opt_out }}"}, name="Earlier")
    engine = rig.engine(people, policy=cap)
    engine.enqueue(earlier, {"all": [people[5]]})
    rig.start(earlier)
    engine.run(earlier, max_seconds=30)

    cid = rig.campaign({"vip": "Hi {{ first_name }}, VIP night at {{ shop_name }}! {{ opt_out }}",
                        "zh": "{{ first_name }}您好，{{ shop_name }}会员日全场8折。回复TD退订"})
    res = engine.enqueue(cid, {"vip": people[:20], "zh": people[20:]})
    assert (res.queued, res.skipped) == (35, 5)
    rig.start(cid)
    stats = engine.run(cid, max_seconds=60)
    assert stats.accepted == 35 and stats.failed == 0
    wait_until(lambda: rig.store.state_counts(cid).get("delivered") == 35, what="DLRs")
    assert rig.store.campaign(cid).status == "completed"

    got = [m for m in rig.phone.wait_for(38) if m.text != REPLY]
    per_number = Counter(m.receiver for m in got)
    expected = {phone_of(i) for i in range(40)} - {phone_of(i) for i in (1, 2, 3, 4, 5)}
    assert per_number[phone_of(5)] == 1                       # only the earlier campaign
    campaign_msgs = [m for m in got if m.text != "Welcome! Reply STOP to opt out"]
    assert Counter(m.receiver for m in campaign_msgs) == Counter(dict.fromkeys(expected, 1))
    by_number = {m.receiver: m for m in campaign_msgs}
    assert by_number[phone_of(0)].text == \
        "Hi Li, VIP night at Joy Mall! Reply STOP to opt out"
    assert by_number[phone_of(20)].text == "Chen您好，Joy Mall会员日全场8折。回复TD退订"
    assert by_number[phone_of(20)].kind == "ucs-2"
    assert all(m.sender == "JOYMALL" for m in campaign_msgs)
    # The opt-out confirmations went back to the two numbers that opted out.
    replies = [m for m in rig.phone.received if m.text == REPLY]
    assert sorted(m.receiver for m in replies) == [phone_of(2), phone_of(3)]

    # After the campaign c6 answers "TD": counted as opted out in the report.
    rig.phone.send_mo(phone_of(6), "10086", "td")
    wait_until(lambda: rig.store.suppression_counts().get("opt_out") == 3, what="TD")
    report = rig.store.report(cid).total
    assert (report.members, report.unreachable, report.audience, report.delivered,
            report.opted_out) == (40, 5, 35, 35, 1)
    assert report.unreachable_reasons == {"no consent": 1, "opted out": 2, "suppressed": 1,
                                          "frequency cap (1 per 7 days)": 1}
    assert len(rig.store.delivery_times(cid)) == 35


def test_forged_and_stale_reports_change_nothing(fake_rig: Rig,
                                                 make_people: MakePeople) -> None:
    import httpx

    rig = fake_rig
    people = make_people(3)
    engine = rig.engine(people)
    cid = rig.campaign({"s": "Hello {{ opt_out }}"})
    engine.enqueue(cid, {"s": people})
    rig.start(cid)
    engine.run(cid, max_seconds=30)
    wait_until(lambda: rig.store.state_counts(cid).get("delivered") == 3, what="DLRs")
    base = rig.server.dlr_url
    r = httpx.get(base, params={"m": 1, "a": 1, "k": "0" * 20, "s": 2})
    assert r.status_code == 403
    r = httpx.get(base, params={"m": 1, "a": 9, "k": rig.signer.sign(1, 9), "s": 2})
    assert (r.status_code, r.text) == (200, "ignored")
    r = httpx.post(rig.server.mo_url("wrong-token"), content=b"STOP",
                   headers={"X-Kannel-From": phone_of(0)})
    assert r.status_code == 403
    assert rig.store.state_counts(cid) == {"delivered": 3}
    assert rig.store.suppression_counts() == {}


class FlakySmsc:
    """An HTTP SMSC on loopback for Kannel's generic HTTP SMSC type: answers FAIL to numbers
    in ``flaky`` the first time, always FAIL to numbers in ``dead``, OK otherwise."""

    def __init__(self, flaky: set[str], dead: set[str]) -> None:
        self.flaky, self.dead = set(flaky), set(dead)
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                q = parse_qs(urlsplit(self.path).query)
                to = q.get("to", [""])[0]
                with outer.lock:
                    if to in outer.dead:
                        answer = "FAIL"
                    elif to in outer.flaky:
                        outer.flaky.discard(to)
                        answer = "FAIL"
                    else:
                        answer = "OK"
                    outer.requests.append((to, answer))
                body = answer.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/send"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_smsc_rejections_are_retried_with_backoff_then_failed(
        rig: Rig, kannel: Callable[..., KannelHarness], make_people: MakePeople) -> None:
    smsc = FlakySmsc(flaky={phone_of(1), phone_of(2)}, dead={phone_of(3)})
    try:
        rig.harness = kannel(smsc="http", http_smsc_url=smsc.url)
        people = make_people(8)
        retry = RetryPolicy(max_attempts=3, base_delay=timedelta(seconds=0.2))
        # Rejections arrive as delivery reports: wait long enough for the last of them.
        engine = rig.engine(people, retry=retry, report_wait=timedelta(seconds=4))
        cid = rig.campaign({"s": "Hello {{ opt_out }}"})
        engine.enqueue(cid, {"s": people})
        rig.start(cid)
        engine.run(cid, max_seconds=60)
        counts = rig.store.state_counts(cid)
        assert counts == {"sent": 7, "failed": 1}
        ok = Counter(to for to, answer in smsc.requests if answer == "OK")
        assert ok == Counter({phone_of(i): 1 for i in range(8) if i != 3})
        assert Counter(to for to, a in smsc.requests if a == "FAIL") == \
            Counter({phone_of(1): 1, phone_of(2): 1, phone_of(3): 3})
        rep = rig.store.report(cid).total
        assert rep.sent == 7 and rep.failed == 1
    finally:
        smsc.close()


def test_gateway_down_loses_nothing_and_uses_no_attempt(
        fake_rig: Rig, make_people: MakePeople) -> None:
    rig = fake_rig
    assert rig.harness is not None and rig.phone is not None
    people = make_people(25)
    engine = rig.engine(people, retry=RetryPolicy(max_attempts=1),
                        max_down_pause=timedelta(seconds=0.5), batch_size=10)
    cid = rig.campaign({"s": "Hello {{ first_name }} {{ opt_out }}"})
    engine.enqueue(cid, {"s": people})
    rig.start(cid)
    rig.phone.close()
    rig.harness.stop()
    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.setdefault(
        "stats", engine.run(cid, max_seconds=60)))
    worker.start()
    wait_until(lambda: "gateway down" in str(_reasons(rig.store, cid)), what="down")
    # Each retry claims a batch (briefly "sending") before the refusal puts it back.
    wait_until(lambda: rig.store.state_counts(cid) == {"queued": 25}, what="all requeued")
    rig.harness.start()
    phone = FakeSmscClient(rig.harness.ports.smsc).connect()
    try:
        worker.join(timeout=60)
        assert not worker.is_alive()
        got = phone.wait_for(25, timeout=20)
        assert Counter(m.receiver for m in got) == Counter({phone_of(i): 1 for i in range(25)})
        wait_until(lambda: rig.store.state_counts(cid).get("delivered") == 25, what="DLRs")
    finally:
        phone.close()


def _reasons(store: SqlMessageStore, cid: int) -> set[str]:
    m = store.t.messages
    with store.engine.connect() as conn:
        from sqlalchemy import select

        return set(conn.execute(select(m.c.reason).where(m.c.campaign_id == cid)).scalars())


def test_wrong_credentials_stop_the_worker_and_keep_the_queue(
        fake_rig: Rig, make_people: MakePeople) -> None:
    rig = fake_rig
    people = make_people(5)
    engine = rig.engine(people, gateway=rig.gateway(password="wrong"))
    cid = rig.campaign({"s": "Hello {{ opt_out }}"})
    engine.enqueue(cid, {"s": people})
    rig.start(cid)
    with pytest.raises(GatewayError, match="credentials"):
        engine.run(cid, max_seconds=30)
    assert rig.store.state_counts(cid) == {"queued": 5}
    m = rig.store.t.messages
    from sqlalchemy import select
    with rig.store.engine.connect() as conn:
        assert set(conn.execute(select(m.c.attempts)).scalars()) == {0}


def test_harness_refuses_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(CipherSegError, match="http_smsc_url"):
        KannelHarness(tmp_path, smsc="http")
    with pytest.raises(CipherSegError, match="fake"):
        KannelHarness(tmp_path, smsc="smpp")  # type: ignore[arg-type]


def test_kannel_store_is_private(fake_rig: Rig, make_people: MakePeople) -> None:
    """Issue 16 finding 10: Kannel's message store holds every number and text in clear. In
    the harness (as in the documented configuration) it lives in a 0700 directory and every
    file Kannel writes — the store, its .new/.bak rotations, logs — is 0600."""
    rig = fake_rig
    assert rig.harness is not None and rig.phone is not None
    people = make_people(20)
    engine = SendingEngine(rig.store, rig.gateway(), StaticRecipients(people),
                           config=EngineConfig(rate_per_second=None,
                                               policy=DeliveryPolicy(quiet_hours=None)))
    cid = rig.campaign({"a": "Hello {{ first_name }}. {{ opt_out }}"})
    engine.enqueue(cid, {"a": people})
    rig.start(cid)
    engine.run(cid, max_seconds=60)
    engine.close()
    rig.phone.wait_for(20)
    rig.harness.stop()   # the last dump rotates the store: .bak keeps the messages
    store_dir = rig.harness.store_dir
    files = sorted(store_dir.iterdir())
    assert {f.name for f in files} >= {"kannel.store", "kannel.store.bak"}
    assert any(b"+86139" in f.read_bytes() for f in files)       # what is being protected
    assert store_dir.stat().st_mode & 0o777 == 0o700
    assert rig.harness.workdir.stat().st_mode & 0o777 == 0o700
    written = [*files, *(f for f in rig.harness.workdir.iterdir() if f.is_file())]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in written} == \
        {f.name: "0o600" for f in written}
