"""SMS length: GSM-7 or UCS-2, characters, units and parts, as a handset counts them.

A message that uses only the GSM 03.38 default alphabet (and its extension table) is sent
as GSM-7: 160 septets in one SMS, 153 per part once it is split (the user data header takes
the rest). Extension characters (``€ [ ] { } ^ ~ | \\`` and form feed) take two septets, and
an escape pair is never split across parts. Any other character (Chinese, emoji, most
accented letters) switches the whole message to UCS-2: 70 UTF-16 code units in one SMS, 67
per part, and a surrogate pair (an emoji) is never split either.

>>> count_sms("Hello").parts, count_sms("Hello").encoding
(1, 'GSM-7')
>>> c = count_sms("你好，回复TD退订")
>>> c.encoding, c.characters, c.units, c.parts
('UCS-2', 9, 9, 1)
>>> count_sms("€" * 80).units, count_sms("€" * 80).parts
(160, 1)
>>> count_sms("a" * 161).parts
2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

#: GSM 03.38 default alphabet (ESC, 0x1B, is not a character of its own).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: Extension table: each takes an escape septet plus its own.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

_GSM_SINGLE, _GSM_PART = 160, 153
_UCS_SINGLE, _UCS_PART = 70, 67


@dataclass(frozen=True, slots=True)
class SmsCount:
    """How long a text is as SMS.

    ``units`` are septets (GSM-7) or UTF-16 code units (UCS-2); ``remaining`` is how many
    more units fit in the last part.

    >>> count_sms("Hi").remaining
    158
    """

    encoding: Encoding
    characters: int
    units: int
    parts: int
    per_part: int
    remaining: int


def is_gsm7(text: str) -> bool:
    """Whether ``text`` can be sent in the GSM-7 alphabet.

    >>> is_gsm7("Price: 10€ [today]"), is_gsm7("退订")
    (True, False)
    """
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _pack(costs: list[int], single: int, per_part: int) -> tuple[int, int, int]:
    """Parts, per-part capacity and units left, given each character's (unsplittable) cost."""
    total = sum(costs)
    if total <= single:
        return 1, single, single - total
    parts, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts, per_part, per_part - used


def count_sms(text: str) -> SmsCount:
    """Encoding, character count, units and number of parts of ``text``.

    An empty text is one (empty) SMS.

    >>> count_sms("😀" * 35).units, count_sms("😀" * 35).parts
    (70, 1)
    >>> count_sms("😀" * 36).parts  # 72 units; pairs are kept whole: 33 + 3 emoji
    2
    """
    if is_gsm7(text):
        costs = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        parts, per_part, left = _pack(costs, _GSM_SINGLE, _GSM_PART)
        return SmsCount("GSM-7", len(text), sum(costs), parts, per_part, left)
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    parts, per_part, left = _pack(costs, _UCS_SINGLE, _UCS_PART)
    return SmsCount("UCS-2", len(text), sum(costs), parts, per_part, left)
