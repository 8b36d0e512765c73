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
