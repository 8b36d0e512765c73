"""Fixed, seeded pools the gold sets are written from (run once; the pools and split lists are committed).

Splits are assigned before any row is written, by hash, so no writer picks which rows land in test:
* documents (instantiate, judge): within each document source, ids sorted by sha256 → first 70 % train, next
  10 % dev, last 20 % test; every row written from a document belongs to that document's split (in every file);
* queries (templatize): sha256(query id) → 70 / 10 / 20.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

SHARED = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
OUT = Path("data/gold")


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def query_split(query_id: str) -> str:
    bucket = int(h(query_id)[:8], 16) % 100
    return "train" if bucket < 70 else "dev" if bucket < 80 else "test"


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def main() -> None:
    splits: dict[str, str] = {}
    by_source = defaultdict(list)
    for name in ("wikitext2_valid", "us_speeches"):
        for doc in read(SHARED / "documents" / f"{name}.jsonl"):
            by_source[doc["source"]].append(doc["id"])
    for ids in by_source.values():
        ids.sort(key=h)
        n = len(ids)
        for i, doc_id in enumerate(ids):
            splits[doc_id] = "train" if i < round(0.7 * n) else "dev" if i < round(0.8 * n) else "test"
    (OUT / "document_splits.json").write_text(json.dumps(dict(sorted(splits.items())), indent=0) + "\n")
    rng = random.Random(2026)
    pools = OUT / "pools"
    pools.mkdir(parents=True, exist_ok=True)
    for name, size in (("nq_open_dev", 260), ("webquestions_train", 260), ("fiqa", 260), ("stackexchange_titles", 264)):
        rows = read(SHARED / "queries" / f"{name}.jsonl")
        if name == "stackexchange_titles":  # the same number from each of the 12 sites
            sites = defaultdict(list)
            for r in rows:
                sites[r["source"]].append(r)
            pick = [r for site in sorted(sites) for r in rng.sample(sites[site], size // len(sites))]
        else:
            pick = rng.sample(rows, size)
        with (pools / f"pool-{name}.jsonl").open("w", encoding="utf-8") as f:
            for r in pick:
                f.write(json.dumps({"id": r["id"], "source": r["source"], "query": r["query"],
                                    "split": query_split(r["id"])}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
