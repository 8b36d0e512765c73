"""`experiment` end to end at a tiny size: three arms (wrap made through a real local HTTP server), two seeds,
a shared trained tokenizer, real tiny Llama models, evaluation, results table and plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.cli import main
from fineinstructions.errors import UserError
from fineinstructions.experiment import load_config, run_experiment

sys.path.insert(0, str(Path(__file__).resolve().parent / "stages"))
from llm_stage_helpers import serving, stub_llm  # noqa: E402

FACTS = [("Paris", "France"), ("Rome", "Italy"), ("Madrid", "Spain"), ("Lisbon", "Portugal"), ("Berlin", "Germany")]


def fake_run(root: Path) -> Path:
    docs = [f"{city} is the capital of {country}. Many people visit {city} every year." for city, country in FACTS]
    pairs = [f"Instruction: what is the capital of {country}\n\nAnswer: {city} is the capital of {country}."
             for city, country in FACTS]
    for sub, texts in (("standard", docs), ("instructions", pairs)):
        (root / "budget" / sub).mkdir(parents=True)
        table = pa.table({"text": texts, "document_id": [f"d{i}" for i in range(len(texts))]})
        pq.write_table(table, root / "budget" / sub / "part-00000.parquet")
    return root


def model(text: str) -> str:
    """The stub LLM: rephrases for the wrap arm; as the pairwise judge it prefers the alphabetically first answer
    (a consistent judge, so position swapping leaves clear wins and losses)."""
    if "Which answer is better?" in text:
        first = text.split("Answer A:\n", 1)[1].split("\n\nAnswer B:\n", 1)[0]
        second = text.split("\n\nAnswer B:\n", 1)[1].split("\n\nWhich answer", 1)[0]
        return "A" if first <= second else "B"
    return "Question: Which city?\nAnswer: " + text.split(":")[-1].split(".")[0].strip()


def test_experiment_end_to_end_tiny(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"query": f"what is the capital of {c}", "answers": [city]}) + "\n"
                          for city, c in FACTS))
    out = tmp_path / "exp"
    with serving(model) as stub:
        cfg = load_config({
            "run": str(fake_run(tmp_path / "run")), "seeds": [0, 1], "vocab_size": 320, "qa": str(qa),
            "eval_limit": 5, "max_new_tokens": 4, "progress": False, "pairwise": True, "judge": vars(stub_llm(stub)),
            "train": {"preset": "tiny", "seq_len": 32, "batch_size": 2, "max_tokens": 320, "warmup_steps": 1},
            "wrap": {"prompt_format": "qa", "llm": vars(stub_llm(stub))},
        })
        results = run_experiment(cfg, str(out))
        # the standalone command on two of the checkpoints, judged by the same server
        assert main(["evaluate", "--model", str(out / "arms/fineinstructions/seed0/model"), "--qa", str(qa),
                     "--output", str(tmp_path / "eval"), "--max-new-tokens", "4",
                     "--against", str(out / "arms/standard/seed0/model"), "--judge-backend", "openai",
                     "--judge-base-url", stub.url, "--judge-model", "stub"]) == 0
    assert set(results["arms"]) == {"standard", "fineinstructions", "wrap"}
    for arm, runs in results["runs"].items():
        assert [r["seed"] for r in runs] == [0, 1] and all(r["tokens"] == 320 for r in runs)  # equal budgets
        for k in ("nll_per_token", "bits_per_byte", "exact_match", "f1", "final_loss"):
            mean, std = results["arms"][arm][k]
            assert mean == pytest.approx(sum(r[k] for r in runs) / 2) and std >= 0
        assert (out / "arms" / arm / "seed1" / "model" / "config.json").is_file()
        # the arm's corpus is packed once and shared by its seeds
        assert (out / "arms" / arm / "data" / "stats.json").is_file() and not (out / "arms" / arm / "seed0" / "data").exists()
    assert (out / "tokenizer" / "tokenizer.json").is_file() and (out / "wrap" / "part-00000.parquet").is_file()
    table = (out / "results.md").read_text()
    assert "| standard |" in table and "| wrap |" in table and " ± " in table
    assert (out / "results.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["seeds"] == [0, 1]
    # pairwise: every non-standard run was judged against the standard run of its seed, on all 5 questions
    for arm in ("fineinstructions", "wrap"):
        for r in results["runs"][arm]:
            p = r["pairwise"]  # identical answers are ties (the stub picks A in both orders), the rest decided
            assert p["n"] == 5 and p["wins_a"] + p["wins_b"] + p["ties"] == 5 and p["unparseable"] == 0
            assert r["win_rate_vs_standard"] == (p["wins_a"] + 0.5 * p["ties"]) / 5
    assert "standard" not in [a for a, m in results["arms"].items() if "win_rate_vs_standard" in m]
    assert "win rate vs standard" in table and (out / "arms/wrap/seed1/eval/predictions.jsonl").is_file()
    # evaluate: the same scores as inside the experiment (same questions, same greedy decoding)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    inside = results["runs"]["fineinstructions"][0]
    assert metrics["n"] == 5 and metrics["nll_per_token"] == pytest.approx(inside["nll_per_token"])
    assert json.loads((tmp_path / "eval" / "pairwise.json").read_text())["win_rate_a"] == inside["win_rate_vs_standard"]
    assert len((tmp_path / "eval" / "against" / "predictions.jsonl").read_text().splitlines()) == 5


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(UserError, match="qa"):
        load_config({"run": "x"})
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"query": "q", "answers": ["a"]}\n')
    with pytest.raises(UserError, match="unknown arm"):
        load_config({"qa": str(qa), "arms": ["standard", "magic"]})
    with pytest.raises(UserError, match="no corpus"):
        run_experiment(load_config({"qa": str(qa), "run": str(tmp_path), "arms": ["standard"]}), str(tmp_path / "e"))
