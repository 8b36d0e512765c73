"""The part of a document an LLM is shown: all of it, or a window centred where the matching vector looked.

Shared by `instantiate` (what the model sees), the report (where excerpts sit) and `goldeval`, so all three cut
documents the same way.
"""

from __future__ import annotations


def document_window(text: str, chunk: int, k: int, max_chars: int | None) -> str:
    """The part of `text` the model sees: all of it, or `max_chars` around where matching vector `chunk` looked.

    Cut at whitespace so no word is split (a split word could never be matched by an excerpt)."""
    if not max_chars or len(text) <= max_chars:
        return text
    centre = 0 if chunk <= 0 else round(len(text) * chunk / (k + 1))
    start = min(max(0, centre - max_chars // 2), len(text) - max_chars)
    end = start + max_chars
    if start > 0:
        space = text.find(" ", start, start + 200)
        start = space + 1 if space != -1 else start
    if end < len(text):
        space = text.rfind(" ", end - 200, end)
        end = space if space > start else end
    return text[start:end]
