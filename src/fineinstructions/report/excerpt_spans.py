"""Where in its document each excerpt of an answer came from, recomputed from what the run stored.

`instantiate` stores the answer as written (`answer_raw`, with `<excerpt>` tags), the expanded answer and the
number of tags, but not character offsets. Offsets are recovered here with the stage's own public pieces: the same
window of the document the model saw (`document_window`, from the matching chunk and `max_document_chars`) and the
same expansion (`expand_excerpts`, one tag at a time). Because expansion only succeeds when a tag resolves to one
span of the window, the recovered offsets are the ones the stage used. Storing `(start, end)` per excerpt in the
`instantiate` rows would make this step (and re-reading the documents) unnecessary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from loguru import logger

from fineinstructions.excerpts import close_open_excerpt, expand_excerpts
from fineinstructions.windows import document_window

_TAGGED = re.compile(r"<\s*excerpt\s*>.*?<\s*/\s*excerpt\s*>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Segment:
    """A piece of an answer: free text, an excerpt resolved to document[start:end], or an unresolved excerpt."""

    text: str
    kind: str  # "text" | "excerpt" | "unresolved"
    start: int | None = None  # offsets in the whole document (excerpts only)
    end: int | None = None


def segments(answer_raw: str, document: str | None, chunk: int, k: int, max_chars: int | None) -> list[Segment]:
    """Split an answer into free text and excerpts, each excerpt located in `document` when it resolves there."""
    answer = close_open_excerpt(answer_raw or "")
    window = document_window(document, chunk, k, max_chars) if document else ""
    offset = document.find(window) if document else -1
    out: list[Segment] = []
    last = 0
    for tag in _TAGGED.finditer(answer):
        if tag.start() > last:
            out.append(Segment(answer[last:tag.start()], "text"))
        out.append(_locate(tag.group(0), window, offset))
        last = tag.end()
    if last < len(answer):
        out.append(Segment(answer[last:], "text"))
    return out


def _locate(tag: str, window: str, offset: int) -> Segment:
    expansion = expand_excerpts(tag, window) if window else None
    if expansion is None or expansion.text is None:
        return Segment(tag, "unresolved")
    at = window.find(expansion.text)
    return Segment(expansion.text, "excerpt", offset + at, offset + at + len(expansion.text))


def relative_position(parts: list[Segment], length: int) -> float | None:
    """Character-weighted centre of the answer's resolved excerpts, as a fraction of the document (0 = start)."""
    spans = [(s.start, s.end) for s in parts if s.kind == "excerpt" and s.end > s.start]
    if not spans or length <= 0:
        return None
    weight = sum(e - s for s, e in spans)
    return sum((s + e) / 2 * (e - s) for s, e in spans) / weight / length


def load_documents(settings: dict, wanted: Iterable[str]) -> tuple[dict[str, str], str | None]:
    """The texts of the `wanted` documents, read as `instantiate` read them (its stage.json); ({}, why) when the
    documents cannot be read here (moved, a hub dataset offline), so the report still renders without them."""
    from fineinstructions.pipeline.readers import make_reader

    wanted = set(wanted)
    source = settings.get("documents")
    if not source or not wanted:
        return {}, "no documents recorded in instantiate/stage.json" if not source else None
    texts: dict[str, str] = {}
    logger.disable("datatrove")
    try:
        reader = make_reader(source, settings.get("text_column", "text"), settings.get("id_column", "id"),
                             settings.get("format"), -1, settings.get("hf_split", "train"))
        for doc in reader.run():
            if str(doc.id) in wanted:
                texts[str(doc.id)] = doc.text
                if len(texts) == len(wanted):
                    break
    except Exception as e:  # noqa: BLE001 -- any failure to read only costs the report its document views
        return texts, f"documents not readable from {source}: {type(e).__name__}: {e}"
    finally:
        logger.enable("datatrove")
    return texts, None
