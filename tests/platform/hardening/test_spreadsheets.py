"""Finding 2 (issue 16): an .xlsx upload's zip directory is checked before anything is
decompressed (total size, expansion ratio per part, shared strings), and the workbook is
opened once. A 1 MB file carrying 1 GB of shared strings is refused with a clear message,
grows ``cipherseg serve`` by under 50 MB and leaves nothing behind."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from cipherseg.platform.models import Customer, Role, Upload
from cipherseg.platform.uploads import (
    SpreadsheetLimits,
    UploadFileError,
    check_xlsx,
    template_xlsx,
)
from hardening_support import (
    RssSampler,
    http_login,
    live_server,
    platform_env,
    prepared_data_dir,
    wait_upload,
)

MB = 1 << 20


def shared_strings_bomb(path: Path, gigabytes: float = 1.0) -> Path:
    """A real workbook (the customers template) whose sharedStrings.xml is replaced by one
    shared string of ``gigabytes`` GB; about 1 MB compressed per GB."""
    template = zipfile.ZipFile(io.BytesIO(template_xlsx("customers")))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as out:
        for info in template.infolist():
            part = template.read(info.filename)
            if info.filename == "xl/_rels/workbook.xml.rels":   # point openpyxl at it
                part = part.replace(b"</Relationships>", (
                    b'<Relationship Id="rIdSst" Type="http://schemas.openxmlformats.org/'
                    b'officeDocument/2006/relationships/sharedStrings" '
                    b'Target="sharedStrings.xml"/></Relationships>'))
            elif info.filename == "[Content_Types].xml":
                part = part.replace(b"</Types>", (
                    b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
                    b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
                    b"</Types>"))
            out.writestr(info.filename, part)
        block = b"A" * MB
        with out.open("xl/sharedStrings.xml", "w", force_zip64=True) as fh:
            fh.write(b'<?xml version="1.0"?><sst xmlns="http://schemas.openxmlformats.org/'
                     b'spreadsheetml/2006/main"><si><t>')
            left = int(gigabytes * 1024 * MB)
            while left > 0:
                fh.write(block[:left])
                left -= len(block)
            fh.write(b"</t></si></sst>")
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_strings_bomb(tmp_path_factory.mktemp("bomb") / "bomb.xlsx")


def test_the_bomb_is_small_and_refused_before_decompression(bomb: Path) -> None:
    assert bomb.stat().st_size < 2 * MB
    with pytest.raises(UploadFileError, match=r"expands .* times .* zip bomb"):
        check_xlsx(bomb, SpreadsheetLimits())


def test_each_bound_is_enforced(tmp_path: Path) -> None:
    good = tmp_path / "good.xlsx"
    good.write_bytes(template_xlsx("customers"))
    check_xlsx(good, SpreadsheetLimits())
    with pytest.raises(UploadFileError, match="expands to"):
        check_xlsx(good, SpreadsheetLimits(max_uncompressed=1000))
    strings = shared_strings_bomb(tmp_path / "strings.xlsx", gigabytes=0.9 / 1024)
    check_xlsx(strings, SpreadsheetLimits())
    with pytest.raises(UploadFileError, match="shared strings take 1 MB"):
        check_xlsx(strings, SpreadsheetLimits(max_shared_strings=MB // 2))
    with pytest.raises(UploadFileError, match="parts"):
        check_xlsx(good, SpreadsheetLimits(max_members=2))


def test_a_workbook_is_opened_once(splatform, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import openpyxl

    from cipherseg.platform import uploads

    opened: list[object] = []
    real = openpyxl.load_workbook

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(openpyxl, "load_workbook", counting)
    owner = splatform.as_role(Role.OWNER)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["customer_id", "phone", "consent"])
    for i in range(30):
        sheet.append([f"C{i}", f"1380013{i:04d}", "yes"])
    buf = io.BytesIO()
    book.save(buf)
    assert owner.upload("customers", "c.xlsx", buf.getvalue()).status_code == 303
    splatform.run_jobs()
    assert len(opened) == 1
    assert uploads.count_rows is not None
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 30


@pytest.mark.slow
def test_a_1_mb_bomb_is_refused_from_outside(tmp_path: Path, bomb: Path) -> None:
    data = tmp_path / "data"
    ctx = prepared_data_dir(data)
    with live_server(platform_env(data), tmp_path / "serve.log") as (base, proc), \
            httpx.Client(base_url=base, follow_redirects=False, timeout=120) as owner:
        csrf = http_login(owner, "mall")
        sampler = RssSampler(proc.pid)
        r = owner.post("/owner/uploads", data={"kind": "customers", "csrf_token": csrf},
                       files={"file": ("bomb.xlsx", bomb.read_bytes(), "application/vnd."
                                       "openxmlformats-officedocument.spreadsheetml.sheet")})
        assert r.status_code == 303
        page = wait_upload(owner, r.headers["location"], seconds=120)
        grown = sampler.stop()
        print(f"server grew by {grown / MB:.1f} MB")
        assert 'id="upload-status">rejected<' in page
        assert "refused as a possible zip bomb" in page
        assert grown < 50 * MB
    with ctx.sessions() as s:
        assert s.scalars(select(Upload.status)).one() == "rejected"
        assert s.scalar(select(func.count()).select_from(Customer)) == 0
    assert list((data / "uploads").iterdir()) == []   # no file, no spill left behind
    ctx.engine.dispose()


def test_a_csv_without_line_breaks_is_refused_after_one_line(tmp_path: Path) -> None:
    import tracemalloc

    from cipherseg.platform.uploads import MAX_LINE_CHARS, iter_rows

    path = tmp_path / "one-line.csv"
    with path.open("wb") as fh:
        fh.write(b"customer_id,phone,consent\n")
        for _ in range(50):
            fh.write(b"C1;" * (MB // 3))   # 50 MB, no line break
    tracemalloc.start()
    with pytest.raises(UploadFileError, match="line 2 of the file is longer than 1024 kB"):
        list(iter_rows(path, "customers"))
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * MAX_LINE_CHARS      # one line's worth, not the file
    header_only = tmp_path / "header.csv"
    header_only.write_bytes(b"customer_id," * (MB // 4))
    with pytest.raises(UploadFileError, match="line 1 of the file is longer"):
        list(iter_rows(header_only, "customers"))
