"""Campaign pages (merchant, operator, data owner), opt-out administration, and the gateway
callbacks.

Every route declares its roles with :class:`~cipherseg.platform.deps.Allow`. The gateway
callbacks are public (Kannel cannot log in) and authenticate otherwise: delivery reports by
an HMAC signature over (message, attempt) in the URL, inbound messages by a secret token;
both are GET requests (Kannel's ``get-url`` with ``send-sender``), the sender's number
arriving in the ``X-Kannel-From`` header, never in a URL or an access log. The ping answers
the operator page's check that the public base URL leads to this platform.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.messaging.store import Campaign
from cipherseg.platform import audit
from cipherseg.platform.campaigns import lift, service
from cipherseg.platform.campaigns.audience import release_audiences, releases_for
from cipherseg.platform.campaigns.chart import delivered_chart, lift_chart
from cipherseg.platform.campaigns.context import campaign_settings, store_for
from cipherseg.platform.campaigns.gateway_check import PING_PATH, gateway_checks, ping_answer
from cipherseg.platform.campaigns.status import LABELS, StatusView, describe
from cipherseg.platform.csv_export import csv_response
from cipherseg.platform.deps import (
    Allow,
    CampaignApprover,
    CampaignCreator,
    ContextDep,
    CustomerReader,
    IdPath,
    OptOutManager,
    PlatformContext,
    SegmentReleaser,
    SessionDep,
    client_ip,
)
from cipherseg.platform.models import User
from cipherseg.platform.routes.common import NOTICES, redirect, render
from cipherseg.platform.services import grants

router = APIRouter(include_in_schema=False)

NOTICES.update({
    "campaign_created": "Campaign saved as a draft. Check the audience, then send it.",
    "campaign_starting": "The campaign is queued for sending; the status below says what "
                         "is happening.",
    "campaign_scheduled": "The campaign is scheduled; it starts at the time shown below.",
    "campaign_pending": "Sent to the operator for approval.",
    "campaign_approved": "Approved; the status below says when messages go out.",
    "campaign_paused": "Paused; queued messages wait.",
    "campaign_resumed": "Sending again.",
    "campaign_cancelled": "Cancelled before any message went out; nothing was sent.",
    "campaign_partly_sent": "Cancelled; messages already handed to the gateway cannot be "
                            "recalled, the others will not be sent.",
    "campaign_retried": "Failed messages are queued again (each customer still gets at most "
                        "one message).",
})

GatewayCaller = Annotated[User | None, Depends(Allow.public(
    reason="called by the SMS gateway (Kannel), which cannot log in; authenticated by an "
           "HMAC signature (delivery reports) or a secret token (inbound SMS) instead; the "
           "ping answers only a signature of the nonce it is given"))]


def _campaign(ctx: PlatformContext, user: User, campaign_id: int, view: str) -> Campaign:
    try:
        return service.campaign_for(ctx, user, campaign_id, view=view)
    except LookupError:
        raise HTTPException(404, "no such campaign") from None


def _base(view: str) -> str:
    """A side's campaign pages: ``merchant``, ``operator`` or ``owner``."""
    return f"/{view}/campaigns"


def _status(ctx: PlatformContext, camp: Campaign, report: Any = None) -> StatusView:
    store = store_for(ctx)
    now = utcnow()
    report = report or store.report(camp.id, now=now)
    waiting = store.waiting(camp.id, now=now) if camp.status == "sending" else []
    return describe(camp, report, waiting, now, ctx.settings.default_timezone)


