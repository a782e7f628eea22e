"""Campaigns on the platform: recipients from the customers table, audiences from released
segments, composing, sending with optional operator approval, the background sending job,
gateway callbacks, and opt-outs by an administrator.

Who sees what (ARCHITECTURE section 1): the merchant composes campaigns for the segments
released to it (at least the minimum segment size) and sees audience sizes and delivery
counts — never a customer or a number; previews use a made-up sample customer. The operator
sees campaigns, counts and statuses and approves sending. Phone numbers stay AES-GCM
ciphertexts in ``customers`` and are opened only inside the gateway adapter, in the worker.

>>> parse_segment_key("12:3")
(12, 3)
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.messaging import (
    AudienceSummary,
    EngineConfig,
    Gateway,
    OutboxGateway,
    Recipient,
    SealedPhone,
    SendingEngine,
    SqlMessageStore,
    enqueue_campaign,
    summarise_audience,
    vault_opener,
)
from cipherseg.messaging.callbacks import MessagingCallbacks
from cipherseg.messaging.kannel import KannelGateway
from cipherseg.messaging.store import Campaign, CampaignSegment
from cipherseg.messaging.templates import SmsTemplate
from cipherseg.pii import mask_phone, normalise_phone
from cipherseg.platform import audit, jobs
from cipherseg.platform.campaigns.settings import (
    CallbackSecrets,
    CampaignSettings,
    load_callback_secrets,
)
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import (
    MESSAGING,
    Customer,
    Job,
    Segment,
    SegmentMember,
    User,
)
from cipherseg.platform.segments import release_view
from cipherseg.platform.services import grants

log = logging.getLogger("cipherseg.platform.campaigns")

JOB_KIND = "campaign"
#: The made-up customer every preview is rendered for (never a real one).
SAMPLE_FIRST_NAME = "Li"
SAMPLE_MASKED_PHONE = "138****5678"
_CHUNK = 500

_per_ctx: dict[int, tuple[weakref.ref[PlatformContext], dict[str, Any]]] = {}


def _ctx_cache(ctx: PlatformContext) -> dict[str, Any]:
    entry = _per_ctx.get(id(ctx))
    if entry is None or entry[0]() is not ctx:
        entry = (weakref.ref(ctx), {})
        _per_ctx[id(ctx)] = entry
    return entry[1]


def campaign_settings(ctx: PlatformContext) -> CampaignSettings:
    """This context's campaign settings (from the environment unless :func:`configure`d)."""
    cache = _ctx_cache(ctx)
    if "settings" not in cache:
        cache["settings"] = CampaignSettings()
    settings: CampaignSettings = cache["settings"]
    return settings


def configure(ctx: PlatformContext, settings: CampaignSettings) -> None:
    """Use ``settings`` for this context (tests, embedding)."""
    cache = _ctx_cache(ctx)
    cache.clear()
    cache["settings"] = settings


def callback_secrets(ctx: PlatformContext) -> CallbackSecrets:
    """The delivery-report signer and the MO token of this platform."""
    cache = _ctx_cache(ctx)
    if "secrets" not in cache:
        cache["secrets"] = load_callback_secrets(campaign_settings(ctx), ctx.settings.keys_dir)
    secrets: CallbackSecrets = cache["secrets"]
    return secrets


def store_for(ctx: PlatformContext) -> SqlMessageStore:
    """The message store on the platform's database."""
    return SqlMessageStore(ctx.engine, MESSAGING)


def parse_segment_key(key: str) -> tuple[int, int]:
    """``"<segmentation job id>:<segment position>"`` → the two integers."""
    job, _, pos = key.partition(":")
    return int(job), int(pos)


