"""Pending uploads and the importer's validated rows are sealed at rest (issue 17 #6): the
uploads directory holds none of an upload's cells in clear; a changed, truncated, reordered,
renamed or other owner's file is refused with a clear message and imports nothing; CSV and
XLSX import exactly as before."""

from __future__ import annotations

import csv
import io
import struct
import zipfile
from datetime import date
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from cipherseg.pii.keys import PiiKeyring
from cipherseg.pii.vault import PiiVault
from cipherseg.platform.models import Customer, Transaction, Upload, User
from cipherseg.platform.sealed_files import (
    CHUNK,
    MAGIC,
    SealedFileError,
    SealedWriter,
    open_sealed,
    read_sealed,
)
from cipherseg.platform.uploads import Importer

CUST_HEADER = ["customer_id", "phone", "consent", "first_name", "timezone"]
TX_HEADER = ["transaction_id", "customer_id", "date", "amount", "category"]
# planted values that occur nowhere else
CUSTOMERS = [[f"CUSTQX{i:03d}", f"1391357{i:04d}", "yes", f"Zebulonqx{i}", "Asia/Shanghai"]
             for i in range(20)]
TRANSACTIONS = [[f"TXQZ{i:04d}", f"CUSTQX{i % 20:03d}", "2019-03-17", f"7319.{i:02d}",
                 "quokka-lamps"] for i in range(30)]
PLANTED = [b"CUSTQX0", b"1391357", b"Zebulonqx", b"TXQZ00", b"7319.", b"quokka-lamps",
           b"2019-03-17", b"customer_id", b"transaction_id"]


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue().encode()


def _xlsx_stored(header: list[str], rows: list[list[str]]) -> bytes:
    """A workbook whose parts are not compressed: its cells would be readable on disk."""
    wb = Workbook()
    ws = wb.active
    for r in [header, *rows]:
        ws.append(r)
    deflated = io.BytesIO()
    wb.save(deflated)
    out = io.BytesIO()
    with zipfile.ZipFile(deflated) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    data = out.getvalue()
    assert b"Zebulonqx" in data or b"quokka-lamps" in data
    return data


def _scan(folder: Path) -> list[tuple[str, bytes]]:
    return [(p.name, v) for p in folder.iterdir() for v in PLANTED if v in p.read_bytes()]


def _owner_id(splatform, name: str = "mall") -> int:  # type: ignore[no-untyped-def]
    with splatform.ctx.sessions() as s:
        return s.scalar(select(User.id).where(User.username == name))


def _last_upload(splatform) -> Upload:  # type: ignore[no-untyped-def]
    with splatform.ctx.sessions() as s:
        up = s.scalars(select(Upload).order_by(Upload.id.desc())).first()
        s.expunge(up)
        return up


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_pending_uploads_hold_no_cell_in_clear_and_import_unchanged(splatform, fmt: str
                                                                     ) -> None:  # type: ignore[no-untyped-def]
    owner = splatform.client("mall")
    updir = Path(splatform.ctx.settings.uploads_dir)
    make = _csv if fmt == "csv" else _xlsx_stored
    for kind, header, rows, n in (("customers", CUST_HEADER, CUSTOMERS, 20),
                                  ("transactions", TX_HEADER, TRANSACTIONS, 30)):
        assert owner.upload(kind, f"{kind}.{fmt}", make(header, rows)).status_code == 303
        files = list(updir.iterdir())
        assert len(files) == 1 and files[0].read_bytes().startswith(MAGIC)
        assert _scan(updir) == []
        splatform.run_jobs()
        up = _last_upload(splatform)
        assert (up.status, up.n_inserted) == ("imported", n), up.message
        assert list(updir.iterdir()) == []
    # the same rows in the other format change nothing: both decode to the same values
    other = _xlsx_stored if fmt == "csv" else _csv
    other_ext = "xlsx" if fmt == "csv" else "csv"
    owner.upload("customers", f"c.{other_ext}", other(CUST_HEADER, CUSTOMERS))
    owner.upload("transactions", f"t.{other_ext}", other(TX_HEADER, TRANSACTIONS))
    splatform.run_jobs()
    with splatform.ctx.sessions() as s:
        ups = s.scalars(select(Upload).order_by(Upload.id.desc()).limit(2)).all()
        assert [(u.status, u.n_inserted, u.n_unchanged) for u in ups] == \
            [("imported", 0, 30), ("imported", 0, 20)], [u.message for u in ups]
        assert s.scalar(select(func.count()).select_from(Transaction)) == 30
        phones = {splatform.ctx.vault.decrypt("phone", c.phone_ct, context=c.pseudonym)
                  for c in s.scalars(select(Customer))}
    assert phones == {f"+861391357{i:04d}" for i in range(20)}


def test_the_importers_validated_rows_are_sealed(tmp_path: Path) -> None:
    from cipherseg.platform.db import make_engine, make_sessionmaker
    from cipherseg.platform.migrate import upgrade
    from cipherseg.platform.models import Role
    from cipherseg.platform.services.users import create_user

    engine = make_engine(f"sqlite:///{tmp_path / 'u.db'}")
    upgrade(engine)
    vault = PiiVault(PiiKeyring.generate())
    src = tmp_path / "in" / "c.csv"
    src.parent.mkdir()
    src.write_bytes(_csv(CUST_HEADER, CUSTOMERS))
    with make_sessionmaker(engine)() as s:
        owner = create_user(s, "mall", "a long passphrase", Role.OWNER)
        s.commit()
        with Importer(s, vault, owner.id, "customers", src, region="CN",
                      today=date(2025, 7, 1)) as imp:
            assert not imp.validate().errors
            spill = src.with_name("c.csv.validated")
            assert spill.read_bytes().startswith(MAGIC)
            src.unlink()
            assert _scan(src.parent) == []
            assert imp.apply().inserted == 20
        assert not spill.exists()
    engine.dispose()


