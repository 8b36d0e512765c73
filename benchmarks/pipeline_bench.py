"""Pipeline benchmark: is the pipeline's own cost negligible next to the LLM's, does batching pay, is memory flat?

(a) overhead   `templatize` on real queries with the embedded default model (request cache off): the share of the
               stage's wall time not spent inside the model (`time/llm_generate`, `time/llm_load` stats)
               -- target <= 5 % (excluding the one-off model load; both are reported).
(b) batching   the same requests one at a time vs batched/concurrent through the same backend: the in-process
               transformers backend (batch 1 vs its default batch, 16) and the OpenAI-compatible client against a real local server
               with a fixed 0.2 s latency per request (concurrency 1 vs 16) -- target >= 3x.
(c) memory     peak RSS of a streaming stage (`decontaminate`) over 1k vs 100k rows (target: flat within 10 %), and
               of `queries`, whose keep-first dedup phase holds one 8-byte hash per row by design.

    .venv/bin/python benchmarks/pipeline_bench.py                    # all parts, ~10 minutes on 2 cores
    .venv/bin/python benchmarks/pipeline_bench.py --parts rss        # one part

Run it on a quiet machine: other jobs on the same cores inflate (a) and distort (b).
Writes benchmarks/results/pipeline_bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pipeline_bench.json"
SHARED = ROOT.parent / "shared" / "data" / "queries" / "nq_open_dev.jsonl"
CLI = [sys.executable, "-m", "fineinstructions"]


def real_queries(n: int) -> list[str]:
    """Real NQ-open questions (shared data), else the package's bundled sample, repeated with a suffix to reach n."""
    path = SHARED if SHARED.is_file() else ROOT / "src" / "fineinstructions" / "data" / "sample_queries.jsonl"
    base = [json.loads(line)["query"] for line in path.open() if line.strip()]
    return [base[i % len(base)] + ("" if i < len(base) else f" (variant {i // len(base)})") for i in range(n)]


def write_jsonl(path: Path, queries: list[str]) -> Path:
    with path.open("w") as f:
        for i, q in enumerate(queries):
            f.write(json.dumps({"id": f"q{i}", "query": q, "source": "nq_open"}) + "\n")
    return path