# ------------------------------------------------------------------------- recipients
class PlatformRecipients:
    """:class:`~cipherseg.messaging.recipients.RecipientSource` over ``customers``.

    The number stays sealed (``phone_ct`` with the customer's pseudonym as context); the
    first name is decrypted only when ``with_names`` (the sending worker renders with it).
    """

    def __init__(self, ctx: PlatformContext, *, with_names: bool) -> None:
        self.ctx = ctx
        self.with_names = with_names

    def _recipient(self, row: Any) -> Recipient:
        name = None
        if self.with_names and row.first_name_ct is not None:
            name = self.ctx.vault.decrypt("first_name", row.first_name_ct,
                                          context=row.pseudonym)
        return Recipient(ref=str(row.id),
                         phone=SealedPhone(row.phone_ct, row.pseudonym, row.phone_masked),
                         phone_key=row.phone_hmac, consent=bool(row.consent),
                         timezone=row.timezone or self.ctx.settings.default_timezone,
                         first_name=name, customer_id=row.id)

    _COLUMNS = (Customer.id, Customer.pseudonym, Customer.phone_ct, Customer.phone_masked,
                Customer.phone_hmac, Customer.consent, Customer.timezone,
                Customer.first_name_ct)

    def lookup(self, refs: Sequence[str]) -> Mapping[str, Recipient]:
        """The customers among ``refs`` (customer ids as text) that still exist."""
        ids = [int(r) for r in refs if r.isdigit()]
        out: dict[str, Recipient] = {}
        with self.ctx.sessions() as s:
            for i in range(0, len(ids), _CHUNK):
                for row in s.execute(select(*self._COLUMNS)
                                     .where(Customer.id.in_(ids[i:i + _CHUNK]))):
                    out[str(row.id)] = self._recipient(row)
        return out

    def segment(self, job_id: int, position: int) -> Iterator[Recipient]:
        """Every customer labelled ``position`` by segmentation ``job_id``."""
        last = 0
        while True:
            with self.ctx.sessions() as s:
                rows = list(s.execute(
                    select(*self._COLUMNS).join(SegmentMember,
                                                SegmentMember.customer_id == Customer.id)
                    .where(SegmentMember.job_id == job_id,
                           SegmentMember.segment_index == position, Customer.id > last)
                    .order_by(Customer.id).limit(_CHUNK)))
            if not rows:
                return
            for row in rows:
                yield self._recipient(row)
            last = rows[-1].id


# ------------------------------------------------------------------------- releases
def released_job(db: Session, merchant: User, job_id: int) -> Job:
    """A finished segmentation released to ``merchant`` (else :class:`ValidationError`)."""
    job = db.get(Job, job_id)
    if job is None or job.kind != "segmentation" or not grants.is_granted(db, job_id, merchant):
        raise ValidationError("that segmentation is not released to you")
    return job


def visible_segments(ctx: PlatformContext, db: Session, merchant: User,
                     job_id: int) -> dict[int, Segment]:
    """The segments of a release ``merchant`` may target (size ≥ the minimum), by position."""
    released_job(db, merchant, job_id)
    segs = list(db.scalars(select(Segment).where(Segment.job_id == job_id)))
    shown = {v.position for v in release_view(segs, min_size=ctx.settings.min_segment_size,
                                              with_profiles=False) if v.position is not None}
    return {s.position: s for s in segs if s.position in shown}


def released_jobs(db: Session, merchant: User) -> list[Job]:
    """Segmentations released to ``merchant``, newest grant first."""
    return grants.granted_jobs(db, merchant, limit=20)


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
    for camp in store.campaigns(limit=10_000):
        if camp.created_by != merchant.username or \
                (camp.settings or {}).get("job_id") != job_id or camp.status not in _UNFINISHED:
            continue
        if store.transition_campaign(camp.id, "cancelled", allowed_from=list(_UNFINISHED)):
            store.skip_queued(camp.id, "release revoked by the data owner")
            audit.record(db, audit.AuditAction.CAMPAIGN_STOPPED, actor=None,
                         actor_name="release revoked", object_type="campaign",
                         object_id=camp.id, detail={"merchant": merchant.username,
                                                    "release": job_id})
            stopped.append(camp.id)
    return stopped


#: Campaign statuses that can still send.
_UNFINISHED = ("draft", "pending_approval", "approved", "paused", "sending")


# ------------------------------------------------------------------------- campaigns
def create_campaign(ctx: PlatformContext, db: Session, merchant: User, *, name: str,
                    shop_name: str, job_id: int, templates: Mapping[int, str],
                    ip: str | None = None) -> int:
    """Store a draft campaign: one template per chosen segment of a release."""
    if not name.strip():
        raise ValidationError("give the campaign a name")
    if not templates:
        raise ValidationError("choose at least one segment and write its message")
    segs = visible_segments(ctx, db, merchant, job_id)
    chosen: list[CampaignSegment] = []
    for position, text in sorted(templates.items()):
        seg = segs.get(position)
        if seg is None:
            raise ValidationError("that segment is not available to merchants")
        try:
            SmsTemplate(text)
        except ValidationError as exc:
            raise ValidationError(f"segment '{seg.name}': {exc}") from exc
        chosen.append(CampaignSegment(f"{job_id}:{position}", seg.name, text))
    cs = campaign_settings(ctx)
    job = released_job(db, merchant, job_id)
    cid = store_for(ctx).create_campaign(
        name.strip()[:128], chosen, shop_name=shop_name.strip()[:128],
        opt_out_text=cs.sms_opt_out_text, sender=cs.sms_sender,
        created_by=merchant.username, settings={"job_id": job_id, "owner_id": job.owner_id})
    audit.record(db, "campaign_create", actor=merchant, object_type="campaign", object_id=cid,
                 ip=ip, detail={"segments": len(chosen), "release": job_id})
    db.commit()
    return cid


