"""Campaigns on the platform: composing, sending (now, later, or after approval), the
operator's actions, test messages, opt-outs by staff, and the gateway callbacks.

Who sees what (docs/architecture.md §1): the merchant composes campaigns for the segments
released to it and sees audience sizes, delivery counts and failure reasons — never a
customer or a number; previews use a made-up sample customer. The operator sees campaigns,
counts, statuses and reasons, approves, retries failures and runs the gateway. The data
owner sees the campaigns sent to its customers and their measured effect. Phone numbers
stay AES-GCM ciphertexts in ``customers`` and are opened only inside the gateway adapter.

Irreversible actions are guarded: a customer's own opt-out (an SMS keyword) cannot be
lifted by staff — only the customer's opt-in (START, 订阅) lifts it; every manual opt-out
or suppression needs a reason and is audited; cancelling needs a confirmation; and every
message says what actually happened ("was not opted out; nothing changed").
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.messaging import (
    Gateway,
    OutboxGateway,
    SendingEngine,
    evaluate_audience,
    seal_recipient,
    vault_opener,
)
from cipherseg.messaging.callbacks import MessagingCallbacks
from cipherseg.messaging.kannel import KannelGateway
from cipherseg.messaging.language import LANGUAGES, region_language, template_language
from cipherseg.messaging.store import Campaign, CampaignSegment, NewMessage
from cipherseg.messaging.templates import SmsTemplate
from cipherseg.pii import mask_phone, normalise_phone
from cipherseg.platform import audit, jobs
from cipherseg.platform.campaigns.audience import (
    SegmentAudience,
    audience,
    released_job,
    segment_key,
    segment_owner_ids,
    visible_segments,
)
from cipherseg.platform.campaigns.context import (
    callback_secrets,
    campaign_settings,
    ctx_cache,
    store_for,
)
from cipherseg.platform.campaigns.context import configure as configure  # the service's API
from cipherseg.platform.campaigns.recipients import PlatformRecipients, WithExtra
from cipherseg.platform.campaigns.runner import JOB_KIND, make_engine
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import JOB_PENDING, Job, JobStatus, User
from cipherseg.platform.services import grants

log = logging.getLogger("cipherseg.platform.campaigns")

#: The made-up customer every preview is rendered for (never a real one).
SAMPLE_MASKED_PHONE = "138****5678"
#: The default message per language: no internal segment name, a name only if known.
DEFAULT_TEMPLATES = {
    "zh": "{{ first_name }}您好！{{ shop_name }}本周末全场8折，欢迎光临。{{ opt_out }}",
    "en": 'Hi {{ first_name|default("there") }}, enjoy 20% off at {{ shop_name }} this '
          "weekend. {{ opt_out }}",
}
#: Statuses from which a campaign can still be cancelled.
CANCELLABLE = ("draft", "pending_approval", "scheduled", "approved", "starting", "sending",
               "paused")


# ------------------------------------------------------------------------- campaigns
def _owner_ids(camp: Campaign) -> set[int]:
    ids = camp.settings.get("owner_ids") or [camp.settings.get("owner_id")]
    return {int(i) for i in ids if i is not None}


def campaign_for(ctx: PlatformContext, user: User, campaign_id: int, *,
                 view: str | None = None) -> Campaign:
    """A campaign the user may see: a merchant its own, an owner those sent to its
    customers, the operator every one (test messages are not campaigns). ``view`` is the
    page's side (``merchant``, ``operator``, ``owner``): what the route's permission
    allows, whatever the user's role."""
    try:
        camp = store_for(ctx).campaign(campaign_id)
    except ValidationError:
        raise LookupError(campaign_id) from None
    view = view or user.role
    visible = not camp.settings.get("test") and (
        view == "operator"
        or (view == "merchant" and camp.created_by == user.username)
        or (view == "owner" and user.id in _owner_ids(camp)))
    if not visible:
        raise LookupError(campaign_id)
    return camp


