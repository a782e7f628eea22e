"""The sending engine: audiences, queueing, and a resumable worker that sends at a set rate.

Queueing a campaign writes one message per (campaign, customer) — the idempotency key —
with the rules (:mod:`cipherseg.messaging.rules`) applied: customers without consent,
opted out or suppressed, over the frequency cap, or sharing a number already in the campaign
are recorded as skipped with the reason; of the others a random share is held out to
measure the campaign's effect (:mod:`cipherseg.messaging.holdout`). The worker then loops:

1. **reconcile** — messages left ``sending`` by a dead worker (lease expired) are requeued:
   at once for an idempotent gateway (the outbox), otherwise only after a grace period in
   which no delivery report proved them sent;
2. **claim** a batch of due messages (a lease, so two workers never take the same one);
3. check the rules **again** (an opt-out that arrived a second ago counts), hold messages
   whose recipient is in quiet hours until the hours end, render the segment's template;
4. mark the batch ``sending`` and **commit** — only then call the gateway (at most
   ``rate_per_second``, ``concurrency`` requests in flight);
5. record the outcomes: sent/delivered, retry with backoff, failed with the reason, or —
   when the gateway is down — back to the queue without using up an attempt, and pause.

:meth:`SendingEngine.run` keeps ``EngineConfig.pipeline`` batches (three) in flight: when the
oldest is answered, the worker first prepares and hands over the next batch, then records the
answered one, so the sending threads never wait for the database (steps 1–4 and 5 of
neighbouring batches overlap; each batch still commits ``sending`` before its first request).

A crash at any point leaves each message queued (sent again later), ``sending`` (step 1
decides) or finished; none is lost, and none is sent twice unless a non-idempotent gateway
accepted it and then neither answered nor sent a delivery report within the grace period
(the residual risk of at-least-once delivery, see docs/messaging.md).

>>> from datetime import datetime, UTC
>>> from cipherseg.messaging.schema import standalone_tables, memory_engine
>>> from cipherseg.messaging.store import SqlMessageStore, CampaignSegment
>>> from cipherseg.messaging.outbox import OutboxGateway
>>> from cipherseg.messaging.recipients import StaticRecipients, seal_recipient
>>> from cipherseg.pii import PiiKeyring, PiiVault
>>> store = SqlMessageStore(memory_engine(), standalone_tables())
>>> store.create_schema()
>>> vault = PiiVault(PiiKeyring.generate())
>>> people = StaticRecipients([seal_recipient(vault, f"c{i}", f"+86138000000{i:02d}",
...                            consent=i != 3, region="CN") for i in range(5)])
>>> cid = store.create_campaign("Hello", [CampaignSegment("s", "All", "Hi {{ opt_out }}")],
...                             opt_out_text="STOP=stop")
>>> noon = lambda: datetime(2026, 5, 4, 4, 0, tzinfo=UTC)   # 12:00 in Shanghai
>>> engine = SendingEngine(store, OutboxGateway(store), people, clock=noon,
...                        config=EngineConfig(rate_per_second=None))
>>> engine.enqueue(cid, {"s": people})
EnqueueResult(queued=4, skipped=1, already_present=0, holdout=0)
>>> store.transition_campaign(cid, "sending", allowed_from=["draft"])
True
>>> engine.run(cid).delivered
4
>>> store.state_counts(cid) == {"delivered": 4, "skipped": 1}
True
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_all
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cipherseg.clock import utcnow
from cipherseg.errors import ParameterError, ValidationError
from cipherseg.messaging.gateway import (
    Gateway,
    GatewayError,
    OutboundSms,
    SendResult,
    SendStatus,
)
from cipherseg.messaging.holdout import HoldoutPlan
from cipherseg.messaging.recipients import Recipient, RecipientSource
from cipherseg.messaging.rules import Decision, DeliveryPolicy, RetryPolicy
from cipherseg.messaging.sms import SmsCount, count_sms
from cipherseg.messaging.store import (
    Campaign,
    ClaimedMessage,
    EnqueueResult,
    MessageStore,
    NewMessage,
    Outcome,
    new_lease_owner,
)
from cipherseg.messaging.templates import SmsTemplate

log = logging.getLogger("cipherseg.messaging")

#: How often the worker looks for messages a dead worker left ``sending`` (leases last
#: minutes; looking before every batch would only cost a query).
_RECONCILE_EVERY = timedelta(seconds=1)
_STAT_NAMES = {SendStatus.ACCEPTED: "accepted", SendStatus.DELIVERED: "delivered",
               SendStatus.RETRY: "retried", SendStatus.FAILED: "failed",
               SendStatus.DOWN: "down", SendStatus.IN_DOUBT: "in_doubt"}

_AUDIENCE_CHUNK = 500
#: Distinct (campaign, segment, first name) texts kept (a few MB at most); then start over.
_RENDER_CACHE = 20_000


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How the worker sends.

    ``rate_per_second=None`` sends as fast as the gateway takes it; ``lease`` must exceed
    the time one batch takes; ``in_doubt_grace`` is how long to wait for a delivery report
    before an unanswered attempt to a non-idempotent gateway is made again;
    ``report_wait`` is how long a campaign stays open after its last send for delivery
    reports that may ask for a retry (an SMSC rejection); ``pipeline`` is how many batches
    :meth:`SendingEngine.run` keeps in flight.
    """

    rate_per_second: float | None = 20.0
    concurrency: int = 8
    batch_size: int = 200
    lease: timedelta = timedelta(minutes=2)
    in_doubt_grace: timedelta = timedelta(minutes=5)
    report_wait: timedelta = timedelta(seconds=30)
    idle_sleep: float = 0.5
    max_parts: int = 6
    max_down_pause: timedelta = timedelta(seconds=60)
    worker_id: str = "worker"
    pipeline: int = 3
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)

    def __post_init__(self) -> None:
        if self.rate_per_second is not None and self.rate_per_second <= 0:
            raise ParameterError("rate_per_second must be positive (or None for no limit)")
        if self.concurrency < 1 or self.batch_size < 1 or self.max_parts < 1 \
                or self.pipeline < 1:
            raise ParameterError("concurrency, batch_size, max_parts and pipeline must be "
                                 ">= 1")

    @property
    def effective_batch(self) -> int:
        """The batch size, smaller when the rate is low: every batch in flight must be sent
        well within its lease (a quarter of it), or another worker could claim it again."""
        if self.rate_per_second is None:
            return self.batch_size
        fits = int(self.rate_per_second * self.lease.total_seconds() / (4 * self.pipeline))
        return max(1, min(self.batch_size, fits))