def campaign_for(ctx: PlatformContext, user: User, campaign_id: int) -> Campaign:
    """A campaign the user may see (a merchant: only its own)."""
    try:
        camp = store_for(ctx).campaign(campaign_id)
    except ValidationError:
        camp = None
    if camp is None or (user.role == "merchant" and camp.created_by != user.username):
        raise LookupError(campaign_id)
    return camp


def campaigns_for(ctx: PlatformContext, user: User) -> list[Campaign]:
    """Campaigns the user may see, newest first."""
    camps = store_for(ctx).campaigns(limit=200)
    if user.role == "merchant":
        camps = [c for c in camps if c.created_by == user.username]
    return camps


def audience(ctx: PlatformContext, camp: Campaign) -> dict[str, AudienceSummary]:
    """Per segment: who the campaign would reach now (consent, opt-outs, caps, duplicates);
    nobody if the release is no longer granted to the campaign's merchant."""
    policy = campaign_settings(ctx).policy(ctx.settings.default_timezone)
    store = store_for(ctx)
    source = PlatformRecipients(ctx, with_names=False)
    with ctx.sessions() as db:
        granted = campaign_granted(db, camp)
    return {seg.key: summarise_audience(
        store, source.segment(*parse_segment_key(seg.key)) if granted else iter(()), policy)
        for seg in camp.segments}


def preview(template: str, *, segment_name: str, shop_name: str,
            opt_out_text: str) -> dict[str, Any]:
    """Render a template for the sample customer; ``error`` says what is wrong, if anything."""
    try:
        p = SmsTemplate(template).preview(
            masked_phone=SAMPLE_MASKED_PHONE, first_name=SAMPLE_FIRST_NAME,
            segment_name=segment_name, shop_name=shop_name, opt_out=opt_out_text)
    except ValidationError as exc:
        return {"error": str(exc)}
    return {"error": None, "text": p.text, "to": p.to, "count": p.count}


def active_job(db: Session, campaign_id: int) -> Job | None:
    """The queued or running sending job of a campaign, if any."""
    for job in db.scalars(select(Job).where(Job.kind == JOB_KIND,
                                            Job.status.in_(["queued", "running"]))):
        if (job.params or {}).get("campaign_id") == campaign_id:
            return job
    return None


def start_sending(db: Session, campaign_id: int, user: User) -> Job:
    """Queue the background job that sends a campaign (at most one per campaign)."""
    job = active_job(db, campaign_id)
    if job is None:
        job = jobs.enqueue(db, JOB_KIND, owner=user, params={"campaign_id": campaign_id})
    return job


def request_send(ctx: PlatformContext, db: Session, merchant: User, camp: Campaign, *,
                 ip: str | None = None) -> str:
    """The merchant's one click: send now, or ask the operator first if approval is on."""
    store = store_for(ctx)
    _require_grant(db, camp)
    if campaign_settings(ctx).campaign_approval:
        if not store.transition_campaign(camp.id, "pending_approval", allowed_from=["draft"]):
            raise ValidationError("only a draft campaign can be sent")
        audit.record(db, "campaign_submit", actor=merchant, object_type="campaign",
                     object_id=camp.id, ip=ip)
        db.commit()
        return "pending_approval"
    if not store.transition_campaign(camp.id, "approved", allowed_from=["draft"]):
        raise ValidationError("only a draft campaign can be sent")
    start_sending(db, camp.id, merchant)
    audit.record(db, "campaign_send", actor=merchant, object_type="campaign",
                 object_id=camp.id, ip=ip)
    db.commit()
    return "approved"


def approve(ctx: PlatformContext, db: Session, operator: User, camp: Campaign, *,
            ip: str | None = None) -> None:
    """The operator approves (and so launches) a campaign waiting for approval."""
    _require_grant(db, camp)
    if not store_for(ctx).transition_campaign(camp.id, "approved",
                                              allowed_from=["pending_approval"],
                                              actor=operator.username):
        raise ValidationError("this campaign is not waiting for approval")
    start_sending(db, camp.id, operator)
    audit.record(db, "campaign_approve", actor=operator, object_type="campaign",
                 object_id=camp.id, ip=ip)
    db.commit()


