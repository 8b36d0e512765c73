"""The embedded default is SmolLM2-135M plus the shipped students: `adapter: auto` and `prompt_format: auto` pick
each stage's student (and its compact contract; the judge's is a classifier) for the embedded model only; the
students fit the size budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fineinstructions.llm import LLMConfig, resolve_adapter, student_path
from fineinstructions.pipeline.llm_step import resolve_format

STAGES = ("templatize", "judge")  # instantiate: its student lost to the prompted model on dev (see students.json)


@pytest.mark.parametrize("stage", STAGES)
def test_auto_picks_the_shipped_student_and_its_contract_for_the_embedded_model_only(stage):
    shipped = student_path(stage)
    assert shipped is not None, f"no student shipped for {stage}: run distill-students configs/students.yaml"
    meta = json.loads((shipped / "student.json").read_text())
    auto = resolve_adapter(LLMConfig(), stage)
    assert auto.adapter == str(shipped)
    if stage == "judge":  # a classifier (judge_classifier.py): the judge step generates nothing
        from fineinstructions.stages.judge import Judge, JudgeConfig

        assert meta["method"] == "classifier" and (shipped / "classifier.json").is_file()
        assert Judge(JudgeConfig(output="unused")).classifier is not None
    else:
        assert meta["stage"] == stage and meta["method"] == "lora"
        assert resolve_format(stage, "auto", auto, "chat", "completion").name == meta["prompt_format"] == "compact"
    for other in (LLMConfig(model="org/some-model"), LLMConfig(backend="openai", model="m"), LLMConfig(adapter="none")):
        assert resolve_adapter(other, stage).adapter is None  # a student only fits the weights it was trained on


def test_the_shipped_students_stay_within_25_mb():
    folder = student_path("templatize").parent
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"{size / 2**20:.1f} MB"
    chosen = json.loads((folder / "students.json").read_text())
    assert {s for s, r in chosen.items() if r["shipped"]} == set(STAGES)
    for record in chosen.values():  # each choice is backed by the prompted model's score on the same dev rows
        assert (record["shipped"] is None) == (record["prompted"]["dev_score"] >= record["gold_only"]["dev_score"])


def test_a_stage_without_a_shipped_student_runs_the_prompted_model():
    assert student_path("instantiate") is None
    auto = resolve_adapter(LLMConfig(), "instantiate")
    assert auto.adapter is None
    assert resolve_format("instantiate", "auto", auto, "fewshot", "fewshot-completion").name == "fewshot-completion"
