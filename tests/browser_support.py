"""Shared by the browser tests (tests/e2e): chromium, the CLI, and a released segmentation
prepared in-process on the server's database before it starts."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artefacts" / "screenshots"
CLI = str(Path(sys.executable).with_name("cipherseg"))
CENTROID = {"recency_days": 12.0, "frequency": 6.0, "monetary": 180.0}


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    """Run ``cipherseg …`` with ``env``; fail the test on a non-zero exit."""
    out = subprocess.run([CLI, *args], env=env, input=stdin, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr


def prepare_release(env: dict[str, str], customers: Sequence[Sequence[str]],
                    segments: Sequence[tuple[str, int]]) -> dict[int, list[str]]:
    """Import ``customers`` through the upload pipeline as the owner ``mall``, then store a
    released segmentation whose segments take the customers in order: ``segments`` gives
    each one's name and size. Returns each segment's external customer ids."""
    from sqlalchemy import select

    from cipherseg.platform.app import make_context, make_worker
    from cipherseg.platform.core.config import Settings
    from cipherseg.platform.models import Customer, Job, Segment, SegmentMember, User
    from cipherseg.platform.services import save_upload

    ctx = make_context(Settings(data_dir=Path(env["CIPHERSEG_DATA_DIR"])))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(
        [["customer_id", "phone", "consent", "first_name", "timezone"], *customers])
    with ctx.sessions() as s:
        owner = s.scalars(select(User).where(User.username == "mall")).one()
        save_upload(ctx, s, owner, "customers", "customers.csv",
                    io.BytesIO(buf.getvalue().encode()))
    make_worker(ctx, threads=1).run_until_empty()
    with ctx.sessions() as s:
        rows = list(s.execute(select(Customer.id, Customer.external_id)
                              .order_by(Customer.external_id)))
        assert len(rows) == len(customers)
        owner_id = s.scalars(select(User.id).where(User.username == "mall")).one()
        job = Job(kind="segmentation", status="done", progress=1.0, stage="done",
                  owner_id=owner_id, created_by=owner_id, params={"k": len(segments)},
                  result={"n_customers": len(rows)}, published=True)
        s.add(job)
        s.flush()
        groups: dict[int, list[tuple[int, str]]] = {}
        start = 0
        for pos, (name, size) in enumerate(segments):
            members = rows[start:start + size]
            start += size
            groups[pos] = [(cid, ext) for cid, ext in members]
            s.add(Segment(job_id=job.id, position=pos, name=name, size=len(members),
                          centroid=CENTROID))
            s.add_all(SegmentMember(job_id=job.id, customer_id=cid, pseudonym=f"p{cid}",
                                    segment_index=pos) for cid, _ in members)
        s.commit()
    ctx.engine.dispose()
    return {pos: [ext for _, ext in members] for pos, members in groups.items()}
