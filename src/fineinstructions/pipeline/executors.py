"""Where a stage's tasks run: on this machine (`local`), as a Slurm job array (`slurm`) or on a Ray cluster (`ray`).

All three are datatrove executors over the same pipeline and the same `tasks` shards, so they write the same
shards and the same completion markers: a stage started with one executor can be resumed with another.

Slurm jobs are submitted *and waited for* (this process polls `squeue`). A stage's later phases are built from the
map phase's output (dedup reads the list of map shards, `index` trains FAISS on all of them) and the next stage of a
run checks that its input exists, so chaining sbatch jobs with `--dependency` would need the whole run planned
before any shard exists. Waiting keeps one code path for every executor: the same summary at the end and the same
"rerun to resume". Ctrl-C cancels the submitted job (`scancel`), so a rerun never races a job still running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor
from datatrove.executor.base import PipelineExecutor
from loguru import logger

from fineinstructions.config import option
from fineinstructions.errors import UserError

if TYPE_CHECKING:
    from fineinstructions.pipeline.runner import StageOptions

EXECUTORS = ("local", "slurm", "ray")


@dataclass
class SlurmOptions:
    """`executor: slurm`: one job array per phase, one array element per task (`slurm:` in YAML, `--slurm-*`)."""

    partition: str | None = option(None, "Slurm partition (unset: the cluster's default)")
    time: str | None = option(None, "time limit per task, e.g. 24:00:00 (unset: the partition's)")
    cpus_per_task: int = option(1, "CPUs per task")
    mem_per_cpu_gb: int = option(2, "memory per CPU, in GB")
    gpus_per_task: int = option(0, "GPUs per task (for in-process vllm/transformers on GPU nodes)")
    qos: str | None = option(None, "quality of service (unset: the cluster's default)")
    sbatch_args: dict[str, Any] = option(help="more #SBATCH options, YAML only, e.g. {account: proj, constraint: a100}",
                                         factory=dict)
    env_command: str | None = option(None, "shell line that sets up Python in the job (replaces --slurm-venv)")
    venv: str | None = option(None, "virtual environment the job activates (unset: the one running this command)")
    poll: float = option(15.0, "seconds between squeue checks while waiting for the job")


@dataclass
class RayOptions:
    """`executor: ray`: one Ray actor per task (`ray:` in YAML, `--ray-*`)."""

    address: str | None = option(None, "Ray cluster: 'auto', 'ray://host:10001' or 'local' (unset: $RAY_ADDRESS, "
                                       "else the last cluster started on this machine, else a new local one)")
    cpus_per_task: int = option(1, "CPUs reserved per task")
    mem_per_cpu_gb: float = option(2, "memory reserved per CPU, in GB")
    gpus_per_task: int = option(0, "GPUs reserved per task")
    tasks_per_job: int = option(1, "tasks run by one Ray actor (fewer, longer-lived actors)")


def _warnings_only() -> None:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor with its INFO chatter kept in the task log files, off the terminal, so the
    progress bars and our one-screen summary stay readable. Warnings and errors still print."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        try:
            # datatrove only logs INFO to the terminal for local_rank 0; the value is used for nothing else here
            return super()._run_for_rank(rank, local_rank + 1, node_rank)
        finally:
            _warnings_only()


class WaitingSlurmExecutor(SlurmPipelineExecutor):
    """datatrove's Slurm executor that waits for its job array to leave the queue (see the module docstring).

    datatrove's extra `merge_stats` job is not submitted: the summary reads the per-task stats files, and a merge
    job waiting on `afterok` of a failed array would stay pending forever."""

    def __init__(self, *args, poll: float = 15.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.poll = poll

    def run(self):
        if "SLURM_ARRAY_TASK_ID" in os.environ:
            return super().run()  # a task of the array (`launch_pickled_pipeline` calls run() again)
        self.launch_job()
        if self.job_id in (None, -1):  # every task was complete already
            return
        print(f"Slurm job {self.job_id} ({self.job_name}) submitted; waiting for it "
              f"(logs: {self.slurm_logs_folder}; Ctrl-C cancels it)", file=sys.stderr)
        try:
            wait_for_slurm_job(str(self.job_id), self.poll)
        except KeyboardInterrupt:
            subprocess.run(["scancel", str(self.job_id)], check=False)
            raise

    def launch_merge_stats(self):
        pass

    def get_sbatch_args(self, max_array: int = 1) -> dict:
        # datatrove writes `#SBATCH --partition` (no value) for an unset option; leave those to the cluster instead
        unset = ("partition", "time", "qos")
        return {k: v for k, v in super().get_sbatch_args(max_array).items() if not (k in unset and v is None)}


def wait_for_slurm_job(job_id: str, poll: float, max_errors: int = 10) -> None:
    """Return once `job_id` (all its array elements) has left the queue. A job that finished long ago is
    unknown to squeue ("Invalid job id"), which also means done; other squeue failures are retried."""
    errors = 0
    while True:
        proc = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format", "%i %T"],
                              capture_output=True, text=True)
        if proc.returncode == 0 and not proc.stdout.strip():
            return
        if proc.returncode != 0:
            if "invalid job id" in proc.stderr.lower():
                return
            errors += 1
            if errors >= max_errors:
                raise UserError(f"squeue keeps failing ({proc.stderr.strip()}); Slurm job {job_id} may still be "
                                "running: check with squeue and rerun the same command to resume when it is done")
        else:
            errors = 0
        time.sleep(poll)


def _activate_script(venv: str | None) -> str | None:
    """The job's Python: the venv asked for, else the one running this command (a shared filesystem is assumed)."""
    root = Path(venv) if venv else Path(sys.prefix)
    script = root / "bin" / "activate"
    if script.is_file():
        return str(script.resolve())
    if venv:
        raise UserError(f"--slurm-venv {venv}: no bin/activate there")
    return None


