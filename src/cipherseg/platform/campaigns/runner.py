"""The ``campaign`` background job: queue the audience, send what is due, then sleep.

One job row per campaign send, from the click to the end: the job queues the audience
(with the holdout drawn from a seed it records first, so a re-run draws the same), sends
every message that is due, and when only messages held by quiet hours (or retries waiting
for their backoff, or a scheduled start) remain it **defers itself** — the same row goes
back to the queue with ``not_before`` set to the next due time — and frees the worker. No
continuation jobs, no polling of its own: over a night of quiet hours the jobs table does
not change, and the merchant's "sending job #N" stays the same number.

Held messages are released for a fresh decision every time the job wakes, and every
deferred campaign job is woken when the platform starts, so changed (or switched off)
quiet hours apply to messages already held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select

from cipherseg.clock import utcnow
from cipherseg.messaging import EngineConfig, SendingEngine, enqueue_campaign
from cipherseg.messaging.holdout import HoldoutPlan
from cipherseg.messaging.store import Campaign
from cipherseg.platform import jobs
from cipherseg.platform.campaigns.audience import audience, segment_members
from cipherseg.platform.campaigns.context import campaign_settings, store_for
from cipherseg.platform.campaigns.recipients import PlatformRecipients
from cipherseg.platform.campaigns.status import waiting_sentence, when
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import Job, JobKind, JobStatus

log = logging.getLogger("cipherseg.platform.campaigns")

JOB_KIND = JobKind.CAMPAIGN
#: Waits up to this long happen inside the job; longer ones put the job to sleep in its row.
SHORT_WAIT = timedelta(seconds=3)
#: When nothing is due but messages are in flight (reports awaited), look again after this.
REPORT_POLL = timedelta(seconds=15)


def make_engine(ctx: PlatformContext, worker_id: str, *,
                clock: Callable[[], datetime] = utcnow) -> SendingEngine:
    """A sending engine with this platform's gateway, recipients and rules."""
    from cipherseg.platform.campaigns.service import make_gateway

    cs = campaign_settings(ctx)
    config = EngineConfig(
        rate_per_second=cs.sms_rate, concurrency=cs.sms_concurrency,
        in_doubt_grace=timedelta(seconds=cs.sms_in_doubt_seconds),
        report_wait=timedelta(seconds=cs.sms_report_wait_seconds), max_parts=cs.sms_max_parts,
        worker_id=worker_id, retry=cs.retry(),
        policy=cs.policy(ctx.settings.default_timezone))
    return SendingEngine(store_for(ctx), make_gateway(ctx),
                         PlatformRecipients(ctx, with_names=True), config=config, clock=clock)


def queue_audience(ctx: PlatformContext, camp: Campaign, *, now: datetime) -> None:
    """Queue every member of the campaign's segments with the rules and the holdout.

    The holdout plan (share and seed) is recorded with the campaign before anything is
    queued, so a job that dies half-way and runs again draws the same groups. A segment
    whose audience is below the minimum segment size now is recorded as skipped, whole.
    """
    cs = campaign_settings(ctx)
    store = store_for(ctx)
    policy = cs.policy(ctx.settings.default_timezone)
    recorded = camp.settings.get("holdout")
    if isinstance(recorded, dict) and "seed" in recorded:
        plan = HoldoutPlan.from_dict(recorded)
    else:
        share = float(camp.settings.get("holdout_share", cs.campaign_holdout))
        plan = HoldoutPlan.draw(share)
        store.update_settings(camp.id, {"holdout": plan.as_dict()})
    blocked: dict[str, str] = {}
    for seg in camp.segments:
        reach = audience(ctx, policy, seg.key, seg.name)
        if not reach.targetable:
            blocked[seg.key] = (f"audience below the minimum of {reach.min_size} "
                                f"({reach.eligible} reachable when sending started)")
    enqueue_campaign(store, camp.id,
                     {seg.key: segment_members(ctx, seg.key) for seg in camp.segments},
                     policy, now=now, holdout=plan, blocked=blocked)


