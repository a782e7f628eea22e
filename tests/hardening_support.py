"""Helpers of the hardening tests (issue 16): a released segmentation with chosen segment
names, built through the upload pipeline."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cipherseg.platform.models import Customer, Job, ReleaseGrant, Segment, SegmentMember, User
from cipherseg.platform.numbering import job_scope, next_number

CENTROID = {"recency_days": 12.0, "frequency": 6.0, "monetary": 180.0}


def customers_csv(n: int, start: int = 0) -> bytes:
    """``n`` valid customers rows (with consent) as CSV."""
    return ("customer_id,phone,consent,first_name\n" + "".join(
        f"C{i:05d},1380013{i:04d},yes,Li\n" for i in range(start, start + n))).encode()


def released_segmentation(platform: Any, names: tuple[str, ...] = ("Loyal", "Regular"),
                          n: int = 120) -> tuple[int, int]:
    """Upload ``n`` customers as ``mall``, add a finished segmentation with one segment per
    name (customers split evenly), release it to ``shop``. Returns (job id, job number)."""
    owner = platform.client("mall")
    r = owner.upload("customers", "customers.csv", customers_csv(n))
    assert r.status_code == 303, r.text
    platform.run_jobs()
    with platform.ctx.sessions() as s:
        owner_id = s.scalars(select(User.id).where(User.username == "mall")).one()
        ids = list(s.scalars(select(Customer.id).where(Customer.owner_id == owner_id)
                             .order_by(Customer.external_id)))
        job = Job(kind="segmentation", status="done", progress=1.0, stage="done",
                  owner_id=owner_id, created_by=owner_id, params={"k": len(names)},
                  result={"n_customers": len(ids)},
                  number=next_number(s, job_scope("segmentation", owner_id)))
        s.add(job)
        s.flush()
        s.add(ReleaseGrant(job_id=job.id, granted_by=owner_id, merchant_id=s.scalars(
            select(User.id).where(User.username == "shop")).one()))
        per = len(ids) // len(names)
        for pos, name in enumerate(names):
            members = ids[pos * per:(pos + 1) * per]
            s.add(Segment(job_id=job.id, position=pos, name=name, size=len(members),
                          centroid=CENTROID))
            s.add_all(SegmentMember(job_id=job.id, customer_id=c, pseudonym=f"p{c}",
                                    segment_index=pos) for c in members)
        s.commit()
        return job.id, job.number
