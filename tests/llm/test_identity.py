"""The cache key and `stage.json` name the weights by content: a new fine-tune saved under the same folder name is
another model, identical weights in two folders are the same model, and adapters and generation options count."""

from __future__ import annotations

import shutil

import pytest
import torch

from fineinstructions.llm import LLMConfig, Request, SamplingParams, make_backend
from fineinstructions.llm.identity import content_digest, model_identity

PROMPT = Request.completion("The capital of France is", SamplingParams(max_tokens=8))


def answer(folder, cache, **kw):
    with make_backend(LLMConfig(model=str(folder), cache_path=str(cache), **kw)) as llm:
        return llm.generate([PROMPT])[0]


def test_a_new_fine_tune_in_the_same_folder_is_not_served_from_the_cache(tmp_path, make_tiny_model):
    cache, ft = tmp_path / "cache.sqlite", tmp_path / "finetune"
    make_tiny_model(ft, seed=0)
    first = answer(ft, cache)
    assert not first.cached and answer(ft, cache).cached  # same weights: from the cache
    make_tiny_model(ft, seed=1)  # fine-tuned again into the same folder: same name, same config.json
    second = answer(ft, cache)
    assert not second.cached
    with make_backend(LLMConfig(model=str(ft), cache=False)) as fresh:
        assert second.text == fresh.generate([PROMPT])[0].text  # the new weights' own answer, not the old one's
    assert second.text != first.text
    shutil.copytree(ft, tmp_path / "elsewhere")  # identical weights under another name share the cache
    again = answer(tmp_path / "elsewhere", cache)
    assert again.cached and again.text == second.text


def test_an_adapter_is_part_of_the_identity_and_changes_the_answers(tmp_path, make_tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base, adapter, cache = tmp_path / "base", tmp_path / "adapter", tmp_path / "cache.sqlite"
    make_tiny_model(base, seed=0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                                LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "lm_head"]))
    torch.manual_seed(5)
    with torch.no_grad():  # LoRA starts as a no-op (B = 0): give it weights, as training would
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    peft_model.save_pretrained(adapter)
    plain = answer(base, cache)
    adapted = answer(base, cache, adapter=str(adapter))
    assert not adapted.cached and adapted.text != plain.text
    assert answer(base, cache, adapter=str(adapter)).cached
    ids = [model_identity(LLMConfig(model=str(base), adapter=a)) for a in (None, str(adapter))]
    assert ids[0] != ids[1] and ids[1]["adapter"] == content_digest(adapter)


def test_generation_options_and_served_revisions_change_the_identity():
    served = model_identity(LLMConfig(backend="openai", model="m"))
    assert served != model_identity(LLMConfig(backend="openai", model="m", revision="v2"))
    assert served != model_identity(LLMConfig(backend="openai", model="m", extra={"extra_body": {"top_k": 5}}))
    assert served == model_identity(LLMConfig(backend="openai", model="m", concurrency=64, timeout=5))  # transport
    # a plain managed `vllm serve` shares the openai backend's cache; engine options do not
    assert served == model_identity(LLMConfig(backend="serve", model="m"))
    assert served != model_identity(LLMConfig(backend="serve", model="m", server_args="--quantization fp8"))
    vllm = model_identity(LLMConfig(backend="vllm", model="org/m", extra={"max_model_len": 8192}))
    assert vllm != model_identity(LLMConfig(backend="vllm", model="org/m", extra={"max_model_len": 8192,
                                                                                  "quantization": "fp8"}))
    assert vllm == model_identity(LLMConfig(backend="vllm", model="org/m", extra={"max_model_len": 8192,
                                                                                  "gpu_memory_utilization": 0.5}))


def test_a_stage_made_with_other_weights_in_the_same_folder_is_not_resumed(tmp_path, make_tiny_model):
    """stage.json records the weights' identity: a stage finished with the old fine-tune is refused, not
    reported as done, when the folder now holds a new one."""
    import json

    from fineinstructions.errors import UserError
    from fineinstructions.stages.queries import QueriesConfig
    from fineinstructions.stages.queries import run as queries
    from fineinstructions.stages.templatize import TemplatizeConfig, run

    raw = tmp_path / "q.jsonl"
    raw.write_text(json.dumps({"id": "q1", "query": "who wrote hamlet"}) + "\n")
    queries(QueriesConfig(input=str(raw), output=str(tmp_path / "queries"), progress=False))
    ft = tmp_path / "finetune"
    make_tiny_model(ft, seed=0)
    cfg = TemplatizeConfig(input=str(tmp_path / "queries"), output=str(tmp_path / "t"), prompt_format="released",
                           max_tokens=4, progress=False, llm=LLMConfig(model=str(ft), cache=False))
    run(cfg)
    run(cfg)  # same weights: a no-op resume
    make_tiny_model(ft, seed=1)
    with pytest.raises(UserError, match="changed: model_identity"):
        run(cfg)
