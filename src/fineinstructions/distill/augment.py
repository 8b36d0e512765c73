"""Teacher data beyond the gold train split: rejection sampling with a student.

Each unlabelled input gets several sampled candidates from the student; only a candidate that passes the stage's
own validators survives (for instantiate also the judge student's score: >= `min_score`), and becomes a new
training example in the student's contract. Retraining on gold + these examples is measured against gold-only on
the dev split (`distill --augment`). Inputs that appear in any gold dev or test file are never used.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from fineinstructions.distill.examples import Example, example, student_format
from fineinstructions.errors import UserError
from fineinstructions.gold.evaluate import document_for
from fineinstructions.text import dedup_key


def read_pool(path: str | Path, limit: int | None) -> list[dict]:
    """Rows of a .jsonl file or of every .jsonl in a folder (sorted), up to `limit`."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.jsonl"))
    if not files:
        raise UserError(f"no pool of inputs at {path} (a .jsonl file or a folder of them)")
    rows = []
    for f in files:
        for line in f.open(encoding="utf-8"):
            if line.strip():
                rows.append(json.loads(line))
    return rows[:limit] if limit else rows


def held_out(gold_files: list[Path]) -> tuple[set[str], set[str]]:
    """(normalised queries, documents) of the held-out gold files: never sampled from."""
    queries, windows = set(), set()
    for f in gold_files:
        if not f.is_file():
            continue
        for row in map(json.loads, f.open(encoding="utf-8")):
            if "query" in row:
                queries.add(dedup_key(row["query"]))
            if "document" in row:
                windows.add(row["document"][:200])
    return queries, windows


def _chunks(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def augment_templatize(cfg, pool: list[dict], progress: bool = True) -> tuple[list[Example], Counter]:
    """`cfg`: a TemplatizeConfig with the student (llm.adapter), its compact format and best_of > 1."""
    from fineinstructions.stages.templatize import Templatizer

    step, fmt, stats, out = Templatizer(cfg, progress=False), student_format("templatize"), Counter(), []
    step.setup_model(0)
    try:
        for batch in tqdm(list(_chunks(pool, cfg.batch_size)), desc="rejection sampling", disable=not progress):
            rows = [{"query_id": str(r.get("id", i)), "source": r.get("source"), "query": r["query"]}
                    for i, r in enumerate(batch)]
            for row, (fields, reason) in zip(rows, step.process(rows)):
                stats[reason or "kept"] += 1
                if reason is None:
                    out.append(example("templatize", fmt, {"query": row["query"]}, {
                        "template": fields["template"],
                        "compatible_document_description": fields["compatible_document_description"]}, "augmented"))
    finally:
        step.teardown()
    return out, stats


def augment_instantiate(cfg, judge_cfg, pool: list[dict], min_score: int,
                        progress: bool = True) -> tuple[list[Example], Counter]:
    """`cfg`: an InstantiateConfig with the student; `judge_cfg`: a JudgeConfig with the judge student. A kept pair
    becomes an example only if the judge scores it at least `min_score`; the student's own excerpt shorthand is
    the target."""
    from fineinstructions.stages.instantiate import Instantiator
    from fineinstructions.stages.judge import Judge

    step, fmt, stats, out = Instantiator(cfg, k=5, progress=False), student_format("instantiate"), Counter(), []
    judge = Judge(judge_cfg, progress=False)
    step.setup_model(0)
    judge.setup_model(0)
    try:
        for batch in tqdm(list(_chunks(pool, cfg.batch_size * 4)), desc="rejection sampling", disable=not progress):
            jobs = [({"pair_id": str(i), "document_id": str(i), "template_id": str(i), "chunk": 0, "match_score": None,
                      "template": r["template"], "prompt_fingerprint": step.prompt_fingerprint}, document_for(r))
                    for i, r in enumerate(batch)]
            kept = []
            for (base, document), (fields, reason) in zip(jobs, step.instantiate(jobs)):
                stats[reason or "passed_validators"] += 1
                if reason is None:
                    kept.append((base, document, fields))
            judged = judge.process([{"pair_id": b["pair_id"], "instruction": f["instruction"], "answer": f["answer"]}
                                    for b, _, f in kept])
            for (base, document, fields), (scored, _) in zip(kept, judged):
                if (scored.get("score") or 0) >= min_score:
                    stats["kept"] += 1
                    out.append(example("instantiate", fmt, {"template": base["template"], "document": document}, {
                        "instruction": fields["instruction"], "answer": fields["answer_raw"]}, "augmented"))
                else:
                    stats["judged_below_min_score"] += 1
    finally:
        step.teardown()
        judge.teardown()
    return out, stats