def campaigns_for(ctx: PlatformContext, user: User, *,
                  view: str | None = None) -> list[Campaign]:
    """Campaigns the user may see on the ``view``'s side (see :func:`campaign_for`)."""
    view = view or user.role
    camps = [c for c in store_for(ctx).campaigns(limit=200) if not c.settings.get("test")]
    if view == "merchant":
        camps = [c for c in camps if c.created_by == user.username]
    elif view == "owner":
        camps = [c for c in camps if user.id in _owner_ids(c) and c.status != "draft"]
    return camps


def default_template(ctx: PlatformContext) -> str:
    """The starting text of a new message, in the region's language."""
    return DEFAULT_TEMPLATES[region_language(ctx.settings.default_region)]


def preview(ctx: PlatformContext, template: str, *, segment_name: str,
            shop_name: str) -> dict[str, Any]:
    """Render a template for the sample customer of its language: text, length, the
    language and its opt-out line, warnings; ``error`` says what is wrong, if anything."""
    lang = template_language(template or "", ctx.settings.default_region)
    line = campaign_settings(ctx).opt_out_lines()[lang]
    language = LANGUAGES[lang]
    try:
        tpl = SmsTemplate(template)
        p = tpl.preview(masked_phone=SAMPLE_MASKED_PHONE, first_name=language.sample_name,
                        segment_name=segment_name, shop_name=shop_name, opt_out=line)
    except ValidationError as exc:
        return {"error": str(exc), "language": language, "opt_out": line}
    warnings = []
    if "segment_name" in tpl.placeholders:
        warnings.append(f"Customers will read the segment's internal name \"{segment_name}\"; "
                        "remove {{ segment_name }} unless that is meant for them.")
    if "shop_name" in tpl.placeholders and not shop_name.strip():
        warnings.append("The shop name is empty; fill it in above.")
    if "opt_out" not in tpl.placeholders:
        warnings.append(f"The opt-out line \"{line}\" is added at the end.")
    return {"error": None, "text": p.text, "to": p.to, "count": p.count,
            "language": language, "opt_out": line, "warnings": warnings,
            "sample_name": language.sample_name}


def create_campaign(ctx: PlatformContext, db: Session, merchant: User, *, name: str,
                    shop_name: str, job_id: int, templates: Mapping[int, str],
                    holdout_percent: float | None = None, ip: str | None = None) -> int:
    """Store a draft: one template per chosen segment of a release, each with the opt-out
    line of its language; the holdout share to measure the effect."""
    segs = visible_segments(ctx, db, merchant, job_id)   # first: is it released to them?
    if not name.strip():
        raise ValidationError("give the campaign a name")
    if not shop_name.strip():
        raise ValidationError("give the shop name customers know you by; messages use it "
                              "as {{ shop_name }}")
    if not templates:
        raise ValidationError("choose at least one segment and write its message")
    cs = campaign_settings(ctx)
    share = cs.campaign_holdout if holdout_percent is None else holdout_percent / 100.0
    if not 0.0 <= share <= 0.5:
        raise ValidationError("hold out between 0 % and 50 % of the audience")
    policy = cs.policy(ctx.settings.default_timezone)
    lines = cs.opt_out_lines()
    chosen: list[CampaignSegment] = []
    for position, text in sorted(templates.items()):
        seg = segs.get(position)
        if seg is None:
            raise ValidationError("that segment is not available to you")
        try:
            SmsTemplate(text)
        except ValidationError as exc:
            raise ValidationError(f"segment '{seg.name}': {exc}") from exc
        key = segment_key(job_id, position)
        reach = audience(ctx, policy, key, seg.name)
        if not reach.targetable:
            raise ValidationError(f"segment '{seg.name}': {reach.refusal}")
        lang = template_language(text, ctx.settings.default_region)
        chosen.append(CampaignSegment(key, seg.name, text, lang, lines[lang]))
    job = released_job(db, merchant, job_id)
    cid = store_for(ctx).create_campaign(
        name.strip()[:128], chosen, shop_name=shop_name.strip()[:128],
        opt_out_text=lines[region_language(ctx.settings.default_region)],
        sender=cs.sms_sender, created_by=merchant.username,
        settings={"job_id": job_id, "owner_id": job.owner_id,
                  "owner_ids": segment_owner_ids(job), "holdout_share": share,
                  "lift_window_days": cs.lift_window_days})
    audit.record(db, audit.AuditAction.CAMPAIGN_CREATE, actor=merchant,
                 object_type="campaign", object_id=cid, ip=ip,
                 detail={"segments": len(chosen), "release": job_id, "holdout_share": share})
    db.commit()
    return cid


