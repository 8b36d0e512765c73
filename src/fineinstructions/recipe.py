"""The whole recipe as one configured run: stages in paper order, each in `DIR/<stage>/`, each resumable.

A run config is YAML with one section per stage (keys = that stage's flags) plus shared keys at the top level
(`llm:`, `tasks:`, `workers:`, ...) that apply to every stage that has them. Each stage reads the output folders of
the stages it builds on (`StageSpec.links`); only `queries` (queries) and `match` (documents) need an `input`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from fineinstructions.config import build, merge
from fineinstructions.errors import UserError
from fineinstructions.pipeline.summary import StageSummary
from fineinstructions.stages import (budget, decontaminate, distill, distill_augment, evaluate, index, instantiate, judge,
                                     match, near_dedup, pretrain, queries, released_bank, rephrase, scrub, templatize)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    name: str
    config: type
    run: Callable[[Any], StageSummary]
    help: str
    #: config field -> what fills it in a run: an earlier stage's output folder ("match"), the first of several
    #: that runs in this run ("near_dedup|templatize"), or one of a stage's resolved settings ("match.input")
    links: tuple[tuple[str, str], ...] = ()
    #: runs only when the run config names it (a section or `stages:`), e.g. decontamination needs eval sets
    optional: bool = False


#: later stages read the documents match read, with the same columns and limit
_DOCUMENTS = (("documents", "match.input"), ("format", "match.format"), ("text_column", "match.text_column"),
              ("id_column", "match.id_column"), ("hf_split", "match.hf_split"), ("limit", "match.limit"))


STAGES: list[StageSpec] = [
    StageSpec("queries", queries.QueriesConfig, queries.run,
              "real user queries (jsonl/parquet/csv/HF) → clean, deduplicated queries"),
    StageSpec("decontaminate", decontaminate.DecontaminateConfig, decontaminate.run,
              "rows → rows without evaluation-set overlap (Tulu 3: 8-grams covering > half of an eval instance)",
              (("input", "queries"),), optional=True),
    StageSpec("released_bank", released_bank.ReleasedBankConfig, released_bank.run,
              "the released FineTemplates bank (HF name or local parquet) → templates, instead of templatize",
              optional=True),
    StageSpec("templatize", templatize.TemplatizeConfig, templatize.run,
              "queries → <fi>-slotted instruction templates + compatible document descriptions",
              (("input", "decontaminate|queries"),)),
    StageSpec("near_dedup", near_dedup.NearDedupConfig, near_dedup.run,
              "templates → one per MinHash near-duplicate cluster (clusters and counts kept)",
              (("input", "templatize|released_bank"),)),
    StageSpec("index", index.IndexConfig, index.run,
              "templates → FAISS index of their compatible document descriptions",
              (("input", "near_dedup|templatize|released_bank"),)),
    StageSpec("match", match.MatchConfig, match.run,
              "documents → N templates each (Gaussian-pooled embeddings, threshold, slot-balanced sampling)",
              (("index", "index"),)),
    StageSpec("instantiate", instantiate.InstantiateConfig, instantiate.run,
              "matches → instruction → answer pairs grounded in the document by expanded <excerpt> tags",
              (("input", "match"), ("templates", "near_dedup|templatize|released_bank"), *_DOCUMENTS)),
    StageSpec("judge", judge.JudgeConfig, judge.run,
              "pairs → 1-5 judge scores; keeps pairs scoring at least --min-score",
              (("input", "instantiate"),)),
    StageSpec("scrub", scrub.ScrubConfig, scrub.run,
              "judged pairs → emails, public IPs, phone and card numbers replaced (PII)",
              (("input", "judge"),)),
    StageSpec("budget", budget.BudgetConfig, budget.run,
              "judged pairs → instruction corpus with the documents' own token count, + the standard corpus",
              (("input", "scrub|judge"), *_DOCUMENTS)),
]
BY_NAME = {s.name: s for s in STAGES}

#: stages outside the recipe's run (baselines, training, evaluation): their own CLI commands
COMMANDS: list[StageSpec] = [
    StageSpec("rephrase", rephrase.RephraseConfig, rephrase.run,
              "documents → WRAP-style question-answer rewrites (the baseline synthetic recipe)"),
    StageSpec("pretrain", pretrain.PretrainConfig, pretrain.run,
              "train a Llama-style model from scratch on a corpus with an exact token budget"),
    StageSpec("evaluate", evaluate.EvaluateConfig, evaluate.run,
              "score a checkpoint on held-out questions (answer NLL, EM, F1); judge it against another model"),
    StageSpec("distill", distill.DistillConfig, distill.run,
              "train a small student for one LLM stage on teacher data (LoRA or full), best dev epoch kept"),
    StageSpec("distill-augment", distill_augment.DistillAugmentConfig, distill_augment.run,
              "more teacher data for a student: rejection-sampled candidates that pass the stage's validators"),
]


def stage_configs(config: dict[str, Any], output: str, overrides: dict[str, Any] | None = None) -> list[tuple[StageSpec, Any]]:
    """Resolve each stage's typed config from a run config (shared keys < stage section < overrides)."""
    overrides = overrides or {}
    names = (config.get("stages") or [s.name for s in STAGES if s.name in config]
             or [s.name for s in STAGES if not s.optional])
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(BY_NAME)}")
    shared = {k: v for k, v in config.items() if k not in BY_NAME and k != "stages"}
    every_field = {f.name for s in STAGES for f in dataclasses.fields(s.config)}
    stray = sorted(set(shared) - every_field)
    if stray:
        raise UserError(f"unknown top-level key(s) in run config: {', '.join(stray)}")
    resolved = []
    done: dict[str, Any] = {}
    for spec in STAGES:  # every stage is resolved (a later one may link to its settings); the named ones run
        fields = {f.name for f in dataclasses.fields(spec.config)}
        values = merge({k: v for k, v in shared.items() if k in fields}, config.get(spec.name) or {})
        values = merge(values, {k: v for k, v in overrides.items() if k in fields})
        values["output"] = str(Path(output) / spec.name)
        for field, source in spec.links:
            stage, _, setting = source.partition(".")
            if not setting:
                choices = stage.split("|")
                values.setdefault(field, str(Path(output) / next((c for c in choices if c in names), choices[-1])))
            elif stage in done and field not in values:
                values[field] = getattr(done[stage], setting)
        cfg = build(spec.config, values, where=f"run config [{spec.name}]")
        done[spec.name] = cfg
        if spec.name in names:
            resolved.append((spec, cfg))
    return resolved


def run(config: dict[str, Any], output: str, overrides: dict[str, Any] | None = None,
        echo: Callable[[str], None] = print) -> list[StageSummary]:
    summaries = []
    for spec, cfg in stage_configs(config, output, overrides):
        summary = spec.run(cfg)
        echo(summary.render())
        summaries.append(summary)
    return summaries


def demo_config() -> dict[str, Any]:
    """The bundled demo: real queries shipped with the package, the embedded default model, CPU."""
    import yaml

    data = resources.files("fineinstructions.data")
    config = yaml.safe_load((data / "demo.yaml").read_text(encoding="utf-8"))
    config.setdefault("queries", {})["input"] = str(data / "sample_queries.jsonl")
    if "match" in config:
        config["match"]["input"] = str(data / config["match"].get("input", "sample_documents.jsonl"))
    if "decontaminate" in config:
        config["decontaminate"]["eval_sets"] = str(data / config["decontaminate"]["eval_sets"])
    return config
