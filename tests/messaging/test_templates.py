"""Templates: placeholders, sandbox, validation errors, preview with masked numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherseg.errors import ValidationError
from cipherseg.messaging.templates import PLACEHOLDERS, SmsTemplate, validate_template

OPT = "{{ opt_out }}"


def test_render_all_placeholders_and_default() -> None:
    t = SmsTemplate('Hi {{ first_name|default("customer") }}! {{ segment_name }} members get '
                    '20% off at {{ shop_name }}. ' + OPT)
    out = t.render(first_name="Ann", segment_name="Loyal", shop_name="Joy Mall",
                   opt_out="Reply STOP to opt out")
    assert out == ("Hi Ann! Loyal members get 20% off at Joy Mall. Reply STOP to opt out")
    assert t.render(first_name="", opt_out="x").startswith("Hi customer!")


def test_if_blocks_and_filters() -> None:
    t = SmsTemplate("{% if first_name %}Dear {{ first_name|title }}{% else %}Dear member"
                    "{% endif %}, {{ shop_name|upper|truncate(10) }} " + OPT)
    assert t.render(first_name="li", shop_name="a", opt_out="o") == "Dear Li, A o"
    assert t.render(shop_name="a", opt_out="o") == "Dear member, A o"


@pytest.mark.parametrize("source, words", [
    ("{{ phone }} " + OPT, "unknown placeholder {{ phone }}"),
    ("{{ a }}{{ b }} " + OPT, "unknown placeholders {{ a }}, {{ b }}"),
    ("{{ first_name.__class__.__mro__ }} " + OPT, "attribute access"),
    ("{{ first_name['x'] }} " + OPT, "item access"),
    ("{{ lipsum() }} " + OPT, "function calls"),
    ("{% for x in first_name %}{% endfor %} " + OPT, "{% for %} loops"),
    ("{% set x = 1 %} " + OPT, "{% set %}"),
    ("{% include 'x' %} " + OPT, "{% include %}"),
    ("{{ first_name|attr('x') }} " + OPT, "unknown filter |attr"),
    ("{{ first_name ", "template syntax error"),
    # Issue 16 finding 6: two ways to name {{ opt_out }} without rendering it.
    ("Sale! {% if false %}{{ opt_out }}{% endif %}", "must appear exactly as it is"),
    ("Sale! {{ opt_out|truncate(3, True, '') }}", "must appear exactly as it is"),
    ("{{ opt_out if first_name == 'x' else '' }}", "must appear exactly as it is"),
    ("{% if first_name %}{{ opt_out }}{% else %}{{ opt_out }}{% endif %}",
     "must appear exactly as it is"),
    ("{{ opt_out ~ '' }}", "must appear exactly as it is"),
    ("   ", "empty"),
    ("x" * 3000, "at most"),
])
def test_bad_templates_are_refused_with_a_clear_message(source: str, words: str) -> None:
    with pytest.raises(ValidationError, match=None) as info:
        validate_template(source)
    assert words in str(info.value)


def test_a_template_without_the_line_gets_it_appended() -> None:
    assert SmsTemplate("Order shipped").render() == "Order shipped"
    assert SmsTemplate("Order shipped.").render(opt_out="Reply STOP to opt out") == \
        "Order shipped. Reply STOP to opt out"
    assert SmsTemplate("{{ shop_name }}会员日8折").render(shop_name="欢乐城",
                                                      opt_out="回复TD退订") == \
        "欢乐城会员日8折回复TD退订"
    # Placed by the template: not added twice.
    assert SmsTemplate("{{ opt_out }}: sale").render(opt_out="STOP=end") == "STOP=end: sale"


_FRAGMENTS = st.sampled_from([
    "Hi ", "{{ first_name }}", '{{ first_name|default("you") }}', "{{ shop_name|upper }}",
    "{% if first_name %}dear {{ first_name }}{% endif %}", "{{ opt_out }}", "您好", " 8折 ",
    "{% if shop_name %}{{ shop_name|truncate(4, True, '') }}{% else %}us{% endif %}"])


@given(st.lists(_FRAGMENTS, min_size=1, max_size=6), st.text(max_size=12),
       st.text(max_size=12), st.sampled_from(["回复TD退订", "Reply STOP to opt out"]))
def test_every_rendered_message_carries_the_opt_out_line(parts: list[str], name: str,
                                                         shop: str, line: str) -> None:
    source = "".join(parts)
    if not source.strip():
        return
    text = SmsTemplate(source).render(first_name=name, shop_name=shop, opt_out=line)
    assert line in text


def test_render_refuses_values_outside_the_placeholders() -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        SmsTemplate(OPT).render(opt_out="x", phone="+8613812345678")


def test_no_html_escaping_in_sms() -> None:
    assert SmsTemplate("{{ shop_name }} " + OPT).render(shop_name="A&B <1>", opt_out="") \
        == "A&B <1>"


def test_preview_counts_chinese_and_shows_masked_number() -> None:
    p = SmsTemplate("{{ first_name }}您好，{{ shop_name }}会员日全场8折。{{ opt_out }}").preview(
        masked_phone="138****5678", first_name="王", shop_name="欢乐城", opt_out="回复TD退订")
    assert p.text == "王您好，欢乐城会员日全场8折。回复TD退订"
    assert p.to == "138****5678"
    assert (p.count.encoding, p.count.characters, p.count.parts) == ("UCS-2", 21, 1)


@given(st.text(max_size=60))
def test_placeholder_values_are_inserted_verbatim(value: str) -> None:
    # Values are data, never template code: braces or tags in a name render literally.
    t = SmsTemplate("[{{ first_name }}] {{ opt_out }}")
    assert t.render(first_name=value, opt_out="x") == f"[{value}] x".strip()


def test_placeholder_list_is_stable() -> None:
    assert PLACEHOLDERS == ("first_name", "segment_name", "shop_name", "opt_out")
