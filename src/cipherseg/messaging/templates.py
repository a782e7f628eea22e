"""SMS templates: sandboxed Jinja2 with a fixed set of placeholders, validated up front.

A template may use only the placeholders in :data:`PLACEHOLDERS` (``first_name``,
``segment_name``, ``shop_name``, ``opt_out``), the filters in :data:`FILTERS` and simple
``{% if %}`` blocks; anything else — attribute access, calls, loops, ``{% set %}``,
includes — is refused when the template is validated, so a merchant's typo or an attempt to
reach Python objects fails on the form, never at send time. Rendering runs in Jinja2's
:class:`~jinja2.sandbox.SandboxedEnvironment` anyway, without HTML autoescaping (SMS is
plain text).

**The opt-out line is in every message.** Marketing SMS must tell the recipient how to opt
out. ``{{ opt_out }}`` places the line; a template without it gets the line appended by
:meth:`SmsTemplate.render`, and a rendered text that lacks the line for any reason gets it
appended too. ``{{ opt_out }}`` may appear only as it is, outside ``{% if %}`` blocks and
without filters: ``{% if false %}{{ opt_out }}{% endif %}`` or
``{{ opt_out|truncate(3) }}`` are refused when the template is validated.

>>> t = SmsTemplate('Hi {{ first_name|default("customer") }}, 10% off at {{ shop_name }}. '
...                 '{{ opt_out }}')
>>> t.render(first_name="Li", shop_name="Joy Mall", opt_out="Reply STOP to opt out")
'Hi Li, 10% off at Joy Mall. Reply STOP to opt out'
>>> SmsTemplate("{{ shop_name }}周末全场8折。").render(shop_name="欢乐城", opt_out="回复TD退订")
'欢乐城周末全场8折。回复TD退订'
>>> SmsTemplate("Hi {{ phone }} {{ opt_out }}")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
cipherseg.errors.ValidationError: unknown placeholder {{ phone }}; a template may use ...
>>> SmsTemplate("Sale! {% if false %}{{ opt_out }}{% endif %}")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
cipherseg.errors.ValidationError: {{ opt_out }} must appear exactly as it is, ...
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from cipherseg.errors import ValidationError
from cipherseg.messaging.language import append_line
from cipherseg.messaging.sms import SmsCount, count_sms

#: The placeholders a template may use, in the order they are documented.
PLACEHOLDERS: tuple[str, ...] = ("first_name", "segment_name", "shop_name", "opt_out")
#: Filters a template may use.
FILTERS = frozenset({"default", "upper", "lower", "title", "capitalize", "trim", "truncate"})
#: Longest template source accepted (characters).
MAX_SOURCE_CHARS = 2000

_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Const, nodes.Filter,
    nodes.If, nodes.CondExpr, nodes.Not, nodes.And, nodes.Or, nodes.Compare, nodes.Operand,
    nodes.Concat, nodes.Test,
)
_NODE_WORDS = {
    nodes.For: "{% for %} loops", nodes.Assign: "{% set %}", nodes.AssignBlock: "{% set %}",
    nodes.Macro: "macros", nodes.Call: "function calls", nodes.Getattr: "attribute access",
    nodes.Getitem: "item access", nodes.Include: "{% include %}", nodes.Import: "imports",
    nodes.FromImport: "imports", nodes.Extends: "{% extends %}", nodes.Block: "blocks",
}


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)
    env.filters = {name: env.filters[name] for name in FILTERS}
    env.globals.clear()
    env.tests = {name: env.tests[name] for name in ("defined", "undefined", "none")}
    return env


_ENV = _environment()


def _braces(name: str) -> str:
    return "{{ " + name + " }}"


def _placeholder_list() -> str:
    return ", ".join(_braces(p) for p in PLACEHOLDERS)


class SmsTemplate:
    """A validated SMS template.

    Parameters
    ----------
    source:
        The template text.

    >>> SmsTemplate("Hello {{ opt_out }}").placeholders
    frozenset({'opt_out'})
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.placeholders = validate_template(source)
        self._template = _ENV.from_string(source)

    def __repr__(self) -> str:
        return f"SmsTemplate({self.source!r})"

    def render(self, **values: str) -> str:
        """Render with the given placeholder values; missing ones render empty.

        Unknown names are refused (so a caller cannot pass more than the template may
        show). Surrounding whitespace is trimmed. A non-empty ``opt_out`` is in the result:
        where the template puts it, else appended.

        >>> SmsTemplate("{{ shop_name|upper }}!").render(shop_name="x")
        'X!'
        >>> SmsTemplate("{{ shop_name|upper }}!").render(shop_name="x", opt_out="STOP=end")
        'X! STOP=end'
        """
        unknown = set(values) - set(PLACEHOLDERS)
        if unknown:
            raise ValidationError(f"cannot render unknown placeholder(s) {sorted(unknown)}; "
                                  f"a template may use {_placeholder_list()}")
        context = {k: v for k, v in values.items() if v not in (None, "")}
        try:
            text = self._template.render(**context).strip()
        except (SecurityError, TemplateError) as exc:
            raise ValidationError(f"the template failed to render ({exc}); fix the template "
                                  "and preview it again") from exc
        line = context.get("opt_out", "")
        if line and line not in text:
            text = append_line(text, line)
        return text

    def preview(self, *, masked_phone: str, **values: str) -> Preview:
        """Render for a sample customer and count characters and SMS parts.

        >>> p = SmsTemplate("你好{{ first_name }}，{{ opt_out }}").preview(
        ...     masked_phone="138****5678", first_name="李", opt_out="回复TD退订")
        >>> p.text, p.to, p.count.encoding, p.count.parts
        ('你好李，回复TD退订', '138****5678', 'UCS-2', 1)
        """
        text = self.render(**values)
        return Preview(text=text, to=masked_phone, count=count_sms(text))


