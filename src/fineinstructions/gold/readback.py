"""Read a template back onto the text it was made from: which words of the query does each slot stand for?

This is how `slot_f1` compares a predicted template with a reference one without caring how the slots are
described: both are laid over the query, and the sets of query words inside slots are compared. The literal parts
of the template must match the query in order, with case, whitespace, apostrophes/quotes and a trailing `?`, `.` or
`!` folded; each slot covers the (non-empty) query text between its neighbours. The same read-back checks that a
reference instruction is its template with every slot filled.
"""

from __future__ import annotations

import re
from functools import lru_cache

from fineinstructions.templates import ANY_TAG, SLOT, tag_problem

WORD = re.compile(r"\w+")
_FOLD = str.maketrans({"\u2018": "'", "\u2019": "'", "`": "'", "\u00b4": "'", "\u201c": '"', "\u201d": '"'})
_WS = re.compile(r"\s+")


def fold(text: str) -> str:
    """The comparison view: lower case, typographic apostrophes/quotes as ASCII, whitespace runs as one space, no
    trailing `?`/`.`/`!`. Every fold keeps character positions except the whitespace and trailing-mark ones, so
    read-back works on this view and maps word tokens, not characters."""
    text = _WS.sub(" ", text.translate(_FOLD).casefold()).strip()
    return re.sub(r"[?.!]+$", "", text).rstrip()


@lru_cache(maxsize=4096)
def _pattern(template: str) -> re.Pattern | None:
    if tag_problem(template) is not None or ANY_TAG.sub("", SLOT.sub("", template)) != SLOT.sub("", template):
        return None
    parts = SLOT.split(template)[::2]  # the literal parts around the slots
    literals = [_WS.sub(" ", p.translate(_FOLD).casefold()) for p in parts]
    literals[0] = literals[0].lstrip()
    last = fold(literals[-1])  # the query's trailing "?" is folded away, so the template's is too
    literals[-1] = ((" " if literals[-1][:1] == " " else "") + last) if last else ""
    regex = ""
    for i, lit in enumerate(literals):
        body = r"\s+".join(re.escape(w) for w in lit.split())
        # a literal's edge next to a slot needs whitespace only where the template has it ("<fi>x</fi>'s" has none)
        lead = (r"\s+" if lit[:1] == " " else r"\s*") if i > 0 else ""
        trail = (r"\s+" if lit[-1:] == " " else r"\s*") if i < len(literals) - 1 else ""
        if not body:  # nothing but (optional) space between two slots, or at an end
            lead, trail = "", ((r"\s+" if lit else r"\s*") if 0 < i < len(literals) - 1 else "")
        regex += lead + body + trail
        if i < len(literals) - 1:
            regex += r"(\S.*?)" if i < len(literals) - 2 or literals[-1] else r"(\S.*)"
    try:
        return re.compile(r"\A" + regex + r"\Z", re.S)
    except re.error:
        return None


def read_back(template: str, text: str) -> list[tuple[int, int]] | None:
    """Character spans (in `fold(text)`) that the template's slots cover, in order; None when unreadable: bad
    markup, no slot, or literal parts that do not match `text`."""
    if not template or not text:
        return None
    pattern = _pattern(template)
    if pattern is None:
        return None
    match = pattern.match(fold(text))
    if match is None:
        return None
    spans = [(match.start(g), match.end(g)) for g in range(1, (pattern.groups or 0) + 1)]
    return spans if spans and all(e > s for s, e in spans) else None


def slot_words(template: str, query: str) -> set[int] | None:
    """Positions (in the query's `\\w+` tokens) of the words that fall inside the template's slots; None when the
    template cannot be read back onto the query."""
    spans = read_back(template, query)
    if spans is None:
        return None
    folded = fold(query)
    return {i for i, m in enumerate(WORD.finditer(folded)) if any(s <= m.start() and m.end() <= e for s, e in spans)}


def filled_values(template: str, text: str) -> list[str] | None:
    """What each slot stands for in `text` (an instruction filled from the template), in the folded view."""
    spans = read_back(template, text)
    if spans is None:
        return None
    folded = fold(text)
    return [folded[s:e] for s, e in spans]


def f1(predicted: set, reference: set) -> float:
    if not predicted or not reference:
        return float(predicted == reference and bool(reference))
    common = len(predicted & reference)
    if common == 0:
        return 0.0
    p, r = common / len(predicted), common / len(reference)
    return 2 * p * r / (p + r)


def slot_f1(predicted: str | None, query: str, references: list[str]) -> float:
    """`slot_f1` of one row: the best F1 over references of the predicted slot words; 0 when unreadable."""
    if not predicted:
        return 0.0
    got = slot_words(predicted, query)
    if got is None:
        return 0.0
    scores = [f1(got, ref) for ref in (slot_words(r, query) for r in references) if ref is not None]
    return max(scores, default=0.0)
