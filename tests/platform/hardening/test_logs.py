"""Findings 8 and 9 (issue 16): no secret in any log, and the masking filter never breaks
logging. The filter masks the formatted message, keeps ``record.args`` usable by uvicorn's
access formatter, leaves IP addresses and hex alone; callback tokens and delivery-report
signatures are redacted; a full campaign run on ``cipherseg serve`` logs no error."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
from uvicorn.logging import AccessFormatter

from cipherseg.pii.masking import PhoneRedactingFilter
from cipherseg.platform.app import SecretParamFilter
from hardening_support import (
    http_login,
    live_server,
    platform_env,
    prepared_data_dir,
    released_segmentation,
)

SIG = "3f10123456789abcde01"


def _access_record(path: str, client: str = "10.10.12.134:5123") -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                             '%s - "%s %s HTTP/%s" %d', (client, "GET", path, "1.1", 200),
                             None)


def _format(record: logging.LogRecord) -> str:
    for flt in (PhoneRedactingFilter("CN"), SecretParamFilter()):
        assert flt.filter(record)
    return AccessFormatter(fmt="%(client_addr)s - \"%(request_line)s\" %(status_code)s",
                           use_colors=False).format(record)


def test_access_lines_stay_formattable_and_keep_addresses() -> None:
    line = _format(_access_record("/owner/customers?q=13812345678"))
    assert line.startswith("10.10.12.134:5123 - ")          # not "a Beijing landline"
    assert "138****5678" in line and "13812345678" not in line


def test_hex_signatures_are_left_alone_by_the_phone_mask() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "digest %s from %s",
                               ("3f10123456789abc", "192.168.100.200"), None)
    assert PhoneRedactingFilter("CN").filter(record)
    assert record.getMessage() == "digest 3f10123456789abc from 192.168.100.200"


def test_callback_secrets_are_redacted() -> None:
    line = _format(_access_record(f"/gateway/kannel/dlr?m=7&a=1&k={SIG}&s=1"))
    assert SIG not in line and "k=[redacted]" in line and "m=7" in line
    line = _format(_access_record("/gateway/kannel/mo?token=s3cr3tT0ken&text=TD"))
    assert "s3cr3tT0ken" not in line and "text=TD" in line


def test_the_filter_never_sets_args_to_none() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s (%d)",
                               ("13812345678", 3), None)
    PhoneRedactingFilter("CN").filter(record)
    assert record.args is not None
    assert record.getMessage() == "to 138****5678 (3)"


@pytest.mark.slow
def test_full_campaign_run_logs_no_error_and_no_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cipherseg.platform.campaigns.context import callback_secrets

    data = tmp_path / "data"
    settings = {"quiet_hours": "off", "sms_rate": "1000", "campaign_holdout": "0"}
    ctx = prepared_data_dir(data)
    job_id, _ = released_segmentation(ctx, names=("Loyal", "Regular"), n=120)
    token = callback_secrets(ctx).mo_token
    signature = callback_secrets(ctx).signer.sign(1, 1)
    ctx.engine.dispose()
    log_path = tmp_path / "serve.log"
    with live_server(platform_env(data, **settings), log_path) as (base, _proc), \
            httpx.Client(base_url=base, follow_redirects=False, timeout=30) as shop:
        csrf = http_login(shop, "shop")
        r = shop.post("/merchant/campaigns", data={
            "csrf_token": csrf, "job_id": str(job_id), "name": "Spring", "shop_name": "Joy",
            "pos": ["0", "1"], "use": ["0", "1"],
            "tpl": ["Hi {{ first_name }} {{ opt_out }}", "Hello {{ opt_out }}"]})
        assert r.status_code == 303, r.text[:500]
        url = r.headers["location"].split("?")[0]
        assert shop.post(url + "/send", data={"csrf_token": csrf,
                                              "confirm": "yes"}).status_code == 303
        deadline = time.monotonic() + 120
        while 'data-testid="status-label">completed<' not in shop.get(url).text:
            assert time.monotonic() < deadline, "the campaign did not complete"
            time.sleep(0.5)
        gateway = httpx.Client(base_url=base, timeout=30)
        assert gateway.get("/gateway/kannel/mo", params={"token": token, "text": "TD"},
                           headers={"X-Kannel-From": "+8613800130005"}).status_code == 200
        gateway.get("/gateway/kannel/dlr", params={"m": "1", "a": "1", "k": signature,
                                                   "s": "1"})
        gateway.get("/owner/customers", params={"q": "13800130007"})
        gateway.close()
    log = log_path.read_text()
    assert "Logging error" not in log and "Traceback" not in log, log[-3000:]
    assert '"GET /gateway/kannel/mo?token=[redacted]&text=TD HTTP/1.1" 200' in log
    assert "k=[redacted]" in log
    assert token not in log and signature not in log
    assert "127.0.0.1:" in log                  # the client address is printed as it is
    assert "13800130007" not in log and "138****0007" in log
