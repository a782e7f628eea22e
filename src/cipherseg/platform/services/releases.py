"""Publishing a finished job: the one place every release route (pages and API, single,
joint and cross-node segmentations) goes through. The grants themselves, their audit events
and revocation are :mod:`cipherseg.platform.services.grants`.

>>> from cipherseg.platform.db import make_engine, make_sessionmaker
>>> from cipherseg.platform.jobs import enqueue
>>> from cipherseg.platform.migrate import upgrade
>>> from cipherseg.platform.models import JobKind, Role
>>> from cipherseg.platform.services.users import create_user
>>> engine = make_engine("sqlite://"); upgrade(engine)
>>> with make_sessionmaker(engine)() as s:
...     mall = create_user(s, "mall", "a long passphrase", Role.OWNER)
...     shop = create_user(s, "shop", "a long passphrase", Role.MERCHANT)
...     job = enqueue(s, JobKind.SEGMENTATION, owner=mall, params={"k": 3}); s.commit()
...     try:
...         publish(s, mall, job, ["shop"])
...     except ValidationError as exc:
...         print(exc)
only a finished segmentation can be released
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from cipherseg.errors import CipherSegError, ValidationError
from cipherseg.platform.models import Job, ReleaseGrant, User
from cipherseg.platform.services import grants


class NotJobOwner(CipherSegError):
    """Only the owner who created a job releases it (a joint job's other participants
    see it but do not release it)."""


def publish(db: Session, owner: User, job: Job, merchants: Sequence[str], *,
            ip: str | None = None) -> list[ReleaseGrant]:
    """Release ``job`` to the named merchants (grants, audited) and commit.

    Refused with :class:`NotJobOwner` when ``owner`` did not create the job, and with
    :class:`~cipherseg.errors.ValidationError` (after a rollback: nothing is kept) when the
    job cannot be released or a name is not a merchant's.
    """
    if job.owner_id != owner.id:
        raise NotJobOwner("only the owner who created the job can release it")
    try:
        rows = grants.grant(db, owner, job, merchants, ip=ip)
    except ValidationError:
        db.rollback()
        raise
    db.commit()
    return rows
