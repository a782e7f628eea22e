"""Uploads and imports: receive an owner's file, queue its import, run it (the worker calls
the runner :func:`make_import_runner` makes), and the rejected upload's error report.

Routes stay thin (they check roles and forms, then call these functions).

Uploaded files wait in ``<data dir>/uploads`` (directory 0700, files 0600) only until their
import job has run, sealed as they arrive (chunked AES-GCM under a per-file key wrapped by the
owner's data key: :mod:`cipherseg.platform.sealed_files`); they are deleted afterwards,
whatever the outcome.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.jobs import ProgressSink, enqueue, finish
from cipherseg.platform.models import (
    Job,
    JobKind,
    JobStatus,
    Upload,
    UploadError,
    UploadStatus,
    User,
)
from cipherseg.platform.numbering import next_number, upload_scope
from cipherseg.platform.sealed_files import SealedFileError, SealedWriter
from cipherseg.platform.uploads import (
    KINDS,
    Importer,
    RowError,
    SealedUpload,
    SpreadsheetLimits,
    UploadFileError,
    count_rows,
    error_report_rows,
)

log = logging.getLogger("cipherseg.platform.services")
_CHUNK = 1 << 20


def save_upload(ctx: PlatformContext, session: Session, owner: User, kind: str,
                filename: str, stream: BinaryIO, *, ip: str | None = None) -> Upload:
    """Store an uploaded file and queue its import; commits."""
    if kind not in KINDS:
        raise ValidationError(f"unknown upload kind {kind!r}; choose customers or "
                              "transactions")
    name = os.path.basename(filename or "upload")[:255] or "upload"
    ext = ".xlsx" if name.lower().endswith(".xlsx") else ".csv"
    updir = ctx.settings.uploads_dir
    updir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = updir / f"{uuid.uuid4().hex}{ext}"
    limit = ctx.settings.max_upload_mb * (1 << 20)
    digest = hashlib.sha256()
    size = 0
    try:
        with SealedWriter(path, ctx.vault, owner.id) as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ValidationError(f"the file is larger than {ctx.settings.max_upload_mb}"
                                          " MB; split it or raise CIPHERSEG_MAX_UPLOAD_MB")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise ValidationError("the file is empty; download the template and fill it")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    up = Upload(owner_id=owner.id, number=next_number(session, upload_scope(owner.id)),
                kind=kind, filename=name, sha256=digest.hexdigest(), size_bytes=size,
                stored_path=str(path), status=UploadStatus.QUEUED.value)
    session.add(up)
    session.flush()
    job = enqueue(session, JobKind.IMPORT, owner=owner, params={"upload_id": up.id})
    audit.record(session, "upload", actor=owner, object_type="upload", object_id=up.id, ip=ip,
                 detail={"kind": kind, "bytes": size, "sha256": up.sha256[:16], "job": job.id},
                 region=ctx.settings.default_region)
    session.commit()
    return up


def spreadsheet_limits(ctx: PlatformContext) -> SpreadsheetLimits:
    """The .xlsx bounds of this platform's settings."""
    s = ctx.settings
    return SpreadsheetLimits(max_uncompressed=s.xlsx_max_uncompressed_mb << 20,
                             max_ratio=s.xlsx_max_ratio,
                             max_shared_strings=s.xlsx_max_shared_strings_mb << 20)


def upload_job_id(session: Session, upload_id: int) -> int | None:
    """The import job of an upload."""
    for job in session.scalars(select(Job).where(Job.kind == JobKind.IMPORT.value)
                               .order_by(Job.id.desc())):
        if job.params.get("upload_id") == upload_id:
            return job.id
    return None


def store_errors(factory: Any, upload_id: int, errors: list[RowError],
                 counts: dict[str, int]) -> None:
    """Keep a rejected upload's listed problems (rows) and its counts per column."""
    with factory() as s:
        s.execute(delete(UploadError).where(UploadError.upload_id == upload_id))
        if errors:
            s.execute(insert(UploadError), [
                {"upload_id": upload_id, "row": e.row, "column": e.column[:64],
                 "value": e.value[:80], "message": e.message[:300]} for e in errors])
        s.execute(update(Upload).where(Upload.id == upload_id).values(
            error_counts=dict(counts)))
        s.commit()


def error_report(session: Session, up: Upload) -> Iterator[list[Any]]:
    """The error report of ``up`` as CSV rows (the stored blob of uploads before 0005)."""
    if up.error_counts is None and up.error_report:
        yield from csv.reader(io.StringIO(up.error_report.decode("utf-8")))
        return
    listed = (RowError(e.row, e.column, e.value, e.message) for e in session.scalars(
        select(UploadError).where(UploadError.upload_id == up.id).order_by(UploadError.id)))
    yield from error_report_rows(listed, up.error_counts)


