"""The sending engine through the outbox gateway: rules before every send, quiet hours in
each customer's time zone, caps across campaigns, idempotency, crash recovery, rate."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from cipherseg.errors import ParameterError
from cipherseg.messaging import (
    DeliveryPolicy,
    EngineConfig,
    FrequencyCap,
    OutboxGateway,
    RateLimiter,
    Recipient,
    SendingEngine,
    SqlMessageStore,
    StaticRecipients,
    summarise_audience,
)
from cipherseg.messaging.store import CampaignSegment, new_lease_owner

MakePeople = Callable[..., list[Recipient]]

NOON_SHANGHAI = datetime(2026, 5, 4, 4, 0, tzinfo=UTC)
TEMPLATE = 'Hi {{ first_name|default("there") }}, {{ segment_name }} deal at {{ shop_name }}. ' \
           '{{ opt_out }}'


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _engine(store: SqlMessageStore, people: StaticRecipients, clock: Clock,
            **cfg: object) -> SendingEngine:
    config = EngineConfig(rate_per_second=None, **cfg)  # type: ignore[arg-type]
    return SendingEngine(store, OutboxGateway(store), people, config=config, clock=clock)


def _campaign(store: SqlMessageStore, name: str = "Spring", segs: tuple[str, ...] = ("s",),
              template: str = TEMPLATE) -> int:
    cid = store.create_campaign(name, [CampaignSegment(k, f"Seg {k}", template) for k in segs],
                                shop_name="Joy Mall", opt_out_text="Reply STOP to opt out",
                                sender="JOYMALL")
    return cid


def _outbox_count(store: SqlMessageStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(store.t.outbox)).scalar_one())


def test_campaign_applies_every_rule(store: SqlMessageStore, make_people: MakePeople) -> None:
    people = StaticRecipients(make_people(12, no_consent=frozenset({1})))
    by_ref = {p.ref: p for p in people}
    store.add_suppression(by_ref["c2"].phone_key, "opt_out", source="mo:STOP")
    store.add_suppression(by_ref["c3"].phone_key, "suppressed", source="admin")
    clock = Clock(NOON_SHANGHAI)
    policy = DeliveryPolicy(frequency_cap=FrequencyCap(1, timedelta(days=7)))
    engine = _engine(store, people, clock, policy=policy)

    # An earlier campaign reached c4 yesterday: the cap (1 per 7 days) skips c4 now.
    first = _campaign(store, "Earlier")
    clock.now = NOON_SHANGHAI - timedelta(days=1)
    engine.enqueue(first, {"s": [by_ref["c4"]]})
    store.transition_campaign(first, "sending", allowed_from=["draft"])
    engine.run(first, max_seconds=20)
    clock.now = NOON_SHANGHAI

    summary = summarise_audience(store, people, policy, now=clock.now)
    assert summary.total == 12 and summary.eligible == 8
    assert summary.skipped == {"no consent": 1, "opted out": 1, "suppressed": 1,
                               "frequency cap (1 per 7 days)": 1}

    cid = _campaign(store)
    res = engine.enqueue(cid, {"s": people})
    assert (res.queued, res.skipped) == (8, 4)
    # c5 opts out after queueing, before sending: honoured at send time.
    store.add_suppression(by_ref["c5"].phone_key, "opt_out", source="mo:TD")
    store.transition_campaign(cid, "sending", allowed_from=["draft"])
    stats = engine.run(cid, max_seconds=20)
    assert stats.delivered == 7 and stats.skipped == 1
    assert store.campaign(cid).status == "completed"
    rep = store.report(cid).total
    assert (rep.members, rep.unreachable, rep.audience) == (12, 4, 8)
    assert (rep.delivered, rep.skipped) == (7, 1)
    assert rep.skipped_reasons == {"opted out": 1}      # since queueing
    assert rep.unreachable_reasons["opted out"] == 1   # before
    rows = OutboxGateway(store).messages(limit=50)
    texts = {r["to_masked"]: r["body"] for r in rows}
    assert texts["139****0000"] == "Hi Li, Seg s deal at Joy Mall. Reply STOP to opt out"
    assert all(r["sender"] == "JOYMALL" for r in rows)


def test_quiet_hours_hold_per_time_zone_then_release(store: SqlMessageStore,
                                                     make_people: MakePeople) -> None:
    shanghai = make_people(3, timezone="Asia/Shanghai")
    london = [p for p in make_people(6, timezone="Europe/London")][3:]
    people = StaticRecipients(shanghai + london)
    # 22:30 in Shanghai, 15:30 in London.
    clock = Clock(datetime(2026, 5, 4, 14, 30, tzinfo=UTC))
    engine = _engine(store, people, clock)
    cid = _campaign(store)
    engine.enqueue(cid, {"s": people})
    store.transition_campaign(cid, "sending", allowed_from=["draft"])
    stats = engine.step(cid)
    assert (stats.delivered, stats.held) == (3, 3)
    rep = store.report(cid, now=clock.now).total
    assert (rep.held, rep.delivered) == (3, 3)
    clock.now = datetime(2026, 5, 4, 23, 59, tzinfo=UTC)   # 07:59 in Shanghai: still quiet
    assert engine.step(cid).claimed == 0
    clock.now = datetime(2026, 5, 5, 0, 0, tzinfo=UTC)     # 08:00 in Shanghai
    assert engine.step(cid).delivered == 3
    assert store.state_counts(cid) == {"delivered": 6}


def test_enqueue_and_run_twice_send_once(store: SqlMessageStore, make_people: MakePeople) -> None:
    people = StaticRecipients(make_people(30))
    engine = _engine(store, people, Clock(NOON_SHANGHAI), batch_size=7)
    cid = _campaign(store)
    engine.enqueue(cid, {"s": people})
    assert engine.enqueue(cid, {"s": people}).already_present == 30
    store.transition_campaign(cid, "sending", allowed_from=["draft"])
    engine.run(cid, max_seconds=20)
    store.transition_campaign(cid, "sending", allowed_from=["completed"])
    engine.run(cid, max_seconds=20)
    assert _outbox_count(store) == 30


def test_worker_that_died_mid_batch_is_recovered_without_duplicates(
        store: SqlMessageStore, make_people: MakePeople) -> None:
    people = StaticRecipients(make_people(10))
    clock = Clock(NOON_SHANGHAI)
    engine = _engine(store, people, clock, lease=timedelta(seconds=30))
    cid = _campaign(store)
    engine.enqueue(cid, {"s": people})
    store.transition_campaign(cid, "sending", allowed_from=["draft"])
    # A worker claimed 6, marked them sending, got 3 into the outbox, then died.
    owner = new_lease_owner("dead")
    claimed = store.claim(owner, now=clock.now, limit=6, lease=timedelta(seconds=30))
    store.begin_attempts(owner, claimed, {}, now=clock.now)
    from cipherseg.messaging import OutboundSms
    gw = OutboxGateway(store)
    for m in claimed[:3]:
        p = people.lookup([m.customer_ref])[m.customer_ref]
        gw.send(OutboundSms(m.id, 1, p.phone, "hello", "GSM-7", 1))
    engine.step(cid)              # the 4 unclaimed go out; the 6 are still leased
    assert store.state_counts(cid) == {"delivered": 4, "sending": 6}
    clock.now += timedelta(seconds=31)
    engine.run(cid, max_seconds=20)
    assert store.state_counts(cid) == {"delivered": 10}
    assert _outbox_count(store) == 10


def test_too_long_and_erased_customers_are_skipped(store: SqlMessageStore,
                                                   make_people: MakePeople) -> None:
    people = StaticRecipients(make_people(4))
    engine = _engine(store, people, Clock(NOON_SHANGHAI), max_parts=2)
    long_cid = _campaign(store, "Long", template="退" * 140 + "{{ opt_out }}")
    engine.enqueue(long_cid, {"s": people})
    store.transition_campaign(long_cid, "sending", allowed_from=["draft"])
    people.remove("c0")
    engine.run(long_cid, max_seconds=20)
    reasons = store.report(long_cid).total.skipped_reasons
    assert reasons == {"customer no longer exists": 1,
                       "too long: 3 SMS parts (at most 2)": 3}


def test_per_segment_templates(store: SqlMessageStore, make_people: MakePeople) -> None:
    people = make_people(6)
    engine = _engine(store, StaticRecipients(people), Clock(NOON_SHANGHAI))
    cid = store.create_campaign("Two", [
        CampaignSegment("vip", "VIP", "VIP {{ first_name }}: 30% off {{ opt_out }}"),
        CampaignSegment("new", "New", "您好{{ first_name }}，新人礼包已到账。{{ opt_out }}")],
        opt_out_text="STOP")
    engine.enqueue(cid, {"vip": people[:2], "new": people[2:]})
    store.transition_campaign(cid, "sending", allowed_from=["draft"])
    engine.run(cid, max_seconds=20)
    rows = OutboxGateway(store).messages()
    enc = sorted((r["encoding"], r["body"].split(" ")[0][:2]) for r in rows)
    assert enc.count(("GSM-7", "VI")) == 2 and sum(e == "UCS-2" for e, _ in enc) == 4
    by = {s.segment_key: s for s in store.report(cid).segments}
    assert (by["vip"].delivered, by["new"].delivered) == (2, 4)


def test_rate_limiter_spaces_calls() -> None:
    t = [0.0]
    slept: list[float] = []

    def sleep(d: float) -> None:
        slept.append(d)
        t[0] += d

    lim = RateLimiter(4.0, clock=lambda: t[0], sleep=sleep)
    for _ in range(5):
        lim.acquire()
    assert slept == [0.25, 0.25, 0.25, 0.25]
    with pytest.raises(ParameterError):
        EngineConfig(rate_per_second=0)


def test_paused_campaign_stops_the_worker(store: SqlMessageStore,
                                          people_factory: Callable[..., StaticRecipients],
                                          ) -> None:
    people = people_factory(20)
    engine = _engine(store, people, Clock(NOON_SHANGHAI), batch_size=5)
    cid = _campaign(store)
    engine.enqueue(cid, {"s": people})
    store.transition_campaign(cid, "sending", allowed_from=["draft"])
    engine.step(cid)
    store.transition_campaign(cid, "paused", allowed_from=["sending"])
    engine.run(cid, max_seconds=20)
    assert store.state_counts(cid) == {"delivered": 5, "queued": 15}
    store.transition_campaign(cid, "sending", allowed_from=["paused"])
    engine.run(cid, max_seconds=20)
    assert store.state_counts(cid) == {"delivered": 20}


def test_next_batch_goes_out_before_the_answered_one_is_recorded(
        store: SqlMessageStore, make_people: MakePeople,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The sending threads never wait for the database: when a batch is answered, the worker
    marks the next one ``sending`` and hands it over before it records the answered one."""
    people = StaticRecipients(make_people(12))
    engine = _engine(store, people, Clock(NOON_SHANGHAI), batch_size=4, pipeline=1)
    cid = _campaign(store)
    engine.enqueue(cid, {"s": people})
    store.transition_campaign(cid, "sending", allowed_from=["draft"])
    at_record: list[dict[str, int]] = []
    record = store.record_outcomes

    def recording(*args: object, **kw: object) -> None:
        at_record.append(store.state_counts(cid))
        record(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "record_outcomes", recording)
    engine.run(cid, max_seconds=20)
    assert store.state_counts(cid) == {"delivered": 12}
    assert _outbox_count(store) == 12
    # Recording batch 1, batch 2 is already marked sending; recording batch 3, nothing is left.
    assert at_record[0] == {"sending": 8, "queued": 4}
    assert at_record[-1] == {"sending": 4, "delivered": 8}


