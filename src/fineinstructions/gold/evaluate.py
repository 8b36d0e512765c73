"""`fineinstructions goldeval STAGE --input GOLD.jsonl --output DIR`: one yardstick for any model on an LLM stage.

Runs the stage's own code path on the gold inputs -- the stage's step class with its prompt format, best-of
candidates, validators, excerpt expansion and score parsing, through the same LLM backends and cache -- then
scores what it kept against the references (`metrics.py`). Writes

    DIR/metrics.json       the format's metrics, n, skips by reason, statuses, per-source breakdown, timings, model
    DIR/predictions.jsonl  one line per gold line: the gold row, the prediction, its status, its per-row scores
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fineinstructions import atomic
from fineinstructions.gold.metrics import METRICS, key_span_recall, token_f1
from fineinstructions.gold.readback import slot_f1
from fineinstructions.gold.rows import read_gold

DEFINITIONS = {
    "templatize": {
        "valid_rate": "share of rows for which the stage kept a template (it passed the stage's own validators)",
        "slot_f1": "F1 of the query words inside the predicted template's slots (read back onto the query) against "
                   "each reference's; best reference; 0 for a missing or unreadable template; mean over rows",
    },
    "instantiate": {
        "null_accuracy": "share of rows where the stage answered null exactly when the row is incompatible",
        "grounded_rate": "over compatible rows: share where the stage kept the pair (every check, grounding >= 0.8)",
        "key_span_recall": "over compatible rows: share of key spans with >= 80 % of their word tokens in the kept "
                           "answer (after excerpt expansion); 0 without a kept answer; mean over rows",
        "instruction_f1": "over compatible rows: word-token F1 of the kept instruction vs reference_instruction "
                          "(0 without a kept pair)",
    },
    "judge": {
        "parse_rate": "share of rows where a score 1-5 could be read",
        "spearman": "Spearman rank correlation (ties averaged) of predicted vs gold scores, unreadable = 0",
        "keep_accuracy": "share of rows where (predicted >= 4) == (gold >= 4)",
        "mae": "mean absolute error over readable scores",
    },
}


def _batches(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for i in range(0, len(rows), max(1, size)):
        yield rows[i:i + size]


def document_for(row: dict) -> str:
    """What the model is shown as the document: the title line, then the window (the title is part of the
    document a reader sees; gold rows may fill a slot from it, e.g. the speaker of a speech)."""
    title = (row.get("document_title") or "").strip()
    return f"{title}\n\n{row['document']}" if title else row["document"]


class _Runner:
    """One stage's gold rows through its step; `predict` returns, per row, (prediction, status, scores)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.step = self.make_step(cfg)
        self.step.setup_model(0)  # the model only: no stage inputs to load

    def close(self) -> None:
        self.step.teardown()

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size


class _Templatize(_Runner):
    def make_step(self, cfg):
        from fineinstructions.stages.templatize import Templatizer

        return Templatizer(cfg, progress=False)

    def predict(self, rows: list[dict]) -> list[tuple[dict, str, dict]]:
        inputs = [{"query_id": r["id"], "source": r.get("source"), "query": r["query"]} for r in rows]
        out = []
        for row, (fields, reason) in zip(rows, self.step.process(inputs)):
            kept = fields.get("template") if reason is None else None
            prediction = {"template": fields.get("template"),
                          "compatible_document_description": fields.get("compatible_document_description"),
                          "raw_output": fields.get("raw_output")}
            out.append((prediction, reason or "ok",
                        {"valid": kept is not None, "slot_f1": slot_f1(kept, row["query"], row["reference_templates"])}))
        return out

    @staticmethod
    def record(row: dict, prediction: dict, status: str) -> dict:
        return {"query": row["query"], "reference_templates": row["reference_templates"],
                "template": prediction["template"] if status == "ok" else None}


class _Instantiate(_Runner):
    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size * 4  # the stage's batch is documents, each with several matched templates

    def make_step(self, cfg):
        from fineinstructions.stages.instantiate import Instantiator

        return Instantiator(cfg, k=5, progress=False)

    def predict(self, rows: list[dict]) -> list[tuple[dict, str, dict]]:
        jobs = [({"pair_id": r["id"], "document_id": r["id"], "template_id": r["id"], "chunk": 0, "match_score": None,
                  "template": r["template"], "prompt_fingerprint": self.step.prompt_fingerprint}, document_for(r))
                for r in rows]
        out = []
        for row, (fields, reason) in zip(rows, self.step.instantiate(jobs)):
            status = reason or "ok"
            prediction = {k: fields.get(k) for k in ("instruction", "answer", "answer_raw", "grounding", "raw_output")}
            scores: dict[str, Any] = {"null_correct": (status == "null") == (not row["compatible"])}
            if row["compatible"]:
                kept = status == "ok"
                scores.update(grounded=kept,
                              key_span_recall=key_span_recall(row["key_spans"], fields.get("answer") if kept else None),
                              instruction_f1=token_f1(fields.get("instruction"), row["reference_instruction"])
                              if kept else 0.0)
            out.append((prediction, status, scores))
        return out

    @staticmethod
    def record(row: dict, prediction: dict, status: str) -> dict:
        return {"compatible": row["compatible"], "status": status, "instruction": prediction["instruction"],
                "answer": prediction["answer"], "reference_instruction": row.get("reference_instruction"),
                "key_spans": row.get("key_spans") or []}


