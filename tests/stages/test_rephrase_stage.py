"""Stage `rephrase` (the WRAP baseline) against a real local HTTP server playing the model."""

from __future__ import annotations

import pytest
from llm_stage_helpers import serving, stub_llm, table, write_jsonl

from fineinstructions.prompts import load_format
from fineinstructions.stages.rephrase import RephraseConfig, chunks, run


def rewrite(text: str) -> str:
    if "FAILME" in text:
        return ""
    first = text.split(":", 1)[-1].strip().split(".")[0]
    return f"Question: What does it say?\nAnswer: {first}."


@pytest.fixture
def stub():
    with serving(rewrite) as server:
        yield server


def test_every_chunk_is_rephrased_or_counted(tmp_path, stub):
    long = " ".join(f"Sentence number {i} is here." for i in range(60))  # ~1.7k characters → 2 chunks at 1200
    docs = write_jsonl(tmp_path / "d.jsonl", [{"id": "long", "text": long}, {"id": "bad", "text": "FAILME please."}])
    summary = run(RephraseConfig(input=docs, output=str(tmp_path / "r"), prompt_format="qa", llm=stub_llm(stub),
                                 progress=False))
    rows = table(tmp_path / "r")
    assert [(r["document_id"], r["chunk"]) for r in rows] == [("long", 0), ("long", 1)]
    assert all(r["text"].startswith("Question: What does it say?\nAnswer: ") for r in rows)
    assert summary.rejects == {"empty": 1} and summary.rows_out == 2
    prompts = [r["body"]["messages"][-1]["content"] for r in stub.requests]  # sent concurrently: any order
    assert all(p.startswith("Convert the following paragraph into a conversational format") for p in prompts)
    assert sum("Sentence number 0 " in p for p in prompts) == 1


def test_chunks_keep_every_word_and_prefer_sentence_ends():
    text = " ".join(f"Sentence {i} ends here." for i in range(100))
    pieces = chunks(text, 300)
    assert " ".join(pieces).split() == text.split() and all(len(p) <= 300 for p in pieces)
    assert all(p.endswith(".") for p in pieces)
    assert chunks("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]  # no space: a hard cut


def test_completion_format_keeps_the_whole_conversation():
    fmt = load_format("rephrase", "qa-completion")
    assert fmt.parse(" Who?\nAnswer: Me.\nQuestion: Why?\nAnswer: Because.") == {
        "text": "Question: Who?\nAnswer: Me.\nQuestion: Why?\nAnswer: Because."}
    assert fmt.parse("   ") is None
