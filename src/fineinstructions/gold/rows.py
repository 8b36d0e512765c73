"""Reading a gold file: every row either becomes a checked record or a counted skip with its reason.

Gold files come from elsewhere too (the format is public), so nothing about a row is assumed: a line that is not
JSON, a missing or mistyped field, a repeated id, a compatible instantiate row without references, a judge score
outside 1-5 -- each is skipped with a reason (and still written to `predictions.jsonl`), never a crash. Keys
outside the format are ignored.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fineinstructions.errors import UserError

STAGES = ("templatize", "instantiate", "judge")
#: field -> type every row of a stage's file must have
REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "templatize": {"id": str, "query": str, "reference_templates": list},
    "instantiate": {"id": str, "template": str, "document": str, "compatible": bool},
    "judge": {"id": str, "document": str, "instruction": str, "answer": str, "score": int},
}


@dataclass
class GoldFile:
    rows: list[dict] = field(default_factory=list)
    #: (line number, raw row or text, reason) of every skipped line
    skipped: list[tuple[int, object, str]] = field(default_factory=list)

    @property
    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(reason for _, _, reason in self.skipped))


def _problem(stage: str, row: dict) -> str | None:
    for name, kind in REQUIRED[stage].items():
        if row.get(name) is None:
            return f"missing_{name}"
        if not isinstance(row[name], kind) or (kind is int and isinstance(row[name], bool)):
            return f"wrong_type_{name}"
        if isinstance(row[name], str) and not row[name].strip() and name != "answer":
            return f"empty_{name}"
    if stage == "templatize":
        refs = [t for t in row["reference_templates"] if isinstance(t, str) and "<fi>" in t]
        if not refs:
            return "no_reference_template"
    elif stage == "instantiate" and row["compatible"]:
        if not isinstance(row.get("reference_instruction"), str) or not row["reference_instruction"].strip():
            return "missing_reference_instruction"
        spans = row.get("key_spans")
        if not isinstance(spans, list) or not spans or not all(isinstance(s, str) and s.strip() for s in spans):
            return "missing_key_spans"
    elif stage == "judge" and not 1 <= row["score"] <= 5:
        return "score_out_of_range"
    return None


def read_gold(path: str | Path, stage: str, limit: int | None = None) -> GoldFile:
    if stage not in STAGES:
        raise UserError(f"unknown gold stage {stage!r}: choose one of {', '.join(STAGES)}")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"gold file not found: {path}")
    gold, seen = GoldFile(), set()
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if limit is not None and len(gold.rows) >= limit:
                break
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                gold.skipped.append((n, None, "bad_utf8"))
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                gold.skipped.append((n, text[:200], "bad_json"))
                continue
            if not isinstance(row, dict):
                gold.skipped.append((n, row, "not_an_object"))
                continue
            if reason := _problem(stage, row):
                gold.skipped.append((n, row, reason))
            elif row["id"] in seen:
                gold.skipped.append((n, row, "duplicate_id"))
            else:
                seen.add(row["id"])
                gold.rows.append(row)
    if not gold.rows and not gold.skipped:
        raise UserError(f"gold file {path} is empty")
    return gold
