"""The language of an SMS template: which opt-out line it gets and which sample name the
preview shows.

A message is written in one language, so its opt-out line must be in that language too
("回复TD退订" after Chinese, "Reply STOP to opt out" after English) — never the English line
glued to a Chinese text. The language is read from the template's own words (its literal
text, not the placeholders): any Chinese character makes it Chinese, Latin letters make it
English; a template of placeholders only takes the language of the platform's region.

Every opt-out line must name a keyword the gateway honours (:data:`OPT_OUT_KEYWORDS`), so
the instruction the customer reads is the one that works.

>>> detect_language("{{ first_name }}您好，周末8折。")
'zh'
>>> detect_language("Hi {{ first_name }}, 20% off this weekend.")
'en'
>>> detect_language("{{ first_name }} {{ opt_out }}") is None
True
>>> LANGUAGES["zh"].opt_out, LANGUAGES["en"].opt_out
('回复TD退订', 'Reply STOP to opt out')
>>> append_line("周末全场8折。", "回复TD退订"), append_line("20% off.", "Reply STOP to opt out")
('周末全场8折。回复TD退订', '20% off. Reply STOP to opt out')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from cipherseg.errors import ValidationError
from cipherseg.messaging.rules import OPT_OUT_KEYWORDS


@dataclass(frozen=True, slots=True)
class Language:
    """What the platform needs to know about one message language."""

    code: str
    name: str
    #: The default opt-out line (its keyword must be one the gateway honours).
    opt_out: str
    #: The made-up customer of previews (never a real one).
    sample_name: str


#: Languages the platform writes opt-out lines for.
LANGUAGES: dict[str, Language] = {
    "zh": Language("zh", "Chinese", "回复TD退订", "王芳"),
    "en": Language("en", "English", "Reply STOP to opt out", "Alex"),
}
#: The language of a region's customers when a template does not show its own.
REGION_LANGUAGE: dict[str, str] = {"CN": "zh", "TW": "zh", "HK": "zh", "MO": "zh"}

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_LATIN = re.compile(r"[A-Za-z]{2,}")
_ENV = SandboxedEnvironment()


def region_language(region: str) -> str:
    """The default language of a phone region.

    >>> region_language("CN"), region_language("GB")
    ('zh', 'en')
    """
    return REGION_LANGUAGE.get(region.upper(), "en")


def _literal_text(source: str) -> str:
    """The words of a template outside its placeholders and tags."""
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError:
        return re.sub(r"\{\{.*?\}\}|\{%.*?%\}", " ", source)
    return " ".join(n.data for n in tree.find_all(nodes.TemplateData))


def detect_language(source: str) -> str | None:
    """``"zh"`` if the template's own text has Chinese characters, ``"en"`` if it has Latin
    words, else ``None`` (placeholders only)."""
    text = _literal_text(source)
    if _HAN.search(text):
        return "zh"
    if _LATIN.search(text):
        return "en"
    return None


def template_language(source: str, region: str) -> str:
    """The language of a template: its own, else the region's.

    >>> template_language("{{ first_name }}{{ opt_out }}", "CN")
    'zh'
    """
    return detect_language(source) or region_language(region)


def append_line(text: str, line: str) -> str:
    """``text`` followed by ``line``: no space after Chinese, one space otherwise."""
    text = text.rstrip()
    if not text:
        return line
    last = text[-1]
    sep = "" if _HAN.match(last) or "\u3000" <= last <= "\u303f" or "\uff00" <= last <= "\uffef" \
        else " "
    return f"{text}{sep}{line}"


def names_keyword(line: str) -> str | None:
    """The opt-out keyword an opt-out line tells the customer to send, if any.

    >>> names_keyword("回复TD退订"), names_keyword("Reply STOP to opt out"), names_keyword("Bye")
    ('TD', 'STOP', None)
    """
    for word in re.findall(r"[A-Za-z]+|[\u4e00-\u9fff]+", line):
        if word.upper() in OPT_OUT_KEYWORDS:
            return str(word).upper()
    for keyword in sorted(OPT_OUT_KEYWORDS, key=len, reverse=True):
        if not keyword.isascii() and keyword in line:
            return keyword
    return None


def opt_out_lines(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The opt-out line of each language: the defaults with ``overrides`` applied, each
    checked to name a keyword the gateway honours.

    >>> opt_out_lines({"en": "Text STOP to stop"})["en"]
    'Text STOP to stop'
    >>> opt_out_lines({"en": "Opt out on our website"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cipherseg.errors.ValidationError: the en opt-out line 'Opt out on our website' names no ...
    """
    lines = {code: lang.opt_out for code, lang in LANGUAGES.items()}
    for code, line in (overrides or {}).items():
        if code not in LANGUAGES:
            raise ValidationError(f"no opt-out line can be set for language {code!r}; known: "
                                  f"{', '.join(sorted(LANGUAGES))}")
        line = line.strip()
        if not line or len(line) > 60:
            raise ValidationError(f"the {code} opt-out line must have 1 to 60 characters")
        if names_keyword(line) is None:
            raise ValidationError(
                f"the {code} opt-out line {line!r} names no keyword the gateway honours "
                f"({', '.join(sorted(OPT_OUT_KEYWORDS))}); customers would reply with a "
                "word that does nothing")
        lines[code] = line
    return lines
