"""Upload templates and validation: every bad row is reported, a bad file imports nothing,
a good file is idempotent; hypothesis generates the bad files."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook
from sqlalchemy import func, select

from cipherseg.pii.keys import PiiKeyring
from cipherseg.pii.vault import PiiVault
from cipherseg.platform.db import make_engine, make_sessionmaker
from cipherseg.platform.migrate import upgrade
from cipherseg.platform.models import Customer, Role, Transaction, Upload
from cipherseg.platform.services.users import create_user
from cipherseg.platform.uploads import COLUMNS, Importer, UploadFileError

CUST_HEADER = ["customer_id", "phone", "consent", "first_name", "timezone"]
TX_HEADER = ["transaction_id", "customer_id", "date", "amount", "category"]
TODAY = date(2025, 7, 1)


def good_customers(n: int) -> list[list[str]]:
    return [[f"C{i:04d}", f"1380013{i:04d}", "yes" if i % 3 else "no", "Li" if i % 2 else "",
             "Asia/Shanghai" if i % 4 else ""] for i in range(n)]


def good_transactions(n: int, n_customers: int) -> list[list[str]]:
    return [[f"T{i:06d}", f"C{i % n_customers:04d}", f"2025-0{1 + i % 6}-1{i % 10}",
             f"{10 + i % 50}.{i % 100:02d}", "food"] for i in range(n)]


def to_csv(header: list[str], rows: list[list[str]], delimiter: str = ",") -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def to_xlsx(header: list[str], rows: list[list[object]]) -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.append(header)
    for r in rows:
        ws.append(r)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


# Corruptions: (column, bad value, expected words in the message)
CUSTOMER_CORRUPTIONS = [
    ("customer_id", "", "required"), ("customer_id", "has space", "ids are"),
    ("customer_id", "x" * 65, "ids are"), ("phone", "", "required"),
    ("phone", "12345", "not a valid phone"), ("phone", "phone", "not a valid phone"),
    ("phone", "+1 555 0100", "not a valid phone"), ("phone", "1381234567", "not a valid phone"),
    ("consent", "maybe", "yes or no"), ("consent", "", "yes or no"),
    ("timezone", "Mars/Base", "unknown time zone"), ("first_name", "n" * 65, "at most 64"),
]
TRANSACTION_CORRUPTIONS = [
    ("transaction_id", "", "required"), ("customer_id", "C9999", "unknown customer"),
    ("date", "2025-13-01", "not a date"), ("date", "yesterday", "not a date"),
    ("date", "2031-01-01", "in the future"), ("date", "1960-05-01", "before"),
    ("date", "", "required"), ("amount", "-5.00", "positive"), ("amount", "0", "positive"),
    ("amount", "12,50", "not a number"), ("amount", "abc", "not a number"),
    ("amount", "1.005", "2 decimal"), ("amount", "NaN", "not a number"),
    ("amount", "inf", "not a number"), ("amount", "1e12", "too large"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A migrated SQLite database with an owner and 40 customers (module scope: fast)."""
    path = tmp_path_factory.mktemp("uploads")
    engine = make_engine(f"sqlite:///{path / 'u.db'}")
    upgrade(engine)
    factory = make_sessionmaker(engine)
    vault = PiiVault(PiiKeyring.generate())
    with factory() as s:
        owner = create_user(s, "mall", "a long passphrase", Role.OWNER)
        s.commit()
        f = path / "customers.csv"
        f.write_bytes(to_csv(CUST_HEADER, good_customers(40)))
        with Importer(s, vault, owner.id, "customers", f, region="CN", today=TODAY) as imp:
            assert not imp.validate().errors
            imp.apply()
        s.commit()
    return factory, vault, owner.id, path


def _validate(store, kind: str, content: bytes, name: str = "f.csv"):  # type: ignore[no-untyped-def]
    factory, vault, owner_id, path = store
    f = path / name
    f.write_bytes(content)
    with factory() as s, Importer(s, vault, owner_id, kind, f, region="CN", today=TODAY) as imp:
        return imp.validate()


def _counts(store) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with store[0]() as s:
        return (s.scalar(select(func.count()).select_from(Customer)),
                s.scalar(select(func.count()).select_from(Transaction)))


@pytest.mark.parametrize(("column", "value", "words"), CUSTOMER_CORRUPTIONS)
def test_each_customer_problem_is_named(store, column: str, value: str, words: str) -> None:  # type: ignore[no-untyped-def]
    rows = good_customers(5)
    rows[2][CUST_HEADER.index(column)] = value
    summary = _validate(store, "customers", to_csv(CUST_HEADER, rows))
    assert summary.bad_rows == {4}
    assert any(e.column == column and words in e.message for e in summary.errors), summary.errors


