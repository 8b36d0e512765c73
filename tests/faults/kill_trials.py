"""kill -9 a stage at a random moment, rerun it, and compare with an uninterrupted run (shared by
test_kill_resume.py and benchmarks/kill_bench.py).

A trial launches `python -m fineinstructions <stage> ...` in its own process group, waits until the stage has
started work (its `stage.json` exists), sleeps a random share of the stage's measured working time, SIGKILLs the
whole group, reruns the same command to the end and returns the final rows (shards + rejects) as a multiset.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

#: columns that legitimately differ between two runs (none of the current schemas has one; kept explicit)
TIMING_COLUMNS: frozenset[str] = frozenset()


@dataclass
class StageCommand:
    """One stage invocation: `python -m fineinstructions ARGS --output DIR`, with its own LLM cache per output."""

    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def launch(self, out: Path) -> subprocess.Popen:
        env = {**os.environ, **self.env, "FINEINSTRUCTIONS_CACHE": str(out.parent / f"{out.name}.cache.sqlite")}
        return subprocess.Popen([sys.executable, "-m", "fineinstructions", *self.args, "--output", str(out),
                                 "--no-progress"], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def run(self, out: Path, timeout: float = 300) -> float:
        """Run to the end; the seconds from `stage.json` (work started) to exit."""
        proc = self.launch(out)
        started = _wait_started(proc, out)
        _, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name} failed ({proc.returncode}): {err[-2000:]}")
        return time.time() - started


def _wait_started(proc: subprocess.Popen, out: Path, timeout: float = 120) -> float:
    deadline = time.time() + timeout
    while not (out / "stage.json").exists():
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"stage did not start: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        time.sleep(0.005)
    return time.time()


def final_rows(out: Path) -> Counter:
    """The multiset of output rows and rejected rows (with their reason), as sorted JSON."""
    rows: Counter = Counter()
    for sub in ("", "rejects"):
        for shard in sorted((out / sub).glob("*.parquet")):
            for row in pq.read_table(shard).to_pylist():
                kept = {k: v for k, v in row.items() if k not in TIMING_COLUMNS}
                rows[(sub or "rows", json.dumps(kept, sort_keys=True, default=str))] += 1
    return rows


def where(out: Path) -> str:
    """How far the killed run got: map tasks completed, then later phases."""
    logs = out / "logs"
    done = [f"{p.parent.name}:{len(list(p.iterdir()))}" for p in sorted(logs.glob("*/completions"))]
    return ",".join(done) or "no task done"


@dataclass
class Trial:
    stage: str
    delay: float
    killed_at: str
    identical: bool
    lost: int
    duplicated: int
    extra: int
    leftovers: int
    resume_s: float


def kill_trial(cmd: StageCommand, out: Path, work_s: float, expected: Counter, rng: random.Random) -> Trial:
    """Kill `cmd` at a random moment of its work, rerun it, compare the result with `expected`."""
    proc = cmd.launch(out)
    _wait_started(proc, out)
    delay = rng.uniform(0.0, work_s)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = where(out) if proc.returncode == -signal.SIGKILL else "finished before the kill"
    start = time.time()
    rerun = cmd.launch(out)
    _, err = rerun.communicate(timeout=300)
    if rerun.returncode != 0:
        raise RuntimeError(f"rerun of {cmd.name} failed ({rerun.returncode}): {err[-2000:]}")
    got = final_rows(out)
    lost, extra = expected - got, got - expected
    duplicated = sum(min(n, max(0, got[k] - 1)) for k, n in got.items() if k in expected and got[k] > expected[k])
    return Trial(cmd.name, round(delay, 3), state, got == expected, sum(lost.values()), duplicated,
                 sum(extra.values()) - duplicated, len(list(out.rglob("*.tmp"))), round(time.time() - start, 2))
