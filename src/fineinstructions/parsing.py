"""Getting structured data out of free-form model output.

Small models wrap JSON in prose, code fences or trailing chatter; big ones sometimes emit two objects. We take the
first complete JSON object anywhere in the text and never raise: callers turn `None` into a counted reject.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_DECODER = json.JSONDecoder()
# where an object can begin: `{` then a key or `}`. Each failed decode costs O(offset) (the error computes its line
# number), so trying every `{` of a runaway reply ("{{{{…", 200k chars) took ~30 s; this, and `max_attempts`, cap it.
_OBJECT_START = re.compile(r'\{\s*["}]')


def extract_json_object(text: str | None, max_chars: int = 200_000, max_attempts: int = 256) -> dict[str, Any] | None:
    """Return the first JSON object (dict) found in `text`, or None.

    Tries fenced blocks first (the model's own statement of what the JSON is), then every place an object can
    start, left to right. `max_chars` and `max_attempts` (decodes tried) bound the work on runaway outputs.
    """
    if not text:
        return None
    text = text[:max_chars]
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    attempts = 0
    for chunk in candidates:
        for start in _OBJECT_START.finditer(chunk):
            attempts += 1
            if attempts > max_attempts:
                return None
            try:
                obj, _ = _DECODER.raw_decode(chunk, start.start())
            except (json.JSONDecodeError, RecursionError):
                obj = None
            if isinstance(obj, dict):
                return obj
    return None


def is_null_answer(text: str | None) -> bool:
    """True when the model declined with a bare `null` (optionally fenced/quoted), the released models' way of
    saying "this template does not fit this document"."""
    if text is None:
        return False
    stripped = _FENCE.sub(lambda m: m.group(1), text).strip().strip('"').strip().rstrip(".").lower()
    return stripped in {"null", "none"}


_SCORE_PATTERNS = [
    re.compile(r"<score>\s*([1-5])(?:\.0+)?\s*</score>", re.I),  # Flow Judge
    re.compile(r'"score"\s*:\s*"?([1-5])(?:\.0+)?\b', re.I),  # JSON
    re.compile(r"\b(?:score|rating|grade)\b\s*(?:is|of|:|=|-)?\s*\**\s*([1-5])(?:\.0+)?\s*\**(?:\s*(?:/|out of)\s*5)?\b", re.I),
    re.compile(r"\b([1-5])(?:\.0+)?\s*(?:/|out of)\s*5\b", re.I),  # "4/5", "4 out of 5"
    re.compile(r"\*\*\s*([1-5])\s*\*\*"),  # "**4**"
]
_WORD_SCORES = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_WORD_SCORE = re.compile(r"\b(?:score|rating|grade|give (?:it|this)(?: a)?)\b\D{0,12}?\b(one|two|three|four|five)\b", re.I)


def parse_score(text: object) -> int | None:
    """A 1-5 judge score from free text, or None.

    Explicit forms win over bare digits ("<score>4</score>", `"score": 4`, "Score: 4/5", "rated 4 out of 5",
    "**4**", "a score of four"); when several explicit scores appear, the *last* one counts (judges reason first
    and conclude last). A lone digit 1-5 is accepted only when it is the whole answer, so "3 reasons" in prose
    never becomes a score. A JSON format hands over the score field as parsed: an int, a float or a string; an
    integer 1-5 (4 or 4.0) is taken as is, anything else that is not text (lists, booleans, 7) is no score.
    """
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, (int, float)):
        return int(text) if float(text).is_integer() and 1 <= text <= 5 else None
    if not isinstance(text, str) or not text:
        return None
    # one space per whitespace run: the patterns chain several `\s*`, which backtrack cubically over a long run
    # ("Score:" then thousands of newlines, a degenerate judge reply, took minutes)
    text = " ".join(text.split())
    for pattern in _SCORE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return int(found[-1])
    words = _WORD_SCORE.findall(text)
    if words:
        return _WORD_SCORES[words[-1].lower()]
    bare = re.fullmatch(r"\s*\**\s*([1-5])(?:\.0+)?\s*\**\s*[.!]?\s*", text)
    return int(bare.group(1)) if bare else None