def wake_waiting_jobs(ctx: PlatformContext, *, now: datetime | None = None) -> int:
    """Make every sleeping campaign job due now (at start-up: the quiet hours or the
    gateway may have changed). Returns how many were asleep."""
    now = now or utcnow()
    with ctx.sessions() as s:
        ids = list(s.scalars(select(Job.id).where(Job.kind == JOB_KIND,
                                                  Job.status == JobStatus.QUEUED.value,
                                                  Job.not_before > now)))
    return jobs.wake(ctx.sessions, ids, now=now)


def make_campaign_runner(ctx: PlatformContext, *,
                         clock: Callable[[], datetime] = utcnow) -> jobs.Runner:
    """The job (module docstring). Creating it wakes the campaign jobs that sleep."""
    woken = wake_waiting_jobs(ctx, now=clock())
    if woken:
        log.info("woke %d waiting campaign job(s) to apply the current rules", woken)
    tz = ctx.settings.default_timezone

    def run(job_id: int, sink: jobs.ProgressSink) -> None:
        with ctx.sessions() as s:
            job = s.get(Job, job_id)
            params = dict(job.params or {}) if job else {}
        cid = int(params.get("campaign_id", 0))
        from cipherseg.platform.campaigns.service import stop_if_revoked

        store = store_for(ctx)
        camp = store.campaign(cid)
        now = clock()
        if stop_if_revoked(ctx, camp):
            jobs.finish(ctx.sessions, job_id, status=JobStatus.DONE, stage="release revoked")
            return
        if camp.status == "scheduled":
            if camp.scheduled_at is not None and camp.scheduled_at > now + SHORT_WAIT:
                jobs.defer(ctx.sessions, job_id, until=camp.scheduled_at, now=now,
                           stage=f"scheduled for {when(camp.scheduled_at, now, tz)}")
                return
            store.transition_campaign(cid, "starting", allowed_from=["scheduled"], now=now)
            camp = store.campaign(cid)
        if camp.status in ("approved", "starting"):
            sink.update(0.0, "queueing the audience", force=True)
            queue_audience(ctx, camp, now=now)
            store.transition_campaign(cid, "sending", allowed_from=["approved", "starting"],
                                      now=now)
        elif camp.status != "sending":
            jobs.finish(ctx.sessions, job_id, status=JobStatus.DONE,
                        stage=f"campaign {camp.status}")
            return
        store.release_holds(cid, now=now)
        engine = make_engine(ctx, f"campaign-job-{job_id}", clock=clock)
        try:
            while True:
                engine.run(cid, until_idle=True, max_seconds=30.0)
                counts = store.state_counts(cid)
                total = sum(n for st, n in counts.items() if st not in ("holdout",)) or 1
                pending = counts.get("queued", 0) + counts.get("sending", 0)
                sink.update(1.0 - pending / total,
                            f"{counts.get('sent', 0) + counts.get('delivered', 0)} sent, "
                            f"{pending} to go", force=True)
                current = store.campaign(cid)
                if stop_if_revoked(ctx, current):
                    status = "cancelled: release revoked"
                    break
                status = current.status
                if status != "sending":
                    break
                now = clock()
                left, due = store.work_left(cid, now=now,
                                            reports_since=engine.reports_since(now))
                if left == 0:
                    engine.finish_campaigns([cid])
                    continue
                wake_at = due if due is not None else now + REPORT_POLL
                if wake_at - now <= SHORT_WAIT:
                    time.sleep(max((wake_at - now).total_seconds(), 0.05))
                    continue
                held = [(at, n) for at, reason, n in store.waiting(cid, now=now)
                        if reason == "quiet hours"]
                stage = (f"waiting: {waiting_sentence(held[0][1], held[0][0], now, tz)}"
                         if held and held[0][0] == wake_at else
                         f"waiting until {when(wake_at, now, tz)}")
                jobs.defer(ctx.sessions, job_id, until=wake_at, stage=stage, now=now)
                return
        finally:
            engine.close()
        jobs.finish(ctx.sessions, job_id, status=JobStatus.DONE, stage=f"campaign {status}",
                    result={"campaign_id": cid, **store.state_counts(cid)})

    return run
