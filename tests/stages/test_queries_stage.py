import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fineinstructions.errors import UserError
from fineinstructions.stages.queries import QueriesConfig, run

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "queries"


def rows(folder):
    return [r for p in sorted(Path(folder).glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def rejects(folder):
    return [r for p in sorted((Path(folder) / "rejects").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_clean_dedup_and_count_everything(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "a", "source": "s1", "query": "What is  the\tcapital of France?"},
        {"id": "b", "source": "s1", "query": "What is the capital of France?"},  # exact dup after whitespace
        {"id": "c", "source": "s2", "query": "what is the capital of france"},  # normalised dup
        {"id": "d", "source": "s2", "query": "   "},  # empty
        {"id": "e", "source": "s2", "query": "x" * 1_000_000},  # 1 MB query
        {"id": "f", "query": "how do magnets work"},  # no source: file name is used
    ])
    summary = run(QueriesConfig(input=src, output=str(tmp_path / "out"), progress=False))
    kept = rows(tmp_path / "out")
    assert [r["query_id"] for r in kept] == ["a", "f"]
    assert kept[0] == {"query_id": "a", "source": "s1", "query": "What is the capital of France?"}
    assert kept[1]["source"] == "in"
    reasons = sorted((r["query_id"], r["reason"]) for r in rejects(tmp_path / "out"))
    assert reasons == [("b", "duplicate_exact"), ("c", "duplicate_normalized"), ("e", "too_long")]
    assert summary.rows_out == 2 and summary.rejects == {"duplicate_exact": 1, "duplicate_normalized": 1, "too_long": 1}
    assert summary.skips == {"empty": 1}
    # every input record is accounted for
    assert summary.rows_out + sum(summary.rejects.values()) + sum(summary.skips.values()) == 6


def test_ids_from_content_when_input_has_none(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"q": "alpha"}, {"q": "beta"}])
    run(QueriesConfig(input=src, output=str(tmp_path / "o1"), column="q", source="mine", progress=False))
    run(QueriesConfig(input=src, output=str(tmp_path / "o2"), column="q", source="mine", progress=False))
    ids = [r["query_id"] for r in rows(tmp_path / "o1")]
    assert ids == [r["query_id"] for r in rows(tmp_path / "o2")] and len(set(ids)) == 2
    assert all(i.startswith("mine-") for i in ids)


def test_dedup_is_global_across_tasks(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        write_jsonl(folder / f"part{i}.jsonl", [{"id": f"{i}-{j}", "query": f"query number {j}"} for j in range(5)])
    summary = run(QueriesConfig(input=str(folder), output=str(tmp_path / "out"), tasks=4, workers=2, progress=False))
    kept = rows(tmp_path / "out")
    assert sorted(r["query"] for r in kept) == [f"query number {j}" for j in range(5)]
    assert summary.rejects == {"duplicate_exact": 15}
    assert summary.shards == 4  # shard layout kept for the next stage's tasks


def test_rerun_is_a_noop_and_changed_settings_are_refused(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "query": "one"}, {"id": "b", "query": "two"}])
    out = tmp_path / "out"
    run(QueriesConfig(input=src, output=str(out), progress=False))
    before = {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    summary = run(QueriesConfig(input=src, output=str(out), progress=False))
    assert {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before
    assert summary.rows_out == 2 and summary.rows_in == 2
    with pytest.raises(UserError, match="other settings.*max_chars"):
        run(QueriesConfig(input=src, output=str(out), max_chars=5, progress=False))
    summary = run(QueriesConfig(input=src, output=str(out), max_chars=3, overwrite=True, progress=False))
    assert summary.rows_out == 2 and summary.rejects == {}


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="input not found"):
        run(QueriesConfig(input=str(tmp_path / "nope.jsonl"), output=str(tmp_path / "o")))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        run(QueriesConfig(input=str(empty), output=str(tmp_path / "o")))
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "query": "one"}])
    with pytest.raises(UserError, match="column 'question'"):
        run(QueriesConfig(input=src, output=str(tmp_path / "o"), column="question"))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present (fresh clone)")
def test_real_query_sets(tmp_path):
    summary = run(QueriesConfig(input=str(SHARED), output=str(tmp_path / "out"), tasks=2, workers=2, progress=False))
    total = sum(1 for p in SHARED.glob("*.jsonl") for _ in p.open())
    assert summary.rows_out + sum(summary.rejects.values()) + sum(summary.skips.values()) == total
    kept = rows(tmp_path / "out")
    assert len({r["query_id"] for r in kept}) == len(kept)
    assert {r["source"].split("-")[0] for r in kept} >= {"nq_open", "webquestions", "stackexchange", "fiqa"}
