"""`fineinstructions goldeval` end to end on a few gold rows (dev split) with the real embedded model, plus bad
gold lines: every line ends up in predictions.jsonl, bad ones as counted skips, and metrics.json agrees with the
per-row scores."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean

import pytest

from fineinstructions.cli import main

GOLD = Path(__file__).resolve().parents[2] / "data" / "gold" / "dev"
BAD_LINES = ["not json at all", json.dumps(["a", "list"]), json.dumps({"id": "x"})]


def gold_file(tmp_path: Path, stage: str, n: int = 3) -> Path:
    rows = [json.loads(line) for line in (GOLD / f"{stage}.jsonl").open()]
    if stage == "instantiate":  # compatible and incompatible rows
        rows = [r for r in rows if r["compatible"]][:n - 1] + [r for r in rows if not r["compatible"]][:1]
    rows = rows[:n]
    lines = [json.dumps(r) for r in rows] + BAD_LINES + [json.dumps(rows[0])]  # the last: a repeated id
    path = tmp_path / f"{stage}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("stage, per_row", [
    ("templatize", {"valid_rate": "valid", "slot_f1": "slot_f1"}),
    ("instantiate", {"grounded_rate": "grounded", "key_span_recall": "key_span_recall"}),
    ("judge", {"parse_rate": "parsed", "keep_accuracy": "keep_correct"}),
])
def test_goldeval_runs_the_stage_and_scores_it(tmp_path, stage, per_row, capsys):
    gold = gold_file(tmp_path, stage)
    out = tmp_path / "out"
    assert main(["goldeval", stage, "--input", str(gold), "--output", str(out), "--no-progress",
                 "--llm-cache-path", str(tmp_path / "cache.sqlite")]) == 0
    printed = capsys.readouterr().out
    assert f"goldeval {stage}" in printed and "rows/s" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert len(predictions) == len(gold.read_text().splitlines())  # one line per gold line, skipped ones too
    first_missing = {"templatize": "missing_query", "instantiate": "missing_template", "judge": "missing_document"}
    assert metrics["n"] == 3
    assert metrics["skipped"] == {"bad_json": 1, "not_an_object": 1, "duplicate_id": 1, first_missing[stage]: 1}
    scored = [p for p in predictions if not p["status"].startswith("skipped:")]
    assert sum(metrics["statuses"].values()) == len(scored) == 3
    embedded = "judge-classifier:" if stage == "judge" else "gguf:SmolLM2-135M-Instruct"  # the shipped judge
    assert metrics["model_id"].startswith(embedded) and metrics["rows_per_second"] > 0
    for metric, key in per_row.items():  # the file's metric is the mean of the rows' scores
        values = [float(p["scores"][key]) for p in scored if p["scores"].get(key) is not None]
        assert metrics[metric] == pytest.approx(fmean(values)), metric
    assert set(metrics["definitions"]) <= set(metrics)
