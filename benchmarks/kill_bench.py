"""kill -9 stages at random moments and check that a rerun loses and duplicates nothing.

Each trial starts a stage subprocess, SIGKILLs its process group a random share of the way through its measured
working time, reruns the same command, and compares the final rows and rejects (as a multiset) with an
uninterrupted run of the same stage. Stages: `queries` (map + dedup phase, no LLM), `templatize` (LLM against the
real stub OpenAI server on 127.0.0.1, map + dedup) and `judge` (LLM, map only).

    python benchmarks/kill_bench.py            # 20 trials → benchmarks/results/kill_bench.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in ("tests/faults", "tests/stages", "tests/llm"):
    sys.path.insert(0, str(ROOT / folder))

from kill_trials import StageCommand, final_rows, kill_trial  # noqa: E402
from llm_stage_helpers import serving, write_shard  # noqa: E402
from test_kill_resume import templatize_reply, write_queries  # noqa: E402

from fineinstructions import schemas  # noqa: E402
from fineinstructions.stages.queries import QueriesConfig  # noqa: E402
from fineinstructions.stages.queries import run as run_queries  # noqa: E402


def judge_reply(prompt: str) -> str:
    time.sleep(0.02)
    return "Score: 5" if "even" in prompt else "Score: 2"


def commands(tmp: Path, url: str) -> list[StageCommand]:
    llm = ["--llm-backend", "openai", "--llm-base-url", url, "--llm-model", "stub", "--llm-concurrency", "4"]
    queries = write_queries(tmp / "raw")
    src = tmp / "q.jsonl"
    src.write_text("".join(json.dumps({"id": f"q{i}", "query": f"who wrote book {i % 50} in year {i}"}) + "\n"
                           for i in range(120)))
    run_queries(QueriesConfig(input=str(src), output=str(tmp / "queries"), tasks=4, progress=False))
    for shard in range(4):
        rows = [{"pair_id": f"p{shard}-{i}", "document_id": "d", "template_id": "t", "status": "ok",
                 "instruction": f"q {i} {'even' if i % 2 == 0 else 'odd'}", "answer": f"a {i}"} for i in range(30)]
        write_shard(tmp / "pairs", schemas.PAIRS, rows, name=f"part-{shard:05d}.parquet")
    return [
        StageCommand("queries", ["queries", "--input", str(queries), "--tasks", "4", "--workers", "1"]),
        StageCommand("templatize", ["templatize", "--input", str(tmp / "queries"), "--prompt-format", "released",
                                    "--tasks", "4", "--batch-size", "8", *llm]),
        StageCommand("judge", ["judge", "--input", str(tmp / "pairs"), "--prompt-format", "rubric", "--tasks", "4",
                               "--batch-size", "8", *llm]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kill_bench.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    trials = []
    with tempfile.TemporaryDirectory() as tmp, serving(templatize_reply) as stub:
        tmp = Path(tmp)
        stub.responder = lambda text: judge_reply(text) if "Score" in text or "Answer:" in text else templatize_reply(text)
        cmds = commands(tmp, stub.url)
        clean = {}
        for cmd in cmds:
            work_s = cmd.run(tmp / f"{cmd.name}-clean")
            clean[cmd.name] = (work_s, final_rows(tmp / f"{cmd.name}-clean"))
        print(f"{'#':>3} {'stage':<11} {'kill at s':>9} {'reached at kill':<28} {'same':>5} {'lost':>5} {'dup':>4} "
              f"{'.tmp':>5} {'resume s':>8}")
        for t in range(args.trials):
            cmd = cmds[t % len(cmds)]
            work_s, expected = clean[cmd.name]
            trial = kill_trial(cmd, tmp / f"{cmd.name}-killed{t}", work_s, expected, rng)
            trials.append(trial)
            print(f"{t:>3} {trial.stage:<11} {trial.delay:>9.2f} {trial.killed_at:<28} {str(trial.identical):>5} "
                  f"{trial.lost:>5} {trial.duplicated:>4} {trial.leftovers:>5} {trial.resume_s:>8.2f}", flush=True)
    failed = [t for t in trials if not t.identical or t.lost or t.duplicated or t.leftovers]
    result = {"trials": len(trials), "identical": len(trials) - len(failed), "lost_rows": sum(t.lost for t in trials),
              "duplicated_rows": sum(t.duplicated for t in trials),
              "clean_work_s": {k: round(v[0], 2) for k, v in clean.items()},
              "rows_per_stage": {k: sum(v[1].values()) for k, v in clean.items()},
              "runs": [asdict(t) for t in trials]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{result['identical']}/{len(trials)} identical to an uninterrupted run; lost {result['lost_rows']}, "
          f"duplicated {result['duplicated_rows']} → {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
