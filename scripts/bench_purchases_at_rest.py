"""What encrypting purchases at rest costs, at 100 000 transaction rows (docs/benchmarks.md).

One run, one SQLite platform in a temporary directory: 2 000 demo customers and 100 000
transactions imported through the upload pipeline (validate, seal each row, insert), then
the owner's RFM as a segmentation job prepares it (read the ciphertexts, decrypt, RFM).
The encryption's own share is timed in the same run: sealing 100 000 rows alone, reading
the rows without decrypting them, decrypting alone, RFM on the decrypted frame.

    .venv/bin/python scripts/bench_purchases_at_rest.py [--rows 100000] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
from sqlalchemy import select


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--json", type=Path,
                        default=Path("bench/results/purchases_at_rest.json"))
    args = parser.parse_args()

    from cipherseg.analytics.rfm import RFMColumns, compute_rfm
    from cipherseg.platform import purchases
    from cipherseg.platform.app import make_context, make_worker
    from cipherseg.platform.core.config import Settings
    from cipherseg.platform.db import make_engine
    from cipherseg.platform.migrate import upgrade
    from cipherseg.platform.models import Customer, Role, Transaction, User
    from cipherseg.platform.security import hash_password
    from cipherseg.platform.services import save_upload

    rng = np.random.default_rng(0)
    out: dict[str, float | int | str] = {"rows": args.rows, "customers": args.customers,
                                         "database": "sqlite", "load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), environment="test", worker_threads=0,
                            max_upload_mb=200)
        upgrade(make_engine(settings.resolved_database_url()))
        ctx = make_context(settings)
        with ctx.sessions() as s:
            s.add(User(username="mall", role=Role.OWNER.value, active=True,
                       password_hash=hash_password("not used here 1")))
            s.commit()
            owner = s.scalars(select(User)).one()
        cbuf, tbuf = io.StringIO(), io.StringIO()
        cw, tw = csv.writer(cbuf, lineterminator="\n"), csv.writer(tbuf, lineterminator="\n")
        cw.writerow(["customer_id", "phone", "consent"])
        for i in range(args.customers):
            cw.writerow([f"C{i:05d}", f"138{i:08d}", "yes"])
        tw.writerow(["transaction_id", "customer_id", "date", "amount", "category"])
        end = date(2025, 6, 30)
        cats = ("apparel", "food", "electronics", "beauty", "home", "sports")
        for i in range(args.rows):
            tw.writerow([f"T{i:07d}", f"C{int(rng.integers(args.customers)):05d}",
                         (end - timedelta(days=int(rng.integers(365)))).isoformat(),
                         f"{float(rng.gamma(2.0, 60.0)) + 1:.2f}",
                         cats[int(rng.integers(len(cats)))]])
        worker = make_worker(ctx, threads=1)
        with ctx.sessions() as s:
            save_upload(ctx, s, owner, "customers", "c.csv", io.BytesIO(cbuf.getvalue().encode()))
        worker.run_until_empty()
        with ctx.sessions() as s:
            save_upload(ctx, s, owner, "transactions", "t.csv",
                        io.BytesIO(tbuf.getvalue().encode()))
        t = time.perf_counter()
        worker.run_until_empty()
        out["import_seconds"] = time.perf_counter() - t
        with ctx.sessions() as s:
            n = s.query(Transaction).count()
            assert n == args.rows, n
            rows = list(s.execute(select(Customer.pseudonym, Transaction.owner_id,
                                         Transaction.external_id, Transaction.payload_ct)
                                  .join(Customer, Customer.id == Transaction.customer_id)))
        t = time.perf_counter()
        for _p, o, ext, _b in rows:
            purchases.seal(ctx.vault, o, ext, end, Decimal("12.34"), "food")
        out["seal_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        with ctx.sessions() as s:
            rows = list(s.execute(select(Customer.pseudonym, Transaction.owner_id,
                                         Transaction.external_id, Transaction.payload_ct)
                                  .join(Customer, Customer.id == Transaction.customer_id)
                                  .where(Transaction.owner_id == owner.id)))
        out["read_ciphertexts_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        frame = purchases.frame(ctx.vault, rows)
        out["decrypt_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        columns = RFMColumns(customer="customer", invoice="invoice", date="date",
                             amount="amount")
        rfm = compute_rfm(frame, columns)
        out["rfm_seconds"] = time.perf_counter() - t
        out["rfm_customers"] = len(rfm.features)
        t = time.perf_counter()
        with ctx.sessions() as s:
            purchases.owner_transactions(ctx.vault, s, owner.id)
        out["load_transactions_seconds"] = time.perf_counter() - t
        ctx.engine.dispose()
    out["seal_us_per_row"] = float(out["seal_seconds"]) / args.rows * 1e6
    out["decrypt_us_per_row"] = float(out["decrypt_seconds"]) / args.rows * 1e6
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