def _report_context(ctx: PlatformContext, camp: Campaign, view: str,
                    viewer: User | None = None) -> dict[str, Any]:
    store = store_for(ctx)
    report = store.report(camp.id)
    names = {s.key: s.name for s in camp.segments}
    series = {names.get(s.segment_key, s.segment_key): store.delivery_times(camp.id,
                                                                            s.segment_key)
              for s in report.segments if s.to_send}
    context: dict[str, Any] = {
        "report": report, "status": _status(ctx, camp, report),
        "chart": delivered_chart(series, timezone=ctx.settings.default_timezone),
        "live": camp.status in ("approved", "starting", "sending", "scheduled"),
        "base_path": _base(view), "camp": camp, "role": view}
    if view in ("merchant", "owner"):
        measured = (lift.owner_report(ctx, camp, owner_id=viewer.id if viewer else None)
                    if view == "owner" else lift.merchant_report(ctx, camp))
        rows = [(s.name, s.result.conversion_treated, s.result.conversion_holdout,
                 s.result.conversion_lift.estimate, s.result.conversion_lift.low,
                 s.result.conversion_lift.high)
                for s in measured.segments if s.result is not None]
        context.update(lift=measured, lift_svg=lift_chart(rows) if rows else None)
    return context


def _detail(request: Request, ctx: PlatformContext, db: Session, view: str, camp: Campaign,
            *, error: str | None = None, status_code: int = 200,
            viewer: User | None = None) -> Response:
    audiences = service.campaign_audiences(ctx, camp) \
        if camp.status in ("draft", "pending_approval") else None
    eligible = sum(a.eligible for a in audiences.values()) if audiences else None
    share = float(camp.settings.get("holdout_share", 0.0))
    previews = {seg.key: service.preview(ctx, seg.template, segment_name=seg.name,
                                         shop_name=camp.shop_name)
                for seg in camp.segments}
    return render(request, ctx, "campaigns/detail.html", status_code=status_code,
                  audiences=audiences, eligible=eligible, previews=previews, error=error,
                  holdout_share=share,
                  holdout_expected=sum(a.expected_holdout(share) for a in audiences.values())
                  if audiences else None,
                  approval=campaign_settings(ctx).campaign_approval,
                  timezone=ctx.settings.default_timezone,
                  job=service.active_job(db, camp.id),
                  **_report_context(ctx, camp, view, viewer))


def _list(request: Request, ctx: PlatformContext, user: User, view: str,
          **extra: Any) -> Response:
    camps = service.campaigns_for(ctx, user, view=view)
    if view == "operator":
        camps.sort(key=lambda c: (c.status != "pending_approval", -c.id))
    rows = [(c, _status(ctx, c)) for c in camps]
    return render(request, ctx, "campaigns/list.html", rows=rows, base_path=_base(view),
                  role=view, **extra)


# ------------------------------------------------------------------------- merchant
@router.get("/merchant/campaigns", response_class=HTMLResponse)
def merchant_list(request: Request, ctx: ContextDep, merchant: CampaignCreator) -> Response:
    """The merchant's campaigns and how each is going."""
    return _list(request, ctx, merchant, "merchant")


def _compose_context(ctx: PlatformContext, db: Session, user: User,
                     job_id: int | None) -> dict[str, Any]:
    releases = releases_for(db, user)
    chosen = next((j for j in releases if j.id == job_id), releases[0] if releases else None)
    cs = campaign_settings(ctx)
    segments = []
    if chosen is not None:
        segments = release_audiences(ctx, db, user, chosen.id,
                                     cs.policy(ctx.settings.default_timezone))
    owners = {j.id: grants.owners_label(db, j) for j in releases}
    return {"releases": releases, "release": chosen, "segments": segments, "owners": owners,
            "opt_out_lines": cs.opt_out_lines(), "sample_phone": service.SAMPLE_MASKED_PHONE,
            "default_template": service.default_template(ctx),
            "holdout_percent": round(cs.campaign_holdout * 100),
            "window_days": cs.lift_window_days, "min_size": ctx.settings.min_segment_size}


@router.get("/merchant/campaigns/new", response_class=HTMLResponse)
def merchant_new(request: Request, ctx: ContextDep, db: SessionDep, merchant: CampaignCreator,
                 job: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None
                 ) -> Response:
    """Compose: pick a release, write a message per segment, preview it live."""
    return render(request, ctx, "campaigns/new.html",
                  **_compose_context(ctx, db, merchant, job))


