"""Yield of valid templates from a model on N real queries (not a test: minutes of CPU).

    python benchmarks/templatize_yield.py --n 200 --best-of 1 [--llm-model ...] [--prompt-format ...]

Takes N queries round-robin from ../shared/data/queries/*.jsonl (NQ-open, WebQuestions, StackExchange, FiQA), runs
the queries → templatize stages, prints yield, reject reasons, templates/s and examples, and writes JSON to
benchmarks/results/templatize_yield[-TAG].json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from fineinstructions.llm import LLMConfig
from fineinstructions.stages.queries import QueriesConfig
from fineinstructions.stages.queries import run as run_queries
from fineinstructions.stages.templatize import TemplatizeConfig
from fineinstructions.stages.templatize import run as run_templatize

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "queries"


def sample(n: int, seed: int) -> list[dict]:
    files = sorted(SHARED.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"needs real queries in {SHARED}")
    rng = random.Random(seed)
    pools = []
    for f in files:
        rows = [json.loads(line) for line in f.open(encoding="utf-8")]
        rng.shuffle(rows)
        pools.append(rows)
    return [pools[i % len(pools)][i // len(pools)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--best-of", type=int, default=1)
    ap.add_argument("--prompt-format", default="auto")
    ap.add_argument("--llm-model", default=None)
    ap.add_argument("--llm-backend", default="transformers")
    ap.add_argument("--tag", default="")
    ap.add_argument("--output", default=None, help="run directory (default: a temporary one)")
    args = ap.parse_args()

    out = Path(args.output or tempfile.mkdtemp(prefix="fi-yield-"))
    raw = out / "raw.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    raw.write_text("".join(json.dumps(r) + "\n" for r in sample(args.n, args.seed)), encoding="utf-8")
    run_queries(QueriesConfig(input=str(raw), output=str(out / "queries"), progress=False))
    cfg = TemplatizeConfig(
        input=str(out / "queries"), output=str(out / "templatize"), best_of=args.best_of,
        prompt_format=args.prompt_format, llm=LLMConfig(backend=args.llm_backend, model=args.llm_model,
                                                        num_threads=os.cpu_count(), cache=False),
    )
    start = time.time()
    summary = run_templatize(cfg)
    wall = time.time() - start
    kept = [r for p in sorted((out / "templatize").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    dups = summary.rejects.get("duplicate_template", 0)
    result = {
        "n_queries": summary.rows_in,
        "valid_templates": len(kept) + dups,
        "unique_templates": len(kept),
        "yield": (len(kept) + dups) / max(1, summary.rows_in),
        "rejects": summary.rejects,
        "wall_s": round(wall, 1),
        "templates_per_s": round(len(kept) / wall, 3),
        "queries_per_s": round(summary.rows_in / wall, 3),
        "tokens": summary.tokens,
        "best_of": args.best_of,
        "prompt_format": args.prompt_format,
        "model": args.llm_model or "SmolLM2-135M-Instruct (embedded default)",
        "num_slots": {k: sum(1 for r in kept if r["num_slots"] == k) for k in sorted({r["num_slots"] for r in kept})},
        "by_source": {},
        "examples": [{"query": r["query"], "template": r["template"],
                      "compatible_document_description": r["compatible_document_description"]}
                     for r in random.Random(1).sample(kept, min(10, len(kept)))],
    }
    for r in kept:
        src = r["source"].split("-")[0]
        result["by_source"][src] = result["by_source"].get(src, 0) + 1
    print(json.dumps(result, indent=2, ensure_ascii=False))
    dest = Path(__file__).parent / "results" / f"templatize_yield{('-' + args.tag) if args.tag else ''}.json"
    dest.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
