"""PII redaction of passage text before it leaves a silo.

Built-in rules cover e-mail addresses, phone numbers (international and US), US social
security numbers, UK NHS numbers, medical record numbers and dates of birth written in
context. Each match is replaced by ``[REDACTED:<kind>]``. Rules are written to leave
ordinary numbers, years, version strings (``3.11.7``), dates without a birth context
and dosages (``500 mg``) alone.

A rule whose regular expression has a group named ``pii`` redacts only that group when
the group takes part in the match, so a label such as ``MRN:`` stays readable while the
number is hidden.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from federation.errors import ConfigError

__all__ = ["BUILTIN_KINDS", "Redactor"]

_T = TypeVar("_T")
_MAX_DEPTH = 16

_KIND_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_DATE = (
    r"(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})"  # 12/03/1985, 3.12.85
    r"|\d{4}[/.-]\d{1,2}[/.-]\d{1,2}"  # 1985-03-12
    rf"|{_DAY}\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}"  # 3 March 1985, 3rd of March, 1985
    rf"|{_MONTH}\s+{_DAY},?\s+\d{{4}})"  # March 3, 1985
)


def _digits_between(low: int, high: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return low <= sum(ch.isdigit() for ch in value) <= high

    return check


def _nhs_checksum_ok(value: str) -> bool:
    """Modulus-11 check digit of a UK NHS number (a spaced US phone number fails it 10 times in 11)."""
    digits = [int(ch) for ch in value if ch.isdigit()]
    check = 11 - sum(d * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True)) % 11
    return check != 10 and check % 11 == digits[9]


_Hint = Callable[[str, str], bool]
"""Whether an ASCII text (given as is and lower-cased) holds something every match of a rule contains."""


def _contains(*needles: str, folded: bool = False) -> _Hint:
    return lambda text, low: any(needle in (low if folded else text) for needle in needles)


def _searches(pattern: str) -> _Hint:
    regex = re.compile(pattern)  # cheap when it starts with a literal character
    return lambda text, _low: regex.search(text) is not None


@dataclass(frozen=True)
class _Rule:
    """One kind of PII: its expression, an optional check of each match, and a cheap hint.

    ``hint`` looks for something every match contains (``@`` for an e-mail address): text
    without it is not searched with the slower ``regex`` at all.
    """

    kind: str
    regex: re.Pattern[str]
    accept: Callable[[str], bool] | None = None
    hint: _Hint | None = None


# Each starts with a literal character, which makes the search a fast scan for it.
_PHONE_HINTS = tuple(re.compile(p) for p in (r"\+\d", r"\)\s?\d", r"-\d\d\d-", r"\.\d\d\d\.", r" \d\d\d \d"))


def _phone_hint(text: str, _low: str) -> bool:
    """Every phone pattern has ``+`` or ``)`` before a digit, or a 3-digit group between two separators."""
    return any(hint.search(text) is not None for hint in _PHONE_HINTS)


# Order is priority: when matches of two rules start at the same place, the longer one
# wins, then the earlier rule.
_BUILTIN_RULES: tuple[_Rule, ...] = (
    _Rule(
        "email",
        re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        hint=_contains("@"),
    ),
    _Rule(
        "dob",
        re.compile(
            r"\b(?:d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|born(?:\s+on)?)"
            rf"\s*(?:[:#=-]|\bis\b|\bwas\b)?\s*(?P<pii>{_DATE})(?![\d/.-]?\d)",
            re.IGNORECASE,
        ),
        hint=_contains("dob", "d.ob", "do.b", "d.o.b", "birth", "born", folded=True),
    ),
    _Rule(
        "mrn",
        re.compile(
            r"\b(?:mrn|medical\s+record(?:\s+(?:number|no\.?|num\.?|#))?|record\s+(?:number|no\.?|num\.?|#))"
            r"\s*[:#=]?\s*(?P<pii>[A-Z]{0,3}-?\d{5,12})\b",
            re.IGNORECASE,
        ),
        hint=_contains("mrn", "record", folded=True),
    ),
    _Rule("ssn", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), hint=_searches(r"-\d\d-")),
    _Rule(  # 943 476 5919
        "nhs_number",
        re.compile(r"(?<![\d-])\d{3} \d{3} \d{4}(?![\d-])"),
        _nhs_checksum_ok,
        hint=_searches(r" \d\d\d \d"),
    ),
    _Rule(
        "nhs_number",
        re.compile(r"\bNHS(?:\s+(?:number|no\.?))?\s*[:#]?\s*(?P<pii>\d{10})\b"),
        hint=_contains("NHS"),
    ),
    _Rule(
        "phone",
        re.compile(
            r"(?<![\w+])\+\d{1,3}(?:[ .()-]{1,3}\d{1,12}){1,6}(?![\w-])"  # +44 20 7946 0958, +1 (555) 123-4567
            r"|(?<![\w+])\+\d{7,15}\b"  # +442079460958
            r"|(?<![\w(.-])\(\d{3}\)\s?\d{3}[-. ]\d{4}(?![\w-])"  # (555) 123-4567
            r"|(?<![\w.+-])(?:1[-. ])?\d{3}(?P<sep>[-. ])\d{3}(?P=sep)\d{4}(?![\w-]|\.\d)"  # 555-123-4567
        ),
        _digits_between(7, 15),
        hint=_phone_hint,
    ),
)

BUILTIN_KINDS: tuple[str, ...] = tuple(rule.kind for rule in _BUILTIN_RULES)
"""The kinds the built-in rules report, in priority order."""


class Redactor:
    """Replaces PII in text with ``[REDACTED:<kind>]`` markers.

    Args:
        extra_patterns: Operator-defined rules, ``{kind: regular expression}``, applied
            after the built-in ones. A group named ``pii`` limits the redaction to it.

    Raises:
        ConfigError: A pattern does not compile, matches the empty string, or its kind
            is not a short name of letters, digits, ``_``, ``.`` or ``-``.
    """

    def __init__(self, extra_patterns: Mapping[str, str] | None = None) -> None:
        rules = list(_BUILTIN_RULES)
        for kind, pattern in (extra_patterns or {}).items():
            if not _KIND_RE.match(kind):
                raise ConfigError(f"redaction pattern name {kind!r} must match {_KIND_RE.pattern}")
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"redaction pattern {kind!r} is not a valid regular expression: {exc}") from exc
            if regex.fullmatch("") is not None:
                raise ConfigError(f"redaction pattern {kind!r} matches the empty string")
            rules.append(_Rule(kind, regex))
        self._rules: tuple[_Rule, ...] = tuple(rules)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind this redactor reports, built-in first."""
        return tuple(rule.kind for rule in self._rules)

    def redact(self, text: str) -> tuple[str, int]:
        """Redact every PII match in ``text``.

        All rules are matched against the original text; overlapping matches are
        resolved left to right, the longer first, then by rule order.

        Args:
            text: The passage text.

        Returns:
            The redacted text and the number of replacements made.
        """
        spans: list[tuple[int, int, int, str]] = []
        # Hints only on ASCII text: case-insensitive rules also match non-ASCII letters ("ı" as "i").
        low = text.lower() if text.isascii() else None
        for priority, rule in enumerate(self._rules):
            if low is not None and rule.hint is not None and not rule.hint(text, low):
                continue
            has_pii_group = "pii" in rule.regex.groupindex
            for match in rule.regex.finditer(text):
                if rule.accept is not None and not rule.accept(match.group(0)):
                    continue
                start, end = match.span("pii") if has_pii_group else (-1, -1)
                if start < 0:  # no pii group, or it took no part in this alternative
                    start, end = match.span()
                if end > start:
                    spans.append((start, -end, priority, rule.kind))
        if not spans:
            return text, 0
        spans.sort()
        pieces: list[str] = []
        cursor = 0
        for start, neg_end, _, kind in spans:
            if start < cursor:
                continue
            pieces.append(text[cursor:start])
            pieces.append(f"[REDACTED:{kind}]")
            cursor = -neg_end
        pieces.append(text[cursor:])
        return "".join(pieces), (len(pieces) - 1) // 2

    def redact_strings(self, value: _T) -> tuple[_T, int]:
        """Redact every string inside a JSON-like value (dicts, lists, tuples).

        Dictionary keys are kept; nesting deeper than 16 levels is returned unchanged.

        Args:
            value: A string, or a container of strings and other values.

        Returns:
            A redacted copy of ``value`` and the number of replacements made.
        """
        redacted, count = self._redact_nested(value, 0)
        return redacted, count

    def _redact_nested(self, value: _T, depth: int) -> tuple[_T, int]:
        out: object
        total = 0
        if isinstance(value, str):
            out, total = self.redact(value)
        elif depth >= _MAX_DEPTH:
            return value, 0
        elif isinstance(value, dict):
            out = {}
            for key, item in value.items():
                out[key], count = self._redact_nested(item, depth + 1)
                total += count
        elif isinstance(value, list | tuple):
            items = []
            for item in value:
                redacted, count = self._redact_nested(item, depth + 1)
                items.append(redacted)
                total += count
            out = tuple(items) if isinstance(value, tuple) else items
        else:
            return value, 0
        return out, total  # type: ignore[return-value]  # same shape as value
