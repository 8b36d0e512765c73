import argparse

import pytest

from fineinstructions.config import add_arguments, from_sources, load_yaml
from fineinstructions.errors import UserError
from fineinstructions.stages.templatize import TemplatizeConfig


def parse(argv):
    p = argparse.ArgumentParser()
    add_arguments(p, TemplatizeConfig)
    return p.parse_args(argv)


def test_precedence_default_yaml_cli():
    yaml_values = {"best_of": 3, "llm": {"model": "yaml-model", "batch_size": 4}}
    cfg = from_sources(TemplatizeConfig, yaml_values, parse(["--llm-model", "cli-model", "--input", "q"]))
    assert cfg.best_of == 3 and cfg.input == "q"
    assert cfg.llm.model == "cli-model" and cfg.llm.batch_size == 4 and cfg.llm.backend == "transformers"
    assert cfg.min_alignment == 0.7  # default


def test_flags_mirror_field_names():
    args = parse(["--best-of", "2", "--min-alignment", "0.5", "--no-progress", "--llm-backend", "openai"])
    cfg = from_sources(TemplatizeConfig, {}, args)
    assert (cfg.best_of, cfg.min_alignment, cfg.progress, cfg.llm.backend) == (2, 0.5, False, "openai")


def test_list_fields_are_repeatable_flags():
    from fineinstructions.experiment import ExperimentConfig
    from fineinstructions.stages.distill_augment import DistillAugmentConfig

    p = argparse.ArgumentParser()
    add_arguments(p, DistillAugmentConfig)
    cfg = from_sources(DistillAugmentConfig, {}, p.parse_args(["--held-out", "a.jsonl", "--held-out", "b.jsonl"]))
    assert cfg.held_out == ["a.jsonl", "b.jsonl"]
    assert from_sources(DistillAugmentConfig, {}, p.parse_args([])).held_out == []
    p = argparse.ArgumentParser()
    add_arguments(p, ExperimentConfig)
    assert from_sources(ExperimentConfig, {"seeds": [0, 1, 2]}, p.parse_args(["--seeds", "7"])).seeds == [7]


def test_unknown_keys_are_refused_with_the_known_ones():
    with pytest.raises(UserError, match="unknown key.*best_off.*known keys:.*best_of"):
        from_sources(TemplatizeConfig, {"best_off": 2}, {})
    with pytest.raises(UserError, match="llm"):
        from_sources(TemplatizeConfig, {"llm": {"modle": "x"}}, {})


def test_yaml_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_yaml(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(str(bad))


def test_yaml_strings_that_are_numbers_become_numbers():
    """YAML reads `threshold: "0.5"` and `lr: 3e-3` as strings; they used to reach the stage as str and fail
    inside a task hours later."""
    cfg = from_sources(TemplatizeConfig, {"temperature": "0.5", "llm": {"timeout": "3e1"}}, {})
    assert cfg.temperature == 0.5 and isinstance(cfg.temperature, float) and cfg.llm.timeout == 30.0


@pytest.mark.parametrize("values, named", [
    ({"temperature": "high"}, "temperature: input should be a valid number"),
    ({"best_of": 1.5}, "best_of: input should be a valid integer"),
    ({"llm": {"batch_size": [4]}}, "llm.batch_size: input should be a valid integer"),
    ({"llm": {"cache": "maybe"}}, "llm.cache: input should be a valid boolean"),
    ({"executor": "k8s"}, "executor: 'k8s' is not one of local, slurm, ray"),
    ({"llm": {"extra": "x"}}, "llm.extra: input should be a valid dictionary"),
])
def test_wrong_types_are_one_line_naming_the_key(values, named):
    with pytest.raises(UserError) as e:
        from_sources(TemplatizeConfig, values, {}, where="templatize config")
    assert named in str(e.value) and "\n" not in str(e.value)


def test_a_bad_run_config_fails_before_any_stage_runs(tmp_path, capsys):
    """`run` resolves and checks every stage's config first: a wrong type in the last stage's section stops the
    run before the first stage writes anything."""
    from fineinstructions.cli import main

    config = tmp_path / "run.yaml"
    config.write_text("queries: {input: queries.jsonl}\nmatch: {threshold: high, input: docs.jsonl}\n"
                      "budget: {seed: 1}\n")
    assert main(["run", str(config), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: run config [match]: threshold: input should be a valid number, unable to parse string "
                   "as a number (got 'high')")
    assert not (tmp_path / "out").exists()
