"""`fineinstructions pretrain` under torchrun (2 CPU processes, gloo): DDP and FSDP reproduce the single-process run.

With the global batch held fixed (2 ranks × 2 rows = 1 process × 4 rows), the same seed and the same data order,
every optimizer step sees the same rows and the same loss denominator, so the logged losses must agree to float
round-off. This is the real user path: the CLI, the shared tokenizer/data cache written by rank 0, checkpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fineinstructions.cli import main

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

COMMON = ["--preset", "tiny", "--seq-len", "32", "--max-tokens", str(32 * 4 * 6), "--log-every", "1",
          "--warmup-steps", "2", "--lr", "0.01", "--no-progress", "--precision", "fp32"]


def _losses(folder) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "loss.jsonl").open()]


def torchrun(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone --nproc_per_node 2 ARGS` with one thread per process. A run
    still going after `timeout` (a rank hung in a collective) fails the test; SIGTERM makes torchrun stop its
    workers, which run in sessions of their own and would otherwise hang on after the test."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"torchrun still running after {timeout} s (a rank hung?):\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: one process, 4 rows per step; its tokenizer is shared with the distributed runs."""
    root = tmp_path_factory.mktemp("dist")
    corpus = root / "corpus.jsonl"
    words = "the model reads each answer and writes the next token of every document in the corpus".split()
    with corpus.open("w") as f:
        for i in range(60):
            f.write(json.dumps({"text": " ".join(words[(i + j) % len(words)] for j in range(20 + i % 7))}) + "\n")
    assert main(["pretrain", "--input", str(corpus), "--output", str(root / "single"), "--batch-size", "4",
                 "--vocab-size", "300", *COMMON]) == 0
    return root


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(single, parallel):
    out = single / parallel
    done = torchrun(["-m", "fineinstructions", "pretrain", "--input", str(single / "corpus.jsonl"), "--output",
                     str(out), "--tokenizer", str(single / "single" / "tokenizer"), "--batch-size", "2",
                     "--parallel", parallel, *COMMON])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["tokens"] == 32 * 4 * 6
    assert _losses(out) == pytest.approx(_losses(single / "single"), rel=2e-4)
    # the final model is a full (unsharded) Hugging Face checkpoint that loads in one process
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    reference = AutoModelForCausalLM.from_pretrained(single / "single" / "model")
    for (name, a), b in zip(merged.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4), name


def test_fsdp_resume_reproduces_the_uninterrupted_run(tmp_path):
    """Stopped after 3 steps and resumed from a fresh model: FSDP's gathered checkpoint restores weights and the
    optimizer (keyed by parameter name), giving the uninterrupted single-process run's losses."""
    from fineinstructions.pretrain.loop import train
    from fineinstructions.pretrain.model import build_model
    from test_loop import data, opts

    ids, labels = data()
    train(build_model("tiny", 64, 16), None, ids, labels, opts(precision="fp32"), tmp_path / "one", progress=False)
    worker = [str(Path(__file__).with_name("fsdp_resume_worker.py")), str(tmp_path / "two")]
    for stop, seed in ((3, 0), (0, 99)):  # the resumed run starts from other weights: the checkpoint must win
        done = torchrun([*worker, str(stop), str(seed)])
        assert done.returncode == 0, done.stderr[-3000:]
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=2e-4)


# 3 full steps of 4 rows, then 20 tokens: the last step has 1 row, so rank 1 has none of it
UNEVEN = 32 * 4 * 3 + 20


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_last_step_the_ranks_cannot_share_evenly_ends_on_the_exact_budget(single, parallel):
    """A budget that does not divide by ranks x rows x seq_len: the last step's single (cut) row goes to rank 0,
    and with 2 micro-batches per step the ranks' row counts differ on it too. Every rank must still run the same
    forward/backward passes, or the other one waits in a collective forever; the run must end on exactly the
    budget with the single-process losses (same global batch: 1 process x 2 rows x 2 micro-batches)."""
    uneven = [a if a != str(32 * 4 * 6) else str(UNEVEN) for a in COMMON]
    corpus, tokenizer = str(single / "corpus.jsonl"), str(single / "single" / "tokenizer")
    reference = single / "uneven-single"
    if not (reference / "loss.jsonl").is_file():
        assert main(["pretrain", "--input", corpus, "--output", str(reference), "--tokenizer", tokenizer,
                     "--batch-size", "2", "--grad-accum", "2", *uneven]) == 0
    out = single / f"uneven-{parallel}"
    done = torchrun(["-m", "fineinstructions", "pretrain", "--input", corpus, "--output", str(out), "--tokenizer",
                     tokenizer, "--batch-size", "1", "--grad-accum", "2", "--parallel", parallel, *uneven])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["tokens"] == UNEVEN and summary["steps"] == 4
    assert json.loads((reference / "train_summary.json").read_text())["tokens"] == UNEVEN
    assert _losses(out) == pytest.approx(_losses(reference), rel=2e-4) and len(_losses(out)) == 4
