"""Baseline table: every bundled prompt format of each LLM stage with the embedded default model (best-of 1 and 3),
scored by `goldeval` on the gold TEST split, plus the OpenAI-compatible backend against a real server process
(`transformers serve` serving the same embedded model) to show the HTTP path scores like the in-process one.

    python benchmarks/goldeval_baseline.py [--split test] [--stages templatize instantiate judge] [--no-serve]
                                           [--sample N]

--sample N scores N rows spread evenly over the split (the files are grouped by source / document type, so the
first N rows would be one source): the same rows for every configuration, so the table still ranks them.

Request cache off, so wall times are real. Writes benchmarks/results/goldeval_baseline.json (merged with earlier
runs of other stages) and prints the markdown table the README shows. Hours of CPU on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from fineinstructions import atomic
from fineinstructions.gold.evaluate import DEFINITIONS, goldeval
from fineinstructions.llm import LLMConfig
from fineinstructions.recipe import BY_NAME

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "goldeval_baseline.json"
FORMATS = {"templatize": ["fewshot-completion", "fewshot", "released"],
           "instantiate": ["fewshot-completion", "fewshot", "released"],
           "judge": ["rubric-completion", "rubric", "flow-judge"]}
BEST_OF = {"templatize": [1, 3], "instantiate": [1, 3], "judge": [1]}
STUDENT = "transformers + shipped student"
#: the HTTP comparison: one greedy configuration per stage, the same prompt in-process and over the server
SERVED = {"templatize": "fewshot-completion", "instantiate": "fewshot-completion", "judge": "rubric-completion"}


def config(stage: str, prompt_format: str, best_of: int, llm: LLMConfig, out: str):
    fields = {"prompt_format": prompt_format, "output": out, "llm": llm, "progress": True}
    if stage != "judge":
        fields["best_of"] = best_of
    return BY_NAME[stage].config(**fields)


def gold_rows(stage: str, split: str, sample: int | None, folder: Path) -> Path:
    """The split's gold file, or N of its rows spread evenly (every len/N-th row, in file order)."""
    path = ROOT / "data" / "gold" / split / f"{stage}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if sample is None or sample >= len(lines):
        return path
    picked = folder / f"{stage}-{split}-sample{sample}.jsonl"
    picked.write_text("".join(lines[i * len(lines) // sample] for i in range(sample)), encoding="utf-8")
    return picked


def run_one(stage: str, gold: Path, split: str, prompt_format: str, best_of: int, llm: LLMConfig,
            label: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        m = goldeval(stage, config(stage, prompt_format, best_of, llm, out), str(gold), out)
    row = {"stage": stage, "split": split, "gold_file": gold.name, "backend": label, "prompt_format": prompt_format, "best_of": best_of,
           "n": m["n"], **{k: m[k] for k in DEFINITIONS[stage]}, "statuses": m["statuses"],
           "wall_seconds": m["wall_seconds"], "rows_per_second": m["rows_per_second"], "model_id": m["model_id"],
           "torch_threads": torch.get_num_threads()}
    print(json.dumps(row), flush=True)
    return row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def transformers_serve():
    """`transformers serve` on 127.0.0.1 with the embedded model's de-quantised copy (the in-process backend's)."""
    from fineinstructions.llm.hf_local import TransformersBackend, _converted_dir, resolve_model

    import torch

    TransformersBackend().close()  # makes sure the de-quantised copy exists
    model_dir = _converted_dir(resolve_model(None)[2], torch.float32)
    port = free_port()
    log = open(ROOT / "benchmarks" / "results" / "transformers_serve.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("transformers")), "serve", str(model_dir),
                             "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    import httpx

    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        proc.kill()
        raise SystemExit("transformers serve did not start: see benchmarks/results/transformers_serve.log")
    try:
        yield LLMConfig(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", model=str(model_dir), cache=False,
                        concurrency=1, timeout=600)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def table(rows: list[dict]) -> str:
    lines = ["| stage | backend | prompt format | best-of | n | metrics | rows/s | wall |",
             "|---|---|---|---:|---:|---|---:|---:|"]
    for r in rows:
        metrics = " · ".join(f"{k} {r[k]:.2f}" if isinstance(r[k], float) else f"{k} {r[k]}"
                             for k in DEFINITIONS[r["stage"]])
        lines.append(f"| {r['stage']} | {r['backend']} | {r['prompt_format']} | {r['best_of']} | {r['n']} | {metrics} "
                     f"| {r['rows_per_second']:.2f} | {r['wall_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--stages", nargs="+", default=list(FORMATS))
    ap.add_argument("--no-serve", action="store_true", help="skip the transformers-serve comparison")
    ap.add_argument("--serve-only", action="store_true", help="only the transformers-serve comparison")
    ap.add_argument("--resume", action="store_true", help="skip configurations already measured on the same rows")
    ap.add_argument("--sample", type=int, help="N rows of each split, spread evenly (default: all)")
    ap.add_argument("--students", action="store_true", help="score the shipped students instead (prompt format "
                    "and adapter auto)")
    args = ap.parse_args()
    samples = Path(tempfile.mkdtemp())
    gold = {stage: gold_rows(stage, args.split, args.sample, samples) for stage in args.stages}
    previous = json.loads(RESULTS.read_text())["runs"] if RESULTS.is_file() else []
    rows: list[dict] = []

    def key(row: dict) -> tuple:
        return row["stage"], row["split"], row["backend"], row["prompt_format"], row["best_of"]

    def done(stage: str, backend: str, fmt: str, best_of: int) -> bool:  # --resume: measured on the same rows
        return args.resume and any(key(r) == (stage, args.split, backend, fmt, best_of)
                                   and r.get("gold_file") == gold[stage].name for r in previous)

    def keep(row: dict) -> None:  # saved after every configuration: a kill loses one, not hours
        rows.append(row)
        new = {key(r) for r in rows}
        latest = json.loads(RESULTS.read_text())["runs"] if RESULTS.is_file() else []  # other runs' rows too
        atomic.write_json(RESULTS, {"runs": [r for r in latest if key(r) not in new] + rows,
                                    "machine": f"{os.cpu_count()} CPU cores", "when": time.strftime("%Y-%m-%d")})

    if args.students:  # the embedded default as shipped: SmolLM2-135M + the stage's student, compact prompt
        for stage in args.stages:
            keep(run_one(stage, gold[stage], args.split, "auto", 1, LLMConfig(cache=False), STUDENT))
        print(table(rows))
        return
    local = LLMConfig(cache=False, adapter="none")  # the prompted model, not a shipped student
    for stage in [] if args.serve_only else args.stages:
        for fmt in FORMATS[stage]:
            for best_of in BEST_OF[stage]:
                if not done(stage, "transformers (in-process)", fmt, best_of):
                    keep(run_one(stage, gold[stage], args.split, fmt, best_of, local, "transformers (in-process)"))
    if not args.no_serve:
        with transformers_serve() as served:
            for stage in args.stages:
                keep(run_one(stage, gold[stage], args.split, SERVED[stage], 1, served, "openai → transformers serve"))
    print(table(rows))


if __name__ == "__main__":
    main()
