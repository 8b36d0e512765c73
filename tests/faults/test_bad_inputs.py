"""Bad inputs at stage level, for the cases the stage and reader tests do not already cover (empty query files,
unknown columns, bad bytes inside the reader, a 10 MB document in match: see tests/stages and tests/pipeline).
Every bad record is a clear one-line error or a counted skip, and the summary's counts add up to the input."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from llm_stage_helpers import table

from fineinstructions.errors import UserError
from fineinstructions.stages.queries import QueriesConfig
from fineinstructions.stages.queries import run as run_queries
from fineinstructions.stages.rephrase import RephraseConfig
from fineinstructions.stages.rephrase import run as run_rephrase


def test_bad_lines_in_a_stage_input_are_counted_skips_that_add_up(tmp_path):
    src = tmp_path / "q.jsonl"
    src.write_bytes(b"".join([
        json.dumps({"id": "a", "query": "who wrote war and peace"}).encode() + b"\n",
        b'{"id": "b", "query": "caf\xe9 latin-1 bytes"}\n',  # not UTF-8
        b'{"id": "c", "query": "\xff\xfe\x00\x00"}\n',
        b'{"id": "d", "question": "wrong column"}\n',  # column missing on this record only
        b'{"id": "e", "query": ""}\n',
        b'{"id": "f", "query": null}\n',
        b"{broken json\n",
        b"\n",
        json.dumps({"id": "g", "query": "x" * 10_000_000}).encode() + b"\n",  # a 10 MB record
        json.dumps({"id": "h", "query": "what is \u00e9t\u00e9 in english"}).encode() + b"\n",
    ]))
    summary = run_queries(QueriesConfig(input=str(src), output=str(tmp_path / "out"), progress=False))
    assert [r["query_id"] for r in table(tmp_path / "out")] == ["a", "h"]
    assert summary.skips == {"bad_utf8": 2, "missing_column": 1, "empty": 2, "bad_json": 1}
    assert summary.rejects == {"too_long": 1}
    assert summary.rows_out + sum(summary.rejects.values()) + sum(summary.skips.values()) == 9  # 9 records, 1 blank


def test_document_stage_refuses_empty_or_columnless_input_before_any_work(tmp_path):
    empty = tmp_path / "docs.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        run_rephrase(RephraseConfig(input=str(empty), output=str(tmp_path / "r")))
    docs = tmp_path / "docs2.jsonl"
    docs.write_text(json.dumps({"doc_id": "1", "text": "some text"}) + "\n")
    with pytest.raises(UserError, match="column 'id'.*available columns: doc_id, text"):
        run_rephrase(RephraseConfig(input=str(docs), output=str(tmp_path / "r")))
    binary = tmp_path / "docs3.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(UserError, match="no records to read"):  # nothing decodable: one line, not a traceback
        run_rephrase(RephraseConfig(input=str(binary), output=str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()  # refused before creating anything


def test_duplicate_ids_are_a_counted_reject(tmp_path):
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "query": "who wrote war and peace"}, {"id": "a", "query": "who painted the mona lisa"},
        {"id": "b", "query": "who wrote war and peace"}]))
    summary = run_queries(QueriesConfig(input=str(src), output=str(tmp_path / "out"), progress=False))
    ids = [r["query_id"] for r in table(tmp_path / "out")]
    assert len(ids) == len(set(ids)) == 1
    assert summary.rejects == {"duplicate_id": 1, "duplicate_exact": 1}


def test_duplicate_document_ids_are_a_counted_reject_in_match(tmp_path):
    """Two documents under one id would merge their pairs (pair ids, budget): both are rejected, counted (which of
    the two the id means cannot be known), and the id is listed for the later stages."""
    from fineinstructions.stages.index import IndexConfig
    from fineinstructions.stages.index import run as run_index
    from fineinstructions.stages.match import MatchConfig
    from fineinstructions.stages.match import run as run_match
    from fineinstructions.stages.released_bank import ReleasedBankConfig
    from fineinstructions.stages.released_bank import run as run_bank
    from test_released_bank_stage import RELEASED_SCHEMA, released_rows

    pq.write_table(pa.Table.from_pylist(released_rows(), schema=RELEASED_SCHEMA), tmp_path / "bank.parquet")
    run_bank(ReleasedBankConfig(input=str(tmp_path / "bank.parquet"), output=str(tmp_path / "t"), progress=False))
    run_index(IndexConfig(input=str(tmp_path / "t"), output=str(tmp_path / "i"), progress=False))
    docs = tmp_path / "d.jsonl"
    docs.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "x", "text": "The red fox lives in forests and eats small animals."},
        {"id": "x", "text": "Python lists can be sorted with the sorted function."},
        {"id": "y", "text": "Rome is the capital city of Italy."}]))
    summary = run_match(MatchConfig(input=str(docs), index=str(tmp_path / "i"), output=str(tmp_path / "m"),
                                    threshold=0.0, progress=False))
    assert summary.rejects == {"duplicate_document_id": 2} and summary.rows_in == 3
    assert {r["document_id"] for r in table(tmp_path / "m")} == {"y"}
    assert json.loads((tmp_path / "m" / "duplicate_documents.jsonl").read_text()) == {"document_id": "x",
                                                                                        "occurrences": 2}
