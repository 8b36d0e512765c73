"""scrub: PII replaced in judge's pairs, rows passed through in their schema, counts in summary.json."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions import schemas
from fineinstructions.errors import UserError
from fineinstructions.stages.scrub import ScrubConfig, run


def judged(tmp_path):
    folder = tmp_path / "judge"
    folder.mkdir()
    base = {name: None for name in schemas.JUDGED.names}
    pairs = [
        {**base, "pair_id": "p1", "instruction": "How do I reach support?",
         "answer": "Email help@acme-corp.com or call +1 212-736-5000.", "score": 5},
        {**base, "pair_id": "p2", "instruction": "What is a lobster?", "answer": "A marine crustacean.", "score": 4},
    ]
    pq.write_table(pa.Table.from_pylist(pairs, schema=schemas.JUDGED), folder / "part-00000.parquet")
    return str(folder)


def read(folder):
    return [r for p in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_pairs_are_scrubbed_and_counted(tmp_path):
    summary = run(ScrubConfig(input=judged(tmp_path), output=str(tmp_path / "out"), progress=False))
    out = read(tmp_path / "out")
    assert pq.read_schema(tmp_path / "out" / "part-00000.parquet") == schemas.JUDGED
    assert out[0]["answer"] == "Email email@example.com or call (555) 010-0199."
    assert out[1]["answer"] == "A marine crustacean." and out[0]["score"] == 5
    assert summary.rows_out == 2 and summary.rejects == {}
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["distributions"] == {"pii": {"email": 1, "phone": 1}, "pii_rows": {"scrubbed": 1}}


def test_drop_mode_rejects_rows_with_pii(tmp_path):
    src = judged(tmp_path)
    summary = run(ScrubConfig(input=src, output=str(tmp_path / "out"), drop=True, progress=False))
    assert [r["pair_id"] for r in read(tmp_path / "out")] == ["p2"]
    assert summary.rejects == {"pii": 1}
    with pytest.raises(UserError, match="unknown PII kind"):
        run(ScrubConfig(input=src, output=str(tmp_path / "o2"), kinds="email,ssn"))