def campaign_audiences(ctx: PlatformContext, camp: Campaign) -> dict[str, SegmentAudience]:
    """Per segment: who the campaign would reach now (the one audience definition);
    nobody if the release is no longer granted to the campaign's merchant."""
    policy = campaign_settings(ctx).policy(ctx.settings.default_timezone)
    with ctx.sessions() as db:
        granted = campaign_granted(db, camp)
    return {seg.key: audience(ctx, policy, seg.key, seg.name) if granted else
            SegmentAudience(seg.key, seg.name, 0, 0, {}, ctx.settings.min_segment_size)
            for seg in camp.segments}


def campaign_granted(db: Session, camp: Campaign) -> bool:
    """Whether the release a campaign targets is still granted to the merchant who wrote it
    (a campaign's audience is empty otherwise)."""
    job_id = (camp.settings or {}).get("job_id")
    merchant = db.scalar(select(User).where(User.username == camp.created_by))
    return job_id is not None and merchant is not None and \
        grants.is_granted(db, int(job_id), merchant)


def _require_grant(db: Session, camp: Campaign) -> None:
    if not campaign_granted(db, camp):
        raise ValidationError("the data owner revoked the release this campaign targets; it "
                              "cannot be sent")


def stop_revoked_campaigns(ctx: PlatformContext, db: Session, job_id: int,
                           merchant: User) -> list[int]:
    """Revocation listener: cancel ``merchant``'s unfinished campaigns on release
    ``job_id`` and skip their queued messages (sent ones stay in the reports). Runs in the
    revoking transaction for the audit events; the message store writes on its own."""
    store = store_for(ctx)
    stopped = []
    for camp in store.campaigns(limit=10_000, status=CANCELLABLE):
        if camp.created_by != merchant.username or camp.settings.get("job_id") != job_id:
            continue
        status = store.cancel(camp.id, allowed_from=CANCELLABLE,
                              reason="release revoked by the data owner")
        job = active_job(db, camp.id)
        if job is not None and job.status == JobStatus.QUEUED:
            job.not_before = None      # a sleeping job wakes, sees the cancellation, ends
        if status is not None:
            audit.record(db, audit.AuditAction.CAMPAIGN_STOPPED, actor=None,
                         actor_name="release revoked", object_type="campaign",
                         object_id=camp.id, detail={"merchant": merchant.username,
                                                    "release": job_id, "status": status})
            stopped.append(camp.id)
    return stopped


def stop_if_revoked(ctx: PlatformContext, camp: Campaign) -> bool:
    """Cancel a campaign whose release is no longer granted to its merchant (queued
    messages skipped, sent ones stay reported); whether it was stopped."""
    with ctx.sessions() as s:
        granted = campaign_granted(s, camp)
    if granted or camp.status not in CANCELLABLE:
        return False
    store_for(ctx).cancel(camp.id, allowed_from=CANCELLABLE,
                          reason="release revoked by the data owner")
    return True


def active_job(db: Session, campaign_id: int) -> Job | None:
    """The queued (possibly sleeping) or running sending job of a campaign, if any."""
    for job in db.scalars(select(Job).where(Job.kind == JOB_KIND,
                                            Job.status.in_([s.value for s in JOB_PENDING]))):
        if (job.params or {}).get("campaign_id") == campaign_id:
            return job
    return None