def pause(ctx: PlatformContext, db: Session, user: User, camp: Campaign, *,
          ip: str | None = None) -> None:
    """Stop sending (messages stay queued)."""
    if not store_for(ctx).transition_campaign(camp.id, "paused", allowed_from=["sending"]):
        raise ValidationError("only a campaign that is sending can be paused")
    audit.record(db, "campaign_pause", actor=user, object_type="campaign", object_id=camp.id,
                 ip=ip)
    db.commit()


def resume(ctx: PlatformContext, db: Session, user: User, camp: Campaign, *,
           ip: str | None = None) -> None:
    """Continue a paused campaign, or restart the job of one whose job failed."""
    store = store_for(ctx)
    if not store.transition_campaign(camp.id, "sending", allowed_from=["paused", "sending"]):
        raise ValidationError("only a paused or sending campaign can be resumed")
    start_sending(db, camp.id, user)
    audit.record(db, "campaign_resume", actor=user, object_type="campaign",
                 object_id=camp.id, ip=ip)
    db.commit()


def cancel(ctx: PlatformContext, db: Session, user: User, camp: Campaign, *,
           ip: str | None = None) -> None:
    """Cancel a campaign that has not finished; its queued messages are skipped."""
    store = store_for(ctx)
    if not store.transition_campaign(camp.id, "cancelled", allowed_from=[
            "draft", "pending_approval", "approved", "paused", "sending"]):
        raise ValidationError("this campaign has already finished")
    store.skip_queued(camp.id, "campaign cancelled")
    audit.record(db, "campaign_cancel", actor=user, object_type="campaign", object_id=camp.id,
                 ip=ip)
    db.commit()


# ------------------------------------------------------------------------- sending
def make_gateway(ctx: PlatformContext) -> Gateway:
    """The configured gateway; only the Kannel adapter ever opens a phone number."""
    cs = campaign_settings(ctx)
    store = store_for(ctx)
    if cs.sms_gateway == "outbox":
        return OutboxGateway(store)
    return KannelGateway(
        sendsms_url=cs.kannel_sendsms_url, username=cs.kannel_username,
        password=cs.kannel_password.get_secret_value(), open_phone=vault_opener(ctx.vault),
        dlr_url=cs.sms_callback_url.rstrip("/") + "/gateway/kannel/dlr",
        signer=callback_secrets(ctx).signer, sender=cs.sms_sender, smsc_id=cs.kannel_smsc,
        max_connections=max(8, cs.sms_concurrency))


def make_engine(ctx: PlatformContext, worker_id: str) -> SendingEngine:
    """A sending engine with this platform's gateway, recipients and rules."""
    cs = campaign_settings(ctx)
    config = EngineConfig(
        rate_per_second=cs.sms_rate, concurrency=cs.sms_concurrency,
        in_doubt_grace=timedelta(seconds=cs.sms_in_doubt_seconds),
        report_wait=timedelta(seconds=cs.sms_report_wait_seconds), max_parts=cs.sms_max_parts,
        worker_id=worker_id, retry=cs.retry(),
        policy=cs.policy(ctx.settings.default_timezone))
    return SendingEngine(store_for(ctx), make_gateway(ctx),
                         PlatformRecipients(ctx, with_names=True), config=config)


def _others_waiting(ctx: PlatformContext, job_id: int) -> bool:
    with ctx.sessions() as s:
        return s.scalar(select(Job.id).where(Job.status == "queued", Job.id != job_id)
                        .limit(1)) is not None


def _stop_if_revoked(ctx: PlatformContext, store: SqlMessageStore, camp: Campaign) -> bool:
    """Cancel a campaign whose release is no longer granted to its merchant and skip its
    queued messages (sent ones stay reported); whether it was stopped."""
    with ctx.sessions() as s:
        granted = campaign_granted(s, camp)
    if granted or camp.status not in _UNFINISHED:
        return False
    if store.transition_campaign(camp.id, "cancelled", allowed_from=list(_UNFINISHED)):
        store.skip_queued(camp.id, "release revoked by the data owner")
    return True


