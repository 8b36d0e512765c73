"""Command `evaluate`: score any Hugging Face causal-LM checkpoint on held-out human question → answer pairs, and
optionally judge it head to head against a second model.

    DIR/metrics.json        n, answer NLL per token, bits per byte, exact match, token F1 (see evaluate/scoring.py)
    DIR/predictions.jsonl   query, reference answers, the model's greedy answer
    DIR/against/            the same for `--against MODEL`, when given
    DIR/pairwise.json       the LLM judge's position-swapped win rate of MODEL over AGAINST, with the judgements it
                            could not read counted apart (`unreadable`, `unreadable_rate`; evaluate/pairwise.py)

Every model is asked with the same prompt (`Instruction: {q}\\n\\nAnswer:`) on the same seeded sample of questions,
so two evaluations of different checkpoints compare directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineinstructions import atomic
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.llm import LLMConfig

SCORES = ("device", "n", "nll_per_token", "bits_per_byte", "exact_match", "f1")


@dataclass
class EvaluateConfig:
    model: str | None = option(None, "checkpoint to evaluate: a Hugging Face model directory or hub name")
    qa: str | None = option(None, "held-out questions: jsonl with `query` and `answers`")
    output: str | None = option(None, "output directory")
    limit: int = option(200, "questions scored (a seeded sample, the same for every model)")
    seed: int = option(0, "seed of the question sample")
    max_new_tokens: int = option(32, "tokens generated per answer")
    device: str = option("auto", "auto (the GPU when there is one, as in training) | cpu | cuda")
    against: str | None = option(None, "a second checkpoint: evaluate it too and judge the two head to head")
    pairwise_limit: int = option(100, "questions the LLM judge compares (the first of the sample)")
    judge: LLMConfig = option(factory=LLMConfig)


def write_predictions(metrics: dict[str, Any], folder: Path) -> None:
    """metrics.json (scores only) and predictions.jsonl (one line per question) in `folder`, each written whole."""
    atomic.write_json(folder / "metrics.json", {"model": metrics["model"], **{k: metrics[k] for k in SCORES}})
    atomic.write_text(folder / "predictions.jsonl", "".join(
        json.dumps({"query": row["query"], "answers": row["answers"], "prediction": prediction}) + "\n"
        for row, prediction in zip(metrics["rows"], metrics["predictions"])))


def judge_backend(judge: LLMConfig):
    """The pairwise judge's backend, checked first so a typo is one line; built once per evaluation or experiment."""
    from fineinstructions.llm import make_backend, preflight

    preflight(judge)
    return make_backend(judge)


def head_to_head(judge: LLMConfig, backend, queries: list[str], answers_a: list[str],
                 answers_b: list[str]) -> dict[str, Any]:
    """The judge's win rate of A over B (position-swapped), with the judge recorded for provenance."""
    from fineinstructions.evaluate.pairwise import pairwise_win_rate

    result = pairwise_win_rate(backend, queries, answers_a, answers_b)
    return {**result, "judge": {"backend": judge.backend, "model": judge.model or "default"}}


def run(cfg: EvaluateConfig) -> dict[str, Any]:
    from fineinstructions.evaluate.scoring import evaluate_model

    if not cfg.model or not cfg.qa or not cfg.output:
        raise UserError("evaluate needs --model (a checkpoint), --qa (a jsonl of questions) and --output DIR")
    out = Path(cfg.output)
    results = {}
    for name, model, folder in (("model", cfg.model, out), ("against", cfg.against, out / "against")):
        if not model:
            continue
        try:
            metrics = evaluate_model(model, cfg.qa, limit=cfg.limit, seed=cfg.seed,
                                     max_new_tokens=cfg.max_new_tokens, device=cfg.device)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot evaluate {model}: {e}") from e
        write_predictions(metrics, folder)
        results[name] = metrics
    summary: dict[str, Any] = {name: {"model": m["model"], **{k: m[k] for k in SCORES}} for name, m in results.items()}
    if cfg.against:
        rows = results["model"]["rows"][: cfg.pairwise_limit]
        k = len(rows)
        backend = judge_backend(cfg.judge)
        try:
            pairwise = head_to_head(cfg.judge, backend, [r["query"] for r in rows],
                                    results["model"]["predictions"][:k], results["against"]["predictions"][:k])
        finally:
            backend.close()
        atomic.write_json(out / "pairwise.json", pairwise)
        summary["pairwise"] = pairwise
    return summary
