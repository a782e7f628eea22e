"""The job queue: one claim per job even under concurrency, stale jobs re-queued, failures
recorded without stopping the worker, progress written in its own transaction."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from cipherseg.clock import utcnow
from cipherseg.platform import jobs
from cipherseg.platform.app import job_runners, register_job_kinds
from cipherseg.platform.jobs import (
    ProgressSink,
    Worker,
    claim_next,
    enqueue,
    finish,
    requeue_stale,
)
from cipherseg.platform.models import Job, JobKind, User


def _owner(platform):  # type: ignore[no-untyped-def]
    with platform.ctx.sessions() as s:
        return s.scalars(select(User).where(User.username == "mall")).one()


def _enqueue(platform, n: int, kind: str = "segmentation") -> list[int]:  # type: ignore[no-untyped-def]
    owner = _owner(platform)
    with platform.ctx.sessions() as s:
        ids = [enqueue(s, kind, owner=owner, params={"i": i}).id for i in range(n)]
        s.commit()
    return ids


def test_concurrent_workers_never_claim_the_same_job(splatform) -> None:  # type: ignore[no-untyped-def]
    ids = _enqueue(splatform, 12)
    claimed: list[int] = []
    lock = threading.Lock()

    def grab(name: str) -> None:
        while True:
            job_id = claim_next(splatform.ctx.sessions, name)
            if job_id is None:
                return
            with lock:
                claimed.append(job_id)

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ids


def test_imports_of_one_owner_run_one_at_a_time(splatform) -> None:  # type: ignore[no-untyped-def]
    a, b = _enqueue(splatform, 2, kind="import")
    assert claim_next(splatform.ctx.sessions, "w1") == a
    assert claim_next(splatform.ctx.sessions, "w2") is None
    finish(splatform.ctx.sessions, a, status="done")
    assert claim_next(splatform.ctx.sessions, "w2") == b


def test_stale_jobs_are_queued_again(splatform) -> None:  # type: ignore[no-untyped-def]
    (job_id,) = _enqueue(splatform, 1)
    assert claim_next(splatform.ctx.sessions, "dead worker") == job_id
    assert requeue_stale(splatform.ctx.sessions, stale_after=60) == []
    with splatform.ctx.sessions() as s:
        s.execute(update(Job).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
        s.commit()
    assert requeue_stale(splatform.ctx.sessions, stale_after=60) == [job_id]
    assert claim_next(splatform.ctx.sessions, "new worker") == job_id


def test_a_failing_job_is_recorded_and_the_worker_goes_on(splatform) -> None:  # type: ignore[no-untyped-def]
    bad, good = _enqueue(splatform, 2)
    seen: list[int] = []

    def runner(job_id: int, sink: ProgressSink) -> None:
        if job_id == bad:
            raise RuntimeError("boom with secret detail")
        sink.update(0.5, "half way", force=True)
        finish(splatform.ctx.sessions, job_id, status="done")
        seen.append(job_id)

    worker = Worker(splatform.ctx.sessions, {"segmentation": runner})
    assert worker.run_until_empty() == [bad, good]
    with splatform.ctx.sessions() as s:
        b, g = s.get(Job, bad), s.get(Job, good)
        assert b.status == "failed" and "RuntimeError" in b.error
        assert "secret detail" not in b.error  # unexpected errors are not shown to users
        assert g.status == "done" and g.progress == 1.0
    assert seen == [good]


def test_worker_threads_start_and_stop(splatform) -> None:  # type: ignore[no-untyped-def]
    (job_id,) = _enqueue(splatform, 1)
    done = threading.Event()

    def runner(jid: int, sink: ProgressSink) -> None:
        finish(splatform.ctx.sessions, jid, status="done")
        done.set()

    worker = Worker(splatform.ctx.sessions, {"segmentation": runner}, threads=2,
                    poll_seconds=0.05)
    worker.start()
    try:
        assert done.wait(30)
    finally:
        worker.stop()
    with splatform.ctx.sessions() as s:
        assert s.get(Job, job_id).status == "done"


def test_progress_is_throttled_but_forced_updates_land(splatform) -> None:  # type: ignore[no-untyped-def]
    (job_id,) = _enqueue(splatform, 1)
    sink = ProgressSink(splatform.ctx.sessions, job_id, min_interval=60)
    sink.update(0.1, "first", force=True)
    sink.update(0.2, "throttled")
    with splatform.ctx.sessions() as s:
        job = s.get(Job, job_id)
        assert (job.progress, job.stage) == (0.1, "first")
    with sink.pause_if_sqlite():
        sink.update(0.3, "paused", force=True)
    with splatform.ctx.sessions() as s:
        assert s.get(Job, job_id).stage == "first"
    time.sleep(0)


def test_an_unregistered_job_kind_is_refused_clearly(splatform, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Job kinds are registered explicitly by create_app, not as a side effect of importing
    an extension: before registration the queue refuses the kind and says why."""
    monkeypatch.setattr(jobs, "_ACCEPTED", {JobKind.IMPORT, JobKind.SEGMENTATION})
    owner = _owner(splatform)
    with splatform.ctx.sessions() as s:
        with pytest.raises(jobs.UnknownJobKind, match=r"'joint' is not registered.*create_app"):
            enqueue(s, JobKind.JOINT, owner=owner, params={})
        with pytest.raises(jobs.UnknownJobKind, match="unknown job kind 'jiont'; the kinds"):
            enqueue(s, "jiont", owner=owner, params={})  # type: ignore[arg-type]
        assert s.scalars(select(Job)).all() == []
    assert register_job_kinds() == frozenset(JobKind)
    with splatform.ctx.sessions() as s:
        assert enqueue(s, JobKind.JOINT, owner=owner, params={}).kind == "joint"


def test_every_job_kind_is_registered_with_a_runner(splatform) -> None:  # type: ignore[no-untyped-def]
    assert set(job_runners(splatform.ctx)) == set(JobKind)
    assert jobs.registered_kinds() == frozenset(JobKind)