def _tamper_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-20] ^= 1
    path.write_bytes(bytes(data))


def _tamper_cut(path: Path) -> None:
    data = path.read_bytes()
    (n,) = struct.unpack(">H", data[len(MAGIC):len(MAGIC) + 2])
    path.write_bytes(data[:len(MAGIC) + 2 + n])  # header only: every chunk dropped


@pytest.mark.parametrize(("tamper", "words"), [(_tamper_flip, "failed authentication"),
                                                (_tamper_cut, "ends before its last chunk")])
def test_a_tampered_pending_upload_is_refused_and_imports_nothing(splatform, tamper,
                                                                  words: str) -> None:  # type: ignore[no-untyped-def]
    owner = splatform.client("mall")
    r = owner.upload("customers", "c.csv", _csv(CUST_HEADER, CUSTOMERS))
    tamper(Path(_last_upload(splatform).stored_path))
    splatform.run_jobs()
    up = _last_upload(splatform)
    assert up.status == "rejected" and words in up.message and "Upload the original file " \
        "again" in up.message, up.message
    assert words in owner.get(r.headers["location"]).text
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 0
    assert list(Path(splatform.ctx.settings.uploads_dir).iterdir()) == []


def test_another_owners_file_is_refused(splatform) -> None:  # type: ignore[no-untyped-def]
    from cipherseg.platform.models import Role
    from cipherseg.platform.services.users import create_user

    with splatform.ctx.sessions() as s:
        create_user(s, "mall2", "a long passphrase", Role.OWNER)
        s.commit()
    mall2 = splatform.client()
    assert mall2.login("mall2", "a long passphrase").status_code == 303
    mall2.upload("customers", "c.csv", _csv(CUST_HEADER, CUSTOMERS[:3]))
    mine = Path(_last_upload(splatform).stored_path)
    # the same name, sealed for the other owner ("mall"): only the owner differs
    mine.unlink()
    with SealedWriter(mine, splatform.ctx.vault, _owner_id(splatform, "mall")) as out:
        out.write(_csv(CUST_HEADER, CUSTOMERS))
    splatform.run_jobs()
    up = _last_upload(splatform)
    assert up.status == "rejected" and "another owner" in up.message, up.message
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 0


def test_sealed_files_refuse_reordered_truncated_and_renamed_chunks(tmp_path: Path) -> None:
    vault = PiiVault(PiiKeyring.generate())
    body = bytes(range(256)) * (3 * CHUNK // 256 + 7)  # 4 chunks, the last one short
    path = tmp_path / "f.csv"
    with SealedWriter(path, vault, 1) as out:
        for i in range(0, len(body), 70_000):
            out.write(body[i:i + 70_000])
    assert read_sealed(path, vault, 1, limit=len(body)) == body
    with pytest.raises(SealedFileError, match="larger than"):
        read_sealed(path, vault, 1, limit=len(body) - 1)
    data = path.read_bytes()
    (n,) = struct.unpack(">H", data[len(MAGIC):len(MAGIC) + 2])
    pos, chunks = len(MAGIC) + 2 + n, []
    while pos < len(data):
        (m,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append(data[pos:pos + 4 + 12 + m])
        pos += 4 + 12 + m
    head = data[:len(MAGIC) + 2 + n]
    assert len(chunks) == 4
    variants = {"reordered": head + chunks[1] + chunks[0] + chunks[2] + chunks[3],
                "last dropped": head + b"".join(chunks[:3]),
                "middle dropped": head + chunks[0] + chunks[2] + chunks[3],
                "repeated": head + chunks[0] + b"".join(chunks),
                "cut inside": data[:-5]}
    for name, bad in variants.items():
        path.write_bytes(bad)
        with pytest.raises(SealedFileError), open_sealed(path, vault, 1) as fh:
            fh.read()
        assert name
    path.write_bytes(data)
    moved = tmp_path / "g.csv"
    path.rename(moved)
    with pytest.raises(SealedFileError, match="another owner"):
        open_sealed(moved, vault, 1)


def test_key_rotation_keeps_the_key_of_a_pending_upload(splatform) -> None:  # type: ignore[no-untyped-def]
    from cipherseg.platform.rotation import rotate_pii_key

    owner = splatform.client("mall")
    owner.upload("customers", "c.csv", _csv(CUST_HEADER, CUSTOMERS))
    pending = Path(_last_upload(splatform).stored_path)
    settings = splatform.ctx.settings
    assert not rotate_pii_key(settings, splatform.ctx.engine).retired
    on_disk = PiiVault(PiiKeyring.from_json(settings.pii_keyring_path.read_text()))
    assert read_sealed(pending, on_disk, _owner_id(splatform), limit=CHUNK).startswith(
        b"customer_id,")
    splatform.run_jobs()
    assert _last_upload(splatform).status == "imported"
    assert rotate_pii_key(settings, splatform.ctx.engine).retired