def make_campaign_runner(ctx: PlatformContext) -> jobs.Runner:
    """The background job that queues a campaign's audience and sends it.

    It sends until nothing is due; while only messages held by quiet hours (or waiting for
    a retry) remain it keeps waiting unless other jobs are queued, in which case it hands
    over to a continuation job queued behind them. A worker that dies mid-campaign loses
    nothing: its job is queued again and the engine resumes from the message states.
    """

    def run(job_id: int, sink: jobs.ProgressSink) -> None:
        with ctx.sessions() as s:
            job = s.get(Job, job_id)
            params = dict(job.params or {}) if job else {}
            requester = s.get(User, job.created_by) if job else None
        cid = int(params.get("campaign_id", 0))
        store = store_for(ctx)
        camp = store.campaign(cid)
        cs = campaign_settings(ctx)
        if _stop_if_revoked(ctx, store, camp):
            jobs.finish(ctx.sessions, job_id, status="done", stage="release revoked")
            return
        if camp.status == "approved":
            sink.update(0.0, "queueing the audience", force=True)
            source = PlatformRecipients(ctx, with_names=False)
            audiences = {seg.key: source.segment(*parse_segment_key(seg.key))
                         for seg in camp.segments}
            enqueue_campaign(store, cid, audiences, cs.policy(ctx.settings.default_timezone))
            store.transition_campaign(cid, "sending", allowed_from=["approved"])
        elif camp.status != "sending":
            jobs.finish(ctx.sessions, job_id, status="done", stage=f"campaign {camp.status}")
            return
        engine = make_engine(ctx, f"campaign-job-{job_id}")
        stage = "sent"
        try:
            while True:
                engine.run(cid, max_seconds=2.0)
                counts = store.state_counts(cid)
                total = sum(counts.values()) or 1
                pending = counts.get("queued", 0) + counts.get("sending", 0)
                sink.update(1.0 - pending / total,
                            f"{counts.get('sent', 0) + counts.get('delivered', 0)} sent, "
                            f"{pending} to go")
                if _stop_if_revoked(ctx, store, store.campaign(cid)):
                    stage = "release revoked"
                    break
                status = store.campaign(cid).status
                if status != "sending":
                    stage = f"campaign {status}"
                    break
                _left, due = store.work_left(cid, now=utcnow())
                if due is not None and due > utcnow() + timedelta(seconds=5) \
                        and _others_waiting(ctx, job_id):
                    with ctx.sessions() as s:
                        owner = s.get(User, requester.id) if requester else None
                        if owner is None:
                            break
                        nxt = jobs.enqueue(s, JOB_KIND, owner=owner, params={"campaign_id": cid})
                        s.commit()
                        stage = f"waiting (quiet hours); continues in job #{nxt.number}"
                    break
                time.sleep(0.2)
        finally:
            engine.close()
        jobs.finish(ctx.sessions, job_id, status="done", stage=stage,
                    result={"campaign_id": cid, **store.state_counts(cid)})

    return run


# ------------------------------------------------------------------------- callbacks
def callbacks_for(ctx: PlatformContext) -> MessagingCallbacks:
    """Delivery-report and MO handlers writing to the platform's database."""
    cs = campaign_settings(ctx)
    secrets = callback_secrets(ctx)

    def audit_opt_out(phone_key: str, keyword: str) -> None:
        with ctx.sessions() as s:
            audit.record(s, "opt_out", actor=None, actor_name="sms-gateway",
                         object_type="phone", object_id=phone_key[:16],
                         detail={"keyword": keyword, "source": "inbound SMS"},
                         region=ctx.settings.default_region)
            s.commit()

    return MessagingCallbacks(
        store_for(ctx), signer=secrets.signer, mo_token=secrets.mo_token,
        phone_key=lambda e164: ctx.vault.pseudonym("phone", e164),
        region=ctx.settings.default_region, retry=cs.retry(),
        opt_out_reply="", on_opt_out=audit_opt_out, batch_reports=False)


def set_suppression(ctx: PlatformContext, db: Session, user: User, raw_phone: str, *,
                    kind: str, remove: bool, ip: str | None = None) -> str:
    """Opt a number out (or suppress it), or lift that; returns the masked number."""
    region = ctx.settings.default_region
    e164 = normalise_phone(raw_phone, region=region)
    masked = mask_phone(e164, region=region)
    key = ctx.vault.pseudonym("phone", e164)
    store = store_for(ctx)
    if remove:
        changed = store.remove_suppression(key, kind)
    else:
        changed = store.add_suppression(key, kind, source=f"admin:{user.username}"[:48])
    action = {("opt_out", False): audit.AuditAction.OPT_OUT_ADDED,
              ("opt_out", True): audit.AuditAction.OPT_OUT_REMOVED,
              ("suppressed", False): audit.AuditAction.SUPPRESSION_ADDED,
              ("suppressed", True): audit.AuditAction.SUPPRESSION_REMOVED}[(kind, remove)]
    audit.record(db, action, actor=user, object_type="phone", object_id=key[:16], ip=ip,
                 detail={"number": masked, "changed": changed}, region=region)
    db.commit()
    return masked
