"""A 100,000-row transactions file streams through validation and import with visible
progress, on SQLite, and re-importing it changes nothing."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from cipherseg.platform.models import Transaction, Upload

pytestmark = pytest.mark.slow
N_CUSTOMERS = 500
N_ROWS = 100_000


def _files() -> tuple[bytes, bytes]:
    customers = "customer_id,phone,consent\n" + "".join(
        f"C{i:05d},1380013{i:04d},yes\n" for i in range(N_CUSTOMERS))
    tx = ["transaction_id,customer_id,date,amount,category\n"]
    tx += [f"T{i:07d},C{i % N_CUSTOMERS:05d},2025-{1 + i % 12:02d}-{1 + i % 28:02d},"
           f"{1 + i % 500}.{i % 100:02d},food\n" for i in range(N_ROWS)]
    return customers.encode(), "".join(tx).encode()


def test_100k_rows_stream_with_progress_and_import_once(splatform) -> None:  # type: ignore[no-untyped-def]
    customers, transactions = _files()
    owner = splatform.client("mall")
    owner.upload("customers", "c.csv", customers)
    splatform.run_jobs()
    r = owner.upload("transactions", "t.csv", transactions)
    upload_id = int(r.headers["location"].rsplit("/", 1)[1])
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with splatform.ctx.sessions() as s:
                up = s.get(Upload, upload_id)
                seen.append((up.status, up.rows_done))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        splatform.run_jobs()
    finally:
        stop.set()
        watcher.join()
    with splatform.ctx.sessions() as s:
        up = s.get(Upload, upload_id)
        assert up.status == "imported" and up.n_inserted == N_ROWS, up.message
        assert s.scalar(select(func.count()).select_from(Transaction)) == N_ROWS
    partial = {n for status, n in seen if status == "validating" and 0 < n < N_ROWS}
    assert len(partial) >= 2, seen[:20]  # the page had intermediate progress to show
    page = owner.get(f"/owner/uploads/{upload_id}/progress").text
    assert f"{N_ROWS} of {N_ROWS} rows checked" in page
    owner.upload("transactions", "t.csv", transactions)
    splatform.run_jobs()
    with splatform.ctx.sessions() as s:
        last = s.scalars(select(Upload).order_by(Upload.id.desc())).first()
        assert (last.n_inserted, last.n_unchanged) == (0, N_ROWS)
        assert s.scalar(select(func.count()).select_from(Transaction)) == N_ROWS
