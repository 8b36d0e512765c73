"""Run one stage on a datatrove executor, resumably, and summarise it.

Layout of a stage's output directory (the contract later stages and users rely on):

    DIR/part-NNNNN.parquet        final rows, one schema per stage (see `schemas.py`)
    DIR/rejects/*.parquet         every rejected row with its `reason`
    DIR/logs/<phase>/             datatrove logs, per-task stats and `completions/` markers (resume)
    DIR/stage.json                the settings the stage ran with and fingerprints of its inputs (a rerun with
                                  other settings, or on changed input, is refused unless --overwrite)
    DIR/summary.json              counts, rejects by reason, tokens, timings

A stage has a *map* phase (the per-row work, `tasks` shards in parallel) and an optional *dedup* phase (one task
over all map shards, keep-first, same shard layout). Completed tasks are skipped on rerun, so rerunning a finished
stage is a no-op and rerunning after a kill finishes only the missing shards.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep
from loguru import logger

from fineinstructions import atomic
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.pipeline.inputs import changed_inputs, input_fingerprints, unfinished_input
from fineinstructions.pipeline.executors import EXECUTORS, RayOptions, SlurmOptions, make_executor, run_quietly
from fineinstructions.pipeline.readers import StrictParquetReader
from fineinstructions.pipeline.step import StageStep
from fineinstructions.pipeline.summary import StageSummary, collect_summary
from fineinstructions.pipeline.writer import ShardWriter


@dataclass
class StageOptions:
    """Options every stage has."""

    input: str | None = option(None, "input: a file, a folder of shards, or a Hugging Face dataset name")
    output: str | None = option(None, "output directory (receives parquet shards)")
    executor: str = option("local", "where tasks run: this machine, a Slurm or a Ray cluster", choices=EXECUTORS)
    tasks: int = option(1, "number of tasks (input shards processed independently; resume granularity)")
    workers: int = option(1, "tasks run at the same time (-1: all; on slurm/ray: jobs at once)")
    slurm: SlurmOptions = option(factory=SlurmOptions)
    ray: RayOptions = option(factory=RayOptions)
    progress: bool = option(True, "show progress bars")
    overwrite: bool = option(False, "delete an existing output directory that was made with other settings")


def stage_input(folder: str, text_key: str, id_key: str, produced_by: str) -> tuple[list[str], StrictParquetReader]:
    """The shards of an earlier stage's output folder and a reader over them; a clear error when there are none."""
    files = sorted(str(p) for p in Path(folder).glob("part-*.parquet"))
    if not files:
        raise UserError(f"no part-*.parquet shards in {folder}: run the {produced_by} stage first "
                        f"(fineinstructions {produced_by})")
    return files, StrictParquetReader(folder, glob_pattern="part-*.parquet", text_key=text_key, id_key=id_key)