@router.post("/merchant/campaigns/preview", response_class=HTMLResponse)
def merchant_preview(request: Request, ctx: ContextDep, _merchant: CampaignCreator,
                     tpl: Annotated[list[str] | None, Form(max_length=4000)] = None,
                     pos: Annotated[list[int] | None, Form()] = None,
                     segment_name: Annotated[str, Form(max_length=128)] = "",
                     shop_name: Annotated[str, Form(max_length=128)] = "") -> Response:
    """Live preview (htmx): the message for the sample customer of its language, its
    opt-out line, characters, SMS parts, and warnings.

    From the compose form htmx sends every segment's text (``pos``/``tpl`` pairs); the
    ``HX-Trigger`` header names the textarea (``tpl-<position>``) being previewed.
    """
    texts = tpl or [""]
    text = texts[0]
    trigger = request.headers.get("HX-Trigger", "")
    if pos and trigger.startswith("tpl-") and trigger[4:].isdigit():
        wanted = int(trigger[4:])
        if wanted in pos and pos.index(wanted) < len(texts):
            text = texts[pos.index(wanted)]
    result = service.preview(ctx, text, segment_name=segment_name, shop_name=shop_name)
    return render(request, ctx, "campaigns/_preview.html", p=result)


@router.post("/merchant/campaigns", response_class=HTMLResponse)
def merchant_create(request: Request, ctx: ContextDep, db: SessionDep, merchant: CampaignCreator,
                    job_id: Annotated[int, Form(ge=1, le=2_147_483_647)],
                    name: Annotated[str, Form(max_length=128)] = "",
                    shop_name: Annotated[str, Form(max_length=128)] = "",
                    holdout_percent: Annotated[float | None, Form(ge=0, le=50)] = None,
                    pos: Annotated[list[int] | None, Form()] = None,
                    tpl: Annotated[list[str] | None, Form()] = None,
                    use: Annotated[list[int] | None, Form()] = None) -> Response:
    """Save a draft campaign: ``pos``/``tpl`` pair each segment with its text; ``use``
    lists the segments chosen."""
    texts = dict(zip(pos or [], tpl or [], strict=False))
    templates = {p: texts.get(p, "")[:4000] for p in (use or [])}
    try:
        cid = service.create_campaign(ctx, db, merchant, name=name, shop_name=shop_name,
                                      job_id=job_id, templates=templates,
                                      holdout_percent=holdout_percent, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        context = _compose_context(ctx, db, merchant, job_id)
        if holdout_percent is not None:
            context["holdout_percent"] = holdout_percent
        return render(request, ctx, "campaigns/new.html", status_code=400, error=str(exc),
                      form_name=name, form_shop=shop_name, form_templates=texts,
                      form_use=set(use or []), **context)
    return redirect(f"/merchant/campaigns/{cid}?done=campaign_created")


@router.get("/merchant/campaigns/{campaign_id}", response_class=HTMLResponse)
def merchant_detail(request: Request, ctx: ContextDep, db: SessionDep, merchant: CampaignCreator,
                    campaign_id: IdPath) -> Response:
    """A campaign: audience, messages, send, status, delivery report, chart and lift."""
    return _detail(request, ctx, db, "merchant", _campaign(ctx, merchant, campaign_id, "merchant"))


def _send_at(ctx: PlatformContext, when: str, send_date: str, send_time: str
             ) -> datetime | None:
    if when != "later":
        return None
    try:
        day = date.fromisoformat(send_date)
        clock = time.fromisoformat(send_time)
    except ValueError:
        raise ValidationError("give the date and time to send at (e.g. 2026-12-24 and "
                              "10:00)") from None
    local = datetime.combine(day, clock, tzinfo=ZoneInfo(ctx.settings.default_timezone))
    if local <= utcnow():
        raise ValidationError("that time has passed; choose a later one or send now")
    return local


@router.post("/merchant/campaigns/{campaign_id}/send", response_class=HTMLResponse)
def merchant_send(request: Request, ctx: ContextDep, db: SessionDep, merchant: CampaignCreator,
                  campaign_id: IdPath,
                  confirm: Annotated[str, Form(max_length=8)] = "",
                  when: Annotated[str, Form(max_length=8)] = "now",
                  send_date: Annotated[str, Form(max_length=10)] = "",
                  send_time: Annotated[str, Form(max_length=8)] = "") -> Response:
    """One click (after confirming): send now or at a set time, or submit for approval."""
    camp = _campaign(ctx, merchant, campaign_id, "merchant")
    if confirm != "yes":
        return _detail(request, ctx, db, "merchant", camp, status_code=400,
                       error="Tick the confirmation box to send the campaign.")
    try:
        at = _send_at(ctx, when, send_date, send_time)
        outcome = service.request_send(ctx, db, merchant, camp, send_at=at,
                                       ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _detail(request, ctx, db, "merchant", camp, status_code=409, error=str(exc))
    done = {"pending_approval": "campaign_pending", "scheduled": "campaign_scheduled"}.get(
        outcome, "campaign_starting")
    return redirect(f"/merchant/campaigns/{camp.id}?done={done}")


# ------------------------------------------------------------------------- shared
def _report(request: Request, ctx: PlatformContext, user: User, view: str,
            campaign_id: int) -> Response:
    camp = _campaign(ctx, user, campaign_id, view)
    return render(request, ctx, "campaigns/_report.html",
                  **_report_context(ctx, camp, view, user))


def _report_csv(request: Request, ctx: PlatformContext, db: Session, user: User, view: str,
                campaign_id: int) -> Response:
    camp = _campaign(ctx, user, campaign_id, view)
    report = store_for(ctx).report(camp.id)
    rows: list[list[Any]] = [["segment", "members", "unreachable", "audience", "held out",
                              "to send", "sent", "delivered", "failed", "skipped since",
                              "waiting", "opted out since", "top failure reasons"]]
    for s in [*report.segments, report.total]:
        rows.append([s.segment_name, s.members, s.unreachable, s.audience, s.holdout,
                     s.to_send, s.reached, s.delivered, s.failed, s.skipped, s.waiting,
                     s.opted_out, "; ".join(f"{n} {r}" for r, n in s.top_failures())])
    audit.record(db, audit.AuditAction.EXPORT, actor=user, object_type="campaign_report",
                 object_id=camp.id, ip=client_ip(request))
    db.commit()
    return _csv(rows, f"campaign-{camp.id}-report.csv")


def _csv(rows: list[list[Any]], filename: str) -> Response:
    return csv_response(rows, filename)


def _cancel_confirm(request: Request, ctx: PlatformContext, user: User, view: str,
                    campaign_id: int) -> Response:
    camp = _campaign(ctx, user, campaign_id, view)
    report = store_for(ctx).report(camp.id).total
    return render(request, ctx, "campaigns/cancel.html", camp=camp, report=report,
                  base_path=_base(view), cancellable=camp.status in service.CANCELLABLE,
                  label=LABELS.get(camp.status, camp.status))


def _cancel(request: Request, ctx: PlatformContext, db: Session, user: User, view: str,
            campaign_id: int, confirm: str) -> Response:
    camp = _campaign(ctx, user, campaign_id, view)
    if confirm != "yes":
        return redirect(f"{_base(view)}/{camp.id}/cancel")
    try:
        status = service.cancel(ctx, db, user, camp, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _detail(request, ctx, db, view, camp, status_code=409, error=str(exc))
    done = "campaign_partly_sent" if status == "partly_sent" else "campaign_cancelled"
    return redirect(f"{_base(view)}/{camp.id}?done={done}")


@router.get("/merchant/campaigns/{campaign_id}/report", response_class=HTMLResponse)
def merchant_report(request: Request, ctx: ContextDep, merchant: CampaignCreator,
                    campaign_id: IdPath) -> Response:
    """The live status and report (htmx polling)."""
    return _report(request, ctx, merchant, "merchant", campaign_id)


@router.get("/merchant/campaigns/{campaign_id}/report.csv")
def merchant_report_csv(request: Request, ctx: ContextDep, db: SessionDep,
                        merchant: CampaignCreator, campaign_id: IdPath) -> Response:
    """The per-segment report as CSV (counts and reasons; no customer)."""
    return _report_csv(request, ctx, db, merchant, "merchant", campaign_id)


@router.get("/merchant/campaigns/{campaign_id}/cancel", response_class=HTMLResponse)
def merchant_cancel_confirm(request: Request, ctx: ContextDep, merchant: CampaignCreator,
                            campaign_id: IdPath) -> Response:
    """Ask before cancelling: what will and will not happen."""
    return _cancel_confirm(request, ctx, merchant, "merchant", campaign_id)


@router.post("/merchant/campaigns/{campaign_id}/cancel", response_class=HTMLResponse)
def merchant_cancel(request: Request, ctx: ContextDep, db: SessionDep,
                    merchant: CampaignCreator, campaign_id: IdPath,
                    confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
    """Cancel one's own campaign that has not finished (after confirming)."""
    return _cancel(request, ctx, db, merchant, "merchant", campaign_id, confirm)


# ------------------------------------------------------------------------- operator
@router.get("/operator/campaigns", response_class=HTMLResponse)
def operator_list(request: Request, ctx: ContextDep, operator: CampaignApprover) -> Response:
    """Every campaign, those waiting for approval first; the gateway check, its callback
    URLs and test messages."""
    return _list(request, ctx, operator, "operator", **_gateway_context(ctx))


def _gateway_context(ctx: PlatformContext) -> dict[str, Any]:
    cs = campaign_settings(ctx)
    return {"gateway": cs.sms_gateway, "checks": gateway_checks(ctx),
            "urls": service.callback_urls(ctx), "tests": service.test_messages(ctx),
            "test_default": "Test message from cipherseg."}


@router.post("/operator/gateway/test", response_class=HTMLResponse)
def operator_test(request: Request, ctx: ContextDep, db: SessionDep, operator: CampaignApprover,
                  phone: Annotated[str, Form(max_length=40)],
                  text: Annotated[str, Form(max_length=1000)] = "") -> Response:
    """Send one test message to a number through the gateway and the rules."""
    try:
        result = service.send_test(ctx, db, operator, phone, text, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _list(request, ctx, operator, "operator", status_code=400,
                     test_error=f"{exc}; nothing was sent", **_gateway_context(ctx))
    return _list(request, ctx, operator, "operator", test_result=result, **_gateway_context(ctx))


@router.get("/operator/campaigns/{campaign_id}", response_class=HTMLResponse)
def operator_detail(request: Request, ctx: ContextDep, db: SessionDep, operator: CampaignApprover,
                    campaign_id: IdPath) -> Response:
    """A campaign as the operator sees it (counts, reasons; approve, pause, retry)."""
    return _detail(request, ctx, db, "operator", _campaign(ctx, operator, campaign_id, "operator"))


def _operator_action(request: Request, ctx: PlatformContext, db: Session, operator: User,
                     campaign_id: int, action: str) -> Response:
    camp = _campaign(ctx, operator, campaign_id, "operator")
    fn = {"approve": service.approve, "pause": service.pause, "resume": service.resume,
          "retry": service.retry_failed}[action]
    try:
        fn(ctx, db, operator, camp, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _detail(request, ctx, db, "operator", camp, status_code=409, error=str(exc))
    done = {"approve": "campaign_approved", "pause": "campaign_paused",
            "resume": "campaign_resumed", "retry": "campaign_retried"}[action]
    return redirect(f"/operator/campaigns/{camp.id}?done={done}")


@router.get("/operator/campaigns/{campaign_id}/report", response_class=HTMLResponse)
def operator_report(request: Request, ctx: ContextDep, operator: CampaignApprover,
                    campaign_id: IdPath) -> Response:
    """The live status and report (htmx polling)."""
    return _report(request, ctx, operator, "operator", campaign_id)


@router.get("/operator/campaigns/{campaign_id}/report.csv")
def operator_report_csv(request: Request, ctx: ContextDep, db: SessionDep,
                        operator: CampaignApprover, campaign_id: IdPath) -> Response:
    """The per-segment report as CSV (counts and reasons; no customer)."""
    return _report_csv(request, ctx, db, operator, "operator", campaign_id)


@router.get("/operator/campaigns/{campaign_id}/cancel", response_class=HTMLResponse)
def operator_cancel_confirm(request: Request, ctx: ContextDep, operator: CampaignApprover,
                            campaign_id: IdPath) -> Response:
    """Ask before cancelling: what will and will not happen."""
    return _cancel_confirm(request, ctx, operator, "operator", campaign_id)


@router.post("/operator/campaigns/{campaign_id}/cancel", response_class=HTMLResponse)
def operator_cancel(request: Request, ctx: ContextDep, db: SessionDep,
                    operator: CampaignApprover, campaign_id: IdPath,
                    confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
    """Cancel a campaign that has not finished (after confirming)."""
    return _cancel(request, ctx, db, operator, "operator", campaign_id, confirm)


@router.post("/operator/campaigns/{campaign_id}/approve", response_class=HTMLResponse)
def operator_approve(request: Request, ctx: ContextDep, db: SessionDep,
                     operator: CampaignApprover, campaign_id: IdPath) -> Response:
    """Approve a campaign waiting for approval; it starts (now or at its set time)."""
    return _operator_action(request, ctx, db, operator, campaign_id, "approve")


@router.post("/operator/campaigns/{campaign_id}/pause", response_class=HTMLResponse)
def operator_pause(request: Request, ctx: ContextDep, db: SessionDep, operator: CampaignApprover,
                   campaign_id: IdPath) -> Response:
    """Pause sending."""
    return _operator_action(request, ctx, db, operator, campaign_id, "pause")


@router.post("/operator/campaigns/{campaign_id}/resume", response_class=HTMLResponse)
def operator_resume(request: Request, ctx: ContextDep, db: SessionDep,
                    operator: CampaignApprover, campaign_id: IdPath) -> Response:
    """Resume a paused campaign (or restart the sending job of one that has none)."""
    return _operator_action(request, ctx, db, operator, campaign_id, "resume")


@router.post("/operator/campaigns/{campaign_id}/retry", response_class=HTMLResponse)
def operator_retry(request: Request, ctx: ContextDep, db: SessionDep, operator: CampaignApprover,
                   campaign_id: IdPath,
                   confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
    """Send the failed messages again (after confirming; no customer gets two)."""
    if confirm != "yes":
        camp = _campaign(ctx, operator, campaign_id, "operator")
        return _detail(request, ctx, db, "operator", camp, status_code=400,
                       error="Tick the box to confirm that the failed messages should be "
                             "sent again.")
    return _operator_action(request, ctx, db, operator, campaign_id, "retry")


# ------------------------------------------------------------------------- owner
@router.get("/owner/campaigns", response_class=HTMLResponse)
def owner_list(request: Request, ctx: ContextDep, owner: SegmentReleaser) -> Response:
    """Campaigns sent to this owner's customers."""
    return _list(request, ctx, owner, "owner")


@router.get("/owner/campaigns/{campaign_id}", response_class=HTMLResponse)
def owner_detail(request: Request, ctx: ContextDep, db: SessionDep, owner: SegmentReleaser,
                 campaign_id: IdPath) -> Response:
    """A campaign sent to this owner's customers: counts and the exact lift."""
    return _detail(request, ctx, db, "owner", _campaign(ctx, owner, campaign_id, "owner"),
                   viewer=owner)


@router.get("/owner/campaigns/{campaign_id}/report", response_class=HTMLResponse)
def owner_report(request: Request, ctx: ContextDep, owner: SegmentReleaser,
                 campaign_id: IdPath) -> Response:
    """The live status and report (htmx polling)."""
    return _report(request, ctx, owner, "owner", campaign_id)


@router.get("/owner/campaigns/{campaign_id}/report.csv")
def owner_report_csv(request: Request, ctx: ContextDep, db: SessionDep,
                     owner: SegmentReleaser, campaign_id: IdPath) -> Response:
    """The per-segment report as CSV (counts and reasons)."""
    return _report_csv(request, ctx, db, owner, "owner", campaign_id)


@router.get("/owner/campaigns/{campaign_id}/lift.csv")
def owner_lift_csv(request: Request, ctx: ContextDep, db: SessionDep, owner: CustomerReader,
                   campaign_id: IdPath) -> Response:
    """The owner's own detail: each customer's pseudonym, group, purchases and spend in
    the measurement window (audited)."""
    camp = _campaign(ctx, owner, campaign_id, "owner")
    rows: list[list[Any]] = [["pseudonym", "segment", "group", "purchases", "spend"]]
    rows += lift.owner_detail(ctx, camp, owner_id=owner.id)
    audit.record(db, audit.AuditAction.EXPORT, actor=owner, object_type="campaign_lift",
                 object_id=camp.id,
                 ip=client_ip(request), detail={"rows": len(rows) - 1})
    db.commit()
    return _csv(rows, f"campaign-{camp.id}-lift.csv")


# ------------------------------------------------------------------------- opt-outs
def _opt_outs(request: Request, ctx: PlatformContext, status_code: int = 200,
              **extra: Any) -> Response:
    return render(request, ctx, "campaigns/opt_outs.html", status_code=status_code,
                  counts=store_for(ctx).suppression_counts(), **extra)


@router.get("/opt-outs", response_class=HTMLResponse)
def opt_outs(request: Request, ctx: ContextDep, _user: OptOutManager) -> Response:
    """Opt-out and suppression counts, and the form to change them by number."""
    return _opt_outs(request, ctx)


@router.post("/opt-outs", response_class=HTMLResponse)
def opt_outs_change(request: Request, ctx: ContextDep, db: SessionDep, user: OptOutManager,
                    phone: Annotated[str, Form(max_length=40)],
                    kind: Annotated[str, Form(max_length=16)] = "opt_out",
                    action: Annotated[str, Form(max_length=8)] = "add",
                    reason: Annotated[str, Form(max_length=200)] = "") -> Response:
    """Opt a number out or suppress it, or lift that — with a reason, audited. A customer's
    own opt-out is refused here (only the customer lifts it)."""
    if kind not in ("opt_out", "suppressed") or action not in ("add", "remove"):
        raise HTTPException(400, "kind is opt_out or suppressed; action is add or remove")
    try:
        message = service.set_suppression(ctx, db, user, phone, kind=kind,
                                          remove=action == "remove", reason=reason,
                                          ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        text = str(exc).rstrip(".")
        if not text.lower().endswith("nothing changed"):
            text += "; nothing changed"
        return _opt_outs(request, ctx, 409 if isinstance(exc, service.CustomersOwnOptOut)
                         else 400, error=text + ".")
    return _opt_outs(request, ctx, message=message)


# ------------------------------------------------------------------------- gateway
@router.get("/gateway/kannel/dlr", response_class=PlainTextResponse)
def kannel_dlr(request: Request, ctx: ContextDep, _caller: GatewayCaller) -> Response:
    """Delivery report from Kannel's dlr-url (``m``, ``a``, ``k``, ``s``)."""
    params = {k: v for k, v in request.query_params.items() if k in ("m", "a", "k", "s")}
    res = service.callbacks_for(ctx).delivery_report(params)
    return PlainTextResponse(res.body, status_code=res.status)


@router.get("/gateway/kannel/mo", response_class=PlainTextResponse)
def kannel_mo(request: Request, ctx: ContextDep, _caller: GatewayCaller) -> Response:
    """Inbound SMS from Kannel's get-url: ``token`` and ``text`` in the query, the sender in
    ``X-Kannel-From``. Opt-out keywords (STOP, TD, 退订, …) opt the sender out; opt-in
    keywords (START, 订阅) lift the sender's own opt-out."""
    res = service.callbacks_for(ctx).inbound(
        sender=request.headers.get("X-Kannel-From", "")[:40],
        text=request.query_params.get("text", "")[:480],
        token=request.query_params.get("token", "")[:128])
    return PlainTextResponse(res.body, status_code=res.status)


@router.get(PING_PATH, response_class=PlainTextResponse)
def kannel_ping(ctx: ContextDep, _caller: GatewayCaller,
                n: Annotated[str, Query(min_length=8, max_length=64,
                                        pattern="^[0-9a-f]+$")]) -> Response:
    """This platform's signature of a nonce: proves a URL leads here (gateway check)."""
    return PlainTextResponse(ping_answer(ctx, n))
