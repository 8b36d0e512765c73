"""kill -9 a real stage subprocess at a random (seeded) moment, rerun the same command: the final rows and rejects
are exactly those of an uninterrupted run -- none lost, none duplicated. `benchmarks/kill_bench.py` runs 20+."""

from __future__ import annotations

import json
import random
import time

from kill_trials import StageCommand, final_rows, kill_trial
from llm_stage_helpers import serving


def write_queries(folder, files: int = 4, per_file: int = 5_000):
    """Query files with exact and normalised duplicates across files, so the dedup phase has work."""
    folder.mkdir()
    for f in range(files):
        lines = (json.dumps({"id": f"{f}-{i}", "query": f"{'What' if f % 2 else 'what'} is item {i % 4_000}?"})
                 for i in range(per_file))
        (folder / f"q{f}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def templatize_reply(query: str) -> str:
    time.sleep(0.02)
    *head, last = query.split()
    return json.dumps({"template": " ".join(head[:-1]) + " <fi>thing</fi> " + last,
                       "compatible_document_description": "A document."})


def check(cmd: StageCommand, tmp_path, trials: int, seed: int):
    work_s = cmd.run(tmp_path / "clean")
    expected = final_rows(tmp_path / "clean")
    rng = random.Random(seed)
    for t in range(trials):
        trial = kill_trial(cmd, tmp_path / f"killed{t}", work_s, expected, rng)
        assert trial.identical and trial.lost == trial.duplicated == trial.leftovers == 0, trial


def test_queries_stage_with_dedup_survives_kill_9(tmp_path):
    src = write_queries(tmp_path / "raw")
    cmd = StageCommand("queries", ["queries", "--input", str(src), "--tasks", "4", "--workers", "1"])
    check(cmd, tmp_path, trials=2, seed=1)


def test_llm_stage_survives_kill_9(tmp_path):
    from fineinstructions.stages.queries import QueriesConfig, run

    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps({"id": f"q{i}", "query": f"who wrote book {i % 50} in year {i}"}) + "\n"
                           for i in range(120)))
    run(QueriesConfig(input=str(src), output=str(tmp_path / "queries"), tasks=4, progress=False))
    with serving(templatize_reply) as stub:
        cmd = StageCommand("templatize", ["templatize", "--input", str(tmp_path / "queries"), "--prompt-format",
                                          "released", "--llm-backend", "openai", "--llm-base-url", stub.url,
                                          "--llm-model", "stub", "--tasks", "4", "--batch-size", "8",
                                          "--llm-concurrency", "4"])
        check(cmd, tmp_path, trials=1, seed=2)
