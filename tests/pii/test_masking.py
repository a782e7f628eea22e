"""Phone normalisation and masking: masks reveal little, and redaction finds numbers in text."""

from __future__ import annotations

import logging

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipherseg.errors import ValidationError
from cipherseg.pii import PhoneRedactingFilter, mask_phone, normalise_phone, redact_phones

REGIONS = ["CN", "GB", "US", "DE", "FR", "IN", "JP", "HK", "SG", "AU", "BR", "NG"]


def _examples() -> list[str]:
    out = []
    for region in REGIONS:
        for kind in (phonenumbers.PhoneNumberType.MOBILE,
                     phonenumbers.PhoneNumberType.FIXED_LINE):
            num = phonenumbers.example_number_for_type(region, kind)
            if num is not None:
                out.append(phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164))
    return out


EXAMPLES = _examples()


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("13812345678", "CN", "138****5678"),
    ("+86 138 1234 5678", "CN", "138****5678"),
    ("+447911123123", "CN", "+44 7*** ***123"),
    ("07911 123123", "GB", "+44 7*** ***123"),
])
def test_documented_masks(raw: str, region: str, expected: str) -> None:
    assert mask_phone(normalise_phone(raw, region=region), region=region) == expected


@settings(max_examples=80, deadline=None)
@given(e164=st.sampled_from(EXAMPLES), region=st.sampled_from(REGIONS))
def test_masks_hide_the_middle_of_every_number(e164: str, region: str) -> None:
    masked = mask_phone(e164, region=region)
    nsn = phonenumbers.national_significant_number(phonenumbers.parse(e164))
    shown = [ch for ch in masked.split(" ", 1)[-1] if ch.isdigit()] if masked.startswith("+") \
        else [ch for ch in masked if ch.isdigit()]
    assert "*" in masked
    assert len(shown) <= max(7, len(nsn) // 2 + 1)
    assert nsn not in masked.replace(" ", "")
    assert e164 not in masked


@pytest.mark.parametrize("bad", ["", "12345", "abc", "+999 123", "138123456789012"])
def test_invalid_numbers_raise_a_clear_error(bad: str) -> None:
    with pytest.raises(ValidationError, match="not a valid phone number"):
        normalise_phone(bad, region="CN")


@settings(max_examples=60, deadline=None)
@given(e164=st.sampled_from(EXAMPLES),
       before=st.text(alphabet="abc xyz:,;", max_size=10),
       after=st.text(alphabet="abc xyz:,;", max_size=10))
def test_redaction_removes_numbers_from_free_text(e164: str, before: str, after: str) -> None:
    text = redact_phones(f"{before} {e164} {after}", region="CN")
    assert e164 not in text


def test_redaction_leaves_counts_alone() -> None:
    assert redact_phones("imported 100000 rows in 12.5 s", region="CN") == \
        "imported 100000 rows in 12.5 s"


def test_logging_filter_masks_messages(caplog) -> None:
    logger = logging.getLogger("cipherseg.test.redaction")
    flt = PhoneRedactingFilter("CN")
    logger.addFilter(flt)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("sending to %s", "+8613812345678")
    finally:
        logger.removeFilter(flt)
    assert "13812345678" not in caplog.text
    assert "138****5678" in caplog.text