def run_cli(args: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB) of one CLI process."""
    start = time.time()
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed: {proc.stderr.read()[-2000:]}")
    return time.time() - start, usage.ru_maxrss // 1024


def overhead(work: Path, n: int) -> dict:
    queries = write_jsonl(work / "queries.jsonl", real_queries(n))
    run_cli(["queries", "--input", str(queries), "--output", str(work / "q"), "--no-progress"])
    run_cli(["templatize", "--input", str(work / "q"), "--output", str(work / "t"), "--no-progress",
             "--no-llm-cache"])
    summary = json.loads((work / "t" / "summary.json").read_text())
    wall, gen, load = summary["wall_time"], summary["timings"]["llm_generate"], summary["timings"]["llm_load"]
    return {"queries": summary["rows_in"], "wall_s": round(wall, 2), "llm_generate_s": gen, "llm_load_s": load,
            "overhead_share": round((wall - gen - load) / wall, 4),
            "overhead_share_with_load": round((wall - gen) / wall, 4), "target": "<= 0.05 (excluding load)"}


def _rate(backend, requests) -> float:
    start = time.time()
    done = backend.generate(requests)
    assert all(c.ok for c in done), [c.error for c in done if not c.ok][:3]
    return len(requests) / (time.time() - start)


def batching(n: int) -> dict:
    from fineinstructions.llm import LLMConfig, Request, SamplingParams, make_backend

    params = SamplingParams(max_tokens=32, temperature=0.0)
    requests = [Request.chat([{"role": "user", "content": f"Rewrite as a template: {q}"}], params)
                for q in real_queries(n)]
    out = {}
    rates = {}
    default = LLMConfig().batch_size
    for batch in (1, default):
        backend = make_backend(LLMConfig(backend="transformers", batch_size=batch, cache=False))
        _rate(backend, requests[:2])  # warm-up
        rates[batch] = _rate(backend, requests)
        backend.close()
    out["transformers"] = {"requests": n, "max_tokens": params.max_tokens, "batch_size": default,
                           "one_at_a_time_rps": round(rates[1], 3), "batched_rps": round(rates[default], 3),
                           "speedup": round(rates[default] / rates[1], 2)}
    sys.path.insert(0, str(ROOT / "tests" / "llm"))
    from openai_stub_server import StubServer

    server = StubServer().start()
    server.delay_seconds = 0.2
    server.responder = lambda text: "ok"
    try:
        delayed = [Request.chat([{"role": "user", "content": f"DELAY {q}"}], params) for q in real_queries(4 * n)]
        for conc in (1, 16):
            backend = make_backend(LLMConfig(backend="openai", base_url=server.url, model="stub", concurrency=conc,
                                             cache=False))
            rates[f"c{conc}"] = _rate(backend, delayed)
            backend.close()
    finally:
        server.stop()
    out["openai_client"] = {"requests": 4 * n, "server_latency_s": 0.2, "one_at_a_time_rps": round(rates["c1"], 2),
                            "concurrency16_rps": round(rates["c16"], 2), "speedup": round(rates["c16"] / rates["c1"], 2)}
    out["target"] = ">= 3x"
    return out


def rss(work: Path, sizes: list[int]) -> dict:
    """Peak RSS per process: `queries` (map + a keep-first dedup phase whose hash set grows by design, ~150 B per
    row) and `decontaminate` on its output (pure streaming: nothing may grow with the row count)."""
    evals = ROOT / "src" / "fineinstructions" / "data" / "sample_eval.jsonl"
    peaks: dict[str, dict[int, dict]] = {"queries": {}, "decontaminate": {}}
    for n in sizes:
        src = write_jsonl(work / f"rss-{n}.jsonl", real_queries(n))
        wall, peak = run_cli(["queries", "--input", str(src), "--output", str(work / f"q-{n}"), "--no-progress"])
        peaks["queries"][n] = {"peak_rss_mb": peak, "wall_s": round(wall, 1)}
        wall, peak = run_cli(["decontaminate", "--input", str(work / f"q-{n}"), "--eval-sets", str(evals),
                              "--output", str(work / f"d-{n}"), "--no-progress"])
        peaks["decontaminate"][n] = {"peak_rss_mb": peak, "wall_s": round(wall, 1)}
    lo, hi = min(sizes), max(sizes)
    growth = {stage: round(p[hi]["peak_rss_mb"] / p[lo]["peak_rss_mb"] - 1, 4) for stage, p in peaks.items()}
    return {"runs": peaks, "growth": growth, "target": "<= 0.10 for the streaming stage (decontaminate)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["overhead", "batching", "rss"],
                        choices=["overhead", "batching", "rss"])
    parser.add_argument("--overhead-queries", type=int, default=48)
    parser.add_argument("--batch-requests", type=int, default=32)
    parser.add_argument("--rss-sizes", type=int, nargs="+", default=[1000, 100_000])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "overhead" in args.parts:
            results["overhead"] = overhead(work, args.overhead_queries)
        if "batching" in args.parts:
            results["batching"] = batching(args.batch_requests)
        if "rss" in args.parts:
            results["rss"] = rss(work, args.rss_sizes)
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_avg": os.getloadavg()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"{'measure':<44} {'value':>12}  target")
    if o := results.get("overhead"):
        print(f"{'(a) non-LLM overhead, templatize ' + str(o['queries']) + ' queries':<44} "
              f"{100 * o['overhead_share']:>11.1f}%  <= 5 %  (with model load: {100 * o['overhead_share_with_load']:.1f} %)")
    if b := results.get("batching"):
        t = b["transformers"]
        print(f"{'(b) transformers batch ' + str(t['batch_size']) + ' vs 1':<44} {t['speedup']:>11.2f}x  >= 3x")
        print(f"{'(b) openai client concurrency 16 vs 1':<44} {b['openai_client']['speedup']:>11.2f}x  >= 3x")
    if r := results.get("rss"):
        for stage, runs in r["runs"].items():
            sizes = " vs ".join(f"{n}: {v['peak_rss_mb']} MB" for n, v in runs.items())
            note = "  (keep-first dedup: a hash set per row, by design)" if stage == "queries" else ""
            print(f"{'(c) peak RSS growth, ' + stage:<44} {100 * r['growth'][stage]:>11.1f}%  <= 10 %  ({sizes}){note}")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