def connect_ray(address: str | None) -> None:
    """Attach to (or start) a Ray cluster once per process; later stages of a run reuse it."""
    try:
        import ray
    except ImportError as e:
        raise UserError("executor ray needs Ray: pip install 'fineinstructions[ray]'") from e
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)


def make_executor(opts: StageOptions, pipeline: list, logging_dir: Path, tasks: int, job_name: str) -> PipelineExecutor:
    """The datatrove executor `opts.executor` names, running `pipeline` on `tasks` tasks."""
    workers = tasks if opts.workers == -1 else max(1, min(opts.workers, tasks))
    if opts.executor == "local":
        return QuietLocalExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir))
    if opts.executor == "slurm":
        s = opts.slurm
        return WaitingSlurmExecutor(
            pipeline=pipeline, tasks=tasks, workers=-1 if opts.workers == -1 else workers,
            logging_dir=str(logging_dir.resolve()), job_name=job_name, partition=s.partition, time=s.time,
            cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb, gpus_per_task=s.gpus_per_task,
            qos=s.qos, sbatch_args=dict(s.sbatch_args), env_command=s.env_command,
            venv_path=None if s.env_command else _activate_script(s.venv), poll=s.poll,
        )
    if opts.executor == "ray":
        r = opts.ray
        connect_ray(r.address)
        logger.disable("datatrove.executor.ray")  # its shared-filesystem warning: the README states that need
        executor = RayPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir.resolve()),
            cpus_per_task=r.cpus_per_task, mem_per_cpu_gb=r.mem_per_cpu_gb, gpus_per_task=r.gpus_per_task,
            tasks_per_job=r.tasks_per_job,
        )
        logger.enable("datatrove.executor.ray")
        return executor
    raise UserError(f"unknown executor {opts.executor!r}; executors are: {', '.join(EXECUTORS)}")


def run_quietly(executor: PipelineExecutor) -> None:
    """Run with only warnings on the terminal (datatrove's INFO lines stay in the task logs)."""
    _warnings_only()
    executor.run()