def start_sending(db: Session, campaign_id: int, user: User, *,
                  not_before: datetime | None = None) -> Job:
    """Queue the background job that sends a campaign (at most one per campaign), or wake
    the one that sleeps."""
    job = active_job(db, campaign_id)
    if job is None:
        job = jobs.enqueue(db, JOB_KIND, owner=user, params={"campaign_id": campaign_id},
                           not_before=not_before)
    elif job.status == JobStatus.QUEUED:
        job.not_before = not_before
    return job


def _check_send_at(send_at: datetime | None, now: datetime) -> datetime | None:
    if send_at is None:
        return None
    if send_at.tzinfo is None:
        raise ValidationError("the send time needs a time zone")
    if send_at <= now + timedelta(minutes=1):
        return None
    if send_at > now + timedelta(days=90):
        raise ValidationError("a send can be scheduled at most 90 days ahead")
    return send_at


def request_send(ctx: PlatformContext, db: Session, merchant: User, camp: Campaign, *,
                 send_at: datetime | None = None, ip: str | None = None) -> str:
    """The merchant's click: send now or at ``send_at``, or ask the operator first if
    approval is on. Returns the new status. Refuses a segment whose audience fell below
    the minimum size since the draft was saved."""
    store = store_for(ctx)
    _require_grant(db, camp)
    now = utcnow()
    when = _check_send_at(send_at, now)
    for reach in campaign_audiences(ctx, camp).values():
        if not reach.targetable:
            raise ValidationError(f"segment '{reach.name}': {reach.refusal}")
    if campaign_settings(ctx).campaign_approval:
        if not store.transition_campaign(camp.id, "pending_approval", allowed_from=["draft"],
                                         scheduled_at=when):
            raise ValidationError("only a draft campaign can be sent")
        audit.record(db, audit.AuditAction.CAMPAIGN_SUBMIT, actor=merchant, object_type="campaign",
                     object_id=camp.id, ip=ip,
                     detail={"send_at": when.isoformat() if when else None})
        db.commit()
        return "pending_approval"
    status = "scheduled" if when else "starting"
    if not store.transition_campaign(camp.id, status, allowed_from=["draft"],
                                     scheduled_at=when):
        raise ValidationError("only a draft campaign can be sent")
    start_sending(db, camp.id, merchant, not_before=when)
    audit.record(db, audit.AuditAction.CAMPAIGN_SEND, actor=merchant, object_type="campaign",
                 object_id=camp.id, ip=ip,
                 detail={"send_at": when.isoformat() if when else None})
    db.commit()
    return status


def approve(ctx: PlatformContext, db: Session, operator: User, camp: Campaign, *,
            ip: str | None = None) -> None:
    """The operator approves a campaign waiting for approval: it starts now, or at the
    time the merchant chose."""
    store = store_for(ctx)
    _require_grant(db, camp)
    when = camp.scheduled_at if camp.scheduled_at and camp.scheduled_at > utcnow() else None
    if not store.transition_campaign(camp.id, "scheduled" if when else "starting",
                                     allowed_from=["pending_approval"],
                                     approved_by=operator.username):
        raise ValidationError("this campaign is not waiting for approval")
    start_sending(db, camp.id, operator, not_before=when)
    audit.record(db, audit.AuditAction.CAMPAIGN_APPROVE, actor=operator, object_type="campaign",
                 object_id=camp.id, ip=ip)
    db.commit()


def pause(ctx: PlatformContext, db: Session, user: User, camp: Campaign, *,
          ip: str | None = None) -> None:
    """Stop sending (messages stay queued)."""
    if not store_for(ctx).transition_campaign(camp.id, "paused", allowed_from=["sending"]):
        raise ValidationError("only a campaign that is sending can be paused")
    audit.record(db, audit.AuditAction.CAMPAIGN_PAUSE, actor=user, object_type="campaign",
                 object_id=camp.id, ip=ip)
    db.commit()


