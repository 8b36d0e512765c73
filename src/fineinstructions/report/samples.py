"""The sample browser's rows: instantiated pairs with where they ended up, their scores and their excerpts.

Every pair the run wrote is a candidate row, kept or not, because a report is read to see *why* pairs were lost
(a demo whose judge keeps nothing must still show what it judged). At most `limit` rows, read from the first
shards only so a large run still gives a small page, shared evenly between pairs the judge kept, pairs it rejected
and pairs `instantiate` rejected (a group with fewer leaves its share to the others), in that order.
Text goes into the page as segments (`[kind, text]`), never as HTML, and the page's script builds the DOM from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fineinstructions.report.data import RunDir
from fineinstructions.report.excerpt_spans import Segment, load_documents, relative_position, segments
from fineinstructions.templates import SLOT

MAX_SAMPLES = 1000
CONTEXT_CHARS = 160  # document characters shown either side of the first excerpt
MAX_EXCERPT_CHARS = 400  # longer excerpts are shown with their middle elided in the snippet

_COLUMNS = ["pair_id", "document_id", "template_id", "chunk", "match_score", "template", "instruction", "answer_raw",
            "grounding", "excerpts", "status", "raw_output", "score", "judgement", "reason"]


@dataclass(frozen=True)
class Samples:
    rows: list[dict]  # JSON-ready rows of the browser
    positions: list[tuple[int, float]]  # (matching chunk, relative excerpt position) of pairs with a located excerpt
    total: int  # pairs in the run (judged + instantiate rejects), of which `rows` is the first part
    documents_note: str | None  # why documents (and so excerpt positions) are missing, None when they are there


def sample_pairs(run: RunDir, limit: int = MAX_SAMPLES) -> Samples:
    rows = _outcomes(run, limit)
    texts, note = load_documents(run.settings("instantiate"), {r["document_id"] for r in rows})
    k = int(run.settings("match").get("k", 5))
    max_chars = run.settings("instantiate").get("max_document_chars")
    out, positions = [], []
    for r in rows:
        document = texts.get(r["document_id"])
        parts = segments(r["answer_raw"], document, r["chunk"] or 0, k, max_chars) if r.get("answer_raw") else []
        position = relative_position(parts, len(document)) if document else None
        if position is not None:
            positions.append((int(r["chunk"] or 0), position))
        out.append(_browser_row(r, parts, document, position))
    judged = "judge" in run.stages()
    total = run.count("judge" if judged else "instantiate") + len(run.rejects("instantiate", ["pair_id"])) \
        + (len(run.rejects("judge", ["pair_id"])) if judged else 0)
    return Samples(out, positions, total, note)


def _outcomes(run: RunDir, limit: int) -> list[dict]:
    """Pairs with their outcome: where the run stopped them, or that they reached the end of the run."""
    in_corpus = {r["pair_id"] for r in run.rows("budget", ["pair_id"])}
    over = {r["pair_id"]: r["reason"] for r in run.rejects("budget", ["pair_id", "reason"])}
    judged = "judge" in run.stages()

    def kept(r: dict) -> str:
        if not judged:
            return "instantiated"
        if r["pair_id"] in over:
            return f"budget: {over[r['pair_id']]}"
        return "in corpus" if r["pair_id"] in in_corpus else "kept by judge"

    groups = [(run.rows("judge" if judged else "instantiate", _COLUMNS, limit=limit), kept)]
    if judged:
        groups.append((run.rejects("judge", _COLUMNS, limit=limit), lambda r: f"judge: {r.get('reason')}"))
    groups.append((run.rejects("instantiate", _COLUMNS, limit=limit), lambda r: f"instantiate: {r.get('reason')}"))
    sizes = _shares([len(batch) for batch, _ in groups], limit)
    return [{**r, "outcome": outcome(r)} for (batch, outcome), n in zip(groups, sizes) for r in batch[:n]]


def _shares(available: list[int], limit: int) -> list[int]:
    """An even share of `limit` per group, capped by what each group has; what one cannot use goes to the next."""
    sizes = [min(n, limit // len(available)) for n in available]
    for i, n in enumerate(available):
        extra = min(n - sizes[i], limit - sum(sizes))
        sizes[i] += max(extra, 0)
    return sizes


def _browser_row(r: dict, parts: list[Segment], document: str | None, position: float | None) -> dict:
    answer = [[p.kind, p.text] for p in parts] or [["raw", r.get("raw_output") or ""]]
    return {
        "pair": r["pair_id"], "doc": r["document_id"], "outcome": r["outcome"],
        "score": r.get("score"), "grounding": _round(r.get("grounding")), "match": _round(r.get("match_score")),
        "chunk": r.get("chunk"), "position": _round(position),
        "snippet": _snippet(parts, document), "template": _template(r.get("template") or ""),
        "instruction": r.get("instruction") or "", "answer": answer, "judgement": (r.get("judgement") or "").strip(),
    }


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def _template(template: str) -> list[list[str]]:
    """The template as text and `<fi>` slot segments, so slots can be shown as slots."""
    out, last = [], 0
    for m in SLOT.finditer(template):
        out += [["text", template[last:m.start()]], ["slot", m.group(1)]]
        last = m.end()
    return out + [["text", template[last:]]]


def _squeeze(text: str) -> str:
    """Blank lines collapsed, so a snippet stays a few lines tall in the table."""
    return re.sub(r"\n\s*\n+", "\n", text)


def _snippet(parts: list[Segment], document: str | None) -> list[list[str]]:
    """The document around the answer's first located excerpt (the excerpt marked), else its opening."""
    if not document:
        return [["missing", "(document not available)"]]
    first = next((p for p in parts if p.kind == "excerpt"), None)
    if first is None:
        head = document[: 2 * CONTEXT_CHARS]
        return [["text", _squeeze(head) + ("…" if len(document) > len(head) else "")]]
    before = document[max(0, first.start - CONTEXT_CHARS):first.start]
    after = document[first.end:first.end + CONTEXT_CHARS]
    excerpt = first.text
    if len(excerpt) > MAX_EXCERPT_CHARS:
        half = MAX_EXCERPT_CHARS // 2
        excerpt = excerpt[:half] + " […] " + excerpt[-half:]
    return [["text", ("…" if first.start > CONTEXT_CHARS else "") + _squeeze(before)], ["excerpt", excerpt],
            ["text", _squeeze(after) + ("…" if first.end + CONTEXT_CHARS < len(document) else "")]]
