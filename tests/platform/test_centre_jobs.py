"""The centre's public schedule names each kind of job for what it is (a cross-node or vertical
job was listed as "single owner") and shows a job whose parameters lack a field."""

from __future__ import annotations

from sqlalchemy import select

from cipherseg.clock import utcnow
from cipherseg.platform.models import Job, JobKind, JobStatus, User
from cipherseg.platform.numbering import job_scope, next_number


def _job(s, owner_id: int, kind: JobKind, params: dict) -> None:  # type: ignore[no-untyped-def]
    s.add(Job(kind=kind.value, status=JobStatus.DONE.value, progress=1.0, stage="done",
              owner_id=owner_id, created_by=owner_id, params=params,
              number=next_number(s, job_scope(kind.value, owner_id)),
              result={"n_customers": 120, "n_iter": 4}, finished_at=utcnow()))


def test_each_kind_is_named_and_missing_parameters_show_a_dash(splatform) -> None:  # type: ignore[no-untyped-def]
    with splatform.ctx.sessions() as s:
        owner_id = s.scalars(select(User.id).where(User.username == "mall")).one()
        _job(s, owner_id, JobKind.SEGMENTATION, {"k": 3, "features": ["recency"]})
        _job(s, owner_id, JobKind.JOINT, {"k": 3, "participants": ["mall", "mall2"]})
        _job(s, owner_id, JobKind.JOINT_NODE, {"k": 4})
        _job(s, owner_id, JobKind.VERTICAL_NODE, {})
        s.commit()
    page = splatform.client("centre").get("/centre/jobs")
    assert page.status_code == 200
    rows = page.text.split("<tr>")[2:]
    kinds = [row.split("</td><td>")[1] for row in rows]
    assert kinds == ["vertical, with a merchant's features".replace("'", "&#39;"),
                     "joint across organisations (this node&#39;s part)",
                     "joint (2 owners on this platform)", "single owner"]
    assert "—" in rows[0]
