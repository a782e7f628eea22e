"""Campaign pages (merchant, operator), opt-out administration, and the gateway callbacks.

Every route declares its roles with :class:`~cipherseg.platform.deps.Allow`. The two gateway
callbacks are public (Kannel cannot log in) and authenticate otherwise: delivery reports by
an HMAC signature over (message, attempt) in the URL, inbound messages by a secret token;
both are GET requests (Kannel's ``get-url`` with ``send-sender``), the sender's number
arriving in the ``X-Kannel-From`` header, never in a URL or an access log.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.errors import ValidationError
from cipherseg.messaging.store import Campaign
from cipherseg.platform.campaigns import service
from cipherseg.platform.campaigns.chart import delivered_chart
from cipherseg.platform.deps import (
    Allow,
    CampaignApprover,
    CampaignCreator,
    ContextDep,
    IdPath,
    OptOutManager,
    PlatformContext,
    SessionDep,
    client_ip,
)
from cipherseg.platform.models import Segment, User
from cipherseg.platform.routes.common import NOTICES, redirect, render

router = APIRouter(include_in_schema=False)

NOTICES.update({
    "campaign_created": "Campaign saved as a draft. Check the audience, then send it.",
    "campaign_sending": "Sending has started; the report below updates itself.",
    "campaign_pending": "Sent to the operator for approval.",
    "campaign_approved": "Approved; sending has started.",
    "campaign_paused": "Paused; queued messages wait.",
    "campaign_resumed": "Sending again.",
    "campaign_cancelled": "Cancelled; queued messages will not be sent.",
    "opt_out_added": "Opted out.",
    "opt_out_removed": "Opt-out lifted.",
})

GatewayCaller = Annotated[User | None, Depends(Allow.public(
    reason="called by the SMS gateway (Kannel), which cannot log in; authenticated by an "
           "HMAC signature (delivery reports) or a secret token (inbound SMS) instead"))]


def _campaign(ctx: PlatformContext, user: User, campaign_id: int) -> Campaign:
    try:
        return service.campaign_for(ctx, user, campaign_id)
    except LookupError:
        raise HTTPException(404, "no such campaign") from None


def _report_context(ctx: PlatformContext, camp: Campaign) -> dict[str, Any]:
    store = service.store_for(ctx)
    report = store.report(camp.id)
    names = {s.key: s.name for s in camp.segments}
    series = {names.get(s.segment_key, s.segment_key): store.delivery_times(camp.id,
                                                                            s.segment_key)
              for s in report.segments}
    return {"report": report, "chart": delivered_chart(series,
                                                       timezone=ctx.settings.default_timezone),
            "live": camp.status in ("approved", "sending")}


def _detail(request: Request, ctx: PlatformContext, db: Session, user: User, camp: Campaign,
            *, error: str | None = None, status_code: int = 200) -> Response:
    audience = service.audience(ctx, camp) if camp.status in ("draft", "pending_approval") \
        else None
    eligible = sum(a.eligible for a in audience.values()) if audience else None
    previews = {seg.key: service.preview(seg.template, segment_name=seg.name,
                                         shop_name=camp.shop_name,
                                         opt_out_text=camp.opt_out_text)
                for seg in camp.segments}
    return render(request, ctx, "campaigns/detail.html", status_code=status_code, camp=camp,
                  audience=audience, eligible=eligible, previews=previews, error=error,
                  role=user.role, base_path=f"/{user.role}/campaigns",
                  approval=service.campaign_settings(ctx).campaign_approval,
                  job=service.active_job(db, camp.id), **_report_context(ctx, camp))


# ------------------------------------------------------------------------- merchant
@router.get("/merchant/campaigns", response_class=HTMLResponse)
def merchant_list(request: Request, ctx: ContextDep, merchant: CampaignCreator) -> Response:
    """The merchant's campaigns."""
    return render(request, ctx, "campaigns/list.html",
                  campaigns=service.campaigns_for(ctx, merchant), base_path="/merchant/campaigns",
                  role="merchant")


