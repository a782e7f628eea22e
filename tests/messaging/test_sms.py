"""SMS length: GSM-7 vs UCS-2, extension characters, parts, surrogate pairs."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from cipherseg.messaging.sms import GSM7_BASIC, GSM7_EXTENSION, count_sms, is_gsm7

BASIC = sorted(GSM7_BASIC)
EXT = sorted(GSM7_EXTENSION)


def test_single_and_multipart_boundaries_gsm7() -> None:
    assert count_sms("a" * 160).parts == 1
    assert count_sms("a" * 161).parts == 2
    assert count_sms("a" * 306).parts == 2
    assert count_sms("a" * 307).parts == 3


def test_boundaries_ucs2_chinese() -> None:
    assert count_sms("好" * 70).parts == 1
    assert count_sms("好" * 71).parts == 2
    assert count_sms("好" * 134).parts == 2
    assert count_sms("好" * 135).parts == 3
    c = count_sms("您好，会员日全场8折，回复TD退订")
    assert (c.encoding, c.characters, c.units) == ("UCS-2", 17, 17)


def test_one_chinese_character_switches_the_whole_message() -> None:
    text = "a" * 100 + "退"
    assert count_sms("a" * 100).parts == 1
    c = count_sms(text)
    assert c.encoding == "UCS-2" and c.parts == 2


def test_extension_characters_cost_two_and_are_not_split() -> None:
    assert count_sms("{" * 80).units == 160 and count_sms("{" * 80).parts == 1
    # 152 'a' then '€': the escape pair would straddle septet 153, so it moves to part 2.
    c = count_sms("a" * 152 + "€" + "a" * 10)
    assert c.units == 164 and c.parts == 2 and c.remaining == 153 - 12


def test_emoji_surrogate_pairs_are_not_split() -> None:
    c = count_sms("a" + "😀" * 34)   # 69 units
    assert c.parts == 1
    c = count_sms("a" * 66 + "😀" * 2)   # 70 units: one SMS
    assert c.parts == 1
    c = count_sms("a" * 66 + "😀" * 3)   # 72 units; the first pair would cross unit 67
    assert c.parts == 2 and c.remaining == 67 - 6


def test_accented_letters_outside_gsm_force_ucs2() -> None:
    assert is_gsm7("é") and not is_gsm7("ê")
    assert count_sms("crêpe").encoding == "UCS-2"


@given(st.lists(st.sampled_from(BASIC), max_size=600))
def test_basic_alphabet_parts_formula(chars: list[str]) -> None:
    n = len(chars)
    c = count_sms("".join(chars))
    assert c.encoding == "GSM-7" and c.units == n
    assert c.parts == (1 if n <= 160 else math.ceil(n / 153))


@given(st.lists(st.sampled_from(BASIC + EXT), max_size=500))
def test_gsm_units_and_parts_are_consistent(chars: list[str]) -> None:
    text = "".join(chars)
    c = count_sms(text)
    ext = sum(ch in GSM7_EXTENSION for ch in text)
    assert c.units == len(text) + ext
    # Enough capacity, never too much: each part but the last could not take the next char.
    assert c.parts * c.per_part >= c.units
    assert c.parts == 1 or c.units > 160
    assert c.parts <= math.ceil(c.units / 152) + 1


@given(st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
               max_size=400))
def test_chinese_parts_formula(text: str) -> None:
    n = len(text)
    c = count_sms(text)
    assert c.parts == (1 if n <= 70 else math.ceil(n / 67))