def resume(ctx: PlatformContext, db: Session, user: User, camp: Campaign, *,
           ip: str | None = None) -> None:
    """Continue a paused campaign, or restart the job of a sending one that has none."""
    store = store_for(ctx)
    if not store.transition_campaign(camp.id, "sending", allowed_from=["paused", "sending"]):
        raise ValidationError("only a paused or sending campaign can be resumed")
    start_sending(db, camp.id, user)
    audit.record(db, audit.AuditAction.CAMPAIGN_RESUME, actor=user, object_type="campaign",
                 object_id=camp.id, ip=ip)
    db.commit()


def cancel(ctx: PlatformContext, db: Session, user: User, camp: Campaign, *,
           ip: str | None = None) -> str:
    """Cancel a campaign that has not finished: queued messages are skipped. Returns the
    new status: ``cancelled`` (nothing had gone out) or ``partly_sent``."""
    status = store_for(ctx).cancel(camp.id, allowed_from=CANCELLABLE)
    if status is None:
        raise ValidationError("this campaign has already finished; nothing was cancelled")
    job = active_job(db, camp.id)
    if job is not None and job.status == JobStatus.QUEUED:
        job.not_before = None          # let the sleeping job see the cancellation and end
    audit.record(db, audit.AuditAction.CAMPAIGN_CANCEL, actor=user, object_type="campaign",
                 object_id=camp.id, ip=ip, detail={"status": status})
    db.commit()
    return status


def retry_failed(ctx: PlatformContext, db: Session, operator: User, camp: Campaign, *,
                 ip: str | None = None) -> int:
    """Queue the campaign's failed messages again (same rows, same idempotency keys: no
    customer can get a duplicate) and start sending. Returns how many."""
    n = store_for(ctx).retry_failed(camp.id, reason=f"retry requested by {operator.username}")
    if not n:
        raise ValidationError("this campaign has no failed message to retry")
    start_sending(db, camp.id, operator)
    audit.record(db, audit.AuditAction.CAMPAIGN_RETRY, actor=operator, object_type="campaign",
                 object_id=camp.id, ip=ip, detail={"messages": n})
    db.commit()
    return n


# ------------------------------------------------------------------------- test messages
@dataclass(frozen=True)
class TestMessage:
    """A test message and what became of it."""

    campaign_id: int
    to: str
    text: str
    state: str
    reason: str | None
    at: datetime


def send_test(ctx: PlatformContext, db: Session, user: User, raw_phone: str, text: str, *,
              ip: str | None = None) -> TestMessage:
    """Send one message to a number through the same gateway and the same rules (opt-out,
    suppression, frequency cap, quiet hours) as a campaign; synchronously, so the answer
    shows at once. The number is sealed like a customer's and never stored."""
    region = ctx.settings.default_region
    e164 = normalise_phone(raw_phone, region=region)
    masked = mask_phone(e164, region=region)
    if not text.strip():
        raise ValidationError("write the text of the test message")
    tpl = SmsTemplate(text)
    lang = template_language(text, region)
    line = campaign_settings(ctx).opt_out_lines()[lang]
    store = store_for(ctx)
    ref = f"test:{secrets.token_hex(8)}"
    person = seal_recipient(ctx.vault, ref, e164, consent=True, region=region,
                            timezone=ctx.settings.default_timezone)
    del e164
    cs = campaign_settings(ctx)
    cid = store.create_campaign(f"Test message to {masked}", [
        CampaignSegment("test", "test", tpl.source, lang, line)],
        shop_name="", opt_out_text=line, sender=cs.sms_sender, created_by=user.username,
        settings={"test": True})
    policy = cs.policy(ctx.settings.default_timezone)
    [(r, decision)] = list(evaluate_audience(store, [person], policy, now=utcnow()))
    store.enqueue(cid, "test", [NewMessage(
        ref, r.phone_key, "skipped" if decision.action == "skip" else "queued",
        decision.reason or None)])
    store.transition_campaign(cid, "sending", allowed_from=["draft"])
    engine: SendingEngine = make_engine(ctx, f"test-{user.username}")
    engine.recipients = WithExtra(PlatformRecipients(ctx, with_names=False), [person])
    try:
        engine.step(cid)
    finally:
        engine.close()
        held = store.waiting(cid, now=utcnow())
        why = "test messages are not sent later"
        if held:
            why = (f"held by {held[0][1]} until {held[0][0]:%Y-%m-%d %H:%M} UTC; {why}")
        store.skip_queued(cid, why)
        store.transition_campaign(cid, "test", allowed_from=["sending"])
    result = test_messages(ctx, limit=1, campaign_id=cid)[0]
    audit.record(db, audit.AuditAction.CAMPAIGN_GATEWAY_TEST, actor=user, object_type="phone",
                 object_id=person.phone_key[:16], ip=ip, region=region,
                 detail={"number": masked, "state": result.state, "reason": result.reason})
    db.commit()
    return result


