"""Instruction templates: `<fi>slot description</fi>` parsing and validation.

A template is a real query whose specific spans were replaced by slots. Validation rejects what a small model gets
wrong most often: no slot, broken tags, and -- the subtle one -- rewriting the query instead of genericising it.
The alignment check compares the template's *fixed text* (everything outside slots) with the query word by word,
in order: a genericised query keeps the query's own wording around its slots.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from fineinstructions.text import dedup_key

# a slot never contains another tag, so the lazy scan stops at the next `<fi>`: linear even on a runaway "<fi><fi>…"
# reply (`.*?` alone rescanned to the end from every unclosed tag: minutes on 1 MB)
SLOT = re.compile(r"<fi>((?:(?!</?fi>).)*?)</fi>", re.S)
ANY_TAG = re.compile(r"<\s*/?\s*fi\b[^>]*>", re.I)
OPEN, CLOSE = "<fi>", "</fi>"


def slots(template: str) -> list[str]:
    """Slot descriptions, in order."""
    return [s.strip() for s in SLOT.findall(template)]


def num_slots(template: str) -> int:
    return len(SLOT.findall(template))


def fixed_text(template: str) -> str:
    """The template with its slots cut out: the wording it keeps from the query."""
    return SLOT.sub(" ", template)


def tag_problem(template: str, max_slot_chars: int = 120) -> str | None:
    """Why the `<fi>` markup is unusable, or None when it is well formed."""
    if not template or not template.strip():
        return "empty_template"
    for tag in ANY_TAG.findall(template):
        if tag not in (OPEN, CLOSE):
            return "malformed_tag"
    depth = 0
    for tag in ANY_TAG.findall(template):
        depth += 1 if tag == OPEN else -1
        if depth not in (0, 1):
            return "unbalanced_tags"  # nested slot or a close before an open
    if depth != 0:
        return "unbalanced_tags"
    found = slots(template)
    if not found:
        return "no_slot"
    if any(not s for s in found):
        return "empty_slot"
    if any(len(s) > max_slot_chars for s in found):
        return "slot_too_long"
    return None


@dataclass(frozen=True)
class Alignment:
    """How the template's fixed words line up with the query's words (longest in-order match).

    precision: share of the template's fixed words that come from the query, in order.
    coverage:  share of the query's words that the template kept; 1.0 means the slots replaced nothing.
    """

    precision: float
    coverage: float
    fixed_words: int


def _words(text: str) -> list[str]:
    return dedup_key(text).split()


def alignment(template: str, query: str) -> Alignment:
    fixed, query_words = _words(fixed_text(template)), _words(query)
    if not fixed or not query_words:
        return Alignment(0.0, 0.0, len(fixed))
    matcher = difflib.SequenceMatcher(None, fixed, query_words, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return Alignment(matched / len(fixed), matched / len(query_words), len(fixed))


def replaced_spans(template: str, query: str) -> list[tuple[str, str]]:
    """(slot description, the query words it stands in for) for each slot, from the word alignment."""
    descriptions = slots(template)
    marks = [f"fislot{i}marker" for i in range(len(descriptions))]  # one word each, never a query word
    it = iter(marks)
    tokens = _words(SLOT.sub(lambda m: f" {next(it)} ", template))
    query_words = _words(query)
    spans = {}
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, tokens, query_words, autojunk=False).get_opcodes():
        inside = [t for t in tokens[i1:i2] if t in marks]
        if op != "equal" and len(inside) == 1:
            spans[inside[0]] = " ".join(query_words[j1:j2])
    return [(desc, spans.get(mark, "")) for desc, mark in zip(descriptions, marks)]


_ARTICLE = re.compile(r"^(a|an|the|some) ")


def copied_descriptions(template: str, instruction: str) -> list[str]:
    """Slot descriptions the instruction repeats word for word where the template's own wording does not hold them.

    A small model often "fills" a slot with its description ("how to plant a type of plant"): no tag is left, so
    the pair looks complete, but the instruction is the generic template, not one grounded in the document.
    Descriptions under two words (after dropping a leading article, also tried) are not checked: a single word
    such as "person" may well be the right fill.
    """
    said, fixed = f" {dedup_key(instruction)} ", f" {dedup_key(fixed_text(template))} "
    copied = []
    for description in slots(template):
        key = dedup_key(description)
        keys = {k for k in (key, _ARTICLE.sub("", key)) if len(k.split()) >= 2}
        if any(f" {k} " in said and f" {k} " not in fixed for k in keys):
            copied.append(description)
    return copied


def validate(template: str, query: str, min_alignment: float = 0.7) -> str | None:
    """Reason the template is unusable for this query, or None if it passes every check."""
    if problem := tag_problem(template):
        return problem
    if dedup_key(SLOT.sub(lambda m: m.group(1), template)) == dedup_key(query):
        return "same_as_query"  # the slots only wrap the query's own words: nothing was genericised
    if any(dedup_key(desc) == span for desc, span in replaced_spans(template, query)):
        return "slot_not_generic"  # a slot "described" by the very words it replaced, e.g. <fi>darlene</fi>
    align = alignment(template, query)
    if align.fixed_words == 0:
        return "no_fixed_text"
    if align.precision < min_alignment:
        return "not_aligned"
    if align.coverage >= 1.0:
        return "slot_replaces_nothing"
    return None
