"""Finding 3 (issue 16): error reports are capped (the first problems of each column, every
problem counted), stored as rows so a page view parses nothing, and paged. 400,000 bad rows
from outside grow ``cipherseg serve`` by under 50 MB; the stored report stays small."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import func, select

from cipherseg.platform.models import Customer, Role, Upload, UploadError
from cipherseg.platform.uploads import KEEP_PER_COLUMN
from hardening_support import (
    RssSampler,
    http_login,
    live_server,
    platform_env,
    prepared_data_dir,
    wait_upload,
)

MB = 1 << 20


def _bad_csv(n: int) -> bytes:
    # every row bad twice (phone and consent), one in ten also has an extra cell
    return ("customer_id,phone,consent\n" + "".join(
        f"C{i},12{i % 10},maybe{',x' if i % 10 == 0 else ''}\n" for i in range(n))).encode()


def test_reports_keep_the_first_problems_of_each_column_and_count_all(splatform) -> None:  # type: ignore[no-untyped-def]
    owner = splatform.as_role(Role.OWNER)
    r = owner.upload("customers", "bad.csv", _bad_csv(2000))
    splatform.run_jobs()
    url = r.headers["location"]
    page = owner.get(url).text
    assert "1800 of 2000 rows have problems" in page or "2000 of 2000 rows have problems" in page
    with splatform.ctx.sessions() as s:
        up = s.scalars(select(Upload)).one()
        listed = s.scalar(select(func.count()).select_from(UploadError)) or 0
        assert up.n_errors == 2000 and up.error_report is None
        assert up.error_counts == {"": 200, "consent": 1800, "phone": 1800}
    assert listed == 3 * KEEP_PER_COLUMN
    assert 'data-testid="error-counts">3800 problems' in page
    # paged: 20 a page, the next page starts where this one ended
    second = owner.get(url + "?errors_offset=20").text
    assert "problems 21–40 of 300 listed" in second
    assert owner.get(url + "?errors_offset=-1").status_code == 422
    # a refused upload leaves nothing: no row imported, no stored file, no spill
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 0
    assert list(splatform.ctx.settings.uploads_dir.iterdir()) == []
    report = owner.get(url + "/errors.csv").text.splitlines()
    assert len(report) == 1 + 3 * KEEP_PER_COLUMN + 3
    assert report[-1].startswith(",phone,,... and 1700 more problems")


@pytest.mark.slow
def test_400k_bad_rows_grow_the_server_by_under_50_mb(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    ctx = prepared_data_dir(data)
    body = _bad_csv(400_000)
    print(f"upload: {len(body) / MB:.1f} MB")
    with live_server(platform_env(data), tmp_path / "serve.log") as (base, proc), \
            httpx.Client(base_url=base, follow_redirects=False, timeout=120) as owner:
        csrf = http_login(owner, "mall")
        # warm up the import path once (imports, pages) before the baseline
        warm = owner.post("/owner/uploads", data={"kind": "customers", "csrf_token": csrf},
                          files={"file": ("w.csv", _bad_csv(50), "text/csv")})
        wait_upload(owner, warm.headers["location"])
        sampler = RssSampler(proc.pid)
        r = owner.post("/owner/uploads", data={"kind": "customers", "csrf_token": csrf},
                       files={"file": ("bad.csv", body, "text/csv")})
        assert r.status_code == 303
        url = r.headers["location"]
        page = wait_upload(owner, url, seconds=600)
        assert "400000 of 400000 rows have problems" in page
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            assert owner.get(url).status_code == 200
            timings.append(time.perf_counter() - start)
        grown = sampler.stop()
        print(f"peak RSS grew by {grown / MB:.1f} MB; report page "
              f"{min(timings) * 1000:.0f}-{max(timings) * 1000:.0f} ms")
        assert grown < 50 * MB
    with ctx.sessions() as s:
        assert (s.scalar(select(func.count()).select_from(UploadError)) or 0) <= \
            2 * 3 * KEEP_PER_COLUMN
    ctx.engine.dispose()
