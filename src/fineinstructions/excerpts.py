"""Expand compact ``<excerpt>START<...>END</excerpt>`` tags into the document's exact text.

FineInstructions answers are written mostly from verbatim excerpts of the source document. Making the model copy
long spans token by token is slow and invites small corruptions, so it writes only the first and last few words of
each span with ``<...>`` for the elided middle. Afterwards every tag is replaced by the document's *own* characters
from START to END, so the final answer is grounded by construction, and an answer whose tags cannot be located
unambiguously is rejected instead of silently guessed.

Matching runs on a normalised view of the document (whitespace runs collapsed, typographic quotes/dashes/ellipsis
folded to ASCII) so that the model's harmless re-typing of punctuation and line breaks still matches; an offset map
sends every match back to the original string so the copied text keeps the document's original characters.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Expansion", "expand_excerpts", "compress_excerpts", "REASONS", "seed_words", "close_open_excerpt"]

REASONS = ("excerpt_missing", "excerpt_ambiguous", "excerpt_empty", "excerpt_malformed")

# Tag names are matched case-insensitively and tolerate stray spaces, e.g. "<Excerpt >" or "</ excerpt>".
_TAG = re.compile(r"<\s*(/?)\s*excerpt\s*>", re.IGNORECASE)
# The elision marker: <...>, <..>, <....> (any run of 2+ dots) or the single-character ellipsis <…>.
_ELISION = re.compile(r"<\s*(?:\.{2,}|…)\s*>")
# After folding, only these change the length of the text, so only they need an entry in the offset map.
_LENGTH_CHANGING = re.compile(r"  +|…")
_MALFORMED_CONTEXT = 200  # characters of the answer kept in `failed` for a malformed tag

# Length-preserving one-character folds. Every Unicode whitespace character lies below U+3001.
_FOLDS: tuple[tuple[str, str], ...] = (
    tuple((chr(c), " ") for c in range(0x3001) if chr(c).isspace() and c != 0x20)
    + tuple((c, "'") for c in "\u2018\u2019")  # ‘ ’
    + tuple((c, '"') for c in "\u201c\u201d")  # “ ”
    + tuple((chr(c), "-") for c in range(0x2010, 0x2016))  # ‐ ‑ ‒ – — ―
)


@dataclass(frozen=True)
class Expansion:
    """Result of expanding one answer; `text` is None whenever any tag could not be expanded."""

    text: str | None
    reason: str | None
    excerpts: int
    copied_chars: int
    grounding: float
    failed: str | None


@dataclass(frozen=True)
class _View:
    """A document folded for matching, plus the offset map back to the original string.

    The map is sparse: it lists only the folded segments whose length differs from the original (a whitespace run
    collapsed to one space, "…" expanded to "..."). Between two segments, folded and original offsets advance in
    lockstep, so a bisect over `norm_starts` turns any folded offset into an original one.
    """

    folded: str
    norm_starts: tuple[int, ...]
    norm_ends: tuple[int, ...]
    orig_starts: tuple[int, ...]
    orig_ends: tuple[int, ...]


def _fold_chars(text: str) -> str:
    """Apply the one-for-one folds; `str.replace` per character is far faster than a Python loop or translate()."""
    for char, replacement in _FOLDS:
        if char in text:
            text = text.replace(char, replacement)
    return text


def _fold_fragment(text: str) -> str:
    """Fold a START/END/content fragment exactly as the document is folded, so that `str.find` can compare them."""
    text = _fold_chars(text).replace("…", "...")
    return re.sub(" +", " ", text).strip()


@lru_cache(maxsize=8)
def _document_view(document: str) -> _View:
    """Fold the document once; cached because the same document is expanded for several answers in a row."""
    chars = _fold_chars(document)
    pieces: list[str] = []
    norm_starts: list[int] = []
    norm_ends: list[int] = []
    orig_starts: list[int] = []
    orig_ends: list[int] = []
    if "  " in chars or "…" in chars:
        last = 0
        shift = 0  # folded offset minus original offset, up to `last`
        for match in _LENGTH_CHANGING.finditer(chars):
            start, end = match.span()
            replacement = "..." if match.group() == "…" else " "
            pieces.append(chars[last:start])
            norm_start = start + shift
            norm_starts.append(norm_start)
            norm_ends.append(norm_start + len(replacement))
            orig_starts.append(start)
            orig_ends.append(end)
            pieces.append(replacement)
            shift += len(replacement) - (end - start)
            last = end
        pieces.append(chars[last:])
        chars = "".join(pieces)
    return _View(chars, tuple(norm_starts), tuple(norm_ends), tuple(orig_starts), tuple(orig_ends))


def _orig_start(view: _View, pos: int) -> int:
    """Original offset of the character at folded offset `pos` (start of a match)."""
    k = bisect_right(view.norm_starts, pos) - 1
    if k < 0:
        return pos
    if pos < view.norm_ends[k]:  # inside a collapsed run or an expanded ellipsis: take the whole original
        return view.orig_starts[k]
    return view.orig_ends[k] + (pos - view.norm_ends[k])


def _orig_end(view: _View, pos: int) -> int:
    """Original offset just past the character at folded offset `pos - 1` (exclusive end of a match)."""
    last = pos - 1
    k = bisect_right(view.norm_starts, last) - 1
    if k < 0:
        return pos
    if last < view.norm_ends[k]:
        return view.orig_ends[k]
    return view.orig_ends[k] + (pos - view.norm_ends[k])


def occurrences(haystack, needle, start: int = 0) -> Iterator[int]:
    """Every (possibly overlapping) offset of `needle` in `haystack` (str or bytes); overlaps matter for ambiguity."""
    pos = haystack.find(needle, start)
    while pos != -1:
        yield pos
        pos = haystack.find(needle, pos + 1)


def _verbatim_spans(view: _View, content: str) -> set[tuple[int, int]]:
    """Original spans of a tag without elision: the whole content must occur. Stops early once ambiguous.

    `max_span_chars` does not apply here: the model wrote the whole text out, so there is no runaway span to cap.
    """
    spans: set[tuple[int, int]] = set()
    for pos in occurrences(view.folded, content):
        spans.add((_orig_start(view, pos), _orig_end(view, pos + len(content))))
        if len(spans) > 1:
            break
    return spans


def _elided_spans(view: _View, start: str, end: str, max_span_chars: int) -> set[tuple[int, int]]:
    """Original spans from each START occurrence to the nearest END that begins at or after START's end.

    Spans longer than `max_span_chars` (in original characters) are not candidates, so a START/END pair that only
    "matches" across half the document counts as missing. Stops early once two distinct spans are known.
    """
    spans: set[tuple[int, int]] = set()
    folded = view.folded
    end_pos = -1  # the nearest END found so far; reused while it still lies after the current START
    for pos in occurrences(folded, start):
        after = pos + len(start)
        if end_pos < after:
            end_pos = folded.find(end, after)
            if end_pos == -1:  # no END after this START, so none after any later START either
                break
        span = (_orig_start(view, pos), _orig_end(view, end_pos + len(end)))
        if span[1] - span[0] <= max_span_chars:
            spans.add(span)
            if len(spans) > 1:
                break
    return spans


@dataclass(frozen=True)
class _Tag:
    """One well-formed tag: its position in the answer and its raw content."""

    start: int
    end: int
    content: str


def _parse_tags(answer: str) -> tuple[list[_Tag], int, str | None]:
    """Split the answer into tags; returns (tags, opening-tag count, failed snippet if the tags are malformed).

    Nesting, an unclosed `<excerpt>` and a stray `</excerpt>` are all malformed: the model lost track of the format,
    so no tag in that answer is trusted.
    """
    tags: list[_Tag] = []
    opened: re.Match[str] | None = None
    opening_count = 0
    for match in _TAG.finditer(answer):
        closing = bool(match.group(1))
        if not closing:
            opening_count += 1
        if closing == (opened is None):  # a close with nothing open, or an open inside an open tag
            return tags, opening_count, answer[match.start() : match.start() + _MALFORMED_CONTEXT]
        if closing:
            tags.append(_Tag(opened.start(), match.end(), answer[opened.end() : match.start()]))
            opened = None
        else:
            opened = match
    if opened is not None:
        return tags, opening_count, answer[opened.start() : opened.start() + _MALFORMED_CONTEXT]
    return tags, opening_count, None


def _expand_tag(view: _View, document: str, content: str, max_span_chars: int) -> tuple[str | None, str | None]:
    """Return (document text, None) for one tag's content, or (None, reason) when it cannot be located uniquely."""
    parts = _ELISION.split(content)
    if len(parts) > 2:  # more than one <...>: not the START<...>END format
        return None, "excerpt_malformed"
    folded_parts = [_fold_fragment(part) for part in parts]
    if not all(folded_parts):
        return None, "excerpt_empty"
    if len(folded_parts) == 1:
        spans = _verbatim_spans(view, folded_parts[0])
    else:
        spans = _elided_spans(view, folded_parts[0], folded_parts[1], max_span_chars)
    if not spans:
        return None, "excerpt_missing"
    if len(spans) > 1:
        return None, "excerpt_ambiguous"
    (begin, finish) = spans.pop()
    return document[begin:finish], None