def make_import_runner(ctx: PlatformContext) -> Any:
    """The worker's runner for ``import`` jobs."""

    def run_import(job_id: int, sink: ProgressSink) -> None:
        factory = ctx.sessions
        with factory() as s:
            job = s.get(Job, job_id)
            assert job is not None
            upload_id = int(job.params["upload_id"])
            up = s.get(Upload, upload_id)
            if up is None:
                raise ValidationError(f"upload {upload_id} no longer exists")
            owner = s.get(User, up.owner_id)
            path = Path(up.stored_path)
            kind, owner_id = up.kind, up.owner_id
        stored = SealedUpload(path, ctx.vault, owner_id,
                              max_bytes=ctx.settings.max_upload_mb << 20)

        def set_upload(**values: Any) -> None:
            with factory() as s2:
                s2.execute(update(Upload).where(Upload.id == upload_id).values(**values))
                s2.commit()

        try:
            if not path.exists():
                raise UploadFileError("the uploaded file is gone (already processed?); "
                                      "upload it again")
            total = count_rows(stored, kind)
            set_upload(status=UploadStatus.VALIDATING.value, rows_total=total, rows_done=0)

            def upload_progress(session: Session, fraction: float, stage: str) -> None:
                session.execute(update(Upload).where(Upload.id == upload_id).values(
                    rows_done=int(fraction * total) if stage.startswith("validat") else total))

            sink._extra = upload_progress
            sink.update(0.0, "validating", force=True)
            with factory() as s, Importer(s, ctx.vault, owner_id, kind, stored,
                                          region=ctx.settings.default_region,
                                          limits=spreadsheet_limits(ctx)) as importer:
                summary = importer.validate(
                    lambda n: sink.update(0.6 * min(1.0, n / max(total, 1)), "validating"))
                if summary.has_errors:
                    store_errors(factory, upload_id, summary.errors, summary.counts)
                    set_upload(status=UploadStatus.REJECTED.value, rows_total=summary.rows,
                               rows_done=summary.rows, n_errors=summary.n_bad_rows,
                               finished_at=utcnow(),
                               message=f"{summary.n_bad_rows} of {summary.rows} rows have "
                                       "problems; nothing was imported")
                    with factory() as s2:
                        audit.record(s2, "upload_rejected", actor=owner, object_type="upload",
                                     object_id=upload_id,
                                     detail={"bad_rows": summary.n_bad_rows,
                                             "rows": summary.rows})
                        s2.commit()
                    finish(factory, job_id, status=JobStatus.DONE, stage="rejected",
                           result={"upload_id": upload_id, "status": UploadStatus.REJECTED.value,
                                   "bad_rows": summary.n_bad_rows})
                    return
                s.rollback()  # end the read snapshot before writing (SQLite)
                sink.update(0.6, f"importing {summary.rows} rows", force=True)
                set_upload(status=UploadStatus.IMPORTING.value, rows_done=0)
                with sink.pause_if_sqlite():
                    counts = importer.apply(
                        lambda n: sink.update(0.6 + 0.4 * min(1.0, n / max(total, 1)),
                                              f"importing {summary.rows} rows"))
                    s.execute(update(Upload).where(Upload.id == upload_id).values(
                        status=UploadStatus.IMPORTED.value, rows_total=summary.rows,
                        rows_done=summary.rows,
                        n_inserted=counts.inserted, n_updated=counts.updated,
                        n_unchanged=counts.unchanged, finished_at=utcnow(),
                        message=f"{counts.inserted} new, {counts.updated} updated, "
                                f"{counts.unchanged} unchanged"))
                    audit.record(s, "upload_imported", actor=owner, object_type="upload",
                                 object_id=upload_id,
                                 detail={"rows": summary.rows, "inserted": counts.inserted,
                                         "updated": counts.updated,
                                         "unchanged": counts.unchanged})
                    s.commit()
            finish(factory, job_id, status=JobStatus.DONE, stage="imported",
                   result={"upload_id": upload_id, "status": UploadStatus.IMPORTED.value,
                           "inserted": counts.inserted, "updated": counts.updated,
                           "unchanged": counts.unchanged})
        except (UploadFileError, SealedFileError) as exc:
            store_errors(factory, upload_id, [RowError(1, "", "", str(exc)[:300])], {"": 1})
            set_upload(status=UploadStatus.REJECTED.value, n_errors=1, finished_at=utcnow(),
                       message=str(exc))
            with factory() as s2:
                audit.record(s2, "upload_rejected", actor=owner, object_type="upload",
                             object_id=upload_id, detail={"file_error": str(exc)[:200]})
                s2.commit()
            finish(factory, job_id, status=JobStatus.DONE, stage="rejected",
                   result={"upload_id": upload_id, "status": UploadStatus.REJECTED.value})
        except Exception as exc:
            set_upload(status=UploadStatus.FAILED.value, finished_at=utcnow(),
                       message=str(exc) if isinstance(exc, ValidationError) else
                       "the import failed; nothing was imported. Try again or ask the "
                       "administrator to check the worker log")
            with factory() as s2:
                audit.record(s2, "upload_failed", actor=owner, object_type="upload",
                             object_id=upload_id, detail={"error": type(exc).__name__})
                s2.commit()
            raise
        finally:
            path.unlink(missing_ok=True)

    return run_import
