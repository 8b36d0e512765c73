import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.errors import UserError
from fineinstructions.pipeline.readers import check_columns, detect_format, make_reader


def read_all(reader):
    docs = list(reader.run(None, 0, 1))
    return docs, {k: v.total for k, v in reader.stats.stats.items() if k.startswith("skip/")}


def test_jsonl_bad_lines_are_counted_skips(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_bytes(
        b'{"id": "1", "query": "good one"}\n'
        b'{"id": "2", "query": "bad \xff\xfe bytes"}\n'
        b"not json at all\n"
        b'{"id": "3", "query": ""}\n'
        b'{"id": "4", "text": "no query column"}\n'
        b"[1, 2]\n"
        b"\n"
        b'{"id": "5", "query": "caf\xc3\xa9 ok"}\n'
    )
    docs, skips = read_all(make_reader(str(f), "query"))
    assert [d.text for d in docs] == ["good one", "café ok"]
    assert [d.id for d in docs] == ["1", "5"]
    assert skips == {"skip/bad_utf8": 1, "skip/bad_json": 2, "skip/empty": 1, "skip/missing_column": 1}


def test_csv_and_parquet_and_folders(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"id,question\n1,what is a\n2,\"comma, inside\"\n3,bad \xff\n")
    docs, skips = read_all(make_reader(str(tmp_path / "a.csv"), "question"))
    assert [d.text for d in docs] == ["what is a", "comma, inside"] and skips == {"skip/bad_utf8": 1}

    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"id": [f"{i}-a", f"{i}-b"], "query": [f"q{i}a", f"q{i}b"]}), shards / f"p{i}.parquet")
    docs, _ = read_all(make_reader(str(shards), "query"))
    assert sorted(d.id for d in docs) == ["0-a", "0-b", "1-a", "1-b", "2-a", "2-b"]
    # sharding across tasks: every row read exactly once
    reader = make_reader(str(shards), "query")
    ids = [d.id for r in range(2) for d in reader.run(None, r, 2)]
    assert sorted(ids) == sorted(d.id for d in docs)


def test_format_detection_and_errors(tmp_path):
    assert detect_format("some-org/some-dataset") == "hf"
    with pytest.raises(UserError, match="input not found"):
        detect_format(str(tmp_path / "missing.jsonl"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UserError, match="cannot tell the format"):
        detect_format(str(tmp_path / "x.txt"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        check_columns(str(empty), {"column": "query"})
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps({"id": 1, "question": "x"}) + "\n")
    with pytest.raises(UserError, match="column 'query'.*available columns: id, question"):
        check_columns(str(ok), {"column": "query"})


def test_hugging_face_dataset_input(tmp_path):
    """The `hf` format goes through `datasets.load_dataset`; a local data directory stands in for a hub name."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"question": "one"}\n{"question": ""}\n{"question": "two"}\n')
    docs, skips = read_all(make_reader(str(folder), "question", fmt="hf"))
    assert [d.text for d in docs] == ["one", "two"] and skips == {"skip/empty": 1}