def _failure(reason: str, excerpts: int, failed: str) -> Expansion:
    return Expansion(text=None, reason=reason, excerpts=excerpts, copied_chars=0, grounding=0.0, failed=failed)


def expand_excerpts(answer: str, document: str, max_span_chars: int = 20_000) -> Expansion:
    """Replace every excerpt tag in `answer` with the exact `document` text it points to.

    A tag is either ``<excerpt>START<...>END</excerpt>`` (the span from START to the nearest following END) or
    ``<excerpt>verbatim text</excerpt>`` (the whole content must occur). Exactly one distinct span must match, else
    the answer fails with "excerpt_missing" or "excerpt_ambiguous"; the first failing tag stops the expansion.
    Text between tags is kept as written. An answer without tags is returned unchanged with grounding 0.0 so that
    the caller's grounding threshold decides whether it is usable.
    """
    tags, opening_count, malformed = _parse_tags(answer)
    if malformed is not None:
        return _failure("excerpt_malformed", opening_count, malformed)
    if not tags:
        return Expansion(text=answer, reason=None, excerpts=0, copied_chars=0, grounding=0.0, failed=None)

    view = _document_view(document)
    pieces: list[str] = []
    copied = 0
    last = 0
    for tag in tags:
        text, reason = _expand_tag(view, document, tag.content, max_span_chars)
        if text is None:
            return _failure(reason or "excerpt_missing", len(tags), tag.content)
        pieces.append(answer[last : tag.start])
        pieces.append(text)
        copied += len(text)
        last = tag.end
    pieces.append(answer[last:])
    expanded = "".join(pieces)
    stripped = len(expanded.strip())
    grounding = min(1.0, copied / stripped) if stripped else 0.0
    return Expansion(
        text=expanded, reason=None, excerpts=len(tags), copied_chars=copied, grounding=grounding, failed=None
    )


