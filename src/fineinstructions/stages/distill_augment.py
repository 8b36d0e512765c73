"""Command `distill-augment`: more teacher data for a student by rejection sampling (see `distill/augment.py`).

    fineinstructions distill-augment --stage templatize --student students/t --input ../shared/data/queries \\
        --output students/t-augment.jsonl --samples 4
    fineinstructions distill --stage templatize --input data/gold/train/templatize.jsonl \\
        --augment students/t-augment.jsonl --output students/t2

`--input` is a pool of unlabelled inputs: queries (`id`, `query`) for templatize; (`template`, `document_title`,
`document`) rows for instantiate. Inputs found in the gold dev or test files (`--held-out`, default
data/gold/{dev,test}/STAGE.jsonl) are skipped. Writes the examples (.jsonl, the format `distill --augment` reads)
and prints how many candidates passed each filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fineinstructions.config import option
from fineinstructions.errors import UserError


@dataclass
class DistillAugmentConfig:
    stage: str | None = option(None, "the student's stage", ("templatize", "instantiate"))
    student: str | None = option(None, "the student (a distill output folder) that samples the candidates")
    judge_student: str | None = option(None, "instantiate: the judge student that scores kept pairs")
    input: str | None = option(None, "pool of unlabelled inputs (.jsonl file or folder)")
    output: str | None = option(None, "examples file to write (.jsonl)")
    held_out: list[str] = field(default_factory=list, metadata={"help": "gold files whose inputs are never used "
                                                                        "(default: data/gold/{dev,test}/STAGE.jsonl)"})
    samples: int = option(4, "candidates per input (1 greedy + n-1 sampled); the first that passes is kept")
    temperature: float = option(0.8, "sampling temperature of the extra candidates")
    min_score: int = option(4, "instantiate: the judge student's score a pair needs")
    limit: int | None = option(None, "use at most this many pool inputs")
    seed: int = option(1, "seed of the sampled candidates")
    progress: bool = option(True, "progress bars")


def run(cfg: DistillAugmentConfig) -> dict[str, Any]:
    from fineinstructions.distill.augment import (augment_instantiate, augment_templatize, held_out, read_pool)
    from fineinstructions.distill.examples import STUDENT_FORMATS, write_examples
    from fineinstructions.recipe import BY_NAME
    from fineinstructions.stages.distill import student_llm
    from fineinstructions.text import dedup_key

    if cfg.stage not in ("templatize", "instantiate") or not (cfg.student and cfg.input and cfg.output):
        raise UserError("distill-augment needs --stage templatize|instantiate, --student DIR, --input POOL and --output")
    if cfg.stage == "instantiate" and not cfg.judge_student:
        raise UserError("distill-augment --stage instantiate needs --judge-student (it scores the kept pairs)")
    gold = [Path(p) for p in cfg.held_out] or [Path("data/gold") / s / f"{cfg.stage}.jsonl" for s in ("dev", "test")]
    queries, windows = held_out(gold)
    pool = read_pool(cfg.input, None)
    if cfg.stage == "templatize":
        usable = [r for r in pool if isinstance(r.get("query"), str) and dedup_key(r["query"]) not in queries]
    else:
        usable = [r for r in pool if isinstance(r.get("document"), str) and r["document"][:200] not in windows]
    skipped = len(pool) - len(usable)
    usable = usable[:cfg.limit] if cfg.limit else usable
    stage_cfg = BY_NAME[cfg.stage].config(
        output=str(Path(cfg.output).parent), prompt_format=STUDENT_FORMATS[cfg.stage], best_of=cfg.samples,
        temperature=cfg.temperature, seed=cfg.seed, progress=False, llm=student_llm(cfg.student))
    if cfg.stage == "templatize":
        examples, stats = augment_templatize(stage_cfg, usable, cfg.progress)
    else:
        judge_cfg = BY_NAME["judge"].config(output=str(Path(cfg.output).parent), prompt_format=STUDENT_FORMATS["judge"],
                                            llm=student_llm(cfg.judge_student), progress=False)
        examples, stats = augment_instantiate(stage_cfg, judge_cfg, usable, cfg.min_score, cfg.progress)
    write_examples(cfg.output, examples)
    result = {"pool": len(pool), "held_out_skipped": skipped, "used": len(usable), "examples": len(examples),
              "outcomes": dict(stats)}
    print(result)
    return result