def test_messages(ctx: PlatformContext, *, limit: int = 8,
                  campaign_id: int | None = None) -> list[TestMessage]:
    """The latest test messages with their state (a delivery report may update it)."""
    store = store_for(ctx)
    camps = [store.campaign(campaign_id)] if campaign_id is not None else \
        store.campaigns(limit=limit, status=["test"], exclude_status=())
    m = store.t.messages
    out = []
    with store.engine.connect() as conn:
        for camp in camps:
            row = conn.execute(select(m.c.state, m.c.reason).where(
                m.c.campaign_id == camp.id)).first()
            out.append(TestMessage(camp.id, camp.name.removeprefix("Test message to "),
                                   camp.segments[0].template, row.state if row else "none",
                                   row.reason if row else None, camp.created_at))
    return out


# ------------------------------------------------------------------------- sending
def make_gateway(ctx: PlatformContext) -> Gateway:
    """The configured gateway; only the Kannel adapter ever opens a phone number."""
    cs = campaign_settings(ctx)
    store = store_for(ctx)
    if cs.sms_gateway == "outbox":
        return OutboxGateway(store)
    dlr: dict[str, Any] = {}
    if cs.public_base_url is not None:
        dlr = {"dlr_url": cs.public_base_url + "/gateway/kannel/dlr",
               "signer": callback_secrets(ctx).signer}
    else:
        log.warning("CIPHERSEG_PUBLIC_BASE_URL is not set: messages go out without "
                    "delivery reports")
    return KannelGateway(
        sendsms_url=cs.kannel_sendsms_url, username=cs.kannel_username,
        password=cs.kannel_password.get_secret_value(), open_phone=vault_opener(ctx.vault),
        sender=cs.sms_sender, smsc_id=cs.kannel_smsc,
        max_connections=max(8, cs.sms_concurrency), **dlr)


def callback_urls(ctx: PlatformContext) -> dict[str, str | None]:
    """The delivery-report base URL and Kannel's MO ``get-url`` (with its token), from
    the public base URL (``None`` while it is not set)."""
    base = campaign_settings(ctx).public_base_url
    if base is None:
        return {"dlr": None, "mo": None}
    token = callback_secrets(ctx).mo_token
    return {"dlr": f"{base}/gateway/kannel/dlr",
            "mo": f"{base}/gateway/kannel/mo?token={token}&text=%a"}


