"""lm-evaluation-harness (the field's harness, Python API, `hf` model) on a real `pretrain` checkpoint, with our
held-out QA file written as a harness task: its per-example answer log-likelihoods equal `evaluate`'s answer NLL.

Tolerance 1e-4 relative (and 1e-4 nats absolute): both run the same fp32 model on the same token ids on the CPU;
they differ only in how examples are batched and padded (right padding with an attention mask in both), which
changes the order of floating-point sums, not the result beyond that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fineinstructions.cli import main
from fineinstructions.evaluate.harness import main_metrics, qa_task, run_tasks
from fineinstructions.evaluate.scoring import PROMPT, answer_nll, load_qa

FACTS = [("Paris", "France"), ("Rome", "Italy"), ("Madrid", "Spain"), ("Lisbon", "Portugal"), ("Berlin", "Germany"),
         ("Vienna", "Austria"), ("Athens", "Greece")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("harness")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Instruction: what is the capital of {c}\n\nAnswer: {city} is the "
                                                  f"capital of {c}."}) + "\n" for city, c in FACTS * 6))
    assert main(["pretrain", "--input", str(corpus), "--output", str(root / "pt"), "--preset", "tiny", "--seq-len",
                 "64", "--batch-size", "4", "--max-tokens", str(64 * 4 * 12), "--vocab-size", "400",
                 "--no-progress", "--precision", "fp32"]) == 0
    qa = root / "qa.jsonl"
    qa.write_text("".join(json.dumps({"query": f"what is the capital of {c}", "answers": [city, f"{city} city"]}) + "\n"
                          for city, c in FACTS) + json.dumps({"query": "", "answers": ["x"]}) + "\n")
    return root / "pt" / "model", qa


@pytest.mark.slow
def test_harness_log_likelihoods_agree_with_evaluate(checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, qa = checkpoint
    task = qa_task(qa, tmp_path / "tasks", limit=5)
    results = run_tasks(model_dir, ["fineinstructions_qa"], include=task, log_samples=True, device="cpu")
    samples = results["samples"]["fineinstructions_qa"]
    harness = {s["doc"]["query"]: s["resps"][0][0][0] for s in samples}  # (log-likelihood, is_greedy)
    rows = load_qa(qa, limit=5)
    assert sorted(harness) == sorted(r["query"] for r in rows)  # the same sampled questions
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ours = answer_nll(model, tokenizer, [(PROMPT.format(query=r["query"]), r["answers"][0]) for r in rows])
    for r, (nll, _, _) in zip(rows, ours):
        assert harness[r["query"]] == pytest.approx(-nll, rel=1e-4, abs=1e-4), r["query"]
    metrics = main_metrics(results)
    assert set(metrics) == {"fineinstructions_qa/perplexity"} and metrics["fineinstructions_qa/perplexity"] > 1