@pytest.mark.parametrize(("column", "value", "words"), TRANSACTION_CORRUPTIONS)
def test_each_transaction_problem_is_named(store, column: str, value: str, words: str) -> None:  # type: ignore[no-untyped-def]
    rows = good_transactions(6, 40)
    rows[4][TX_HEADER.index(column)] = value
    summary = _validate(store, "transactions", to_csv(TX_HEADER, rows))
    assert summary.bad_rows == {6}
    assert any(e.column == column and words in e.message for e in summary.errors), summary.errors


def test_malformed_phone_numbers_are_never_echoed(store) -> None:  # type: ignore[no-untyped-def]
    rows = good_customers(3)
    rows[1][1] = "1381234567"
    summary = _validate(store, "customers", to_csv(CUST_HEADER, rows))
    (err,) = summary.errors
    assert err.value == "********67"


@pytest.mark.parametrize(("content", "words"), [
    (b"", "empty"),
    (b"customer_id,phone\nC1,13800138000\n", r"misses column\(s\) consent"),
    (b"customer_id,phone,consent,shoe_size\nC1,13800138000,yes,42\n", "unknown column"),
    (to_csv(TX_HEADER, good_transactions(2, 40)), "looks like a transactions file"),
    (b"customer_id,phone,consent\n", "no data rows"),
    (b"customer_id,phone,consent,phone\nC1,1,yes,1\n", "appear twice"),
    ("customer_id,phone,consent\nC1,13800138000,是\n".encode("gb18030"), "not UTF-8"),
])
def test_whole_file_problems(store, content: bytes, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UploadFileError, match=words):
        _validate(store, "customers", content)


def test_broken_xlsx_is_a_file_error(store) -> None:  # type: ignore[no-untyped-def]
    content = to_xlsx(CUST_HEADER, [])[:300]
    with pytest.raises(UploadFileError, match="xlsx"):
        _validate(store, "customers", b"PK\x03\x04" + content[4:], name="broken.xlsx")


def test_semicolon_csv_and_xlsx_with_native_cells_are_read(store) -> None:  # type: ignore[no-untyped-def]
    rows = good_customers(4)
    assert not _validate(store, "customers", to_csv(CUST_HEADER, rows, ";")).errors
    xrows: list[list[object]] = [[r[0], int(r[1]), r[2] == "yes", r[3], r[4]] for r in rows]
    assert not _validate(store, "customers", to_xlsx(CUST_HEADER, xrows), "c.xlsx").errors
    from datetime import datetime

    trows: list[list[object]] = [["T1", "C0001", datetime(2025, 3, 1), 19.9, "x"],
                                 ["T2", "C0002", date(2025, 3, 2), 5, None]]
    assert not _validate(store, "transactions", to_xlsx(TX_HEADER, trows), "t.xlsx").errors


def test_extra_cells_beyond_the_header_are_reported(store) -> None:  # type: ignore[no-untyped-def]
    content = to_csv(CUST_HEADER, good_customers(3)) + b"C0009,13800138009,yes,,,surprise\n"
    summary = _validate(store, "customers", content)
    assert summary.bad_rows == {5}


def test_duplicate_ids_in_one_file_are_reported_on_the_later_row(store) -> None:  # type: ignore[no-untyped-def]
    rows = good_transactions(5, 40)
    rows[3][0] = rows[1][0]
    summary = _validate(store, "transactions", to_csv(TX_HEADER, rows))
    assert summary.bad_rows == {5}
    assert "duplicate" in summary.errors[0].message


def _corrupt_file(data, kind: str):  # type: ignore[no-untyped-def]
    """Draw a good file, corrupt a random set of rows, return (bytes, name, bad row numbers)."""
    n = data.draw(st.integers(3, 25), label="rows")
    if kind == "customers":
        header, rows, table = CUST_HEADER, good_customers(n), CUSTOMER_CORRUPTIONS
    else:
        header, rows, table = TX_HEADER, good_transactions(n, 40), TRANSACTION_CORRUPTIONS
    bad = data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n), label="bad")
    for i in sorted(bad):
        how = data.draw(st.sampled_from([*range(len(table)), "duplicate"]), label="how")
        clean_before = [j for j in range(i) if j not in bad]
        if how == "duplicate" and clean_before:
            rows[i][0] = rows[data.draw(st.sampled_from(clean_before))][0]
        else:
            idx = how if isinstance(how, int) else 0
            column, value, _ = table[idx]
            rows[i][header.index(column)] = value
    as_xlsx = data.draw(st.booleans(), label="xlsx")
    content = to_xlsx(header, rows) if as_xlsx else to_csv(header, rows)  # type: ignore[arg-type]
    return content, "bad.xlsx" if as_xlsx else "bad.csv", {i + 2 for i in bad}


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(["customers", "transactions"]))
def test_hypothesis_bad_files_report_exactly_the_bad_rows_and_import_nothing(
        store, data, kind: str) -> None:  # type: ignore[no-untyped-def]
    before = _counts(store)
    content, name, bad_rows = _corrupt_file(data, kind)
    summary = _validate(store, kind, content, name)
    assert summary.bad_rows == bad_rows
    assert _counts(store) == before


