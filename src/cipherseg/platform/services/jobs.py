"""Jobs as their owners see them, and the audit event of looking at a job's results.

A job's number counts per kind and per owner (:mod:`cipherseg.platform.numbering`), so an
owner's job is found by (kind, number); a number that is not the owner's finds nothing.

>>> from cipherseg.platform.db import make_engine, make_sessionmaker
>>> from cipherseg.platform.jobs import enqueue
>>> from cipherseg.platform.migrate import upgrade
>>> from cipherseg.platform.models import AuditEvent, Role
>>> from cipherseg.platform.services.users import create_user
>>> engine = make_engine("sqlite://"); upgrade(engine)
>>> with make_sessionmaker(engine)() as s:
...     a = create_user(s, "mall-a", "a long passphrase", Role.OWNER)
...     b = create_user(s, "mall-b", "a long passphrase", Role.OWNER)
...     job = enqueue(s, JobKind.SEGMENTATION, owner=a, params={"k": 3})
...     (own_job(s, a, JobKind.SEGMENTATION, 1) is job, own_job(s, b, JobKind.SEGMENTATION, 1),
...      own_job(s, a, JobKind.IMPORT, 1))
...     unfinished = record_result_view(s, a, job, ip=None)
...     job.status = JobStatus.DONE.value
...     (unfinished, record_result_view(s, a, job, ip=None),
...      [e.action for e in s.scalars(select(AuditEvent))])
(True, None, None)
(False, True, ['result_view'])
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.platform import audit
from cipherseg.platform.models import Job, JobKind, JobStatus, User


def own_job(db: Session, owner: User, kind: JobKind, number: int) -> Job | None:
    """``owner``'s job of ``kind`` numbered ``number``; ``None`` when there is none."""
    return db.scalar(select(Job).where(Job.owner_id == owner.id, Job.kind == kind.value,
                                       Job.number == number))


def record_result_view(db: Session, viewer: User, job: Job, *, ip: str | None) -> bool:
    """Audit that ``viewer`` saw ``job``'s results, and commit; nothing to record (``False``)
    while the job has none."""
    if job.status != JobStatus.DONE:
        return False
    audit.record(db, audit.AuditAction.RESULT_VIEW, actor=viewer, object_type="job",
                 object_id=job.id, ip=ip)
    db.commit()
    return True
