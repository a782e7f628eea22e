"""A database-backed job queue and the background worker that runs imports and segmentations.

Requests only *enqueue* work; a :class:`Worker` (threads inside ``cipherseg serve``, or a
separate ``cipherseg worker`` process) claims queued jobs with a conditional ``UPDATE`` (so two
workers never run the same job), runs them, and writes progress to the ``jobs`` row, which
the pages poll. A job whose worker died (no heartbeat for ``stale_after`` seconds) is queued
again; every job kind is safe to re-run (imports are all-or-nothing, a segmentation replaces
its own results). A job can :func:`defer` itself: it goes back to the queue, in the same
row, with a time before which no worker takes it (a campaign waiting for quiet hours to
end sleeps this way: one row, one wake-up, no polling of its own).

>>> from cipherseg.platform.db import make_engine, make_sessionmaker
>>> from cipherseg.platform.migrate import upgrade
>>> from cipherseg.platform.models import JobKind, Role
>>> from cipherseg.platform.services.users import create_user
>>> engine = make_engine("sqlite://"); upgrade(engine); factory = make_sessionmaker(engine)
>>> with factory() as s:
...     owner = create_user(s, "mall", "a long passphrase", Role.OWNER)
...     job = enqueue(s, JobKind.SEGMENTATION, owner=owner, params={"k": 3}); s.commit()
>>> job.number, claim_next(factory, "w1") == job.id, claim_next(factory, "w2")
(1, True, None)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from cipherseg.clock import utcnow
from cipherseg.errors import CipherSegError
from cipherseg.platform.models import Job, JobKind, JobStatus, User
from cipherseg.platform.numbering import job_scope, next_number

log = logging.getLogger("cipherseg.platform.jobs")

#: The job kinds the queue accepts: its own two, and those ``create_app`` (and
#: ``make_worker``) register for the platform's extensions with :func:`register_kinds`.
_ACCEPTED: set[JobKind] = {JobKind.IMPORT, JobKind.SEGMENTATION}
#: A job kind's runner: (job id, progress sink) -> None; raises to fail the job.
Runner = Callable[[int, "ProgressSink"], None]


class UnknownJobKind(CipherSegError):
    """A job of a kind nobody registered (or that does not exist) was queued."""


def register_kinds(kinds: Iterable[JobKind | str]) -> None:
    """Accept jobs of these kinds (:func:`cipherseg.platform.app.register_job_kinds`)."""
    _ACCEPTED.update(JobKind(k) for k in kinds)


def registered_kinds() -> frozenset[JobKind]:
    """The job kinds the queue accepts now."""
    return frozenset(_ACCEPTED)


def enqueue(session: Session, kind: JobKind, *, owner: User, params: dict[str, Any],
            created_by: User | None = None, not_before: datetime | None = None,
            stage: str = "queued") -> Job:
    """Queue a job (flushes; the caller commits together with its audit event); with
    ``not_before`` no worker takes it before that time."""
    if kind not in {k.value for k in JobKind}:
        raise UnknownJobKind(f"unknown job kind {kind!r}; the kinds are "
                             f"{', '.join(k.value for k in JobKind)}")
    kind = JobKind(kind)
    if kind not in _ACCEPTED:
        raise UnknownJobKind(
            f"job kind {kind.value!r} is not registered: the platform registers its "
            "extensions' job kinds in create_app (cipherseg.platform.app.register_job_kinds)")
    job = Job(kind=kind.value, number=next_number(session, job_scope(kind, owner.id)),
              status=JobStatus.QUEUED.value, progress=0.0, stage=stage[:128], owner_id=owner.id,
              created_by=(created_by or owner).id, params=params, not_before=not_before)
    session.add(job)
    session.flush()
    return job


def claim_next(factory: sessionmaker[Session], worker: str, *,
               now: datetime | None = None) -> int | None:
    """Atomically take the oldest queued job that is due; ``None`` if there is none.

    Imports of one owner run one at a time (they touch the same rows).
    """
    now = now or utcnow()
    with factory() as s:
        busy_owners = set(s.scalars(select(Job.owner_id).where(
            Job.status == JobStatus.RUNNING.value, Job.kind == JobKind.IMPORT.value)))
        candidates = s.execute(select(Job.id, Job.kind, Job.owner_id).where(
            Job.status == JobStatus.QUEUED.value,
            or_(Job.not_before.is_(None), Job.not_before <= now))
            .order_by(Job.id).limit(20)).all()
        for job_id, kind, owner_id in candidates:
            if kind == JobKind.IMPORT and owner_id in busy_owners:
                continue
            res = s.execute(update(Job).where(
                Job.id == job_id, Job.status == JobStatus.QUEUED.value).values(
                status=JobStatus.RUNNING.value, worker=worker[:64], started_at=now,
                heartbeat_at=now, not_before=None, stage="starting"))
            s.commit()
            if res.rowcount == 1:  # type: ignore[attr-defined]
                return int(job_id)
    return None


def requeue_stale(factory: sessionmaker[Session], stale_after: float) -> list[int]:
    """Put jobs whose worker stopped sending heartbeats back in the queue."""
    limit = utcnow() - timedelta(seconds=stale_after)
    with factory() as s:
        ids = list(s.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING.value,
                                                  Job.heartbeat_at < limit)))
        for job_id in ids:
            s.execute(update(Job).where(
                Job.id == job_id, Job.status == JobStatus.RUNNING.value).values(
                status=JobStatus.QUEUED.value, stage="re-queued after a worker stopped",
                worker=None))
        s.commit()
    return ids


class ProgressSink:
    """Writes a job's progress in short transactions of its own (throttled).

    On SQLite a second connection cannot write while the job's own transaction holds the
    write lock, so :meth:`paused` suspends updates during such a write; the page shows the
    stage (e.g. "importing") meanwhile.
    """

    def __init__(self, factory: sessionmaker[Session], job_id: int,
                 extra: Callable[[Session, float, str], None] | None = None,
                 min_interval: float = 0.25) -> None:
        self._factory = factory
        self.job_id = job_id
        self._extra = extra
        self._min_interval = min_interval
        self._last = 0.0
        self._paused = False
        self.sqlite = factory.kw["bind"].dialect.name == "sqlite"

    def update(self, fraction: float, stage: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._paused or (not force and now - self._last < self._min_interval):
            return
        self._last = now
        fraction = min(1.0, max(0.0, fraction))
        with self._factory() as s:
            s.execute(update(Job).where(Job.id == self.job_id).values(
                progress=fraction, stage=stage[:128], heartbeat_at=utcnow()))
            if self._extra is not None:
                self._extra(s, fraction, stage)
            s.commit()

    def pause_if_sqlite(self) -> _Pause:
        """Context manager: no progress writes while the caller holds a SQLite write lock."""
        return _Pause(self, self.sqlite)


class _Pause:
    def __init__(self, sink: ProgressSink, active: bool) -> None:
        self._sink, self._active = sink, active

    def __enter__(self) -> None:
        if self._active:
            self._sink._paused = True

    def __exit__(self, *exc: object) -> None:
        self._sink._paused = False


def defer(factory: sessionmaker[Session], job_id: int, *, until: datetime, stage: str,
          now: datetime | None = None) -> None:
    """Put a running job back in the queue, in the same row, not to be taken before
    ``until`` (its runner is called again then)."""
    with factory() as s:
        s.execute(update(Job).where(Job.id == job_id).values(
            status=JobStatus.QUEUED.value, not_before=until, worker=None, stage=stage[:128],
            heartbeat_at=now or utcnow()))
        s.commit()


def wake(factory: sessionmaker[Session], job_ids: list[int], *,
         now: datetime | None = None) -> int:
    """Make deferred jobs due now; returns how many were waiting."""
    if not job_ids:
        return 0
    now = now or utcnow()
    with factory() as s:
        res = s.execute(update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.QUEUED.value,
                                          Job.not_before > now).values(not_before=now))
        s.commit()
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def finish(factory: sessionmaker[Session], job_id: int, *, status: JobStatus,
           result: dict[str, Any] | None = None, error: str | None = None,
           stage: str | None = None) -> None:
    """Mark a job done or failed."""
    with factory() as s:
        status = JobStatus(status)
        values: dict[str, Any] = {"status": status.value, "finished_at": utcnow(),
                                  "heartbeat_at": utcnow(),
                                  "stage": stage or status.value}
        if status == JobStatus.DONE:
            values["progress"] = 1.0
        if result is not None:
            values["result"] = result
        if error is not None:
            values["error"] = error[:4000]
        s.execute(update(Job).where(Job.id == job_id).values(**values))
        s.commit()


class _Heartbeat:
    """Refreshes a running job's heartbeat every ``interval`` seconds (not while paused)."""

    def __init__(self, sink: ProgressSink, interval: float = 30.0) -> None:
        self._sink, self._interval = sink, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"cipherseg-heartbeat-{sink.job_id}")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._sink._paused:
                continue
            try:
                with self._sink._factory() as s:
                    s.execute(update(Job).where(Job.id == self._sink.job_id,
                                                Job.status == JobStatus.RUNNING.value)
                              .values(heartbeat_at=utcnow()))
                    s.commit()
            except Exception:  # the next beat will try again
                log.debug("heartbeat for job %s failed", self._sink.job_id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Worker:
    """Runs queued jobs in background threads until stopped.

    ``runners`` maps a job kind to the function that does the work; the platform app wires
    imports and segmentations (:func:`cipherseg.platform.app.job_runners`).
    """

    def __init__(self, factory: sessionmaker[Session], runners: dict[str, Runner], *,
                 threads: int = 1, poll_seconds: float = 0.5, stale_after: float = 600.0,
                 name: str | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.factory = factory
        self.clock = clock
        self.runners = runners
        self.threads = threads
        self.poll_seconds = poll_seconds
        self.stale_after = stale_after
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run_one(self, worker_name: str | None = None) -> int | None:
        """Claim and run one job synchronously; returns its id (``None``: queue empty)."""
        job_id = claim_next(self.factory, worker_name or self.name, now=self.clock())
        if job_id is None:
            return None
        with self.factory() as s:
            job = s.get(Job, job_id)
            kind = job.kind if job else ""
        sink = ProgressSink(self.factory, job_id)
        runner = self.runners.get(kind)
        beat = _Heartbeat(sink)
        beat.start()
        try:
            if runner is None:
                raise CipherSegError(f"no runner for job kind {kind!r}")
            runner(job_id, sink)
        except Exception as exc:  # a failed job must not stop the worker
            log.error("job %s (%s) failed: %s", job_id, kind, type(exc).__name__)
            log.debug("job %s traceback:\n%s", job_id, traceback.format_exc())
            message = str(exc) if isinstance(exc, CipherSegError) else \
                f"{type(exc).__name__}: the job failed; see the worker log"
            finish(self.factory, job_id, status=JobStatus.FAILED, error=message)
        finally:
            beat.stop()
        return job_id

    def run_until_empty(self, limit: int = 1000) -> list[int]:
        """Run queued jobs one after another until none is left (tests, CLI)."""
        done: list[int] = []
        for _ in range(limit):
            job_id = self.run_one()
            if job_id is None:
                break
            done.append(job_id)
        return done

    def _loop(self, index: int) -> None:
        name = f"{self.name}/{index}"
        while not self._stop.is_set():
            try:
                if index == 0:
                    requeue_stale(self.factory, self.stale_after)
                job_id = self.run_one(name)
            except Exception:  # database briefly unavailable: wait and retry
                log.exception("worker %s: error while claiming a job", name)
                job_id = None
            if job_id is None:
                self._stop.wait(self.poll_seconds)

    def start(self) -> None:
        """Start the worker threads (daemon threads; call :meth:`stop` to end them)."""
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, args=(i,), name=f"cipherseg-worker-{i}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
