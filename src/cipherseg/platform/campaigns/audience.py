"""The one audience definition: who a campaign can reach, as every page and rule sees it.

A segment's **audience** is its members that can be sent to now: with consent, not opted
out, not suppressed, under the frequency cap, not sharing a number with another member
(:func:`cipherseg.messaging.engine.summarise_audience` applies exactly the rules the
sending worker applies again before each message). The compose page, the draft ("Send to
527"), the minimum-size rule and the report ("audience 527") all use this count, and the
customers left out are explained by reason.

The **minimum segment size** applies to the audience, not to the segment as released: a
segment of 60 customers of whom 40 can be reached cannot be targeted when the minimum is
50 (a merchant could otherwise address a group smaller than the platform promises owners).

Which segmentations a merchant may target is decided in one place, :func:`releases_for`:
those its owners granted to this merchant and did not revoke
(:mod:`cipherseg.platform.services.grants`). Which customers a segment has is decided in
one place, :func:`segment_members`, which does not assume a segment belongs to one owner.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.errors import ValidationError
from cipherseg.messaging import Recipient, summarise_audience
from cipherseg.messaging.rules import DeliveryPolicy
from cipherseg.platform.campaigns.context import store_for
from cipherseg.platform.campaigns.recipients import PlatformRecipients
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import Job, Segment, User
from cipherseg.platform.segments import release_view
from cipherseg.platform.services import grants


def parse_segment_key(key: str) -> tuple[int, int]:
    """``"<segmentation job id>:<segment position>"`` → the two integers.

    >>> parse_segment_key("12:3")
    (12, 3)
    """
    job, _, pos = key.partition(":")
    return int(job), int(pos)


def segment_key(job_id: int, position: int) -> str:
    """The key of a segment in campaigns (:func:`parse_segment_key` reads it)."""
    return f"{job_id}:{position}"


# ------------------------------------------------------------------------- releases
def releases_for(db: Session, user: User) -> list[Job]:
    """Segmentations ``user`` (a merchant) may see and target, newest grant first.

    **The one place where "released to this merchant" is decided**: an active grant from
    the owner (:func:`cipherseg.platform.services.grants.granted_jobs`).
    """
    return grants.granted_jobs(db, user, limit=20)


def released_job(db: Session, user: User, job_id: int) -> Job:
    """A segmentation released to ``user`` (else :class:`ValidationError`)."""
    job = db.get(Job, job_id)
    if job is None or job.kind not in grants.RELEASABLE_KINDS or \
            not grants.is_granted(db, job_id, user):
        raise ValidationError("that segmentation is not released to you")
    return job


def segment_owner_ids(job: Job) -> list[int]:
    """The data owners whose customers a released segmentation holds: its owner, or every
    participant of a joint segmentation. Each customer is sent to under its own owner's
    record (consent), and opt-outs and the frequency cap apply per phone number across the
    platform, so a joint segment's customers keep every owner's protections."""
    return grants.data_owner_ids(job)


def visible_segments(ctx: PlatformContext, db: Session, user: User,
                     job_id: int) -> dict[int, Segment]:
    """The segments of a release the user may see (released size ≥ the minimum)."""
    released_job(db, user, job_id)
    segs = list(db.scalars(select(Segment).where(Segment.job_id == job_id)))
    shown = {v.position for v in release_view(segs, min_size=ctx.settings.min_segment_size,
                                              with_profiles=False) if v.position is not None}
    return {s.position: s for s in segs if s.position in shown}


# ------------------------------------------------------------------------- members
def segment_members(ctx: PlatformContext, key: str) -> Iterator[Recipient]:
    """Every customer of a segment, as the sending engine addresses them (numbers sealed)."""
    return PlatformRecipients(ctx, with_names=False).segment(*parse_segment_key(key))


@dataclass(frozen=True)
class SegmentAudience:
    """A segment's audience now: ``eligible`` of its ``members`` can be sent to; the others
    are counted by reason in ``skipped``."""

    key: str
    name: str
    members: int
    eligible: int
    skipped: Mapping[str, int] = field(default_factory=dict)
    min_size: int = 1

    @property
    def targetable(self) -> bool:
        """Whether the audience reaches the minimum segment size."""
        return self.eligible >= self.min_size

    @property
    def refusal(self) -> str | None:
        """Why the segment cannot be targeted, if it cannot."""
        if self.targetable:
            return None
        return (f"only {self.eligible} of its {self.members} customers can be reached now; "
                f"a campaign needs at least {self.min_size}")

    def expected_holdout(self, share: float) -> int:
        """About how many customers a holdout of ``share`` keeps out."""
        return round(self.eligible * share)


def audience(ctx: PlatformContext, policy: DeliveryPolicy, key: str,
             name: str) -> SegmentAudience:
    """The audience of one segment under ``policy`` (the rules the worker applies)."""
    summary = summarise_audience(store_for(ctx), segment_members(ctx, key), policy)
    return SegmentAudience(key, name, summary.total, summary.eligible, dict(summary.skipped),
                           ctx.settings.min_segment_size)


def release_audiences(ctx: PlatformContext, db: Session, user: User, job_id: int,
                      policy: DeliveryPolicy) -> list[tuple[Segment, SegmentAudience]]:
    """Every visible segment of a release with its audience, largest audience first."""
    segs = visible_segments(ctx, db, user, job_id)
    out = [(seg, audience(ctx, policy, segment_key(job_id, pos), seg.name))
           for pos, seg in segs.items()]
    return sorted(out, key=lambda pair: (-pair[1].eligible, pair[0].position))
