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
