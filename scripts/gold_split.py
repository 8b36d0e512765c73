"""Assemble the gold sets: every written row (drafts and the current split files) → data/gold/{train,dev,test}/.

Splits are fixed before any row is written (`gold_pools.py`): a templatize row goes where its query's pool entry
says, an instantiate or judge row where its document does (`document_splits.json`; the document id is in the row
id: `inst-<document id>-<k>`, `judge-<document id>-<k>`). So no query and no document is in two splits, in any file.
Rerunning is idempotent; a draft row replaces a split row with the same id. Nothing is written unless every row
has its split (a row without one is reported and the run stops), and drafts are never deleted here: remove them
yourself once the split files are committed.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

GOLD = Path("data/gold")
SPLITS = ("train", "dev", "test")
STAGES = ("templatize", "instantiate", "judge")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def document_of(row_id: str) -> str:
    return re.match(r"^(?:inst|judge)-(.+)-m?\d+$", row_id).group(1)


def main() -> int:
    query_split = {r["id"]: r["split"] for f in sorted((GOLD / "pools").glob("pool-*.jsonl")) for r in read(f)}
    doc_split = json.loads((GOLD / "document_splits.json").read_text())
    problems, planned = [], {}
    for stage in STAGES:
        rows: dict[str, dict] = {}
        for split in SPLITS:
            if (GOLD / split / f"{stage}.jsonl").is_file():
                rows.update({r["id"]: r for r in read(GOLD / split / f"{stage}.jsonl")})
        drafts = sorted((GOLD / "drafts").glob(f"{stage}-*.jsonl")) if (GOLD / "drafts").is_dir() else []
        for f in drafts:
            rows.update({r["id"]: r for r in read(f)})
        out = defaultdict(list)
        for rid, row in sorted(rows.items()):
            split = query_split.get(rid) if stage == "templatize" else doc_split.get(document_of(rid))
            if split is None:
                problems.append(f"{stage} {rid}: no split assigned (unknown query or document)")
                continue
            out[split].append(row)
        planned[stage] = out
        print(stage, {s: len(out[s]) for s in SPLITS}, "with drafts:", [f.name for f in drafts])
    by_doc = defaultdict(set)
    for stage in ("instantiate", "judge"):
        for split, rows in planned[stage].items():
            for row in rows:
                by_doc[document_of(row["id"])].add(split)
    problems += [f"document {d} in splits {sorted(s)}" for d, s in by_doc.items() if len(s) > 1]
    for p in problems[:50]:
        print("problem:", p)
    if problems:
        print(f"{len(problems)} problem(s): nothing written")
        return 1
    for stage, out in planned.items():
        for split in SPLITS:
            (GOLD / split).mkdir(parents=True, exist_ok=True)
            with (GOLD / split / f"{stage}.jsonl").open("w", encoding="utf-8") as f:
                for row in out[split]:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