def test_good_upload_is_idempotent_and_updates_changed_customers(store) -> None:  # type: ignore[no-untyped-def]
    factory, vault, owner_id, path = store
    f = path / "again.csv"

    def run(kind: str, content: bytes):  # type: ignore[no-untyped-def]
        f.write_bytes(content)
        with factory() as s, Importer(s, vault, owner_id, kind, f, region="CN",
                                      today=TODAY) as imp:
            assert not imp.validate().errors
            counts = imp.apply()
            s.commit()
            return counts

    before = _counts(store)
    c = run("customers", to_csv(CUST_HEADER, good_customers(40)))
    assert (c.inserted, c.updated, c.unchanged) == (0, 0, 40)
    changed = good_customers(40)
    changed[7][2] = "no" if changed[7][2] == "yes" else "yes"
    c = run("customers", to_csv(CUST_HEADER, changed))
    assert (c.inserted, c.updated, c.unchanged) == (0, 1, 39)
    tx = to_csv(TX_HEADER, good_transactions(30, 40))
    c1, c2 = run("transactions", tx), run("transactions", tx)
    assert (c1.inserted, c2.inserted, c2.unchanged) == (30, 0, 30)
    assert _counts(store) == (before[0], before[1] + 30)
    rows = good_transactions(30, 40)
    rows[5][3] = "999.99"
    summary = _validate(store, "transactions", to_csv(TX_HEADER, rows))
    assert summary.bad_rows == {7} and "different values" in summary.errors[0].message


def test_templates_have_the_documented_columns_and_their_examples_import(splatform) -> None:  # type: ignore[no-untyped-def]
    owner = splatform.client("mall")
    for kind in ("customers", "transactions"):
        names = [c.name for c in COLUMNS[kind]]
        r = owner.get(f"/owner/templates/{kind}.csv")
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        assert r.text.splitlines()[0].split(",") == names
        r = owner.get(f"/owner/templates/{kind}.xlsx")
        wb = load_workbook(io.BytesIO(r.content), read_only=True)
        assert [c.value for c in next(wb.worksheets[0].iter_rows(max_row=1))] == names
        assert "instructions" in wb.sheetnames
        r = owner.upload(kind, f"{kind}.xlsx", r.content)
        assert r.status_code == 303
        splatform.run_jobs()
        with splatform.ctx.sessions() as s:
            up = s.scalars(select(Upload).order_by(Upload.id.desc())).first()
            assert up.status == "imported" and up.n_inserted == 2, up.message
    assert owner.get("/owner/templates/other.csv").status_code == 404


def test_rejected_upload_reports_every_bad_row_in_a_downloadable_report(splatform) -> None:  # type: ignore[no-untyped-def]
    owner = splatform.client("mall")
    rows = good_customers(30)
    for i in (3, 11, 29):
        rows[i][1] = "138001"  # too short
    rows[20][2] = "perhaps"
    r = owner.upload("customers", "c.csv", to_csv(CUST_HEADER, rows))
    page = r.headers["location"]
    splatform.run_jobs()
    r = owner.get(page)
    assert "rejected" in r.text and "4 of 30 rows have problems; nothing was imported" in r.text
    upload_id = page.rsplit("/", 1)[1]
    report = owner.get(f"/owner/uploads/{upload_id}/errors.csv")
    lines = list(csv.DictReader(io.StringIO(report.text)))
    assert sorted(int(x["row"]) for x in lines) == [5, 13, 22, 31]
    assert all("138001" not in x["value"] for x in lines)
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 0
    assert not any(Path(splatform.ctx.settings.uploads_dir).iterdir())


def test_upload_limits_and_kinds_are_checked(splatform) -> None:  # type: ignore[no-untyped-def]
    owner = splatform.client("mall")
    r = owner.upload("shoes", "c.csv", b"x")
    assert r.status_code == 400 and "unknown upload kind" in r.text
    r = owner.upload("customers", "c.csv", b"")
    assert r.status_code == 400 and "empty" in r.text
