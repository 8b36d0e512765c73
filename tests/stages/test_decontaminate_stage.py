"""decontaminate: Tulu-3-style n-gram overlap against evaluation files, on real NQ queries when ../shared is here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.errors import UserError
from fineinstructions.stages.decontaminate import DecontaminateConfig, OverlapIndex, load_eval_sets, run
from fineinstructions.stages.queries import QueriesConfig
from fineinstructions.stages.queries import run as run_queries

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_stage_helpers import table, write_jsonl  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "queries"


def rows(folder):
    return table(folder)


def rejects(folder):
    return table(folder, "rejects")


def test_overlap_score_follows_tulu():
    index = OverlapIndex([("ev", "0", "one two three four five six seven eight nine ten eleven twelve"),
                          ("ev", "1", "who wrote the song")], n=8)
    # one shared 8-gram covers 8 of the 12 tokens
    m = index.best_match("ONE two, three four five six seven eight -- and more")
    assert m.instance.eval_id == "0" and m.overlap == pytest.approx(8 / 12)
    assert index.best_match("one two three four five six seven") is None  # 7 shared words: no 8-gram
    # an instance shorter than n is matched as a whole phrase
    assert index.best_match("Who wrote the song 'Yesterday'?").overlap == 1.0
    assert index.best_match("who wrote the") is None


def test_hand_made_pairs_are_dropped_and_counted(tmp_path):
    evals = write_jsonl(tmp_path / "myeval.jsonl", [
        {"id": "e1", "question": "what is the boiling point of water at the top of mount everest"},
        {"id": "e2", "question": "hi"},  # too short: ignored
    ])
    src = tmp_path / "judge"
    src.mkdir()
    base = {"document_id": "d", "template_id": "t", "score": 5}
    pq.write_table(pa.Table.from_pylist([
        {**base, "pair_id": "p1", "instruction": "Explain photosynthesis.", "answer": "Plants use light."},
        {**base, "pair_id": "p2", "instruction": "Tell me:",
         "answer": "The boiling point of water at the top of Mount Everest is about 70 C."},
        {**base, "pair_id": "p3", "instruction": "hi", "answer": "hello"},
    ]), src / "part-00000.parquet")
    summary = run(DecontaminateConfig(input=str(src), output=str(tmp_path / "out"), eval_sets=evals,
                                      progress=False))
    assert [r["pair_id"] for r in rows(tmp_path / "out")] == ["p1", "p3"]
    assert set(rows(tmp_path / "out")[0]) == {"document_id", "template_id", "score", "pair_id", "instruction",
                                              "answer"}  # rows pass through unchanged
    [rej] = rejects(tmp_path / "out")
    assert (rej["pair_id"], rej["reason"], rej["eval_id"], rej["matched_column"]) == ("p2", "contaminated", "e1",
                                                                                        "answer")
    assert rej["overlap"] > 0.5
    assert summary.rejects == {"contaminated": 1}
    assert summary.distributions == {"contaminated_by": {"myeval": 1}}
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["distributions"]["contaminated_by"] == {"myeval": 1}


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="--eval-sets"):
        run(DecontaminateConfig(input=str(tmp_path), output=str(tmp_path / "o")))
    with pytest.raises(UserError, match="not found"):
        run(DecontaminateConfig(input=str(tmp_path), output=str(tmp_path / "o"), eval_sets=str(tmp_path / "x.jsonl")))
    bad = write_jsonl(tmp_path / "e.jsonl", [{"label": "x"}])
    with pytest.raises(UserError, match="no text column"):
        load_eval_sets(bad)
    with pytest.raises(UserError, match="no part-"):
        run(DecontaminateConfig(input=str(tmp_path), output=str(tmp_path / "o"), eval_sets=write_jsonl(
            tmp_path / "ok.jsonl", [{"query": "a real evaluation question here"}])))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present (fresh clone)")
def test_real_nq_queries_planted_in_training_queries_are_caught(tmp_path):
    nq = [json.loads(line) for line in (SHARED / "nq_open_dev.jsonl").open()]
    planted = nq[::300]  # 13 real NQ dev questions
    fiqa = [json.loads(line) for line in (SHARED / "fiqa.jsonl").open()][:400]
    webq = [json.loads(line) for line in (SHARED / "webquestions_train.jsonl").open()][:400]
    training = [{"id": q["id"], "source": q["source"], "query": q["query"]} for q in fiqa + webq]
    # planted as users type them: verbatim, with different case and punctuation, and inside a longer prompt
    for i, q in enumerate(planted):
        text = [q["query"], q["query"].upper() + "?", f"quick question: {q['query']}, thanks!"][i % 3]
        training.append({"id": f"planted-{i}", "source": "mixed", "query": text})
    src = write_jsonl(tmp_path / "train.jsonl", training)
    run_queries(QueriesConfig(input=src, output=str(tmp_path / "queries"), progress=False))
    summary = run(DecontaminateConfig(input=str(tmp_path / "queries"), output=str(tmp_path / "out"),
                                      eval_sets=str(SHARED / "nq_open_dev.jsonl"), tasks=2, progress=False))
    caught = {r["query_id"]: r["eval_id"] for r in rejects(tmp_path / "out")}
    assert caught == {f"planted-{i}": q["id"] for i, q in enumerate(planted)}  # all planted, nothing unrelated
    assert summary.rows_out == len(training) - len(planted)
    assert summary.distributions == {"contaminated_by": {"nq_open_dev": len(planted)}}
