"""released_bank: a local parquet in the released FineTemplates schema becomes a templatize output that `index`
and `match` run on (real default embedder, real FAISS, real documents when ../shared is present)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fineinstructions import schemas
from fineinstructions.errors import UserError
from fineinstructions.cli import main
from fineinstructions.recipe import stage_configs
from fineinstructions.stages.released_bank import ReleasedBankConfig, run

from test_index_match_stage import TEMPLATES, documents

#: the released columns (paper notes §7), with a few of the label columns we ignore
RELEASED_SCHEMA = pa.schema([("template_id", pa.int64()), ("source_name", pa.string()), ("template", pa.string()),
                             ("compatible_document_description", pa.string()),
                             ("example_template_instantiation", pa.string()), ("qa_or_tasky", pa.string()),
                             ("difficulty", pa.float64()), ("is_reasoning", pa.bool_())])


def released_rows() -> list[dict]:
    good = [{"template_id": 1000 + i, "source_name": "lmsys" if i % 2 else "wildchat", "template": t,
             "compatible_document_description": d, "example_template_instantiation": "...", "qa_or_tasky": "qa",
             "difficulty": 0.3, "is_reasoning": False} for i, (t, d, _) in enumerate(TEMPLATES)]
    bad = [
        {**good[0], "template_id": 1, "template": "what is <fi>x</fi> and <fi>y"},  # unbalanced
        {**good[0], "template_id": 2, "template": "what is the weather today"},  # no slot
        {**good[0], "template_id": 3, "template": "who is <fi>person</fi>", "compatible_document_description": None},
        {**good[0], "template_id": 4, "template": "who is <fi>person</fi>",
         "compatible_document_description": "A <fi>biography</fi>"},
        {**good[3], "template_id": 5, "template": "What is the habitat of  <fi>animal</fi>?"},  # duplicate of 1003
    ]
    return good + bad


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("released")
    src = tmp / "finetemplates.parquet"
    pq.write_table(pa.Table.from_pylist(released_rows(), schema=RELEASED_SCHEMA), src)
    summary = run(ReleasedBankConfig(input=str(src), output=str(tmp / "templatize"), progress=False))
    return tmp, summary


def read(folder: Path) -> list[dict]:
    return [r for p in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_released_schema_maps_to_templatize_output(bank):
    tmp, summary = bank
    assert pq.read_schema(tmp / "templatize" / "part-00000.parquet") == schemas.TEMPLATES
    rows = {r["template_id"]: r for r in read(tmp / "templatize")}
    assert sorted(rows) == [str(1000 + i) for i in range(len(TEMPLATES))]
    first = rows["1000"]
    assert (first["source"], first["num_slots"], first["query"], first["model_id"]) == (
        "wildchat", 2, None, str(tmp / "finetemplates.parquet"))
    assert [rows[str(1000 + i)]["num_slots"] for i in range(len(TEMPLATES))] == [s for _, _, s in TEMPLATES]
    assert summary.rejects == {"unbalanced_tags": 1, "no_slot": 1, "missing_description": 1,
                               "tag_in_description": 1, "duplicate_template": 1}
    rejected = {r["template_id"]: r["reason"] for p in (tmp / "templatize" / "rejects").glob("*.parquet")
                for r in pq.read_table(p).to_pylist()}
    assert rejected["5"] == "duplicate_template" and rejected["1"] == "unbalanced_tags"


def test_a_run_starts_from_the_released_bank(tmp_path):
    """`fineinstructions run` with a released_bank section instead of templatize: the bank is imported, near-dup
    filtered, indexed (real MiniLM, real FAISS) and matched to real documents; instantiate would read the same bank."""
    src = tmp_path / "finetemplates.parquet"
    pq.write_table(pa.Table.from_pylist(released_rows(), schema=RELEASED_SCHEMA), src)
    config = {"progress": False, "released_bank": {"input": str(src)}, "near_dedup": {}, "index": {},
              "match": {"input": documents(tmp_path), "threshold": 0.0, "templates_per_document": 2}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "run.yaml"), "--output", str(tmp_path / "run"), "--no-progress",
                 "--no-report"]) == 0
    run_dir = tmp_path / "run"
    assert [s["stage"] for s in json.loads((run_dir / "run_summary.json").read_text())] == [
        "released_bank", "near_dedup", "index", "match"]
    assert {r["template_id"] for r in read(run_dir / "near_dedup")} == {str(1000 + i) for i in range(len(TEMPLATES))}
    matched = read(run_dir / "match")
    assert matched and {r["template_id"] for r in matched} <= {str(1000 + i) for i in range(len(TEMPLATES))}
    later = dict((spec.name, cfg) for spec, cfg in stage_configs({**config, "instantiate": {}}, str(run_dir)))
    assert later["instantiate"].templates == str(run_dir / "near_dedup")


def test_missing_columns_are_one_line_errors(tmp_path):
    src = tmp_path / "x.parquet"
    pq.write_table(pa.table({"template_id": [1], "template": ["who is <fi>person</fi>"]}), src)
    with pytest.raises(UserError, match="compatible_document_description"):
        run(ReleasedBankConfig(input=str(src), output=str(tmp_path / "o")))