_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_WORD = re.compile(r"\w+")


def seed_words(document: str, query: str, n: int = 4) -> str:
    """The first `n` words of the document sentence sharing the most words with `query` (ties: the earlier).

    A follow-up prompt can start the answer's excerpt with them: small models then continue by copying the
    sentence they saw (the document is in the prompt) instead of writing their own words. Words are cut from the
    document verbatim, so the seed itself always matches."""
    wanted = {w.lower() for w in _WORD.findall(query) if len(w) > 2}
    best, best_score = None, -1
    for m in _SENTENCE.finditer(document):
        words = _WORD.findall(m.group(0))
        if len(words) < n:
            continue
        score = len(wanted & {w.lower() for w in words})
        if score > best_score:
            best, best_score = m, score
    if best is None:
        return ""
    text = best.group(0).lstrip()
    cut = [w.end() for w in _WORD.finditer(text)][n - 1]
    return text[:cut]


def close_open_excerpt(answer: str) -> str:
    """Close a final `<excerpt>` the model left open (a generation cut at a stop string or newline)."""
    opened = len(re.findall(r"<\s*excerpt\s*>", answer, re.I))
    closed = len(re.findall(r"<\s*/\s*excerpt\s*>", answer, re.I))
    return answer + "</excerpt>" if opened == closed + 1 else answer


def compress_excerpts(answer: str, document: str, edge_words: int = 4, min_words: int = 4) -> str:
    """The compact form of a plain answer, the inverse of `expand_excerpts`: every run of at least `min_words`
    words copied from the document becomes an excerpt tag -- written whole when short, else as its first and last
    `edge_words` words around `<...>` (more words when fewer would not point to exactly that span) -- and the
    words in between stay as written. This is how hand-written gold answers become the output a student learns
    to write. `expand_excerpts(compress_excerpts(a, d), d).text` gives `a` back, up to whitespace and the folds."""
    view = _document_view(document)
    words = answer.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and _fold_fragment(" ".join(words[i:j + 1])) in view.folded:
            j += 1
        if j - i >= min(min_words, len(words)) and len(_verbatim_spans(view, _fold_fragment(" ".join(words[i:j])))) == 1:
            out.append(_tag_for(view, document, words[i:j], edge_words))
            i = j
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


def _tag_for(view: _View, document: str, run: list[str], edge_words: int) -> str:
    """The shortest START<...>END tag (at least `edge_words` a side) that expands to exactly `run`."""
    whole = " ".join(run)
    target = _fold_fragment(whole)
    for k in range(edge_words, (len(run) - 1) // 2 + 1):
        content = " ".join(run[:k]) + "<...>" + " ".join(run[-k:])
        text, _ = _expand_tag(view, document, content, max_span_chars=20_000)
        if text is not None and _fold_fragment(text) == target:
            return f"<excerpt>{content}</excerpt>"
    return f"<excerpt>{whole}</excerpt>"
