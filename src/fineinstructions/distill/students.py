"""`fineinstructions distill-students CONFIG --output DIR`: every student of the embedded default in one command.

The config (see `configs/students.yaml`) has shared `distill` keys at the top and one section per stage, trained in
the order templatize → judge → instantiate (instantiate's rejection sampling needs the judge student). A stage
section may hold `augment:`: then the gold-only student samples candidates for a pool of unlabelled inputs
(`queries:` folder + `per_source`, or `documents:` folder + `splits:` + `max_windows`), the stage's validators
(and the judge student) keep the good ones, a second student trains on gold + those, and the one that scores
better on the dev split is the stage's student. Work folders go under DIR; with `--ship FOLDER` each chosen
student's adapter, card and `student.json` are copied to FOLDER/<stage>/ (the package's `students/`), and
FOLDER/students.json records what was chosen and why. A student is shipped only when it beats the prompted
embedded model (no adapter, the stage's default format and decoding) on the same dev split; otherwise `adapter:
auto` keeps the prompted model for that stage (`ship_if_better_than_prompted: false` in a section skips the check).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

from fineinstructions import atomic
from fineinstructions.config import build
from fineinstructions.errors import UserError

ORDER = ("templatize", "judge", "instantiate")
#: what a shipped student consists of (a LoRA adapter, or a classifier judge), those of them that exist
SHIPPED_FILES = ("adapter_config.json", "adapter_model.safetensors", "classifier.json", "README.md", "student.json")


def _pool(stage: str, spec: dict[str, Any], work: Path) -> Path:
    from fineinstructions.distill.pools import query_pool, window_pool

    gold = Path(spec.get("gold", "data/gold"))  # its inputs are held out of the pool (run from the repo root)
    held_out = [gold / s / f"{stage}.jsonl" for s in ("train", "dev", "test")]
    if stage == "templatize":
        rows = query_pool(spec["queries"], held_out, int(spec.get("per_source", 200)))
    else:
        rows = window_pool(spec["documents"], spec.get("splits", gold / "document_splits.json"),
                           [gold / "train" / "instantiate.jsonl", gold / "train" / "templatize.jsonl"],
                           int(spec.get("max_windows", 200)))
    path = work / f"{stage}-pool.jsonl"
    atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _meta(student: Path) -> dict[str, Any]:
    return json.loads((student / "student.json").read_text())


def _best(meta: dict[str, Any]) -> dict[str, Any]:
    """A student's best epoch on dev (its `student.json`), as students.json records it."""
    return {"dev_score": meta["best"]["score"], "dev_metrics": meta["best"]["metrics"], "epoch": meta["best"]["epoch"],
            "train_seconds": meta.get("seconds")}


def _prompted(stage: str, meta: dict[str, Any], work: Path, progress: bool) -> dict[str, Any] | None:
    """The student's base model prompted (no adapter, the stage's `auto` format and defaults) on the student's
    dev split, scored like the student: a student that does not beat it is not shipped."""
    from fineinstructions.gold.evaluate import goldeval
    from fineinstructions.llm import LLMConfig
    from fineinstructions.recipe import BY_NAME
    from fineinstructions.stages.distill import selection_score

    if not meta.get("dev"):
        return None
    dev, where = meta["dev"], str(work / f"{stage}-prompted")
    llm = LLMConfig(model=meta["settings"].get("base_model"), adapter="none", cache=False)
    cfg = BY_NAME[stage].config(output=where, llm=llm, progress=progress)
    metrics = goldeval(stage, cfg, dev, where, progress=progress)
    return {"dev_score": selection_score(stage, metrics),
            "dev_metrics": {k: metrics[k] for k in ("n", *metrics["definitions"])}}


def run_students(config: dict[str, Any], output: str, ship: str | None = None) -> dict[str, Any]:
    from fineinstructions.stages.distill import DistillConfig
    from fineinstructions.stages.distill import run as distill
    from fineinstructions.stages.distill_augment import DistillAugmentConfig
    from fineinstructions.stages.distill_augment import run as augment

    unknown = sorted(set(config) - set(ORDER) - {f.name for f in fields(DistillConfig)})
    if unknown:
        raise UserError(f"unknown key(s) in the students config: {', '.join(unknown)}")
    shared = {k: v for k, v in config.items() if k not in ORDER}
    work = Path(output)
    work.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, Any] = {}
    for stage in (s for s in ORDER if s in config):
        section = dict(config[stage] or {})
        aug = section.pop("augment", None)
        check_prompted = section.pop("ship_if_better_than_prompted", True)
        base = {**shared, **section, "stage": stage}
        gold_only = work / f"{stage}-gold"
        distill(build(DistillConfig, {**base, "output": str(gold_only)}, where=f"students config [{stage}]"))
        gold_meta = _meta(gold_only)
        record = {"gold_only": _best(gold_meta), "shipped": gold_only.name}
        if aug:
            aug = dict(aug)
            pool = _pool(stage, {k: aug.pop(k) for k in ("queries", "per_source", "documents", "splits",
                                                         "max_windows", "gold") if k in aug}, work)
            examples = work / f"{stage}-augment.jsonl"
            judge = chosen.get("judge", {}).get("shipped")
            stats = augment(build(DistillAugmentConfig, {
                "stage": stage, "student": str(gold_only), "input": str(pool), "output": str(examples),
                **({"judge_student": str(work / judge)} if stage == "instantiate" and judge else {}),
                "progress": base.get("progress", True), **aug}, where=f"students config [{stage}.augment]"))
            augmented = work / f"{stage}-augmented"
            distill(build(DistillConfig, {**base, "output": str(augmented), "augment": str(examples)},
                          where=f"students config [{stage}]"))
            record["augmented"] = {**_best(_meta(augmented)), "examples": stats["examples"],
                                   "outcomes": stats["outcomes"]}
            if record["augmented"]["dev_score"] > record["gold_only"]["dev_score"]:
                record["shipped"] = augmented.name
        if check_prompted:
            record["prompted"] = _prompted(stage, gold_meta, work, base.get("progress", True))
            best = max(v["dev_score"] for k, v in record.items() if k in ("gold_only", "augmented"))
            if record["prompted"] and record["prompted"]["dev_score"] >= best:
                record["shipped"] = None  # `adapter: auto` falls back to the prompted model for this stage
        chosen[stage] = record
    if ship:
        for stage, record in chosen.items():
            dest = Path(ship) / stage
            if record["shipped"] is None:
                shutil.rmtree(dest, ignore_errors=True)
                continue
            with atomic.staged_dir(dest) as tmp:
                for name in SHIPPED_FILES:
                    if (work / record["shipped"] / name).is_file():
                        shutil.copy2(work / record["shipped"] / name, tmp / name)
        atomic.write_json(Path(ship) / "students.json", chosen)
    return chosen
