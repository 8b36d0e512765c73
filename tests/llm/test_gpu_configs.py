"""configs/*.yaml resolve into the stage configs the docs promise (no GPU needed: nothing is loaded or run)."""

from __future__ import annotations

from pathlib import Path

from fineinstructions.config import build, load_yaml, merge
from fineinstructions.llm import LLMConfig
from fineinstructions.prompts import load_format
from fineinstructions.recipe import stage_configs

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
RELEASED = {
    "templatize": ("fineinstructions/query_templatizer", "released"),
    "instantiate": ("fineinstructions/template_instantiator", "released"),
    "judge": ("flowaicom/Flow-Judge-v0.1", "flow-judge"),
}


def test_released_models_config_fills_every_stage_with_the_papers_models(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the config's sample inputs are relative to the repo root
    stages = dict((spec.name, cfg) for spec, cfg in stage_configs(load_yaml(str(CONFIGS / "released-models.yaml")),
                                                                   str(tmp_path)))
    assert list(stages) == ["queries", "templatize", "index", "match", "instantiate", "judge", "budget"]
    for name, (model, fmt) in RELEASED.items():
        llm = stages[name].llm
        assert (llm.backend, llm.model, stages[name].prompt_format) == ("vllm", model, fmt)
        assert llm.extra == {"max_model_len": 8192, "gpu_memory_utilization": 0.90}  # shared keys reach every stage
        load_format(name, fmt)
    assert stages["templatize"].llm.revision.startswith("4f556de3")
    assert stages["instantiate"].llm.revision.startswith("5a4c2107")
    assert stages["index"].embedder == "fineinstructions/instruction_template_retrieval_embedding"
    assert stages["match"].threshold == 0.865 and stages["match"].templates_per_document == 6
    assert stages["instantiate"].documents == stages["match"].input
    assert Path(stages["queries"].input).is_file() and Path(stages["match"].input).is_file()


def test_slurm_config_llm_section_is_a_valid_serve_backend():
    config = load_yaml(str(CONFIGS / "slurm-multinode.yaml"))
    for name, (model, _) in RELEASED.items():
        llm = build(LLMConfig, merge(config["llm"], config[name]["llm"]), where=f"{name}.llm")
        assert (llm.backend, llm.model, llm.server_command) == ("serve", model, "vllm")


def test_slurm_config_puts_llm_stages_on_one_gpu_each(tmp_path):
    config = load_yaml(str(CONFIGS / "slurm-multinode.yaml"))
    stages = dict((spec.name, cfg) for spec, cfg in stage_configs(config, str(tmp_path)))
    assert all(cfg.executor == "slurm" and cfg.slurm.partition == "gpu" for cfg in stages.values())
    assert {n: cfg.slurm.gpus_per_task for n, cfg in stages.items()} == {
        "queries": 0, "templatize": 1, "index": 1, "match": 1, "instantiate": 1, "judge": 1, "budget": 0}
    assert stages["templatize"].llm.backend == "serve" and stages["templatize"].llm.concurrency == 256


class _FakeLLM:
    """Stands in for `vllm.LLM` (CUDA-only): records the engine arguments the backend passes."""

    built: list[dict] = []

    def __init__(self, **kwargs):
        _FakeLLM.built.append(kwargs)


def test_released_models_config_builds_vllm_engines_with_the_pinned_weights(tmp_path, monkeypatch):
    """Resolve the config, build each LLM stage's backend, and check what reaches the engine constructor."""
    import dataclasses
    import sys
    import types

    from fineinstructions.llm import make_backend

    monkeypatch.chdir(ROOT)
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=_FakeLLM))
    _FakeLLM.built.clear()
    stages = dict((spec.name, cfg) for spec, cfg in stage_configs(load_yaml(str(CONFIGS / "released-models.yaml")),
                                                                   str(tmp_path)))
    for name in RELEASED:
        backend = make_backend(dataclasses.replace(stages[name].llm, cache=False))
        assert backend.model_id.startswith(f"hf:{RELEASED[name][0]}@")
    revisions = {n: stages[n].llm.revision for n in RELEASED}
    assert [b["model"] for b in _FakeLLM.built] == [m for m, _ in RELEASED.values()]
    for built, name in zip(_FakeLLM.built, RELEASED):
        assert built["revision"] == revisions[name]
        assert built.get("tokenizer_revision") == revisions[name]  # vLLM's tokenizer would load `main` otherwise
        assert (built["max_model_len"], built["gpu_memory_utilization"]) == (8192, 0.90)


def test_slurm_config_starts_the_server_command_it_promises(tmp_path, monkeypatch):
    """The `serve` backend of the Slurm config, built for real: a stand-in `vllm` executable on PATH records its
    command line and serves (the stub server), so the exact `vllm serve ...` a GPU node would run is checked."""
    import dataclasses
    import os
    import stat
    import sys

    from fineinstructions.llm import Request, make_backend

    stub = Path(__file__).with_name("stub_server_main.py")
    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    fake.write_text(f"""#!{sys.executable}
import os, sys
open(os.environ["ARGV_FILE"], "a").write(" ".join(sys.argv[1:]) + "\\n")
port = sys.argv[sys.argv.index("--port") + 1]
os.execv(sys.executable, [sys.executable, {str(stub)!r}, "--port", port])
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ARGV_FILE", str(tmp_path / "argv.txt"))
    stages = dict((spec.name, cfg) for spec, cfg in stage_configs(load_yaml(str(CONFIGS / "slurm-multinode.yaml")),
                                                                   str(tmp_path)))
    llm = dataclasses.replace(stages["templatize"].llm, cache=False, server_timeout=60,
                              server_log_dir=str(tmp_path / "logs"))
    with make_backend(llm) as backend:
        assert backend.generate([Request.completion("hello")])[0].text == "text:hello"
    argv = (tmp_path / "argv.txt").read_text().split()
    revision = stages["templatize"].llm.revision
    assert argv[:2] == ["serve", "fineinstructions/query_templatizer"]
    assert argv[argv.index("--revision") + 1] == revision and argv[argv.index("--tokenizer-revision") + 1] == revision
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.90"
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and int(argv[argv.index("--port") + 1]) > 0