def _check_settings(name: str, out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Completion markers are only valid for the settings and the inputs that produced them."""
    marker = out / "stage.json"
    settings = json.loads(json.dumps(settings, default=str))  # compare as stored (tuples → lists, objects → str)
    if marker.is_file():
        previous = json.loads(marker.read_text())
        before, now = dict(previous), dict(settings)
        inputs_before, inputs_now = before.pop("inputs", {}), now.pop("inputs", {})
        if before != now:
            if not overwrite:
                changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
                raise UserError(
                    f"{out} holds results made with other settings (changed: {', '.join(changed)}); "
                    "use another --output or pass --overwrite to start over"
                )
            shutil.rmtree(out)
        elif changed := changed_inputs(inputs_before, inputs_now):
            if not overwrite:
                raise UserError(
                    f"stage {name}: its input changed since {out} was made: {'; '.join(changed)}; pass --overwrite "
                    f"(or `run --overwrite`) to redo {name} on the new input"
                )
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(marker, json.dumps(settings, indent=2, sort_keys=True, default=str))


#: options that change how a stage runs, not what it produces: a rerun may change them freely (a stage started
#: on one executor may be finished on another: they write the same shards and completion markers)
RUN_ONLY = ("progress", "overwrite", "workers", "executor", "slurm", "ray")


def _run_phase(name: str, phase: str, opts: StageOptions, pipeline: list, out: Path, tasks: int):
    """Run one phase on the configured executor; every task must have finished (else: rerun to resume)."""
    executor = make_executor(opts, pipeline, out / "logs" / phase, tasks, job_name=f"fi-{name}-{phase}")
    run_quietly(executor)
    if missing := executor.get_incomplete_ranks():
        raise UserError(
            f"stage {name}: {len(missing)} of {tasks} {phase} tasks did not finish (logs in {out}/logs/{phase}/); "
            "rerun the same command to resume"
        )


def run_stage(
    name: str,
    opts: StageOptions,
    reader: PipelineStep,
    step: StageStep,
    schema: pa.Schema,
    dedup: Callable[[str, list[str]], StageStep] | None = None,
    finalize: tuple[str, Callable[[Path, list[str]], list]] | None = None,
    settings: dict[str, Any] | None = None,
    shards_dir: str | None = None,
) -> StageSummary:
    """Run `reader → step → shards` on `opts.tasks` tasks, then an optional single-task phase; return the summary.

    `dedup(output_dir, map_files)` builds the keep-first dedup step over the map phase's shards (output keeps
    their layout). `finalize = (phase name, build(map_dir, map_files) -> pipeline)` is the general form, for
    work that needs every shard at once (e.g. training and filling a FAISS index). `settings` adds to, or
    replaces, the config fields recorded in `stage.json` (e.g. a prompt fingerprint). `shards_dir` puts the
    final shards in a sub-folder of the output (budget writes `instructions/` and `standard/`).
    """
    if not opts.output:
        raise UserError(f"stage {name} needs --output DIR")
    out = Path(opts.output)
    if unfinished := unfinished_input(opts):
        field, path, stage = unfinished
        raise UserError(f"stage {name}: --{field.replace('_', '-')} {path} is an unfinished {stage} output (no "
                        f"summary.json): finish the {stage} stage first (rerun it to resume)")
    recorded = {"stage": name, **{k: v for k, v in vars(opts).items() if k not in RUN_ONLY}, **(settings or {}),
                "inputs": input_fingerprints(opts)}
    _check_settings(name, out, recorded, opts.overwrite)
    start = time.time()
    map_dir = out / "_map" if (dedup or finalize) else out / (shards_dir or "")
    _run_phase(name, "map", opts, [reader, step, ShardWriter(str(map_dir), schema)], out, opts.tasks)
    if dedup:
        map_files = sorted(str(p) for p in map_dir.glob("part-*.parquet"))
        dedup_step = dedup(str(out), map_files)
        dedup_reader = StrictParquetReader(
            str(map_dir), glob_pattern="part-*.parquet", text_key=dedup_step.text_column,
            id_key=dedup_step.id_column,
        )
        logger.disable("datatrove.pipeline.writers")  # one dedup task: a rank-less file name is intended
        writer = ShardWriter(str(out), schema, output_filename="${_shard}")
        logger.enable("datatrove.pipeline.writers")
        _run_phase(name, "dedup", opts, [dedup_reader, dedup_step, writer], out, 1)
        for shard in (out / Path(f).name for f in map_files):  # one final shard per map shard, even if all were dups
            if not shard.exists():
                with atomic.replacing(shard) as tmp:
                    pq.write_table(schema.empty_table(), tmp)
    if finalize:
        phase, build = finalize
        map_files = sorted(str(p) for p in map_dir.glob("part-*.parquet"))
        _run_phase(name, phase, opts, build(map_dir, map_files), out, 1)
    summary = collect_summary(name, out, wall_time=time.time() - start, shards_dir=out / (shards_dir or ""))
    atomic.write_json(out / "summary.json", summary.to_dict())
    return summary
