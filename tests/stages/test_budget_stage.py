"""Stage `budget`: exact rollover arithmetic, and the stage on a real tokenizer."""

from __future__ import annotations

import pytest
from llm_stage_helpers import table, write_jsonl, write_shard

from fineinstructions import schemas
from fineinstructions.errors import UserError
from fineinstructions.llm.hf_local import load_tokenizer
from fineinstructions.stages.budget import BudgetConfig, format_pair, run, take_within_budget


def test_pairs_are_added_until_the_next_would_exceed():
    assert take_within_budget([("a", 10), ("b", 20), ("c", 5)], 35) == (["a", "b", "c"], [], 0)
    assert take_within_budget([("a", 10), ("b", 30), ("c", 5)], 35) == (["a"], ["b", "c"], 25)  # stops at b
    assert take_within_budget([], 7) == ([], [], 7)
    assert take_within_budget([("a", 8)], 7) == ([], ["a"], 7)


def test_unused_budget_rolls_over_with_exact_totals():
    # three documents of 10, 50 and 20 tokens with hand-made pair sizes
    carry, kept_tokens = 0, 0
    docs = [(10, [("a1", 30)]), (50, [("b1", 25), ("b2", 25), ("b3", 20)]), (20, [("c1", 5), ("c2", 40)])]
    expected = [([], ["a1"], 10), (["b1", "b2"], ["b3"], 10), (["c1"], ["c2"], 25)]
    for (n_doc, pairs), want in zip(docs, expected):
        kept, dropped, carry = take_within_budget(pairs, carry + n_doc)
        assert (kept, dropped, carry) == want
        kept_tokens += sum(n for p, n in pairs if p in kept)
    assert kept_tokens == 55 and kept_tokens + carry == 10 + 50 + 20


DOCS = [
    {"id": "short", "text": "A short note."},
    {"id": "long", "text": "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
                           "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
                           "from 1887 to 1889. The tower is 330 metres tall, about the same height as an 81-storey "
                           "building, and was the tallest man-made structure in the world until 1930."},
    {"id": "none", "text": "No pairs for this one, but its tokens still count."},
]


def judged(tmp_path) -> str:
    rows = [{"pair_id": "s1", "document_id": "short", "instruction": "what is this note about in detail",
             "answer": "It is a short note with very little in it at all."}]
    rows += [{"pair_id": f"l{i}", "document_id": "long", "instruction": f"question {i} about the tower",
              "answer": "It is named after the engineer Gustave Eiffel."} for i in range(6)]
    return write_shard(tmp_path / "judge", schemas.JUDGED, rows)


def test_stage_keeps_every_pair_within_the_running_budget(tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "budget"
    summary = run(BudgetConfig(input=judged(tmp_path), documents=docs, output=str(out), progress=False))
    tok = load_tokenizer()
    count = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    standard = table(out, "standard")
    assert [r["document_id"] for r in standard] == ["short", "long", "none"]
    assert all(r["num_tokens"] == count(r["text"]) for r in standard)
    instructions = table(out, "instructions")
    assert all(r["text"].startswith("Instruction: ") and "\n\nAnswer: " in r["text"] for r in instructions)
    assert all(r["num_tokens"] == count(r["text"]) for r in instructions)
    # in document order, the instruction tokens never get ahead of the document tokens
    budget = 0
    for doc in standard:
        budget += doc["num_tokens"] - sum(r["num_tokens"] for r in instructions if r["document_id"] == doc["document_id"])
        assert budget >= 0
    dropped = table(out, "rejects")
    assert {r["reason"] for r in dropped} <= {"over_budget"}
    assert len(instructions) + len(dropped) == 7 and summary.rows_in == 7 and summary.rows_out == len(instructions)
    # the short document's pair is longer than the note: dropped there, while the long one keeps some of its own
    assert "s1" in {r["pair_id"] for r in dropped} and 0 < len(instructions) < 6
    std_total, ins_total = sum(r["num_tokens"] for r in standard), sum(r["num_tokens"] for r in instructions)
    assert summary.tokens["standard"] == std_total and summary.tokens["instructions"] == ins_total
    assert summary.tokens["instructions"] + summary.tokens.get("unused_budget", 0) == std_total


def test_format_is_configurable_and_checked(tmp_path):
    assert format_pair("Q: {instruction}\nA: {answer}", "x", "y") == "Q: x\nA: y"
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    with pytest.raises(UserError, match="--text-format"):
        run(BudgetConfig(input=judged(tmp_path), documents=docs, output=str(tmp_path / "b"), text_format="{question}"))
