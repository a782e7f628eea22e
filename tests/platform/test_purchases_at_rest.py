"""Purchase records encrypted at rest (issue 17 #6): a dump of every table finds no amount,
date or category of an uploaded transaction; the owner's jobs read them back exactly; key
rotation re-encrypts them; migration 0006 encrypts existing rows and decrypts them going
down, on SQLite, PostgreSQL and MariaDB, and refuses to run without the keyring."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from cipherseg.errors import CiphertextError, KeyCustodyError
from cipherseg.pii.keys import PiiKeyring
from cipherseg.pii.vault import PiiVault
from cipherseg.platform import purchases
from cipherseg.platform.db import make_engine
from cipherseg.platform.migrate import current_revision, downgrade, head_revision, upgrade
from cipherseg.platform.models import Base, Customer, Transaction
from cipherseg.platform.rotation import rotate_pii_key
from cipherseg.platform.services.segmentation import load_transactions

# values that occur nowhere else: amounts, dates and categories to look for in the dump
ROWS = [("T1", "C1", "2019-03-17", "7319.57", "zebra-umbrellas"),
        ("T2", "C1", "2018-11-02", "6402.13", "quokka-lamps"),
        ("T3", "C2", "2017-08-29", "5581.91", "zebra-umbrellas")]


def _csv(header: list[str], rows: list[tuple[str, ...]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue().encode()


def _dump(engine: sa.Engine) -> bytes:
    """Every value of every table, as bytes (text as UTF-8, binary as is)."""
    out = []
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        out.append(bytes(value))
                    elif value is not None:
                        out.append(str(value).encode())
    return b"\n".join(out)


def _needles() -> list[bytes]:
    found = []
    for _tid, _cid, day, amount, category in ROWS:
        d = date.fromisoformat(day)
        found += [day.encode(), d.strftime("%Y%m%d").encode(), amount.encode(),
                  amount.replace(".", "").encode(), category.encode()]
    return found


def test_a_dump_of_every_table_shows_no_purchase_value(platform) -> None:  # type: ignore[no-untyped-def]
    owner = platform.client("mall")
    owner.upload("customers", "c.csv", _csv(["customer_id", "phone", "consent"],
                                            [("C1", "13800138000", "yes"),
                                             ("C2", "13900139000", "yes")]))
    owner.upload("transactions", "t.csv", _csv(
        ["transaction_id", "customer_id", "date", "amount", "category"], ROWS))
    platform.run_jobs()
    with platform.ctx.sessions() as s:
        assert s.scalar(select(sa.func.count()).select_from(Transaction)) == 3
        owner_id = s.scalar(select(Customer.owner_id).limit(1))
        tx = load_transactions(platform.ctx.vault, s, owner_id)
    # the owner's jobs read exactly what was uploaded
    got = sorted((r.invoice, r.date.date().isoformat(), f"{r.amount:.2f}", r.category)
                 for r in tx.itertuples())
    assert got == sorted((t, d, a, c) for t, _cid, d, a, c in ROWS)
    # ... and nothing of it is in the database in clear, nor in the data directory
    dump = _dump(platform.ctx.engine)
    assert b"T1" in dump  # the scan sees the rows (transaction ids stay in clear)
    leaks = [n for n in _needles() if n in dump]
    assert leaks == []
    files = b"".join(p.read_bytes() for p in platform.ctx.settings.data_dir.rglob("*")
                     if p.is_file() and p.suffix not in (".db", ".db-wal", ".db-shm"))
    assert [n for n in _needles() if n in files] == []


def test_a_ciphertext_moved_to_another_row_does_not_decrypt(splatform) -> None:  # type: ignore[no-untyped-def]
    vault = splatform.ctx.vault
    blob = purchases.seal(vault, 1, "T1", date(2025, 1, 2), Decimal("3.10"), None)
    assert purchases.unseal(vault, 1, "T1", blob) == (date(2025, 1, 2), 3.1, None)
    for owner, tid in ((2, "T1"), (1, "T2")):
        with pytest.raises(CiphertextError, match="belongs to another record"):
            purchases.unseal(vault, owner, tid, blob)


def test_rotation_reencrypts_purchases(splatform) -> None:  # type: ignore[no-untyped-def]
    owner = splatform.client("mall")
    owner.upload("customers", "c.csv", _csv(["customer_id", "phone", "consent"],
                                            [("C1", "13800138000", "yes"),
                                             ("C2", "13900139000", "yes")]))
    owner.upload("transactions", "t.csv", _csv(
        ["transaction_id", "customer_id", "date", "amount", "category"], ROWS))
    splatform.run_jobs()
    settings = splatform.ctx.settings
    report = rotate_pii_key(settings, splatform.ctx.engine)
    assert report.retired and report.reencrypted == 2 + 3  # phones + purchases
    ring = PiiKeyring.from_json(settings.pii_keyring_path.read_text())
    vault = PiiVault(ring)
    with splatform.ctx.sessions() as s:
        blobs = list(s.execute(select(Transaction.owner_id, Transaction.external_id,
                                      Transaction.payload_ct)))
    assert {vault.key_id_of(b) for _o, _t, b in blobs} == {ring.active_id}
    assert sorted(f"{purchases.unseal(vault, o, t, b)[1]:.2f}" for o, t, b in blobs) == \
        sorted(a for *_x, a, _c in ROWS)


def test_migration_encrypts_existing_rows_and_decrypts_them_going_down(db_url: str) -> None:
    engine = make_engine(db_url)
    vault = PiiVault(PiiKeyring.generate())
    try:
        upgrade(engine, "0005_upload_errors")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (id, username, password_hash, role, active, "
                                 "created_at) VALUES (1, 'mall', 'x', 'owner', :t, :now)"),
                         {"t": True, "now": "2026-01-01 00:00:00"})
            conn.execute(sa.text(
                "INSERT INTO customers (id, owner_id, external_id, pseudonym, phone_ct, "
                "phone_masked, phone_hmac, consent, row_digest, created_at, updated_at) "
                "VALUES (1, 1, 'C1', 'p1', :ct, '138****8000', 'h1', :t, 'd', :now, :now)"),
                {"ct": b"\x01x", "t": True, "now": "2026-01-01 00:00:00"})
            for i, (tid, _cid, day, amount, category) in enumerate(ROWS, start=1):
                conn.execute(sa.text(
                    "INSERT INTO transactions (id, owner_id, customer_id, external_id, date, "
                    "amount, category, row_digest) VALUES (:i, 1, 1, :tid, :d, :a, :c, 'r')"),
                    {"i": i, "tid": tid, "d": date.fromisoformat(day), "a": amount,
                     "c": category})
        # without the keyring the migration refuses and changes nothing
        with pytest.raises(KeyCustodyError, match="cipherseg db upgrade"):
            upgrade(engine)
        assert current_revision(engine) == "0005_upload_errors"
        upgrade(engine, vault=lambda: vault)
        assert current_revision(engine) == head_revision()
        columns = {c["name"] for c in sa.inspect(engine).get_columns("transactions")}
        assert {"date", "amount", "category"}.isdisjoint(columns)
        assert [n for n in _needles() if n in _dump(engine)] == []
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT owner_id, external_id, payload_ct FROM "
                                        "transactions ORDER BY id")).all()
        assert [purchases.unseal(vault, o, t, bytes(b)) for o, t, b in rows] == [
            (date.fromisoformat(d), float(a), c) for _t, _c, d, a, c in ROWS]
        downgrade(engine, "0005_upload_errors", vault=vault)
        with engine.connect() as conn:
            back = conn.execute(sa.text("SELECT external_id, date, amount, category FROM "
                                        "transactions ORDER BY id")).all()
        assert [(t, str(d)[:10], f"{Decimal(a):.2f}", c) for t, d, a, c in back] == [
            (t, d, a, c) for t, _c, d, a, c in ROWS]
    finally:
        engine.dispose()
