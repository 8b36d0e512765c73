"""Counts of the gold sets per split and per source, as the markdown tables of data/gold/README.md."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from fineinstructions.templates import num_slots

GOLD = Path("data/gold")
SPLITS = ("train", "dev", "test")


def rows(split: str, stage: str) -> list[dict]:
    return [json.loads(line) for line in (GOLD / split / f"{stage}.jsonl").open(encoding="utf-8")]


def source_of(stage: str, row: dict) -> str:
    if stage == "templatize":
        return row["source"].split("-")[0]
    doc = re.match(r"^(?:inst|judge)-(.+)-m?\d+$", row["id"]).group(1)
    kind = doc.split("-")[0]
    return {"wikitext2": "WikiText-2", "state_union": "State of the Union", "inaugural": "inaugural"}.get(kind, kind)


def table(stage: str, key) -> str:
    counts = {s: Counter(key(r) for r in rows(s, stage)) for s in SPLITS}
    labels = sorted(set().union(*counts.values()), key=str)
    lines = [f"| {stage} | " + " | ".join(SPLITS) + " | all |", "|---|" + "---:|" * (len(SPLITS) + 1)]
    for label in labels:
        values = [counts[s][label] for s in SPLITS]
        lines.append(f"| {label} | " + " | ".join(str(v) for v in values) + f" | {sum(values)} |")
    totals = [sum(counts[s].values()) for s in SPLITS]
    lines.append("| **total** | " + " | ".join(f"**{t}**" for t in totals) + f" | **{sum(totals)}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table("templatize", lambda r: source_of("templatize", r)), end="\n\n")
    print(table("templatize", lambda r: f"{num_slots(r['reference_templates'][0])} slot(s) (first reference)"),
          end="\n\n")
    print(table("instantiate", lambda r: f"{source_of('instantiate', r)}, {'compatible' if r['compatible'] else 'incompatible'}"), end="\n\n")
    print(table("judge", lambda r: f"score {r['score']}"), end="\n\n")
    print(table("judge", lambda r: f"{source_of('judge', r)}, " + ("embedded model's output" if re.search(r"-m\d+$", r["id"]) else "written by hand")))