# ------------------------------------------------------------------------- callbacks
def callbacks_for(ctx: PlatformContext) -> MessagingCallbacks:
    """Delivery-report and MO handlers writing to the platform's database; one per
    platform, so concurrent delivery reports are written in groups (group commit)."""
    cache = ctx_cache(ctx)
    existing: MessagingCallbacks | None = cache.get("callbacks")
    if existing is not None:
        return existing
    cs = campaign_settings(ctx)
    secrets_ = callback_secrets(ctx)

    def audited(action: audit.AuditAction, source: str) -> Any:
        def record(phone_key: str, keyword: str) -> None:
            with ctx.sessions() as s:
                audit.record(s, action, actor=None, actor_name="sms-gateway",
                             object_type="phone", object_id=phone_key[:16],
                             detail={"keyword": keyword, "source": source},
                             region=ctx.settings.default_region)
                s.commit()
        return record

    callbacks = MessagingCallbacks(
        store_for(ctx), signer=secrets_.signer, mo_token=secrets_.mo_token,
        phone_key=lambda e164: ctx.vault.pseudonym("phone", e164),
        region=ctx.settings.default_region, retry=cs.retry(), opt_out_reply="",
        on_opt_out=audited(audit.AuditAction.OPT_OUT, "inbound SMS"),
        on_opt_in=audited(audit.AuditAction.OPT_IN, "inbound SMS: the customer asked again"),
        batch_reports=True)
    cache["callbacks"] = callbacks
    return callbacks


# ------------------------------------------------------------------------- opt-outs
class CustomersOwnOptOut(ValidationError):
    """Staff tried to lift an opt-out the customer sent themselves."""


_KIND_WORDS = {"opt_out": ("opted out", "the opt-out list"),
               "suppressed": ("suppressed", "the suppression list")}


def set_suppression(ctx: PlatformContext, db: Session, user: User, raw_phone: str, *,
                    kind: str, remove: bool, reason: str, ip: str | None = None) -> str:
    """Opt a number out or suppress it, or lift that, with a reason (audited). Returns a
    sentence saying what happened. A customer's own opt-out (by SMS) is never lifted
    here: :class:`ValidationError` says how the customer can lift it."""
    region = ctx.settings.default_region
    e164 = normalise_phone(raw_phone, region=region)
    masked = mask_phone(e164, region=region)
    key = ctx.vault.pseudonym("phone", e164)
    del e164
    store = store_for(ctx)
    state, listname = _KIND_WORDS[kind]
    record = store.suppression_records(key).get(kind)
    reason = " ".join(reason.split())[:200]
    if remove and record is None:
        return f"{masked} was not {state}; nothing changed."
    if remove and record is not None and record.by_customer:
        raise CustomersOwnOptOut(
            f"{masked} opted out themselves by SMS (\"{record.source[3:]}\" on "
            f"{record.created_at:%Y-%m-%d}); staff cannot lift a customer's own opt-out. "
            "Only the customer can, by replying START (or 订阅). Nothing changed")
    if not remove and record is not None:
        return f"{masked} was already {state} (since {record.created_at:%Y-%m-%d}); " \
               "nothing changed."
    if len(reason) < 3:
        raise ValidationError(f"give a reason for {'lifting' if remove else 'adding'} this "
                              "entry (it goes to the audit log); nothing changed")
    if remove:
        changed = store.remove_suppression(key, kind)
    else:
        changed = store.add_suppression(key, kind, source=f"admin:{user.username}"[:48],
                                        note=reason)
    action = {("opt_out", False): audit.AuditAction.OPT_OUT_ADDED,
              ("opt_out", True): audit.AuditAction.OPT_OUT_REMOVED,
              ("suppressed", False): audit.AuditAction.SUPPRESSION_ADDED,
              ("suppressed", True): audit.AuditAction.SUPPRESSION_REMOVED}[(kind, remove)]
    audit.record(db, action, actor=user, object_type="phone", object_id=key[:16], ip=ip,
                 detail={"number": masked, "changed": changed, "reason": reason},
                 region=region)
    db.commit()
    if not changed:
        return f"{masked} changed meanwhile; nothing changed."
    if remove:
        return f"{masked} is no longer {state}: removed from {listname}."
    return f"{masked} is now {state}: added to {listname}."