class _Judge(_Runner):
    def make_step(self, cfg):
        from fineinstructions.stages.judge import Judge

        return Judge(cfg, progress=False)

    def predict(self, rows: list[dict]) -> list[tuple[dict, str, dict]]:
        inputs = [{"pair_id": r["id"], "instruction": r["instruction"], "answer": r["answer"],
                   "document": document_for(r)} for r in rows]
        out = []
        for row, (fields, reason) in zip(rows, self.step.process(inputs)):
            score = fields.get("score")
            status = "ok" if score is not None else (reason or "unparseable_score")
            out.append(({"score": score, "judgement": fields.get("judgement")}, status,
                        {"parsed": score is not None, "abs_error": abs(score - row["score"]) if score else None,
                         "keep_correct": ((score or 0) >= 4) == (row["score"] >= 4)}))
        return out

    @staticmethod
    def record(row: dict, prediction: dict, status: str) -> dict:
        return {"score": row["score"], "predicted": prediction["score"]}


RUNNERS = {"templatize": _Templatize, "instantiate": _Instantiate, "judge": _Judge}


def goldeval(stage: str, cfg, input: str, output: str, limit: int | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Score the model and prompt of `cfg` (the stage's own config) on a gold file; returns metrics.json's dict."""
    gold = read_gold(input, stage, limit)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runner = RUNNERS[stage](cfg)
    load_s = time.perf_counter() - start
    records, predictions, statuses = [], [], Counter()
    per_source: dict[str, list[dict]] = defaultdict(list)
    try:
        with tqdm(total=len(gold.rows), desc=f"goldeval {stage}", unit="row", disable=not progress,
                  dynamic_ncols=True) as bar:
            for batch in _batches(gold.rows, runner.batch_size):
                for row, (prediction, status, scores) in zip(batch, runner.predict(batch)):
                    record = runner.record(row, prediction, status)
                    records.append(record)
                    per_source[_source(row)].append(record)
                    statuses[status] += 1
                    predictions.append({"id": row["id"], "gold": row, "prediction": prediction, "status": status,
                                        "scores": scores})
                bar.update(len(batch))
        model_id, fingerprint = runner.step.model_id, runner.step.prompt_fingerprint
    finally:
        runner.close()
    wall = time.perf_counter() - start
    predictions += [{"id": raw.get("id") if isinstance(raw, dict) else None, "gold": raw, "prediction": None,
                     "status": f"skipped:{reason}", "scores": None, "line": line} for line, raw, reason in gold.skipped]
    metrics = {
        "stage": stage, "input": str(input), **METRICS[stage](records),
        "skipped": gold.skip_counts, "statuses": dict(statuses),
        "per_source": {s: METRICS[stage](rs) for s, rs in sorted(per_source.items())} if len(per_source) > 1 else {},
        "model_id": model_id, "prompt_format": cfg.prompt_format, "prompt_fingerprint": fingerprint,
        "best_of": getattr(cfg, "best_of", 1), "llm": {"backend": cfg.llm.backend, "model": cfg.llm.model},
        "wall_seconds": round(wall, 2), "model_load_seconds": round(load_s, 2),
        "rows_per_second": round(len(records) / max(1e-9, wall - load_s), 3),
        "definitions": DEFINITIONS[stage],
    }
    atomic.write_text(out / "predictions.jsonl",
                      "".join(json.dumps(p, ensure_ascii=False, default=str) + "\n" for p in predictions))
    atomic.write_json(out / "metrics.json", metrics, default=str)
    return metrics


def _source(row: dict) -> str:
    """Templatize rows carry a source; documents are named by their title's kind (speech vs article) when not."""
    return str(row.get("source") or "all").split("-")[0]


def render(metrics: dict) -> str:
    """The one-screen summary the CLI prints."""
    names = list(DEFINITIONS[metrics["stage"]])
    lines = [f"── goldeval {metrics['stage']} " + "─" * 40, f"  rows         {metrics['n']:,}"
             + (f" (skipped {sum(metrics['skipped'].values())}: {metrics['skipped']})" if metrics["skipped"] else "")]
    for name in names:
        value = metrics.get(name)
        lines.append(f"  {name:<16} {value:.3f}" if isinstance(value, float) else f"  {name:<16} {value}")
    lines.append(f"  statuses     {dict(sorted(metrics['statuses'].items(), key=lambda kv: -kv[1]))}")
    lines.append(f"  model        {metrics['model_id']} · prompt {metrics['prompt_format']} · best_of "
                 f"{metrics['best_of']}")
    lines.append(f"  time         {metrics['wall_seconds']:.1f} s ({metrics['model_load_seconds']:.1f} s loading) · "
                 f"{metrics['rows_per_second']:.2f} rows/s")
    return "\n".join(lines)