@dataclass(frozen=True, slots=True)
class Preview:
    """A rendered sample: the text, the masked recipient, and its SMS length."""

    text: str
    to: str
    count: SmsCount


def _bare_opt_out_uses(tree: nodes.Template) -> int:
    """How many ``{{ opt_out }}`` are plain outputs at the top level of the template."""
    return sum(1 for node in tree.body if isinstance(node, nodes.Output)
               for expr in node.nodes
               if isinstance(expr, nodes.Name) and expr.name == "opt_out")


def validate_template(source: str) -> frozenset[str]:
    """Check a template and return the placeholders it uses.

    Raises :class:`~cipherseg.errors.ValidationError` naming what is wrong.

    >>> sorted(validate_template("{% if first_name %}Hi {{ first_name }}{% endif %} "
    ...                          "{{ opt_out }}"))
    ['first_name', 'opt_out']
    >>> validate_template("{{ first_name.__class__ }} {{ opt_out }}")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cipherseg.errors.ValidationError: SMS templates cannot use attribute access; ...
    >>> validate_template("{{ opt_out|truncate(3, True, '') }}")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cipherseg.errors.ValidationError: {{ opt_out }} must appear exactly as it is, ...
    """
    if not isinstance(source, str) or not source.strip():
        raise ValidationError("the template is empty; write the message text")
    if len(source) > MAX_SOURCE_CHARS:
        raise ValidationError(f"the template has {len(source)} characters; at most "
                              f"{MAX_SOURCE_CHARS} are accepted")
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise ValidationError(f"template syntax error on line {exc.lineno}: {exc.message}; "
                              "placeholders look like {{ first_name }}") from exc
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            what = next((w for t, w in _NODE_WORDS.items() if isinstance(node, t)),
                        type(node).__name__)
            raise ValidationError(f"SMS templates cannot use {what}; use only placeholders "
                                  "like {{ first_name }}, filters and {% if %}")
        if isinstance(node, nodes.Test) and node.name not in _ENV.tests:
            raise ValidationError(f"unknown test 'is {node.name}'; allowed: "
                                  f"{', '.join(sorted(_ENV.tests))}")
        if isinstance(node, nodes.Filter) and node.name not in FILTERS:
            raise ValidationError(f"unknown filter |{node.name}; allowed filters: "
                                  f"{', '.join(sorted(FILTERS))}")
    used = meta.find_undeclared_variables(tree)
    unknown = sorted(used - set(PLACEHOLDERS))
    if unknown:
        names = ", ".join(_braces(u) for u in unknown)
        raise ValidationError(f"unknown placeholder{'s' if len(unknown) > 1 else ''} {names}; "
                              f"a template may use {_placeholder_list()}")
    every = sum(1 for n in tree.find_all(nodes.Name) if n.name == "opt_out")
    if every != _bare_opt_out_uses(tree):
        raise ValidationError(
            "{{ opt_out }} must appear exactly as it is, outside {% if %} blocks and without "
            "filters: every message carries the opt-out line (leave it out and it is "
            "appended at the end)")
    return frozenset(used)
