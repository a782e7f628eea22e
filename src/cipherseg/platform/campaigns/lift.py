"""Did the campaign work? Treated against holdout, from the owner's later transactions.

The measurement window starts on the day sending started (in the platform's time zone)
and lasts ``lift_window_days`` (default 14). Once it has ended, each segment's customers
who were sendable when the campaign was queued are compared: those who got the message
(treated — whether or not it was delivered: intention to treat) against those randomly
held out, on conversion (bought at least once in the window) and spend per customer
(:mod:`cipherseg.analytics.lift`: estimates, 95 % intervals, optional ε-DP noise).

What each party sees:

* the **merchant** — aggregates only, and only for a segment whose treated and holdout
  groups both have at least the minimum segment size; with ``CIPHERSEG_LIFT_EPSILON`` set,
  the converters, spend and spend² of each group carry Laplace noise and ε is stated. The
  release is computed once, when the window has ended, and kept: viewing again shows the
  same numbers (fresh noise per view would average away);
* the **data owner** — the exact aggregates (its own data, no noise, no suppression) and
  its own detail: each customer's pseudonym, group, purchases and spend in the window
  (CSV, audited).

Customers erased since the campaign drop out of both groups (their message rows go with
them); the groups stay random.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import select

from cipherseg.analytics.lift import (
    ArmOutcome,
    LiftResult,
    dp_noise_variance,
    dp_release,
    estimate_lift,
)
from cipherseg.clock import utcnow
from cipherseg.messaging.store import Campaign
from cipherseg.platform import purchases
from cipherseg.platform.campaigns.context import campaign_settings, store_for
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import MESSAGING, Customer, Transaction


@dataclass(frozen=True)
class SegmentLift:
    """One segment's comparison, or why it is not shown."""

    key: str
    name: str
    treated: int
    holdout: int
    result: LiftResult | None = None
    withheld: str | None = None


@dataclass(frozen=True)
class LiftReport:
    """The lift of a campaign as one party sees it."""

    state: str                     # not_started | no_holdout | measuring | ready
    window_start: date | None = None
    window_end: date | None = None     # exclusive
    segments: list[SegmentLift] = field(default_factory=list)
    epsilon: float | None = None
    spend_cap: float | None = None
    computed_at: str | None = None

    @property
    def last_day(self) -> date | None:
        return None if self.window_end is None else self.window_end - timedelta(days=1)


def window(ctx: PlatformContext, camp: Campaign) -> tuple[date, date] | None:
    """``[first day, day after the last)`` of the measurement window, or ``None`` if the
    campaign never started sending."""
    if camp.started_at is None:
        return None
    start = camp.started_at.astimezone(ZoneInfo(ctx.settings.default_timezone)).date()
    days = int(camp.settings.get("lift_window_days",
                                 campaign_settings(ctx).lift_window_days))
    return start, start + timedelta(days=days)


def _today(ctx: PlatformContext, now: datetime) -> date:
    return now.astimezone(ZoneInfo(ctx.settings.default_timezone)).date()


def spend_by_customer(ctx: PlatformContext, camp: Campaign, start: date, end: date, *,
                      owner_id: int | None = None
                      ) -> dict[tuple[str, str], dict[int, tuple[int, float]]]:
    """``{(segment key, arm): {customer id: (purchases, spend)}}`` in the window; with
    ``owner_id``, only that owner's customers (a joint campaign reaches several owners'
    customers, and each owner measures only its own)."""
    m, t = MESSAGING.messages, Transaction.__table__
    q = (select(m.c.segment_key, m.c.arm, m.c.customer_id)
         .where(m.c.campaign_id == camp.id, m.c.arm.is_not(None),
                m.c.customer_id.is_not(None)))
    if owner_id is not None:
        q = q.where(m.c.customer_id.in_(select(Customer.id)
                                        .where(Customer.owner_id == owner_id)))
    out: dict[tuple[str, str], dict[int, tuple[int, float]]] = defaultdict(dict)
    with ctx.engine.connect() as conn:
        arms = [(str(key), str(arm), int(customer)) for key, arm, customer in conn.execute(q)]
        ids = sorted({c for _, _, c in arms})
        # purchases are encrypted at rest: decrypted here, per customer, into aggregates
        totals: dict[int, tuple[int, float]] = {}
        for i in range(0, len(ids), 500):
            rows = conn.execute(select(t.c.customer_id, t.c.owner_id, t.c.external_id,
                                       t.c.payload_ct)
                                .where(t.c.customer_id.in_(ids[i:i + 500])))
            for customer, owner, external_id, blob in rows:
                day, amount, _category = purchases.unseal(ctx.vault, owner, external_id, blob)
                if start <= day < end:
                    n, total = totals.get(customer, (0, 0.0))
                    totals[customer] = (n + 1, total + amount)
    for key, arm, customer in arms:
        out[(key, arm)][customer] = totals.get(customer, (0, 0.0))
    return out


def _arms(ctx: PlatformContext, camp: Campaign, now: datetime, owner_id: int | None = None
          ) -> tuple[LiftReport, dict[tuple[str, str], np.ndarray]]:
    bounds = window(ctx, camp)
    if bounds is None:
        return LiftReport("not_started"), {}
    start, end = bounds
    if not camp.settings.get("holdout", {}).get("share"):
        return LiftReport("no_holdout", start, end), {}
    if _today(ctx, now) < end:
        return LiftReport("measuring", start, end), {}
    spend = {k: np.array([s for _p, s in v.values()], dtype=float)
             for k, v in spend_by_customer(ctx, camp, start, end,
                                           owner_id=owner_id).items()}
    return LiftReport("ready", start, end), spend


