"""Phone number normalisation (E.164) and masking for display, exports and logs.

Masks follow local habits: a Chinese mobile number shows its first three and last four
digits (``138****5678``, as Chinese apps do); any other number shows its country code, the
first digit of the national number and the last three digits (``+44 7*** ***123``).

>>> normalise_phone("138 1234 5678", region="CN")
'+8613812345678'
>>> mask_phone("+8613812345678", region="CN")
'138****5678'
>>> mask_phone("+447911123123", region="CN")
'+44 7*** ***123'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import phonenumbers

from cipherseg.errors import ValidationError

_CN_MOBILE_LEN = 11


def normalise_phone(raw: str, *, region: str) -> str:
    """Parse ``raw`` (national numbers read in ``region``) and return it in E.164.

    Raises :class:`ValidationError` for text that is not a valid phone number.

    >>> normalise_phone("+44 7911 123123", region="CN")
    '+447911123123'
    >>> normalise_phone("12345", region="CN")
    Traceback (most recent call last):
    ...
    cipherseg.errors.ValidationError: not a valid phone number for region CN (...)
    """
    text = raw.strip()
    try:
        num = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(f"not a valid phone number for region {region} "
                              f"({exc._msg.rstrip('.').lower()})") from exc
    if not phonenumbers.is_valid_number(num):
        raise ValidationError(f"not a valid phone number for region {region} "
                              "(wrong length or unknown prefix)")
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


def _mask_digits(text: str, keep_head: int, keep_tail: int) -> str:
    n = sum(ch.isdigit() for ch in text)
    out, i = [], 0
    for ch in text:
        if ch.isdigit():
            out.append(ch if i < keep_head or i >= n - keep_tail else "*")
            i += 1
        else:
            out.append(ch)
    return "".join(out)


def mask_phone(e164: str, *, region: str) -> str:
    """Masked display form of a phone number (E.164 or anything parseable in ``region``).

    Text that is not a possible phone number is masked wholesale except its last two
    characters.

    >>> mask_phone("+8613812345678", region="GB")
    '+86 138****5678'
    >>> mask_phone("garbage-123", region="CN")
    '*********23'
    """
    try:
        num = phonenumbers.parse(e164, region)
    except phonenumbers.NumberParseException:
        return mask_raw(e164)
    if not phonenumbers.is_possible_number(num):
        return mask_raw(e164)
    nsn = phonenumbers.national_significant_number(num)
    if num.country_code == 86 and len(nsn) == _CN_MOBILE_LEN:
        masked = nsn[:3] + "****" + nsn[-4:]
        home = phonenumbers.country_code_for_region(region) == 86
        return masked if home else "+86 " + masked
    intl = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    prefix = f"+{num.country_code}"
    rest = intl[len(prefix):] if intl.startswith(prefix) else " " + nsn
    return prefix + _mask_digits(rest, 1, 3)


def mask_raw(text: str) -> str:
    """Mask arbitrary text that may hold a phone number: everything but the last two chars.

    Used for values that failed validation, so even a malformed number is never echoed.

    >>> mask_raw("1381234567")
    '********67'
    """
    if len(text) <= 2:
        return "*" * len(text)
    return "*" * (len(text) - 2) + text[-2:]


#: A phone-number-like run, not glued to letters or digits (hex digests and signatures stay
#: whole) nor to a ``digit.`` on either side (IPv4 addresses, decimals).
_CANDIDATE = re.compile(r"(?<![\w+])(?<!\d\.)\+?\d[\d\s().-]{5,}\d(?!\w)(?!\.\d)")
_PART_BREAK = re.compile(r"(\s*[()]\s*|\s*\.\s+)")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def redact_phones(text: str, *, region: str) -> str:
    """Replace every phone-number-like run in ``text`` by its mask (for logs and exports).

    A run of 7+ digits that phonenumbers considers *possible* in ``region`` (or with an
    explicit country code) is masked; short numbers (counts, ids) are left alone, and so
    are IPv4 addresses and digits inside hex strings or longer words.

    >>> redact_phones("sent to 13812345678 and +44 7911 123123, 100000 rows", region="CN")
    'sent to 138****5678 and +44 7*** ***123, 100000 rows'
    >>> redact_phones("10.10.12.134 - k=3f10123456789abc 'GET /x'", region="CN")
    "10.10.12.134 - k=3f10123456789abc 'GET /x'"
    >>> redact_phones("to:13812345678, call 13812345678.", region="CN")
    'to:138****5678, call 138****5678.'

    """

    def is_phone(s: str) -> bool:
        if sum(ch.isdigit() for ch in s) < 7 or _IPV4.fullmatch(s):
            return False
        try:
            num = phonenumbers.parse(s, region)
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_possible_number(num) and (
            phonenumbers.is_valid_number(num) or s.startswith("+"))

    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        if is_phone(s):
            return mask_phone(s, region=region)
        # "13812345678 (3 rows)": the run swallowed what follows; try its parts
        parts = _PART_BREAK.split(s)
        if len(parts) == 1:
            return s
        return "".join(mask_phone(p, region=region) if i % 2 == 0 and is_phone(p) else p
                       for i, p in enumerate(parts))

    return _CANDIDATE.sub(repl, text)


def redact_record(record: logging.LogRecord, redact: Callable[[str], str]) -> None:
    """Apply ``redact`` to what ``record`` will print, keeping the record printable.

    The string arguments are redacted in place when that is enough (formatters such as
    uvicorn's access formatter read ``record.args`` as a tuple); otherwise the formatted
    message replaces ``msg`` and ``args`` becomes an empty tuple (never ``None``).
    """
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        return
    wanted = redact(message)
    if wanted == message:
        return
    args = record.args
    if isinstance(args, tuple) and isinstance(record.msg, str):
        record.msg = redact(record.msg)
        record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        try:
            if record.getMessage() == wanted:
                return
        except (TypeError, ValueError):
            pass
    record.msg, record.args = wanted, ()


class PhoneRedactingFilter(logging.Filter):
    """A logging filter that masks phone numbers in every record's message.

    >>> rec = logging.LogRecord("x", logging.INFO, "f", 1, "to %s", ("13812345678",), None)
    >>> PhoneRedactingFilter("CN").filter(rec), rec.getMessage(), rec.args
    (True, 'to 138****5678', ('138****5678',))
    """

    def __init__(self, region: str) -> None:
        super().__init__()
        self.region = region

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, lambda text: redact_phones(text, region=self.region))
        return True
