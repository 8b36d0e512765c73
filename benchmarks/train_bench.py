"""Tokens/s of our training loop vs a minimal reference loop on the same model and batches (not a test).

    python benchmarks/train_bench.py [--preset toy] [--vocab 8192] [--seq-len 512] [--batch-size 8] [--steps 20]
                                     [--threads 2] [--compile]

The reference is the smallest correct loop: AdamW, `model(input_ids, labels=labels).loss.backward()`, step. Ours
adds what the experiments need (exact token budget, target-weighted loss over accumulation, LR schedule, clipping,
logging). Both start from the same initial weights and see the same rows; the first 2 steps of each are warm-up and
not timed. Writes benchmarks/results/train_bench.json; target: ours ≥ 1.0× the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fineinstructions.pretrain.loop import TrainOptions, train
from fineinstructions.pretrain.model import build_model, count_parameters

RESULTS = Path(__file__).resolve().parent / "results" / "train_bench.json"
WARMUP = 2


def reference_loop(model, ids: np.ndarray, batch_size: int, steps: int) -> float:
    """Tokens/s of the plain loop over the same rows, after WARMUP untimed steps."""
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    start = None
    for step in range(steps + WARMUP):
        if step == WARMUP:
            start = time.perf_counter()
        rows = torch.from_numpy(ids[(step * batch_size) % len(ids):][:batch_size].astype(np.int64))
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
    return steps * batch_size * ids.shape[1] / (time.perf_counter() - start)


def our_loop(model, preset: str, ids: np.ndarray, batch_size: int, steps: int, compile_: bool) -> float:
    """Tokens/s of `pretrain.loop.train`, timed on all but the first WARMUP steps (taken from its own log)."""
    seq_len = ids.shape[1]
    opts = TrainOptions(preset=preset, batch_size=batch_size, max_tokens=(steps + WARMUP) * batch_size * seq_len,
                        log_every=1, compile=compile_, warmup_steps=1)
    with tempfile.TemporaryDirectory() as tmp:
        train(model, None, ids, ids, opts, tmp, progress=False)
        log = [json.loads(line) for line in (Path(tmp) / "loss.jsonl").open()]
    timed = [r for r in log if r["step"] > WARMUP]
    first, last = log[WARMUP - 1], timed[-1]
    # the loop reports cumulative tokens/s per entry; recover the steady-state rate between step WARMUP and the end
    t_first = first["tokens"] / first["tokens_per_s"]
    t_last = last["tokens"] / last["tokens_per_s"]
    return (last["tokens"] - first["tokens"]) / (t_last - t_first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="toy")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--rounds", type=int, default=2, help="alternating measurements of each loop (best kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, args.vocab, size=((args.steps + WARMUP) * args.batch_size, args.seq_len))

    params = count_parameters(build_model(args.preset, args.vocab, args.seq_len, seed=0))
    refs, ourss = [], []
    for _ in range(args.rounds):  # alternate the two loops so drift in machine load hits both alike; keep the best
        refs.append(reference_loop(build_model(args.preset, args.vocab, args.seq_len, seed=0), ids, args.batch_size,
                                   args.steps))
        ourss.append(our_loop(build_model(args.preset, args.vocab, args.seq_len, seed=0), args.preset, ids,
                              args.batch_size, args.steps, args.compile))
    ref, ours = max(refs), max(ourss)
    result = {"preset": args.preset, "parameters": params, "vocab": args.vocab, "seq_len": args.seq_len,
              "batch_size": args.batch_size, "timed_steps": args.steps, "threads": args.threads,
              "compile": args.compile, "reference_tokens_per_s": round(ref, 1), "ours_tokens_per_s": round(ours, 1),
              "ratio": round(ours / ref, 3),
              "median_ratio": round(statistics.median(ourss) / statistics.median(refs), 3), "rounds": {"reference": [round(r, 1) for r in refs],
                                                            "ours": [round(o, 1) for o in ourss]}, "torch": torch.__version__, "load": os.getloadavg()}
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
