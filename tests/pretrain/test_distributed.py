"""`fineinstructions pretrain` under torchrun (2 CPU processes, gloo): DDP and FSDP reproduce the single-process run.

With the global batch held fixed (2 ranks × 2 rows = 1 process × 4 rows), the same seed and the same data order,
every optimizer step sees the same rows and the same loss denominator, so the logged losses must agree to float
round-off. This is the real user path: the CLI, the shared tokenizer/data cache written by rank 0, checkpoints.
"""

from __future__ import annotations

import json
import os
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
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fineinstructions", "pretrain", "--input", str(single / "corpus.jsonl"), "--output", str(out),
           "--tokenizer", str(single / "single" / "tokenizer"), "--batch-size", "2", "--parallel", parallel, *COMMON]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
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
    worker = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              str(Path(__file__).with_name("fsdp_resume_worker.py")), str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for stop, seed in ((3, 0), (0, 99)):  # the resumed run starts from other weights: the checkpoint must win
        done = subprocess.run([*worker, str(stop), str(seed)], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=2e-4)
