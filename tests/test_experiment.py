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
    from fineinstructions.evaluate.harness import qa_task

    tasks = qa_task(qa, tmp_path / "tasks")  # a local lm-evaluation-harness task: the same questions
    with serving(model) as stub:
        cfg = load_config({
            "lm_eval_tasks": ["fineinstructions_qa"], "lm_eval_include": str(tasks),
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
    harness = "lm_eval:fineinstructions_qa/perplexity"  # the harness's metric, mean ± std over seeds like ours
    for arm, rs in results["runs"].items():
        assert all(r[harness] > 1 for r in rs) and results["arms"][arm][harness][0] == pytest.approx(
            sum(r[harness] for r in rs) / 2)
    assert "fineinstructions_qa/perplexity" in (out / "results.md").read_text()
    assert (out / "arms" / "wrap" / "seed0" / "eval" / "lm_eval.json").is_file()
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
            assert p["n"] == 5 and p["wins_a"] + p["wins_b"] + p["ties"] == 5 and p["unreadable"] == 0
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


def _qa(tmp_path) -> Path:
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"query": f"what is the capital of {c}", "answers": [city]}) + "\n"
                          for city, c in FACTS))
    return qa


TINY_TRAIN = {"preset": "tiny", "seq_len": 32, "batch_size": 2, "max_tokens": 320, "warmup_steps": 1}


def test_loss_on_per_arm_records_targets_epochs_devices_and_unreadable_judgements(tmp_path):
    """`loss_on: {fineinstructions: answer}` trains that arm on its answers and the standard arm on every token;
    results say each arm's target tokens and how often the budget reads its corpus (and warn: these corpora are
    tiny), where the models were trained and evaluated, and how many judgements the judge left unreadable --
    left out of the win rate, not counted as ties. The judge here cannot decide on the Germany question."""
    def judge(text: str) -> str:
        if "Germany" in text:
            return "Hard to say, both are odd."
        return model(text)

    out = tmp_path / "exp"
    with serving(judge) as stub:
        cfg = load_config({"run": str(fake_run(tmp_path / "run")), "arms": ["standard", "fineinstructions"],
                           "seeds": [0], "vocab_size": 320, "qa": str(_qa(tmp_path)), "eval_limit": 5,
                           "max_new_tokens": 4, "progress": False, "loss_on": {"fineinstructions": "answer"},
                           "pairwise": True, "judge": vars(stub_llm(stub)), "train": TINY_TRAIN})
        results = run_experiment(cfg, str(out))
        assert main(["evaluate", "--model", str(out / "arms/fineinstructions/seed0/model"), "--qa", cfg.qa,
                     "--output", str(tmp_path / "eval"), "--max-new-tokens", "4",
                     "--against", str(out / "arms/standard/seed0/model"), "--judge-backend", "openai",
                     "--judge-base-url", stub.url, "--judge-model", "stub"]) == 0
    saved = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    for arm, loss_on in (("standard", "all"), ("fineinstructions", "answer")):
        packed = json.loads((out / "arms" / arm / "data" / "stats.json").read_text())
        assert packed["settings"]["loss_on"] == loss_on
        t = saved["training"][arm]
        assert t["loss_on"] == loss_on and t["corpus_tokens"] == packed["stats"]["tokens"]
        assert t["target_tokens"] == packed["stats"]["target_tokens"] > 0
        assert t["epochs"] == pytest.approx(320 / packed["stats"]["tokens"]) and t["epochs"] > 1.5
        assert f"| {arm} | {loss_on} | {t['corpus_tokens']:,} | {t['target_tokens']:,} | {t['epochs']:.2f} |" in table
        assert f"- **Warning:** arm {arm} reads its corpus {t['epochs']:.1f} times" in table
        run = saved["runs"][arm][0]
        assert run["train_device"] == run["eval_device"] == "cpu"  # cuda:0 for both on a GPU machine
    t = saved["training"]
    assert t["fineinstructions"]["target_tokens"] < t["fineinstructions"]["corpus_tokens"]  # instructions left out
    assert t["standard"]["target_tokens"] == t["standard"]["corpus_tokens"]
    p = results["runs"]["fineinstructions"][0]["pairwise"]
    assert p["n"] == 5 and p["unreadable"] == 1 and p["unreadable_rate"] == pytest.approx(0.2)
    assert p["wins_a"] + p["wins_b"] + p["ties"] == 4
    assert saved["runs"]["fineinstructions"][0]["win_rate_vs_standard"] == (p["wins_a"] + 0.5 * p["ties"]) / 4
    assert saved["arms"]["fineinstructions"]["judge_unreadable_rate"] == [pytest.approx(0.2), 0.0]
    assert "unreadable judgements" in table and "0.200 ± 0.000" in table
    standalone = json.loads((tmp_path / "eval" / "pairwise.json").read_text())
    assert standalone["unreadable"] == 1 and standalone["win_rate_a"] == p["win_rate_a"]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["device"] == "cpu"


def test_an_arm_without_targets_under_its_objective_is_refused_before_any_training(tmp_path):
    """`loss_on: answer` on the standard documents would train on nothing and report a loss of 0: refused with
    the arm, the marker and the fix named, before the first arm (fineinstructions, which has answers) trains."""
    cfg = load_config({"run": str(fake_run(tmp_path / "run")), "arms": ["fineinstructions", "standard"],
                       "seeds": [0], "vocab_size": 320, "qa": str(_qa(tmp_path)), "progress": False,
                       "loss_on": "answer", "train": TINY_TRAIN})
    with pytest.raises(UserError, match=r"arm standard: .*no token to train on.*'\\n\\nAnswer:'.*--loss-on all"):
        run_experiment(cfg, str(tmp_path / "exp"))
    assert not list((tmp_path / "exp").glob("arms/*/seed*"))


@pytest.mark.parametrize("loss_on, message", [("everything", "one of all, answer"),
                                              ({"wrap": "answers"}, "one of all, answer"),
                                              ({"magic": "answer"}, "unknown arm"), (["answer"], "loss_on")])
def test_bad_loss_on_is_refused_when_the_config_loads(tmp_path, loss_on, message):
    with pytest.raises(UserError, match=message):
        load_config({"qa": str(_qa(tmp_path)), "loss_on": loss_on})