def _compare(key: str, name: str, treated: ArmOutcome, holdout: ArmOutcome,
             epsilon: float | None = None, cap: float | None = None) -> SegmentLift:
    if treated.n < 2 or holdout.n < 2:
        return SegmentLift(key, name, treated.n, holdout.n,
                           withheld="too few customers in a group to compare")
    noise = dp_noise_variance(epsilon, cap) if epsilon and cap else None
    return SegmentLift(key, name, treated.n, holdout.n,
                       estimate_lift(treated, holdout, noise=noise, epsilon=epsilon))


def owner_report(ctx: PlatformContext, camp: Campaign, *, now: datetime | None = None,
                 owner_id: int | None = None) -> LiftReport:
    """Exact aggregates for the data owner (``owner_id``: of its own customers only),
    computed now."""
    head, spend = _arms(ctx, camp, now or utcnow(), owner_id)
    if head.state != "ready":
        return head
    empty = np.zeros(0)
    segments = [_compare(seg.key, seg.name,
                         ArmOutcome.from_spend(spend.get((seg.key, "treated"), empty)),
                         ArmOutcome.from_spend(spend.get((seg.key, "holdout"), empty)))
                for seg in camp.segments]
    return LiftReport("ready", head.window_start, head.window_end, segments)


def merchant_report(ctx: PlatformContext, camp: Campaign, *,
                    now: datetime | None = None) -> LiftReport:
    """The merchant's view: aggregates of large enough groups, noisy if configured,
    computed once when the window has ended and kept."""
    head, spend = _arms(ctx, camp, now or utcnow())
    if head.state != "ready":
        return head
    release = camp.settings.get("lift_release")
    if not isinstance(release, dict):
        release = _release(ctx, camp, spend)
        stored = store_for(ctx).update_settings(camp.id, {"lift_release": release},
                                                keep_existing=True)
        release = stored["lift_release"]
    eps, cap = release.get("epsilon"), release.get("spend_cap")
    segments = []
    for seg in camp.segments:
        cell = release["segments"].get(seg.key)
        if cell is None:
            continue
        if "withheld" in cell:
            segments.append(SegmentLift(seg.key, seg.name, cell["treated_n"],
                                        cell["holdout_n"], withheld=cell["withheld"]))
            continue
        segments.append(_compare(seg.key, seg.name, ArmOutcome.from_dict(cell["treated"]),
                                 ArmOutcome.from_dict(cell["holdout"]), eps, cap))
    return LiftReport("ready", head.window_start, head.window_end, segments, eps, cap,
                      release.get("computed_at"))


def _release(ctx: PlatformContext, camp: Campaign,
             spend: dict[tuple[str, str], np.ndarray]) -> dict[str, Any]:
    cs = campaign_settings(ctx)
    eps, cap = cs.lift_epsilon, cs.lift_spend_cap
    min_size = ctx.settings.min_segment_size
    empty = np.zeros(0)
    cells: dict[str, Any] = {}
    for seg in camp.segments:
        t_spend = spend.get((seg.key, "treated"), empty)
        h_spend = spend.get((seg.key, "holdout"), empty)
        n_t, n_h = int(t_spend.size), int(h_spend.size)
        if min(n_t, n_h) < min_size:
            cells[seg.key] = {"treated_n": n_t, "holdout_n": n_h, "withheld": (
                f"fewer than {min_size} customers in a group (the minimum segment size); "
                "hold out a larger share or target a larger segment to measure it")}
            continue
        arms = {}
        for arm, values in (("treated", t_spend), ("holdout", h_spend)):
            outcome = ArmOutcome.from_spend(values, cap=cap if eps else None)
            if eps:
                outcome = dp_release(outcome, epsilon=eps, spend_cap=cap)
            arms[arm] = outcome.as_dict()
        cells[seg.key] = {"treated_n": n_t, "holdout_n": n_h, **arms}
    return {"segments": cells, "epsilon": eps, "spend_cap": cap if eps else None,
            "computed_at": utcnow().isoformat(timespec="seconds")}


def owner_detail(ctx: PlatformContext, camp: Campaign, *,
                 owner_id: int | None = None) -> list[list[Any]]:
    """The owner's own detail: one row per customer of the comparison (pseudonym,
    segment, group, purchases, spend in the window)."""
    bounds = window(ctx, camp)
    if bounds is None:
        return []
    names = {s.key: s.name for s in camp.segments}
    rows: list[list[Any]] = []
    by_customer = spend_by_customer(ctx, camp, *bounds, owner_id=owner_id)
    ids = sorted({c for v in by_customer.values() for c in v})
    pseudonyms: dict[int, str] = {}
    with ctx.sessions() as s:
        for i in range(0, len(ids), 500):
            pseudonyms.update({int(c): str(p) for c, p in s.execute(
                select(Customer.id, Customer.pseudonym)
                .where(Customer.id.in_(ids[i:i + 500])))})
    for (key, arm), customers in sorted(by_customer.items()):
        for cid, (n_bought, spend) in sorted(customers.items()):
            rows.append([pseudonyms.get(cid, ""), names.get(key, key), arm, n_bought,
                         f"{spend:.2f}"])
    return rows