def test_each_customer_gets_the_text_of_their_segment_and_name(
        store: SqlMessageStore, make_people: MakePeople) -> None:
    """Texts are rendered once per (campaign, segment, first name) and reused; every customer
    still gets their own segment's template with their own name, in each campaign."""
    people = make_people(20)   # eight first names, repeated
    engine = _engine(store, StaticRecipients(people), Clock(NOON_SHANGHAI), batch_size=7)
    a = store.create_campaign("A", [CampaignSegment("s", "S", "A {{ first_name }} {{ opt_out }}"),
                                    CampaignSegment("t", "T", "T {{ first_name }} {{ opt_out }}")],
                              opt_out_text="STOP")
    b = store.create_campaign("B", [CampaignSegment("s", "S", "B {{ first_name }} {{ opt_out }}")],
                              opt_out_text="STOP")
    engine.enqueue(a, {"s": people[:10], "t": people[10:]})
    for cid in (a, b):
        if cid == b:
            engine.enqueue(b, {"s": people})
        store.transition_campaign(cid, "sending", allowed_from=["draft"])
        engine.run(cid, max_seconds=20)
    m = store.t.messages
    with store.engine.connect() as conn:
        whose = {row.id: (row.campaign_id, row.segment_key, row.customer_ref)
                 for row in conn.execute(select(m.c.id, m.c.campaign_id, m.c.segment_key,
                                                m.c.customer_ref))}
    names = {p.ref: p.first_name for p in people}
    bodies = {whose[r["message_id"]]: r["body"] for r in OutboxGateway(store).messages()}
    expected = {(a, "s" if int(ref[1:]) < 10 else "t", ref):
                f"{'A' if int(ref[1:]) < 10 else 'T'} {names[ref]} STOP" for ref in names}
    expected |= {(b, "s", ref): f"B {names[ref]} STOP" for ref in names}
    assert bodies == expected
