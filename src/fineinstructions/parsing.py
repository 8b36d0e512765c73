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


def extract_json_object(text: str | None, max_chars: int = 200_000) -> dict[str, Any] | None:
    """Return the first JSON object (dict) found in `text`, or None.

    Tries fenced blocks first (the model's own statement of what the JSON is), then every `{` left to right.
    `max_chars` bounds the work on runaway outputs.
    """
    if not text:
        return None
    text = text[:max_chars]
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for chunk in candidates:
        start = chunk.find("{")
        while start != -1:
            try:
                obj, _ = _DECODER.raw_decode(chunk, start)
            except (json.JSONDecodeError, RecursionError):
                obj = None
            if isinstance(obj, dict):
                return obj
            start = chunk.find("{", start + 1)
    return None


def is_null_answer(text: str | None) -> bool:
    """True when the model declined with a bare `null` (optionally fenced/quoted), the released models' way of
    saying "this template does not fit this document"."""
    if text is None:
        return False
    stripped = _FENCE.sub(lambda m: m.group(1), text).strip().strip('"').strip().rstrip(".").lower()
    return stripped in {"null", "none"}
