"""The `pretrain` command (stages/pretrain.py) on real corpora: what it refuses and what it warns about."""

from __future__ import annotations

import json
import logging

from fineinstructions.cli import main

TINY = ["--preset", "tiny", "--seq-len", "16", "--vocab-size", "300", "--max-tokens", "64", "--log-every", "1",
        "--warmup-steps", "1", "--no-progress"]
DOCS = [f"Document {i}: the river runs past the old mill and the town keeps its bridge." for i in range(6)]
PAIRS = [f"Instruction: what runs past mill {i}?\n\nAnswer: The river runs past it." for i in range(4)]


def _corpus(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return str(path)


def test_answer_loss_on_a_corpus_without_answers_is_refused_in_one_line(tmp_path, capsys):
    """Standard documents have no "\\n\\nAnswer:": under --loss-on answer they have no target at all, and training
    on them would report a loss of 0.000. The command refuses before building a model, naming the corpus, the
    marker and the fix."""
    corpus = _corpus(tmp_path / "docs.jsonl", DOCS)
    assert main(["pretrain", "--input", corpus, "--output", str(tmp_path / "out"), "--loss-on", "answer", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and corpus in err
    assert "no token to train on under --loss-on answer" in err and r"'\n\nAnswer:'" in err
    assert "--loss-on all" in err and "6 documents" in err
    assert not (tmp_path / "out" / "checkpoint").exists() and not (tmp_path / "out" / "model").exists()
    # the same corpus trains on every token
    assert main(["pretrain", "--input", corpus, "--output", str(tmp_path / "all"), *TINY]) == 0


def test_documents_without_answers_are_warned_about_once(tmp_path, caplog):
    """A mixed corpus trains, and says (once, not once per run of the same corpus) how many of its documents
    spend budget tokens without a target."""
    corpus = _corpus(tmp_path / "mixed.jsonl", PAIRS + DOCS[:2])
    caplog.set_level(logging.WARNING)
    for out in ("a", "b"):  # an experiment trains each arm's corpus once per seed
        assert main(["pretrain", "--input", corpus, "--output", str(tmp_path / out), "--loss-on", "answer",
                     "--data-dir", str(tmp_path / "data"), *TINY]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and corpus in r.getMessage()]
    assert len(warnings) == 1 and "2 of 6 documents" in warnings[0] and r"'\n\nAnswer:'" in warnings[0]
    summary = json.loads((tmp_path / "b" / "train_summary.json").read_text())
    assert summary["data"]["documents_without_targets"] == 2 and summary["final_loss"] > 0
