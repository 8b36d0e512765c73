"""`fineinstructions distill-students`: every student of a config in order, augmentation kept only when it scores
better on dev, and `--ship` copying the chosen adapters where `adapter: auto` finds them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from fineinstructions.cli import main
from fineinstructions.distill.students import SHIPPED_FILES

GOLD = Path(__file__).resolve().parents[2] / "data" / "gold"


def test_distill_students_trains_each_stage_and_ships_the_chosen(tmp_path, tiny_model):
    for stage in ("templatize", "judge"):  # a few gold rows, in the train/ dev/ layout distill expects
        for split, n in (("train", 4), ("dev", 2)):
            (tmp_path / split).mkdir(exist_ok=True)
            lines = (GOLD / split / f"{stage}.jsonl").read_text().splitlines(keepends=True)
            (tmp_path / split / f"{stage}.jsonl").write_text("".join(lines[:n]))
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "nq.jsonl").write_text("".join(json.dumps({"query": q}) + "\n" for q in
                                              ["who wrote the iliad", "when did the berlin wall fall"]))
    config = {"base_model": str(tiny_model), "epochs": 1, "batch_size": 2, "progress": False,
              "templatize": {"input": str(tmp_path / "train" / "templatize.jsonl"),
                             "augment": {"queries": str(queries), "per_source": 2, "samples": 2, "gold": str(GOLD)}},
              "judge": {"input": str(tmp_path / "train" / "judge.jsonl"), "method": "classifier",
                        "ship_if_better_than_prompted": False}}
    (tmp_path / "students.yaml").write_text(yaml.safe_dump(config))
    ship = tmp_path / "ship"
    assert main(["distill-students", str(tmp_path / "students.yaml"), "--output", str(tmp_path / "work"),
                 "--ship", str(ship)]) == 0
    chosen = json.loads((ship / "students.json").read_text())
    assert set(chosen) == {"templatize", "judge"}
    t = chosen["templatize"]
    assert {"gold_only", "augmented"} <= set(t) and "outcomes" in t["augmented"]
    # the augmented student is shipped only when it beats the gold-only one on dev
    better = t["augmented"]["dev_score"] > t["gold_only"]["dev_score"]
    assert t["shipped"] is None or t["shipped"].endswith("templatize-augmented" if better else "templatize-gold")
    # a student ships only if it beats its base model prompted on the same dev rows (judge: check switched off)
    best = max(t[k]["dev_score"] for k in ("gold_only", "augmented"))
    assert (t["shipped"] is None) == (t["prompted"]["dev_score"] >= best)
    assert (ship / "templatize").exists() == (t["shipped"] is not None)
    assert "prompted" not in chosen["judge"] and chosen["judge"]["shipped"]
    for stage in (s for s in chosen if chosen[s]["shipped"]):
        lora = set(SHIPPED_FILES) - {"classifier.json"}
        shipped = {"classifier.json", "README.md", "student.json"} if stage == "judge" else lora
        assert {p.name for p in (ship / stage).iterdir()} == shipped
        assert json.loads((ship / stage / "student.json").read_text())["stage"] == stage
    # unknown keys are refused before anything trains
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"epoch": 2, "judge": {}}))
    assert main(["distill-students", str(tmp_path / "bad.yaml"), "--output", str(tmp_path / "w2")]) == 2
    assert not (tmp_path / "w2" / "judge-gold").exists()


def test_the_shipped_students_config_names_only_known_keys():
    from dataclasses import fields

    from fineinstructions.stages.distill import DistillConfig

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "students.yaml").read_text())
    known = {f.name for f in fields(DistillConfig)}
    assert set(config) - {"templatize", "judge", "instantiate"} <= known
    for stage in ("templatize", "judge", "instantiate"):
        assert set(config[stage]) - {"augment", "ship_if_better_than_prompted"} <= known and Path(config[stage]["input"]).name == f"{stage}.jsonl"
