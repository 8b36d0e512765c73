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
from fineinstructions.stages import index, match, queries, templatize


@dataclasses.dataclass(frozen=True)
class StageSpec:
    name: str
    config: type
    run: Callable[[Any], StageSummary]
    help: str
    #: config field -> earlier stage whose output folder fills it in a run
    links: tuple[tuple[str, str], ...] = ()


STAGES: list[StageSpec] = [
    StageSpec("queries", queries.QueriesConfig, queries.run,
              "real user queries (jsonl/parquet/csv/HF) → clean, deduplicated queries"),
    StageSpec("templatize", templatize.TemplatizeConfig, templatize.run,
              "queries → <fi>-slotted instruction templates + compatible document descriptions",
              (("input", "queries"),)),
    StageSpec("index", index.IndexConfig, index.run,
              "templates → FAISS index of their compatible document descriptions",
              (("input", "templatize"),)),
    StageSpec("match", match.MatchConfig, match.run,
              "documents → N templates each (Gaussian-pooled embeddings, threshold, slot-balanced sampling)",
              (("index", "index"),)),
]
BY_NAME = {s.name: s for s in STAGES}


def stage_configs(config: dict[str, Any], output: str, overrides: dict[str, Any] | None = None) -> list[tuple[StageSpec, Any]]:
    """Resolve each stage's typed config from a run config (shared keys < stage section < overrides)."""
    overrides = overrides or {}
    names = config.get("stages") or [s.name for s in STAGES if s.name in config] or [s.name for s in STAGES]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(BY_NAME)}")
    shared = {k: v for k, v in config.items() if k not in BY_NAME and k != "stages"}
    every_field = {f.name for s in STAGES for f in dataclasses.fields(s.config)}
    stray = sorted(set(shared) - every_field)
    if stray:
        raise UserError(f"unknown top-level key(s) in run config: {', '.join(stray)}")
    resolved = []
    for spec in STAGES:
        if spec.name not in names:
            continue
        fields = {f.name for f in dataclasses.fields(spec.config)}
        values = merge({k: v for k, v in shared.items() if k in fields}, config.get(spec.name) or {})
        values = merge(values, {k: v for k, v in overrides.items() if k in fields})
        values["output"] = str(Path(output) / spec.name)
        for field, source in spec.links:
            values.setdefault(field, str(Path(output) / source))
        resolved.append((spec, build(spec.config, values, where=f"run config [{spec.name}]")))
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
    return config
