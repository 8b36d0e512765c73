"""The whole recipe end to end with the embedded default models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) on a small
real sample: every stage's schema, counts that add up, and the budget invariants."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from fineinstructions import recipe, schemas

DATA = Path(recipe.__file__).parent / "data"


def rows(folder: Path) -> list[dict]:
    return [r for p in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def schema_of(folder: Path):
    return pq.read_schema(sorted(folder.glob("part-*.parquet"))[0])


def test_full_run_on_the_embedded_default_models(tmp_path):
    queries = [json.loads(line) for line in (DATA / "sample_queries.jsonl").open()][:10]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    docs = [json.loads(line) for line in (DATA / "sample_documents.jsonl").open()][:3]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    config = {
        "llm": {"backend": "transformers", "batch_size": 8},
        "progress": False,
        "queries": {"input": str(tmp_path / "q.jsonl"), "column": "query"},
        "decontaminate": {"eval_sets": str(DATA / "sample_eval.jsonl")},
        "templatize": {"best_of": 1},
        "near_dedup": {},
        "index": {},
        "match": {"input": str(tmp_path / "d.jsonl"), "threshold": 0.0, "templates_per_document": 3},
        "instantiate": {"max_document_chars": 800},
        "judge": {},
        "scrub": {},
        "budget": {},
    }
    out = tmp_path / "run"
    summaries = {s.stage: s for s in recipe.run(config, str(out), echo=lambda _: None)}
    assert list(summaries) == ["queries", "decontaminate", "templatize", "near_dedup", "index", "match",
                               "instantiate", "judge", "scrub", "budget"]
    assert schema_of(out / "near_dedup").equals(schemas.TEMPLATES)
    assert schema_of(out / "match").equals(schemas.MATCHES)
    assert schema_of(out / "instantiate").equals(schemas.PAIRS)
    assert schema_of(out / "judge").equals(schemas.JUDGED)
    assert schema_of(out / "budget" / "instructions").equals(schemas.INSTRUCTION_CORPUS)
    assert schema_of(out / "budget" / "standard").equals(schemas.STANDARD_CORPUS)

    matches = rows(out / "match")
    assert summaries["match"].rows_out == len(matches) > 0  # threshold 0: every document gets templates
    for stage in ("instantiate", "judge"):  # every pair is either kept or rejected with a reason
        s = summaries[stage]
        assert s.rows_in == s.rows_out + sum(s.rejects.values()), s
    assert summaries["instantiate"].rows_in == len(matches)
    assert summaries["judge"].rows_in == summaries["instantiate"].rows_out
    pairs = rows(out / "instantiate")
    assert all("<fi>" not in p["instruction"] and p["grounding"] >= 0.8 and p["status"] == "ok" for p in pairs)
    judged = rows(out / "judge")
    assert all(r["score"] >= 4 and r["judgement"] is not None for r in judged)
    rejected = rows(out / "judge" / "rejects")
    assert all(r["reason"] in ("low_score", "unparseable_score", "llm_error") for r in rejected)

    standard, instructions = rows(out / "budget" / "standard"), rows(out / "budget" / "instructions")
    assert [d["document_id"] for d in standard] == [d["id"] for d in docs]
    assert {r["pair_id"] for r in instructions} <= {r["pair_id"] for r in judged}
    assert summaries["scrub"].rows_in == len(judged) == summaries["scrub"].rows_out
    budget = 0
    for d in standard:  # no pair exceeds the budget its document (plus rollover) gave it
        budget += d["num_tokens"] - sum(r["num_tokens"] for r in instructions if r["document_id"] == d["document_id"])
        assert budget >= 0
    b = summaries["budget"]
    assert b.tokens["standard"] == sum(d["num_tokens"] for d in standard)
    assert b.tokens.get("instructions", 0) == sum(r["num_tokens"] for r in instructions)
    assert b.rows_in == len(judged) == b.rows_out + b.rejects.get("over_budget", 0)
