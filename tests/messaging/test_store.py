"""The message store on SQLite, PostgreSQL and MariaDB: idempotent queueing, leases, the
state machine, delivery reports, reconciliation, suppressions and reports."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from cipherseg.errors import ValidationError
from cipherseg.messaging import SendStatus, SqlMessageStore
from cipherseg.messaging.rules import RetryPolicy
from cipherseg.messaging.store import CampaignSegment, NewMessage, Outcome, new_lease_owner

T0 = datetime(2026, 5, 4, 4, 0, tzinfo=UTC)
RETRY = RetryPolicy(max_attempts=2, base_delay=timedelta(seconds=10))


def _campaign(store: SqlMessageStore, status: str = "sending") -> int:
    return store.create_campaign("c", [CampaignSegment("a", "A", "x {{ opt_out }}"),
                                       CampaignSegment("b", "B", "y {{ opt_out }}")],
                                 status=status, now=T0)


def _queue(store: SqlMessageStore, cid: int, n: int, seg: str = "a", start: int = 0) -> None:
    store.enqueue(cid, seg, [NewMessage(f"r{i}", f"pk{i}") for i in range(start, start + n)],
                  now=T0)


def test_enqueue_is_idempotent_and_skips_duplicate_numbers(db_store: SqlMessageStore) -> None:
    cid = _campaign(db_store)
    msgs = [NewMessage("r1", "pk1"), NewMessage("r2", "pk2"), NewMessage("r3", "pk1"),
            NewMessage("r4", "pk4", "skipped", "no consent")]
    res = db_store.enqueue(cid, "a", msgs, now=T0)
    assert (res.queued, res.skipped, res.already_present) == (2, 2, 0)
    again = db_store.enqueue(cid, "a", [*msgs, NewMessage("r5", "pk5")], now=T0)
    assert (again.queued, again.skipped, again.already_present) == (1, 0, 4)
    assert db_store.state_counts(cid) == {"queued": 3, "skipped": 2}
    total = db_store.report(cid, now=T0).total
    assert total.unreachable_reasons == {"duplicate number in campaign": 1, "no consent": 1}
    assert (total.members, total.unreachable, total.audience) == (5, 2, 3)


def test_claims_are_disjoint_leases_and_expire(db_store: SqlMessageStore) -> None:
    cid = _campaign(db_store)
    _queue(db_store, cid, 10)
    lease = timedelta(seconds=30)
    a = db_store.claim("w1:a", now=T0, limit=6, lease=lease)
    b = db_store.claim("w2:b", now=T0, limit=6, lease=lease)
    assert len(a) == 6 and len(b) == 4
    assert not {m.id for m in a} & {m.id for m in b}
    assert db_store.claim("w3:c", now=T0 + timedelta(seconds=10), limit=10, lease=lease) == []
    again = db_store.claim("w3:d", now=T0 + timedelta(seconds=31), limit=20, lease=lease)
    assert len(again) == 10


def test_only_sending_campaigns_are_claimed(db_store: SqlMessageStore) -> None:
    cid = _campaign(db_store, status="draft")
    _queue(db_store, cid, 3)
    assert db_store.claim("w:1", now=T0, limit=10, lease=timedelta(seconds=5)) == []
    assert db_store.transition_campaign(cid, "sending", allowed_from=["draft"], now=T0)
    assert not db_store.transition_campaign(cid, "sending", allowed_from=["draft"], now=T0)
    assert len(db_store.claim("w:2", now=T0, limit=10, lease=timedelta(seconds=5))) == 3


def _begin(store: SqlMessageStore, n: int, now: datetime = T0) -> list[tuple[int, int]]:
    owner = new_lease_owner("w")
    claimed = store.claim(owner, now=now, limit=n, lease=timedelta(seconds=60))
    marked = store.begin_attempts(owner, claimed, {m.id: ("GSM-7", 1) for m in claimed},
                                  now=now)
    assert marked == {m.id for m in claimed}
    return [(m.id, m.attempts + 1) for m in claimed]


def test_outcomes_drive_the_state_machine(db_store: SqlMessageStore) -> None:
    cid = _campaign(db_store)
    _queue(db_store, cid, 6)
    ids = _begin(db_store, 6)
    assert db_store.state_counts(cid) == {"sending": 6}
    statuses = [SendStatus.ACCEPTED, SendStatus.DELIVERED, SendStatus.FAILED,
                SendStatus.RETRY, SendStatus.DOWN, SendStatus.IN_DOUBT]
    t1 = T0 + timedelta(seconds=1)
    db_store.record_outcomes([Outcome(i, a, s, "why") for (i, a), s in zip(ids, statuses,
                                                                          strict=True)],
                             retry=RETRY, now=t1, down_until=t1 + timedelta(seconds=5))
    assert db_store.state_counts(cid) == {"sent": 1, "delivered": 1, "failed": 1,
                                          "queued": 2, "sending": 1}
    # The retried one is due after the backoff and has used an attempt; the "down" one
    # is due after the pause and has not.
    early = db_store.claim("w:x", now=t1 + timedelta(seconds=4), limit=10,
                           lease=timedelta(seconds=60))
    assert early == []
    later = db_store.claim("w:y", now=t1 + timedelta(seconds=11), limit=10,
                           lease=timedelta(seconds=60))
    assert sorted(m.attempts for m in later) == [0, 1]


def test_retry_exhaustion_fails_with_reason(db_store: SqlMessageStore) -> None:
    cid = _campaign(db_store)
    _queue(db_store, cid, 1)
    now = T0
    for _ in range(2):
        [(mid, att)] = _begin(db_store, 1, now)
        db_store.record_outcomes([Outcome(mid, att, SendStatus.RETRY, "SMSC busy")],
                                 retry=RETRY, now=now)
        now += timedelta(minutes=5)
    assert db_store.state_counts(cid) == {"failed": 1}
    rep = db_store.report(cid, now=now)
    assert rep.total.failed == 1


def test_delivery_reports(db_store: SqlMessageStore) -> None:
    cid = _campaign(db_store)
    _queue(db_store, cid, 5)
    ids = _begin(db_store, 5)
    (m1, a1), (m2, a2), (m3, a3), (m4, a4), (m5, a5) = ids
    t1 = T0 + timedelta(seconds=2)
    # A report can arrive before the worker records the gateway's answer.
    assert db_store.record_delivery_report(m1, a1, 8, retry=RETRY, now=t1) == "sent"
    assert db_store.record_delivery_report(m1, a1, 1, retry=RETRY, now=t1) == "delivered"
    db_store.record_outcomes([Outcome(m1, a1, SendStatus.ACCEPTED)], retry=RETRY, now=t1)
    assert db_store.record_delivery_report(m1, a1, 8, retry=RETRY, now=t1) == "ignored"
    assert db_store.record_delivery_report(m2, a2, 2, retry=RETRY, now=t1) == "failed"
    assert db_store.record_delivery_report(m3, a3 + 1, 1, retry=RETRY, now=t1) == "ignored"
    assert db_store.record_delivery_report(m4, a4, 16, retry=RETRY, now=t1) == "queued"
    assert db_store.record_delivery_report(999999, 1, 1, retry=RETRY, now=t1) == "ignored"
    assert db_store.state_counts(cid) == {"delivered": 1, "failed": 1, "sending": 2,
                                          "queued": 1}
    # The rejected one comes back after its backoff, is rejected again and fails.
    later = t1 + timedelta(seconds=11)
    owner = new_lease_owner("w")
    [again] = db_store.claim(owner, now=later, limit=5, lease=timedelta(seconds=60))
    assert again.id == m4
    db_store.begin_attempts(owner, [again], {}, now=later)
    assert db_store.record_delivery_report(m4, 2, 16, retry=RETRY, now=later) == "failed"
    assert db_store.delivery_times(cid) == [t1]
    del m5, a5


def test_reconcile_requeues_only_expired_and_unreported(db_store: SqlMessageStore) -> None:
    cid = _campaign(db_store)
    _queue(db_store, cid, 3)
    (m1, a1), (m2, a2), _ = _begin(db_store, 3)
    db_store.record_delivery_report(m1, a1, 8, retry=RETRY, now=T0)   # proof it went out
    grace = timedelta(seconds=30)
    assert db_store.reconcile(now=T0 + timedelta(seconds=50), grace=grace) == 0  # leased
    assert db_store.reconcile(now=T0 + timedelta(seconds=61), grace=grace) == 2
    assert db_store.state_counts(cid) == {"sent": 1, "queued": 2}
    # The late worker's answer for the old attempt no longer moves anything.
    db_store.record_outcomes([Outcome(m2, a2, SendStatus.ACCEPTED)], retry=RETRY,
                             now=T0 + timedelta(seconds=62))
    assert db_store.state_counts(cid) == {"sent": 1, "queued": 2}


def test_suppressions_and_recent_sends(db_store: SqlMessageStore) -> None:
    assert db_store.add_suppression("pk1", "opt_out", source="mo:STOP", now=T0)
    assert not db_store.add_suppression("pk1", "opt_out", source="admin", now=T0)
    assert db_store.add_suppression("pk1", "suppressed", source="admin", now=T0)
    assert db_store.suppression_kinds(["pk1", "pk2"]) == {"pk1": {"opt_out", "suppressed"}}
    assert db_store.remove_suppression("pk1", "suppressed")
    assert not db_store.remove_suppression("pk1", "suppressed")
    assert db_store.suppression_counts() == {"opt_out": 1}
    with pytest.raises(Exception, match="kind"):
        db_store.add_suppression("pk", "bogus", source="x")
    cid = _campaign(db_store)
    _queue(db_store, cid, 2)
    ids = _begin(db_store, 2)
    db_store.record_outcomes([Outcome(i, a, SendStatus.ACCEPTED) for i, a in ids],
                             retry=RETRY, now=T0)
    assert db_store.recent_sends(["pk0", "pk1", "pk9"], since=T0 - timedelta(days=1)) == \
        {"pk0": 1, "pk1": 1}
    assert db_store.recent_sends(["pk0"], since=T0 + timedelta(seconds=1)) == {}


def test_report_per_segment_and_opted_out_after_send(db_store: SqlMessageStore) -> None:
    cid = _campaign(db_store)
    _queue(db_store, cid, 3, "a")
    _queue(db_store, cid, 2, "b", start=3)
    ids = _begin(db_store, 5)
    db_store.record_outcomes([Outcome(i, a, SendStatus.DELIVERED) for i, a in ids],
                             retry=RETRY, now=T0)
    db_store.add_suppression("pk0", "opt_out", source="mo:TD", now=T0 + timedelta(hours=1))
    rep = db_store.report(cid, now=T0)
    by = {s.segment_key: s for s in rep.segments}
    assert (by["a"].audience, by["a"].delivered, by["a"].opted_out) == (3, 3, 1)
    assert (by["b"].audience, by["b"].delivered, by["b"].opted_out) == (2, 2, 0)
    assert rep.total.delivered == 5 and rep.total.reached == 5
    assert db_store.finish_if_done(cid, now=T0)
    assert db_store.campaign(cid).status == "completed"


def test_bad_campaigns_are_refused(db_store: SqlMessageStore) -> None:
    with pytest.raises(ValidationError, match="segment"):
        db_store.create_campaign("x", [])
    with pytest.raises(ValidationError, match="once"):
        db_store.create_campaign("x", [CampaignSegment("a", "A", "t")] * 2)
    with pytest.raises(ValidationError, match="no campaign"):
        db_store.campaign(12345)


def test_concurrent_claims_take_each_message_once(db_store: SqlMessageStore) -> None:
    """Four workers claiming at once (PostgreSQL: FOR UPDATE SKIP LOCKED in one statement)
    never get the same message, each claim respects its limit, and together they take all."""
    cid = _campaign(db_store)
    _queue(db_store, cid, 400)
    lease = timedelta(seconds=30)
    got: dict[str, list[list[int]]] = {f"w{i}": [] for i in range(4)}
    start = threading.Barrier(4)

    def worker(name: str) -> None:
        start.wait()
        for n in range(200):
            batch = db_store.claim(f"{name}:{n}", now=T0, limit=30, lease=lease)
            if not batch:
                return
            got[name].append([m.id for m in batch])

    threads = [threading.Thread(target=worker, args=(name,)) for name in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    batches = [b for bs in got.values() for b in bs]
    ids = [i for b in batches for i in b]
    assert all(0 < len(b) <= 30 for b in batches)
    assert len(ids) == len(set(ids)) == 400


def test_in_doubt_waits_for_the_grace_not_for_the_lease(db_store: SqlMessageStore) -> None:
    """An attempt recorded in doubt is requeued once the grace for a report has passed,
    even though its batch's lease (60 s here) has not; a reported one never is."""
    cid = _campaign(db_store)
    _queue(db_store, cid, 2)
    (m1, a1), (m2, a2) = _begin(db_store, 2)
    t1 = T0 + timedelta(seconds=1)
    db_store.record_outcomes([Outcome(m1, a1, SendStatus.IN_DOUBT, "ReadError"),
                              Outcome(m2, a2, SendStatus.IN_DOUBT, "ReadError")],
                             retry=RETRY, now=t1)
    db_store.record_delivery_report(m2, a2, 8, retry=RETRY, now=t1)   # m2 did go out
    grace = timedelta(seconds=5)
    assert db_store.reconcile(now=T0 + timedelta(seconds=4), grace=grace) == 0
    assert db_store.reconcile(now=T0 + timedelta(seconds=6), grace=grace) == 1
    assert db_store.state_counts(cid) == {"queued": 1, "sent": 1}


def test_queueing_refreshes_postgresql_statistics(db_store: SqlMessageStore) -> None:
    """On PostgreSQL, queueing analyses the messages table: without statistics the planner
    read every message of the campaign for each 500 numbers checked (50 000 customers took
    136 s to queue instead of 13 s)."""
    if db_store.engine.dialect.name != "postgresql":
        pytest.skip("statistics are refreshed on PostgreSQL only")
    cid = _campaign(db_store)
    _queue(db_store, cid, 1234)
    with db_store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE relname = "
                                    f"'{db_store.t.messages.name}'").scalar_one()
    assert rows == 1234