@dataclass
class RunStats:
    """What a run of the worker did (counts of outcomes, not of messages)."""

    claimed: int = 0
    accepted: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    down: int = 0
    in_doubt: int = 0
    skipped: int = 0
    held: int = 0
    requeued: int = 0
    seconds: float = 0.0

    def add(self, other: RunStats) -> None:
        for name in ("claimed", "accepted", "delivered", "retried", "failed", "down",
                     "in_doubt", "skipped", "held", "requeued"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True, slots=True)
class AudienceSummary:
    """Who a campaign would reach now: eligible count and skipped counts by reason."""

    total: int
    eligible: int
    skipped: Mapping[str, int]


class RateLimiter:
    """Spaces calls at least ``1/rate`` seconds apart across threads (no bursts).

    >>> RateLimiter(None).acquire()
    0.0
    """

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 0.0 if rate is None else 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for the next slot; returns the seconds waited."""
        if self.interval == 0.0:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)


def evaluate_audience(store: MessageStore, recipients: Iterable[Recipient],
                      policy: DeliveryPolicy, *, now: datetime
                      ) -> Iterator[tuple[Recipient, Decision]]:
    """Apply the rules (without quiet hours) to each recipient, in batches.

    A second recipient with a number already seen is skipped as a duplicate.
    """
    cap = policy.frequency_cap
    seen: set[str] = set()
    batch: list[Recipient] = []

    def decide(chunk: list[Recipient]) -> Iterator[tuple[Recipient, Decision]]:
        kinds = store.suppression_kinds(r.phone_key for r in chunk)
        recent = (store.recent_sends((r.phone_key for r in chunk), since=now - cap.period)
                  if cap is not None else {})
        for r in chunk:
            k = kinds.get(r.phone_key, set())
            d = policy.decide(consent=r.consent, timezone=r.timezone, now=now,
                              opted_out="opt_out" in k, suppressed="suppressed" in k,
                              recent_sends=recent.get(r.phone_key, 0), check_time=False)
            if d.action == "send":
                if r.phone_key in seen:
                    d = Decision("skip", "duplicate number in campaign")
                seen.add(r.phone_key)
            yield r, d

    for r in recipients:
        batch.append(r)
        if len(batch) >= _AUDIENCE_CHUNK:
            yield from decide(batch)
            batch = []
    if batch:
        yield from decide(batch)


def summarise_audience(store: MessageStore, recipients: Iterable[Recipient],
                       policy: DeliveryPolicy, *, now: datetime | None = None
                       ) -> AudienceSummary:
    """Audience size after consent, opt-outs, suppression, caps and duplicates."""
    total = eligible = 0
    reasons: Counter[str] = Counter()
    for _r, d in evaluate_audience(store, recipients, policy, now=now or utcnow()):
        total += 1
        if d.action == "skip":
            reasons[d.reason] += 1
        else:
            eligible += 1
    return AudienceSummary(total, eligible, dict(reasons))


def enqueue_campaign(store: MessageStore, campaign_id: int,
                     audiences: Mapping[str, Iterable[Recipient]], policy: DeliveryPolicy,
                     *, now: datetime | None = None, holdout: HoldoutPlan | None = None,
                     blocked: Mapping[str, str] | None = None) -> EnqueueResult:
    """Queue one message per recipient of each segment, recording skipped ones with their
    reason and holding out ``holdout.share`` of the sendable ones (never sent; their later
    purchases measure the effect). Every member of a segment in ``blocked`` is recorded
    skipped with the reason given (e.g. an audience below the minimum size). Idempotent:
    queueing the same campaign again adds only customers that were not in it."""
    camp = store.campaign(campaign_id)
    for key in audiences:
        camp.segment(key)
    now = now or utcnow()
    blocked = blocked or {}
    totals = [0, 0, 0, 0]
    for key, people in audiences.items():
        decided = evaluate_audience(store, people, policy, now=now)
        res = store.enqueue(campaign_id, key, (
            _new_message(key, r, d, holdout, blocked.get(key)) for r, d in decided), now=now)
        totals[0] += res.queued
        totals[1] += res.skipped
        totals[2] += res.already_present
        totals[3] += res.holdout
    return EnqueueResult(*totals)


def _new_message(segment_key: str, r: Recipient, d: Decision, holdout: HoldoutPlan | None,
                 blocked: str | None) -> NewMessage:
    if blocked is not None:
        return NewMessage(r.ref, r.phone_key, "skipped", blocked, r.customer_id)
    if d.action == "skip":
        return NewMessage(r.ref, r.phone_key, "skipped", d.reason or None, r.customer_id)
    arm = holdout.arm(segment_key, r.ref) if holdout is not None else "treated"
    return NewMessage(r.ref, r.phone_key, "holdout" if arm == "holdout" else "queued", None,
                      r.customer_id, arm=arm)


@dataclass
class _Prepared:
    campaign: Campaign
    templates: dict[str, SmsTemplate | ValidationError]


@dataclass
class _Batch:
    """Messages marked ``sending`` and handed to the sending threads."""

    outbound: list[OutboundSms]
    futures: list[Future[SendResult]]


def _gateway_trouble(batch: _Batch) -> bool:
    """Whether a finished batch met a gateway that is down or refused the configuration
    (then the worker records it and pauses before claiming more)."""
    for fut in batch.futures:
        exc = fut.exception()
        if exc is not None or fut.result().status == SendStatus.DOWN:
            return True
    return False


class SendingEngine:
    """Queues campaigns and sends their messages through a gateway.

    Parameters
    ----------
    store:
        Persistence (:class:`~cipherseg.messaging.store.SqlMessageStore`).
    gateway:
        The adapter that hands messages to the SMS network.
    recipients:
        Looks customers up at send time (sealed number, consent, time zone, first name).
    config:
        Rate, concurrency, leases, retry policy and delivery rules.
    clock:
        Returns the current aware UTC time (tests pass their own).
    """

    def __init__(self, store: MessageStore, gateway: Gateway, recipients: RecipientSource, *,
                 config: EngineConfig | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.gateway = gateway
        self.recipients = recipients
        self.config = config or EngineConfig()
        self.clock = clock
        self._limiter = RateLimiter(self.config.rate_per_second)
        self._pool: ThreadPoolExecutor | None = None
        self._prepared: dict[int, _Prepared] = {}
        self._down_streak = 0
        self._down_until: datetime | None = None
        self._reconciled: datetime | None = None
        self._rendered: dict[tuple[int, str, str], tuple[str, SmsCount] | str] = {}

    # ------------------------------------------------------------------ queueing
    def enqueue(self, campaign_id: int, audiences: Mapping[str, Iterable[Recipient]], *,
                holdout: HoldoutPlan | None = None) -> EnqueueResult:
        """Queue a campaign with this engine's rules (see :func:`enqueue_campaign`)."""
        return enqueue_campaign(self.store, campaign_id, audiences, self.config.policy,
                                now=self.clock(), holdout=holdout)

    # ------------------------------------------------------------------ sending
    def _campaign(self, campaign_id: int) -> _Prepared:
        prep = self._prepared.get(campaign_id)
        if prep is None:
            camp = self.store.campaign(campaign_id)
            templates: dict[str, SmsTemplate | ValidationError] = {}
            for seg in camp.segments:
                try:
                    templates[seg.key] = SmsTemplate(seg.template)
                except ValidationError as exc:  # stored before a rule was added
                    templates[seg.key] = exc
            prep = _Prepared(camp, templates)
            self._prepared[campaign_id] = prep
        return prep

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.concurrency,
                                            thread_name_prefix="cipherseg-send")
        return self._pool

    def close(self) -> None:
        """Stop the sending threads and close the gateway."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.gateway.close()

    def _send_one(self, sms: OutboundSms) -> SendResult:
        self._limiter.acquire()
        try:
            return self.gateway.send(sms)
        except GatewayError:
            raise
        except Exception as exc:  # an adapter bug must not lose the message
            log.warning("gateway %s raised %s for message %d; treating as in doubt",
                        self.gateway.name, type(exc).__name__, sms.message_id)
            return SendResult(SendStatus.IN_DOUBT, type(exc).__name__)

    def render(self, msg: ClaimedMessage, person: Recipient) -> tuple[str, SmsCount] | str:
        """The text of one message and its length, or why it cannot be sent.

        A text depends only on the segment and the first name (templates see nothing else
        and their filters are pure), so it is rendered once per (campaign, segment, first
        name): Jinja2 and counting the parts took ~120 µs a message on the worker's thread,
        time the sending threads waited for the interpreter.
        """
        key = (msg.campaign_id, msg.segment_key, person.first_name or "")
        done = self._rendered.get(key)
        if done is None:
            if len(self._rendered) >= _RENDER_CACHE:
                self._rendered.clear()
            done = self._rendered[key] = self._render(msg, person)
        return done

    def _render(self, msg: ClaimedMessage, person: Recipient) -> tuple[str, SmsCount] | str:
        prep = self._campaign(msg.campaign_id)
        camp = prep.campaign
        try:
            seg = camp.segment(msg.segment_key)
        except ValidationError as exc:
            return f"template error: {exc}"
        template = prep.templates.get(msg.segment_key)
        if not isinstance(template, SmsTemplate):
            return f"template refused: {template}"
        line = camp.opt_out_for(seg.key)
        try:
            text = template.render(first_name=person.first_name or "", segment_name=seg.name,
                                   shop_name=camp.shop_name, opt_out=line)
        except ValidationError as exc:
            return f"template error: {exc}"
        if not text:
            return "the rendered message is empty"
        if line and line not in text:  # render appends it; never send a message without it
            return "the opt-out line is missing from the rendered message"
        count = count_sms(text)
        if count.parts > self.config.max_parts:
            return f"too long: {count.parts} SMS parts (at most {self.config.max_parts})"
        return text, count

    def _prepare(self, campaign_id: int | None) -> tuple[RunStats, _Batch | None]:
        """Reconcile, claim, check the rules, render, mark ``sending`` and hand the batch to
        the sending threads (steps 1–4 of the module docstring)."""
        cfg = self.config
        stats = RunStats()
        now = self.clock()
        grace = timedelta(0) if self.gateway.idempotent else cfg.in_doubt_grace
        if self._reconciled is None or now - self._reconciled >= _RECONCILE_EVERY \
                or now < self._reconciled:
            stats.requeued = self.store.reconcile(now=now, grace=grace,
                                                  campaign_id=campaign_id)
            self._reconciled = now
        if self._down_until is not None and now < self._down_until:
            return stats, None
        owner = new_lease_owner(cfg.worker_id)
        claimed = self.store.claim(owner, now=now, limit=cfg.effective_batch, lease=cfg.lease,
                                   campaign_id=campaign_id)
        stats.claimed = len(claimed)
        if not claimed:
            return stats, None
        people = self.recipients.lookup([c.customer_ref for c in claimed])
        keys = {c.phone_key for c in claimed}
        kinds = self.store.suppression_kinds(keys)
        cap = cfg.policy.frequency_cap
        recent = (self.store.recent_sends(keys, since=now - cap.period,
                                          exclude_ids=[c.id for c in claimed])
                  if cap is not None else {})
        in_batch: Counter[str] = Counter()
        skips: list[tuple[int, str]] = []
        holds: list[tuple[int, datetime, str]] = []
        ready: list[tuple[ClaimedMessage, Recipient, str, SmsCount, str | None]] = []
        for msg in claimed:
            person = people.get(msg.customer_ref)
            if person is None:
                skips.append((msg.id, "customer no longer exists"))
                continue
            k = kinds.get(msg.phone_key, set())
            d = cfg.policy.decide(consent=person.consent, timezone=person.timezone, now=now,
                                  opted_out="opt_out" in k, suppressed="suppressed" in k,
                                  recent_sends=recent.get(msg.phone_key, 0)
                                  + in_batch[msg.phone_key])
            if d.action == "skip":
                skips.append((msg.id, d.reason))
                continue
            if d.action == "hold":
                holds.append((msg.id, d.hold_until or now, d.reason))
                continue
            rendered = self.render(msg, person)
            if isinstance(rendered, str):
                skips.append((msg.id, rendered))
                continue
            in_batch[msg.phone_key] += 1
            ready.append((msg, person, *rendered,
                          self._campaign(msg.campaign_id).campaign.sender))
        stats.skipped, stats.held = len(skips), len(holds)
        self.store.settle(owner, skips=skips, holds=holds, now=now)
        if not ready:
            return stats, None
        marked = self.store.begin_attempts(
            owner, [r[0] for r in ready], {r[0].id: (r[3].encoding, r[3].parts) for r in ready},
            now=now)
        outbound = [OutboundSms(msg.id, msg.attempts + 1, person.phone, text, count.encoding,
                                count.parts, sender)
                    for msg, person, text, count, sender in ready if msg.id in marked]
        pool = self._executor()
        return stats, _Batch(outbound, [pool.submit(self._send_one, sms) for sms in outbound])

    def _finish(self, batch: _Batch) -> RunStats:
        """Wait for a batch's answers and record them (step 5); raises
        :class:`GatewayError` after recording when the gateway refused the configuration."""
        cfg = self.config
        stats = RunStats()
        outcomes: list[Outcome] = []
        fatal: GatewayError | None = None
        for sms, fut in zip(batch.outbound, batch.futures, strict=True):
            try:
                res = fut.result()
            except GatewayError as exc:
                fatal = fatal or exc
                # Refused before sending: back to the queue without using an attempt.
                res = SendResult(SendStatus.DOWN, "gateway refused the configuration")
            outcomes.append(Outcome(sms.message_id, sms.attempt, res.status, res.detail))
        for o in outcomes:
            name = _STAT_NAMES[o.status]
            setattr(stats, name, getattr(stats, name) + 1)
        if stats.in_doubt:
            detail = next(o.detail for o in outcomes if o.status == SendStatus.IN_DOUBT)
            log.warning("gateway %s: %d messages in doubt (%s); they are sent again only if "
                        "no report proves them sent within the grace period",
                        self.gateway.name, stats.in_doubt, detail)
        done = self.clock()
        down_until = None
        if stats.down:
            self._down_streak += 1
            pause = min(timedelta(seconds=2 ** min(self._down_streak - 1, 16)),
                        cfg.max_down_pause)
            down_until = self._down_until = done + pause
            log.warning("gateway %s is down (%d messages back in the queue); pausing %.0f s",
                        self.gateway.name, stats.down, pause.total_seconds())
        elif outcomes:
            self._down_streak, self._down_until = 0, None
        self.store.record_outcomes(outcomes, retry=cfg.retry, now=done, down_until=down_until)
        if fatal is not None:
            raise fatal
        return stats

    def step(self, campaign_id: int | None = None) -> RunStats:
        """Reconcile, then claim, check, send and record one batch (see module docstring).

        Raises :class:`GatewayError` (after putting the batch back in the queue) when the
        gateway refuses the configuration.
        """
        stats, batch = self._prepare(campaign_id)
        if batch is not None:
            stats.add(self._finish(batch))
        return stats

    def run(self, campaign_id: int | None = None, *, stop: threading.Event | None = None,
            max_seconds: float | None = None, until_idle: bool = False) -> RunStats:
        """Send until the campaign has nothing queued or in flight (then end it with the
        status that says how it went), it stops being ``sending`` (paused, cancelled),
        ``stop`` is set, or ``max_seconds`` pass. With ``until_idle`` return as soon as
        nothing is due (held messages, retries waiting for their backoff, reports awaited):
        the caller decides how to wait (the platform's job sleeps until the next due time).
        With ``campaign_id=None`` serve every sending campaign until stopped.

        Up to ``config.pipeline`` batches are in flight at once (module docstring)."""
        cfg = self.config
        stop = stop or threading.Event()
        total = RunStats()
        start = time.monotonic()
        inflight: deque[_Batch] = deque()
        try:
            while not stop.is_set():
                if max_seconds is not None and time.monotonic() - start > max_seconds:
                    break
                claimed = False
                while len(inflight) < cfg.pipeline:
                    stats, batch = self._prepare(campaign_id)
                    total.add(stats)
                    claimed = claimed or bool(stats.claimed)
                    if batch is not None:
                        inflight.append(batch)
                    elif not stats.claimed:
                        break
                if inflight:
                    head = inflight.popleft()
                    wait_for_all(head.futures)
                    if not stop.is_set() and not _gateway_trouble(head):
                        # The next batch reaches the sending threads before this one is
                        # written down, so they never wait for the database.
                        stats, batch = self._prepare(campaign_id)
                        total.add(stats)
                        if batch is not None:
                            inflight.append(batch)
                    total.add(self._finish(head))
                    continue
                if claimed:
                    continue
                now = self.clock()
                if campaign_id is None:
                    self.finish_campaigns(self.store.sending_campaigns())
                    stop.wait(cfg.idle_sleep)
                    continue
                since = self.reports_since(now)
                left, due = self.store.work_left(campaign_id, now=now, reports_since=since)
                if left == 0:
                    self.store.finish_if_done(campaign_id, now=now, reports_since=since)
                    break
                if until_idle or self.store.campaign(campaign_id).status != "sending":
                    break
                wait = cfg.idle_sleep
                if due is not None and due > now:
                    wait = min(wait, (due - now).total_seconds())
                if self._down_until is not None:
                    wait = max(wait, min((self._down_until - now).total_seconds(), 5.0))
                stop.wait(max(wait, 0.01))
        finally:
            fatal: GatewayError | None = None
            while inflight:  # record what is in flight, whatever stopped the loop
                try:
                    total.add(self._finish(inflight.popleft()))
                except GatewayError as exc:
                    fatal = fatal or exc
            total.seconds = time.monotonic() - start
            if fatal is not None:
                raise fatal
        return total

    def reports_since(self, now: datetime) -> datetime | None:
        """Messages sent after this may still get a report asking for a retry (``None``:
        the gateway reports nothing later)."""
        return None if self.gateway.idempotent else now - self.config.report_wait

    def finish_campaigns(self, campaign_ids: Iterable[int]) -> list[int]:
        """Mark the given sending campaigns completed when nothing is left; returns those."""
        now = self.clock()
        since = self.reports_since(now)
        return [c for c in campaign_ids
                if self.store.finish_if_done(c, now=now, reports_since=since)]