def _compose_context(ctx: PlatformContext, db: Session, merchant: User,
                     job_id: int | None) -> dict[str, Any]:
    releases = service.released_jobs(db, merchant)
    chosen = next((j for j in releases if j.id == job_id), releases[0] if releases else None)
    segments: list[Segment] = []
    if chosen is not None:
        segments = sorted(service.visible_segments(ctx, db, merchant, chosen.id).values(),
                          key=lambda s: -s.size)
    owners = dict(db.execute(select(User.id, User.username).where(
        User.id.in_({j.owner_id for j in releases}))).all())
    return {"releases": releases, "release": chosen, "segments": segments, "owners": owners,
            "opt_out_text": service.campaign_settings(ctx).sms_opt_out_text,
            "sample_name": service.SAMPLE_FIRST_NAME, "sample_phone": service.SAMPLE_MASKED_PHONE,
            "default_template": ('Hi {{ first_name|default("there") }}, {{ segment_name }} '
                                 'members get 20% off at {{ shop_name }} this weekend. '
                                 '{{ opt_out }}')}


@router.get("/merchant/campaigns/new", response_class=HTMLResponse)
def merchant_new(request: Request, ctx: ContextDep, db: SessionDep, merchant: CampaignCreator,
                 job: int | None = None) -> Response:
    """Compose: pick a release, write a message per segment, preview it live."""
    return render(request, ctx, "campaigns/new.html",
                  **_compose_context(ctx, db, merchant, job))


