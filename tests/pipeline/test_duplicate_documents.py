"""One rule for document ids, in every stage that reads documents: an id that occurs more than once -- within a
task or across tasks -- names no document; all its occurrences are rejected by match, and instantiate and budget
make no pair, no standard-corpus row for it. Before, only match checked (within a task), so a duplicate got
another document's pairs and budget wrote it twice."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
from llm_stage_helpers import recipe_model, serving, table  # noqa: E402

from fineinstructions import recipe  # noqa: E402

DOCS = {  # file -> documents; two tasks read one file each
    "a.jsonl": [{"id": "paris", "text": "Paris is the capital of France. It lies on the Seine."},
                {"id": "twice-in-a", "text": "Homer wrote the Iliad. It tells of the Trojan War."},
                {"id": "twice-in-a", "text": "Mount Everest is the highest mountain. It is in Nepal."},
                {"id": "in-both", "text": "The Nile is a river in Africa. It flows north."}],
    "b.jsonl": [{"id": "rome", "text": "Rome is the capital of Italy. It has the Colosseum."},
                {"id": "in-both", "text": "Jupiter is the largest planet. It has many moons."}],
}
DUPLICATED = {"twice-in-a", "in-both"}


def test_duplicated_ids_are_rejected_by_match_instantiate_and_budget(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, rows in DOCS.items():
        (docs / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "query": q}) + "\n" for i, q in
                                              enumerate(["what is the capital of france", "who wrote the iliad"])))
    with serving(recipe_model) as server:
        config = {"llm": {"backend": "openai", "base_url": server.url, "model": "stub", "max_retries": 1,
                          "cache_path": str(tmp_path / "cache.sqlite")},
                  "progress": False, "tasks": 2, "workers": 1,
                  "queries": {"input": str(tmp_path / "q.jsonl"), "tasks": 1},
                  "templatize": {"prompt_format": "released", "tasks": 1}, "index": {"tasks": 1},
                  "match": {"input": str(docs), "threshold": 0.0, "templates_per_document": 2},
                  "instantiate": {"prompt_format": "released"}, "judge": {"prompt_format": "rubric"}, "budget": {}}
        out = tmp_path / "run"
        summaries = {s.stage: s for s in recipe.run(config, str(out), echo=lambda _: None)}

    listed = [json.loads(line) for line in (out / "match" / "duplicate_documents.jsonl").open()]
    assert {r["document_id"]: r["occurrences"] for r in listed} == {"twice-in-a": 2, "in-both": 2}
    assert {r["document_id"] for r in table(out / "match")} == {"paris", "rome"}
    match_rejects = [r for r in table(out / "match", "rejects") if r["reason"] == "duplicate_document_id"]
    # one reject per document occurrence: the repeat inside task 0, and the first occurrences found afterwards
    assert sorted(r["document_id"] for r in match_rejects) == ["in-both", "in-both", "twice-in-a", "twice-in-a"]
    assert summaries["match"].rejects["duplicate_document_id"] == 4

    assert {r["document_id"] for r in table(out / "instantiate")} == {"paris", "rome"}
    standard = table(out / "budget" / "standard")
    assert sorted(r["document_id"] for r in standard) == ["paris", "rome"]  # no document twice, none misnamed
    assert not DUPLICATED & {r["document_id"] for r in table(out / "budget" / "instructions")}
    assert summaries["budget"].skips.get("duplicate_document_id") == 4  # every occurrence, in both tasks
    assert summaries["instantiate"].skips.get("duplicate_document_id") == 4
