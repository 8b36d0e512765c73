"""`fineinstructions export`: a finished run (stub-served LLM stages, real embeddings, FAISS and tokenizer) becomes
a Hugging Face dataset folder that `datasets.load_dataset(DIR, name)` loads for every config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "stages"))
from llm_stage_helpers import recipe_model, serving  # noqa: E402

from fineinstructions import recipe  # noqa: E402
from fineinstructions.cli import main  # noqa: E402

DOCS = [{"id": "paris", "text": "Paris is the capital of France. It lies on the Seine and has two million people."},
        {"id": "homer", "text": "Homer is the legendary author of the Iliad. The poem tells of the Trojan War."}]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    docs = root / "docs"
    docs.mkdir()
    (docs / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (docs / "README.md").write_text("---\nlicense: cc-by-sa-4.0\n---\n# my documents\n")
    (root / "q.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "query": q}) + "\n" for i, q in enumerate(
        ["what is the capital of france", "who wrote the iliad", "how many people live in paris"])))
    with serving(recipe_model) as server:
        config = {"llm": {"backend": "openai", "base_url": server.url, "model": "stub", "max_retries": 1,
                          "cache_path": str(root / "cache.sqlite")},
                  "progress": False, "queries": {"input": str(root / "q.jsonl")},
                  "templatize": {"prompt_format": "released"}, "index": {},
                  "match": {"input": str(docs / "docs.jsonl"), "threshold": 0.0, "templates_per_document": 2},
                  "instantiate": {"prompt_format": "released"}, "judge": {"prompt_format": "rubric"}, "budget": {}}
        recipe.run(config, str(root / "run"), echo=lambda _: None)
    return root


def test_export_loads_with_datasets_for_every_config(finished_run, capsys):
    from datasets import load_dataset

    out = finished_run / "dataset"
    assert main(["export", str(finished_run / "run"), "--output", str(out)]) == 0
    assert "licence cc-by-sa-4.0" in capsys.readouterr().out  # taken from the documents' card
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-sa-4.0\n") and "config_name: pairs" in card
    assert "hf upload" in card and "| judge |" in card and "openai:stub" in card
    instructions = load_dataset(str(out), "instructions", split="train")
    standard = load_dataset(str(out), "standard", split="train")
    pairs = load_dataset(str(out), "pairs", split="train")
    assert sorted(standard["document_id"]) == ["homer", "paris"]
    assert len(instructions) > 0 and all(t.startswith("Instruction: ") for t in instructions["text"])
    assert set(instructions["pair_id"]) <= set(pairs["pair_id"])
    row = pairs[0]  # full provenance of a pair
    for column in ("document_id", "chunk", "template_id", "template", "query", "query_source", "grounding", "score",
                   "model_id", "prompt_fingerprint", "judge_model_id", "judge_prompt_fingerprint"):
        assert column in row, column
    assert row["query"] and row["score"] >= 4 and row["model_id"] == "openai:stub"
    counts = json.loads((out / "export.json").read_text())["counts"]
    assert counts == {"instructions": len(instructions), "standard": 2, "pairs": len(pairs)}


def test_export_needs_a_licence_and_a_finished_run(finished_run, tmp_path, capsys):
    (finished_run / "docs" / "README.md").rename(finished_run / "docs" / "CARD.md")
    try:
        assert main(["export", str(finished_run / "run"), "--output", str(tmp_path / "x")]) == 2
        assert "pass --license" in capsys.readouterr().err
        assert main(["export", str(finished_run / "run"), "--output", str(tmp_path / "y"), "--license", "odc-by"]) == 0
        assert (tmp_path / "y" / "README.md").read_text().startswith("---\nlicense: odc-by\n")
    finally:
        (finished_run / "docs" / "CARD.md").rename(finished_run / "docs" / "README.md")
    (tmp_path / "empty" / "queries").mkdir(parents=True)
    (tmp_path / "empty" / "queries" / "summary.json").write_text("{}")
    assert main(["export", str(tmp_path / "empty"), "--output", str(tmp_path / "z"), "--license", "mit"]) == 2
    assert "no budget output" in capsys.readouterr().err
