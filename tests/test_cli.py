import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from fineinstructions.cli import main
from fineinstructions.recipe import demo_config, stage_configs

sys.path.insert(0, str(Path(__file__).parent / "llm"))
from openai_stub_server import StubServer  # noqa: E402


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for word in ("queries", "templatize", "run", "demo"):
        assert word in out
    with pytest.raises(SystemExit):
        main(["templatize", "--help"])
    out = capsys.readouterr().out
    assert "--best-of" in out and "--llm-model" in out and "--prompt-format" in out and "(default: 1)" in out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["queries", "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: input not found") and err.count("\n") == 1
    assert main(["templatize", "--input", str(tmp_path), "--output", str(tmp_path / "t"),
                 "--llm-model", str(tmp_path / "nope.gguf")]) == 2
    assert "error:" in capsys.readouterr().err


def test_entry_point_runs_as_module(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fineinstructions", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("fineinstructions ")


def test_yaml_config_and_flags(tmp_path):
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps({"question": q}) + "\n" for q in ["a b c", "d e f", "x" * 50]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"column": "question", "max_chars": 10, "source": "yaml"}))
    assert main(["queries", "--config", str(cfg), "--input", str(src), "--output", str(tmp_path / "o"),
                 "--source", "flag", "--no-progress"]) == 0
    rows = pq.read_table(next((tmp_path / "o").glob("part-*.parquet"))).to_pylist()
    assert [r["query"] for r in rows] == ["a b c", "d e f"] and {r["source"] for r in rows} == {"flag"}


def test_run_config_writes_one_directory_per_stage(tmp_path):
    stub = StubServer().start()
    stub.responder = lambda q: json.dumps({"template": q.rsplit(" ", 1)[0] + " <fi>thing</fi>",
                                           "compatible_document_description": "A document."})
    try:
        src = tmp_path / "q.jsonl"
        src.write_text("".join(json.dumps({"id": str(i), "query": q}) + "\n"
                               for i, q in enumerate(["who wrote the hobbit", "who painted the mona lisa"])))
        config = {"llm": {"backend": "openai", "base_url": stub.url, "model": "stub"},
                  "queries": {"input": str(src)}, "templatize": {"prompt_format": "released"}}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
        assert main(["run", str(tmp_path / "run.yaml"), "--output", str(tmp_path / "run"), "--no-progress"]) == 0
    finally:
        stub.stop()
    assert (tmp_path / "run" / "queries" / "part-00000.parquet").is_file()
    templates = pq.read_table(tmp_path / "run" / "templatize" / "part-00000.parquet").to_pylist()
    assert [t["template"] for t in templates] == ["who wrote the <fi>thing</fi>", "who painted the mona <fi>thing</fi>"]
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert [s["stage"] for s in summary] == ["queries", "templatize"]


def test_demo_config_resolves_to_the_bundled_sample(tmp_path):
    stages = stage_configs(demo_config(), str(tmp_path))
    assert [spec.name for spec, _ in stages] == ["queries", "decontaminate", "templatize", "near_dedup", "index",
                                                 "match", "instantiate", "judge", "scrub", "budget"]
    (_, q_cfg), (_, d_cfg), (_, t_cfg), (_, nd_cfg), (_, i_cfg), (_, m_cfg), (_, n_cfg), (_, j_cfg), (_, s_cfg), \
        (_, b_cfg) = stages
    assert Path(q_cfg.input).is_file() and q_cfg.output == str(tmp_path / "queries")
    assert d_cfg.input == q_cfg.output and Path(d_cfg.eval_sets).is_file()
    assert t_cfg.input == d_cfg.output and t_cfg.llm.backend == "transformers" and t_cfg.best_of >= 1
    assert nd_cfg.input == t_cfg.output and i_cfg.input == nd_cfg.output
    assert m_cfg.index == i_cfg.output and Path(m_cfg.input).is_file()
    # later stages read match's output, the deduplicated templates and the very documents match read
    assert n_cfg.input == m_cfg.output and n_cfg.templates == nd_cfg.output and n_cfg.documents == m_cfg.input
    assert j_cfg.input == n_cfg.output and s_cfg.input == j_cfg.output and b_cfg.input == s_cfg.output
    assert b_cfg.documents == m_cfg.input
    assert (b_cfg.text_column, b_cfg.id_column, b_cfg.limit) == (m_cfg.text_column, m_cfg.id_column, m_cfg.limit)


def test_optional_and_skipped_stages_are_linked_around(tmp_path):
    """Without a decontaminate section (optional) templatize reads queries; a run naming only some stages links
    each to the nearest earlier stage that runs."""
    names = [spec.name for spec, _ in stage_configs({}, str(tmp_path))]
    assert "decontaminate" not in names and {"near_dedup", "scrub"} <= set(names)
    cfgs = dict((spec.name, cfg) for spec, cfg in stage_configs(
        {"stages": ["queries", "templatize", "index", "match", "instantiate", "judge", "budget"]}, str(tmp_path)))
    assert cfgs["templatize"].input == str(tmp_path / "queries") and cfgs["index"].input == str(tmp_path / "templatize")
    assert cfgs["instantiate"].templates == str(tmp_path / "templatize") and cfgs["budget"].input == str(tmp_path / "judge")
