"""PII scrubbing of instructions and answers: emails, IP addresses, phone numbers, credit-card numbers.

Answers are mostly verbatim web text (paper notes §"PII"), so whatever personal data a page holds would be copied
into the instruction corpus. Detection reuses well-kept code wherever it exists:

- emails and IP addresses: the patterns and the public-IP validator of datatrove's `PIIFormatter` (the same ones
  FineWeb was scrubbed with); like FineWeb, only *public* IPs count (127.0.0.1, 10.x, 192.168.x are not PII);
- phone numbers: Google's libphonenumber (`phonenumbers.PhoneNumberMatcher`, leniency VALID), which knows every
  country's numbering plan, so years, ISBNs or "1999-2005" are not phone numbers;
- card numbers: the only pattern written here: 13-19 digits, optionally grouped by spaces or dashes, that pass the
  Luhn checksum (which every payment card number carries), so most long digit runs (ids, phone numbers) are not
  flagged.

All detectors look at the original text and the earliest, longest span wins where two overlap, so a replacement
value is never scanned again (an IP replacement must not become a "phone number").
Replacements are realistic, reserved values (datatrove's example.com emails and unrouted IPs, a 555-01xx number
reserved for fiction, a card number that fails no format but belongs to no one) rather than tags, so the model
is not taught a placeholder token.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

KINDS = ("email", "ip", "card", "phone")

#: reserved replacement values, one per kind
REPLACEMENTS = {
    "email": "email@example.com",
    "ip": "22.214.171.124",  # first of datatrove's unrouted replacement IPs
    "card": "0000 0000 0000 0000",
    "phone": "(555) 010-0199",  # 555-0100..0199 is reserved for fictional use in the NANP
}

_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a digit string (the check every payment card number passes)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@lru_cache(maxsize=1)
def _datatrove_patterns():
    from datatrove.pipeline.formatters.pii import PIIFormatter

    formatter = PIIFormatter(only_remove_public_ips=True)
    return formatter.emails_replacer.regex, formatter.ip_replacer.regex, formatter.ip_replacer.validator


def _emails(text: str, region: str) -> Iterator[Span]:
    regex, _, _ = _datatrove_patterns()
    yield from (Span(m.start(), m.end(), "email") for m in regex.finditer(text))


def _ips(text: str, region: str) -> Iterator[Span]:
    _, regex, is_public = _datatrove_patterns()
    for m in regex.finditer(text):
        # datatrove's pattern has no boundaries: "1.2.3.4.5" or "11.2.3.4" inside a longer number is not an IP
        before, after = text[m.start() - 1 : m.start()], text[m.end() : m.end() + 2]
        if before.isdigit() or before == "." or after[:1].isdigit() or (after[:1] == "." and after[1:2].isdigit()):
            continue
        if is_public(m.group(0)):
            yield Span(m.start(), m.end(), "ip")


def _cards(text: str, region: str) -> Iterator[Span]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits):
            yield Span(m.start(), m.end(), "card")


def _phones(text: str, region: str) -> Iterator[Span]:
    import phonenumbers

    for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        yield Span(m.start, m.end, "phone")


DETECTORS: dict[str, Callable[[str, str], Iterator[Span]]] = {
    "email": _emails, "ip": _ips, "card": _cards, "phone": _phones,
}


def find_pii(text: str, kinds: tuple[str, ...] = KINDS, region: str = "US") -> list[Span]:
    """Non-overlapping PII spans in `text`, in order. `region` is the country assumed for phone numbers written
    without a +country code (numbers with one are found whatever the region)."""
    unknown = set(kinds) - set(DETECTORS)
    if unknown:
        raise ValueError(f"unknown PII kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
    found = [s for kind in kinds for s in DETECTORS[kind](text, region)]
    found.sort(key=lambda s: (s.start, -(s.end - s.start), KINDS.index(s.kind)))
    kept: list[Span] = []
    for span in found:
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return kept


def scrub(text: str, kinds: tuple[str, ...] = KINDS, region: str = "US",
          replacements: dict[str, str] | None = None) -> tuple[str, Counter]:
    """`text` with every PII span replaced, and how many of each kind were replaced."""
    replacements = {**REPLACEMENTS, **(replacements or {})}
    spans = find_pii(text, kinds, region) if text else []
    if not spans:
        return text, Counter()
    parts, last = [], 0
    for span in spans:
        parts += [text[last : span.start], replacements[span.kind]]
        last = span.end
    parts.append(text[last:])
    return "".join(parts), Counter(s.kind for s in spans)