@router.post("/merchant/campaigns/preview", response_class=HTMLResponse)
def merchant_preview(request: Request, ctx: ContextDep, _merchant: CampaignCreator,
                     tpl: Annotated[list[str] | None, Form(max_length=4000)] = None,
                     pos: Annotated[list[int] | None, Form()] = None,
                     segment_name: Annotated[str, Form(max_length=128)] = "",
                     shop_name: Annotated[str, Form(max_length=128)] = "") -> Response:
    """Live preview (htmx): the message for the sample customer, characters, SMS parts.

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
    result = service.preview(text, segment_name=segment_name, shop_name=shop_name,
                             opt_out_text=service.campaign_settings(ctx).sms_opt_out_text)
    return render(request, ctx, "campaigns/_preview.html", p=result)


@router.post("/merchant/campaigns", response_class=HTMLResponse)
def merchant_create(request: Request, ctx: ContextDep, db: SessionDep, merchant: CampaignCreator,
                    job_id: Annotated[int, Form(ge=1, le=2_147_483_647)],
                    name: Annotated[str, Form(max_length=128)] = "",
                    shop_name: Annotated[str, Form(max_length=128)] = "",
                    pos: Annotated[list[int] | None, Form()] = None,
                    tpl: Annotated[list[str] | None, Form()] = None,
                    use: Annotated[list[int] | None, Form()] = None) -> Response:
    """Save a draft campaign: ``pos``/``tpl`` pair each segment with its text; ``use``
    lists the segments chosen."""
    texts = dict(zip(pos or [], tpl or [], strict=False))
    templates = {p: texts.get(p, "")[:4000] for p in (use or [])}
    try:
        cid = service.create_campaign(ctx, db, merchant, name=name, shop_name=shop_name,
                                      job_id=job_id, templates=templates, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        context = _compose_context(ctx, db, merchant, job_id)
        return render(request, ctx, "campaigns/new.html", status_code=400, error=str(exc),
                      form_name=name, form_shop=shop_name, form_templates=texts,
                      form_use=set(use or []), **context)
    return redirect(f"/merchant/campaigns/{cid}?done=campaign_created")


@router.get("/merchant/campaigns/{campaign_id}", response_class=HTMLResponse)
def merchant_detail(request: Request, ctx: ContextDep, db: SessionDep, merchant: CampaignCreator,
                    campaign_id: IdPath) -> Response:
    """A campaign: audience, messages, send button, delivery report and chart."""
    return _detail(request, ctx, db, merchant, _campaign(ctx, merchant, campaign_id))


@router.get("/merchant/campaigns/{campaign_id}/report", response_class=HTMLResponse)
def merchant_report(request: Request, ctx: ContextDep, merchant: CampaignCreator,
                    campaign_id: IdPath) -> Response:
    """The live report (htmx polling)."""
    camp = _campaign(ctx, merchant, campaign_id)
    return render(request, ctx, "campaigns/_report.html", camp=camp,
                  base_path="/merchant/campaigns", **_report_context(ctx, camp))


@router.post("/merchant/campaigns/{campaign_id}/send", response_class=HTMLResponse)
def merchant_send(request: Request, ctx: ContextDep, db: SessionDep, merchant: CampaignCreator,
                  campaign_id: IdPath,
                  confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
    """One click (after confirming): send, or submit for the operator's approval."""
    camp = _campaign(ctx, merchant, campaign_id)
    if confirm != "yes":
        return _detail(request, ctx, db, merchant, camp, status_code=400,
                       error="Tick the confirmation box to send the campaign.")
    try:
        outcome = service.request_send(ctx, db, merchant, camp, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _detail(request, ctx, db, merchant, camp, status_code=409, error=str(exc))
    done = "campaign_pending" if outcome == "pending_approval" else "campaign_sending"
    return redirect(f"/merchant/campaigns/{camp.id}?done={done}")


@router.post("/merchant/campaigns/{campaign_id}/cancel", response_class=HTMLResponse)
def merchant_cancel(request: Request, ctx: ContextDep, db: SessionDep, merchant: CampaignCreator,
                    campaign_id: IdPath) -> Response:
    """Cancel one's own campaign before it has finished."""
    camp = _campaign(ctx, merchant, campaign_id)
    try:
        service.cancel(ctx, db, merchant, camp, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _detail(request, ctx, db, merchant, camp, status_code=409, error=str(exc))
    return redirect(f"/merchant/campaigns/{camp.id}?done=campaign_cancelled")


# ------------------------------------------------------------------------- operator
@router.get("/operator/campaigns", response_class=HTMLResponse)
def operator_list(request: Request, ctx: ContextDep, operator: CampaignApprover) -> Response:
    """Every campaign, those waiting for approval first, and the gateway's callback URLs."""
    camps = service.campaigns_for(ctx, operator)
    camps.sort(key=lambda c: (c.status != "pending_approval", -c.id))
    cs = service.campaign_settings(ctx)
    base = cs.sms_callback_url.rstrip("/")
    return render(request, ctx, "campaigns/list.html", campaigns=camps,
                  base_path="/operator/campaigns", role="operator", gateway=cs.sms_gateway,
                  dlr_url=f"{base}/gateway/kannel/dlr",
                  mo_url=f"{base}/gateway/kannel/mo?token={service.callback_secrets(ctx).mo_token}"
                         "&text=%a")


@router.get("/operator/campaigns/{campaign_id}", response_class=HTMLResponse)
def operator_detail(request: Request, ctx: ContextDep, db: SessionDep, operator: CampaignApprover,
                    campaign_id: IdPath) -> Response:
    """A campaign as the operator sees it (counts and status; approve, pause, resume)."""
    return _detail(request, ctx, db, operator, _campaign(ctx, operator, campaign_id))


@router.get("/operator/campaigns/{campaign_id}/report", response_class=HTMLResponse)
def operator_report(request: Request, ctx: ContextDep, operator: CampaignApprover,
                    campaign_id: IdPath) -> Response:
    """The live report (htmx polling)."""
    camp = _campaign(ctx, operator, campaign_id)
    return render(request, ctx, "campaigns/_report.html", camp=camp,
                  base_path="/operator/campaigns", **_report_context(ctx, camp))


def _operator_action(request: Request, ctx: PlatformContext, db: Session, operator: User,
                     campaign_id: int, action: str) -> Response:
    camp = _campaign(ctx, operator, campaign_id)
    fn = {"approve": service.approve, "pause": service.pause, "resume": service.resume,
          "cancel": service.cancel}[action]
    try:
        fn(ctx, db, operator, camp, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _detail(request, ctx, db, operator, camp, status_code=409, error=str(exc))
    done = {"approve": "campaign_approved", "pause": "campaign_paused",
            "resume": "campaign_resumed", "cancel": "campaign_cancelled"}[action]
    return redirect(f"/operator/campaigns/{camp.id}?done={done}")


@router.post("/operator/campaigns/{campaign_id}/approve", response_class=HTMLResponse)
def operator_approve(request: Request, ctx: ContextDep, db: SessionDep,
                     operator: CampaignApprover, campaign_id: IdPath) -> Response:
    """Approve a campaign waiting for approval; sending starts."""
    return _operator_action(request, ctx, db, operator, campaign_id, "approve")


@router.post("/operator/campaigns/{campaign_id}/pause", response_class=HTMLResponse)
def operator_pause(request: Request, ctx: ContextDep, db: SessionDep, operator: CampaignApprover,
                   campaign_id: IdPath) -> Response:
    """Pause sending."""
    return _operator_action(request, ctx, db, operator, campaign_id, "pause")


@router.post("/operator/campaigns/{campaign_id}/resume", response_class=HTMLResponse)
def operator_resume(request: Request, ctx: ContextDep, db: SessionDep,
                    operator: CampaignApprover, campaign_id: IdPath) -> Response:
    """Resume a paused campaign (or restart the sending job of one whose job failed)."""
    return _operator_action(request, ctx, db, operator, campaign_id, "resume")


@router.post("/operator/campaigns/{campaign_id}/cancel", response_class=HTMLResponse)
def operator_cancel(request: Request, ctx: ContextDep, db: SessionDep,
                    operator: CampaignApprover, campaign_id: IdPath) -> Response:
    """Cancel a campaign that has not finished."""
    return _operator_action(request, ctx, db, operator, campaign_id, "cancel")


# ------------------------------------------------------------------------- opt-outs
@router.get("/opt-outs", response_class=HTMLResponse)
def opt_outs(request: Request, ctx: ContextDep, _user: OptOutManager) -> Response:
    """Opt-out and suppression counts, and the form to change them by number."""
    return render(request, ctx, "campaigns/opt_outs.html",
                  counts=service.store_for(ctx).suppression_counts())


@router.post("/opt-outs", response_class=HTMLResponse)
def opt_outs_change(request: Request, ctx: ContextDep, db: SessionDep, user: OptOutManager,
                    phone: Annotated[str, Form(max_length=40)],
                    kind: Annotated[str, Form(max_length=16)] = "opt_out",
                    action: Annotated[str, Form(max_length=8)] = "add") -> Response:
    """Opt a number out or suppress it (an administrator's action), or lift that."""
    if kind not in ("opt_out", "suppressed") or action not in ("add", "remove"):
        raise HTTPException(400, "kind is opt_out or suppressed; action is add or remove")
    try:
        masked = service.set_suppression(ctx, db, user, phone, kind=kind,
                                         remove=action == "remove", ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return render(request, ctx, "campaigns/opt_outs.html", status_code=400,
                      error=f"{exc}; nothing changed",
                      counts=service.store_for(ctx).suppression_counts())
    what = ("opted out" if kind == "opt_out" else "suppressed") if action == "add" else \
        ("no longer opted out" if kind == "opt_out" else "no longer suppressed")
    return render(request, ctx, "campaigns/opt_outs.html", message=f"{masked} is {what}.",
                  counts=service.store_for(ctx).suppression_counts())


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
    ``X-Kannel-From``. Opt-out keywords (STOP, TD, 退订, …) opt the sender out."""
    res = service.callbacks_for(ctx).inbound(
        sender=request.headers.get("X-Kannel-From", "")[:40],
        text=request.query_params.get("text", "")[:480],
        token=request.query_params.get("token", "")[:128])
    return PlainTextResponse(res.body, status_code=res.status)
