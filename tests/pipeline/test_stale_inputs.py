"""No stage reports success on stale input: every stage fingerprints what it read (`stage.json` "inputs"), so after
an upstream change a rerun either redoes the downstream stages (`run --overwrite`) or refuses with one line naming
the stage whose input changed. The model is a real local HTTP server playing each LLM stage; embeddings, FAISS and
the budget's tokenizer are the real defaults."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
from llm_stage_helpers import recipe_model, serving, table, write_jsonl  # noqa: E402

from fineinstructions import recipe  # noqa: E402
from fineinstructions.cli import main  # noqa: E402
from fineinstructions.pipeline.inputs import path_fingerprint  # noqa: E402

QUERIES = ["what is the capital of france", "who wrote the iliad", "when was the eiffel tower built"]
DOCS = [{"id": "paris", "text": "Paris is the capital of France. The Eiffel Tower was built from 1887 to 1889."},
        {"id": "homer", "text": "Homer is the legendary author of the Iliad and the Odyssey, two epic poems."}]


@pytest.fixture(scope="module")
def server():
    with serving(recipe_model) as s:
        yield s


def config(tmp_path: Path, server) -> dict:
    return {
        "llm": {"backend": "openai", "base_url": server.url, "model": "stub", "max_retries": 1, "timeout": 10,
                "cache_path": str(tmp_path / "cache.sqlite")},
        "progress": False,
        "queries": {"input": write_jsonl(tmp_path / "q.jsonl", [{"id": f"q{i}", "query": q}
                                                               for i, q in enumerate(QUERIES)])},
        "templatize": {"prompt_format": "released"},
        "index": {},
        "match": {"input": write_jsonl(tmp_path / "d.jsonl", DOCS), "threshold": 0.0, "templates_per_document": 2},
        "instantiate": {"prompt_format": "released"},
        "judge": {"prompt_format": "rubric"},
        "budget": {},
    }


def assert_fresh(out: Path) -> None:
    """Every stage's recorded input fingerprints are those of its inputs as they are now."""
    for stage in ("queries", "templatize", "index", "match", "instantiate", "judge", "budget"):
        recorded = json.loads((out / stage / "stage.json").read_text())["inputs"]
        assert recorded, stage
        for field, fp in recorded.items():
            assert path_fingerprint(fp["path"])["digest"] == fp["digest"], (stage, field)


def add_query(tmp_path: Path, query: str) -> None:
    with (tmp_path / "q.jsonl").open("a") as f:
        f.write(json.dumps({"id": "q-new", "query": query}) + "\n")


def test_run_after_an_input_change_refuses_then_overwrite_redoes_every_stage(tmp_path, server, capsys):
    cfg, out = config(tmp_path, server), tmp_path / "run"
    recipe.run(cfg, str(out), echo=lambda _: None)
    assert_fresh(out)
    add_query(tmp_path, "who painted the mona lisa")
    (tmp_path / "run.yaml").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["run", str(tmp_path / "run.yaml"), "--output", str(out), "--no-progress", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: stage queries: its input changed") and "--input (file" in err and "\n" not in err
    assert main(["run", str(tmp_path / "run.yaml"), "--output", str(out), "--no-progress", "--no-report",
                 "--overwrite"]) == 0
    assert "who painted the mona lisa" in {r["query"] for r in table(out / "templatize")}
    assert_fresh(out)


def test_a_stage_whose_upstream_was_redone_alone_refuses_naming_that_stage(tmp_path, server, capsys):
    cfg, out = config(tmp_path, server), tmp_path / "run"
    recipe.run(cfg, str(out), echo=lambda _: None)
    add_query(tmp_path, "how tall is mount everest")
    # the queries stage redone on its own (same settings, new input): every later stage is now stale
    assert main(["queries", "--input", str(tmp_path / "q.jsonl"), "--output", str(out / "queries"), "--overwrite",
                 "--no-progress"]) == 0
    (tmp_path / "run.yaml").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["run", str(tmp_path / "run.yaml"), "--output", str(out), "--no-progress", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: stage templatize: its input changed") and "(queries output" in err
    # the same when the stage is run on its own
    assert main(["templatize", "--input", str(out / "queries"), "--output", str(out / "templatize"),
                 "--prompt-format", "released", "--llm-backend", "openai", "--llm-base-url", server.url,
                 "--llm-model", "stub", "--llm-max-retries", "1", "--llm-timeout", "10",
                 "--llm-cache-path", str(tmp_path / "cache.sqlite"), "--no-progress"]) == 2
    assert "stage templatize: its input changed" in capsys.readouterr().err
    assert "how tall is mount everest" not in {r["query"] for r in table(out / "templatize")}


def test_an_unfinished_upstream_is_refused(tmp_path, server, capsys):
    cfg, out = config(tmp_path, server), tmp_path / "run"
    recipe.run({k: v for k, v in cfg.items() if k in ("llm", "progress", "queries")}, str(out), echo=lambda _: None)
    (out / "queries" / "summary.json").unlink()  # as if the queries stage had been killed
    capsys.readouterr()
    assert main(["templatize", "--input", str(out / "queries"), "--output", str(out / "templatize"),
                 "--llm-backend", "openai", "--llm-base-url", server.url, "--llm-model", "stub",
                 "--prompt-format", "released", "--no-progress"]) == 2
    assert "is an unfinished queries output" in capsys.readouterr().err
    assert not (out / "templatize").exists()
