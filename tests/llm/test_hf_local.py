"""The transformers backend on the real embedded model (SmolLM2-135M-Instruct GGUF)."""

import pytest

from fineinstructions.llm import Request, SamplingParams
from fineinstructions.llm.hf_local import TransformersBackend, default_model_path, resolve_model


def test_default_model_is_found():
    path = default_model_path()
    name_or_dir, gguf, model_id = resolve_model(None)
    assert path.endswith(".gguf") and gguf == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model_id.startswith("gguf:SmolLM2-135M-Instruct.Q4_1.gguf:")
    assert resolve_model(None)[2] == model_id  # stable


def test_missing_model_paths_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(FileNotFoundError, match="model path not found"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="without config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        TransformersBackend(str(tmp_path / "nope.gguf"))


@pytest.mark.slow
def test_batched_generation_matches_one_by_one_and_keeps_order(smollm):
    params = SamplingParams(max_tokens=12)
    prompts = ["The capital of France is", "1, 2, 3, 4,", "Question: what color is the sky?\nAnswer:",
               "def add(a, b):"]
    batched = smollm.generate([Request.completion(p, params) for p in prompts])
    single = [smollm.generate([Request.completion(p, params)])[0] for p in prompts]
    assert [c.text for c in batched] == [c.text for c in single]  # left padding does not change greedy output
    for c in batched:
        assert c.ok and c.prompt_tokens > 0 and 0 < c.completion_tokens <= 12
        assert c.finish_reason in ("stop", "length")
    assert "5" in batched[1].text


@pytest.mark.slow
def test_chat_stop_strings_and_errors_as_data(smollm):
    chat = Request.chat([{"role": "user", "content": "Count from 1 to 20, separated by commas."}],
                        SamplingParams(max_tokens=60, stop=("7",)))
    too_long = Request.completion("word " * 9000, SamplingParams(max_tokens=4))
    out = smollm.generate([chat, too_long, Request.completion("Hello", SamplingParams(max_tokens=3))])
    assert out[0].ok and "7" not in out[0].text and "6" in out[0].text and out[0].finish_reason == "stop"
    assert not out[1].ok and "prompt too long" in out[1].error and out[1].finish_reason == "error"
    assert out[2].ok and out[2].completion_tokens <= 3


@pytest.mark.slow
def test_sampling_is_seeded(smollm):
    p = SamplingParams(max_tokens=10, temperature=1.0, seed=7)
    a = smollm.generate([Request.completion("Once upon a time", p)])[0].text
    b = smollm.generate([Request.completion("Once upon a time", p)])[0].text
    assert a == b


@pytest.mark.slow
def test_gguf_is_dequantised_once_then_loaded_from_the_converted_copy(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("FINEINSTRUCTIONS_HOME", str(tmp_path / "home"))
    request = Request.completion("The capital of France is", SamplingParams(max_tokens=8))
    first = TransformersBackend()
    converted = list((tmp_path / "home" / "models").glob("gguf-SmolLM2-135M-Instruct*"))
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    start = time.time()
    second = TransformersBackend()
    assert time.time() - start < 10  # vs ~20 s de-quantising the GGUF
    assert second.model_id == first.model_id  # same weights, same cache keys
    assert second.generate([request])[0].text == first.generate([request])[0].text


@pytest.mark.slow
def test_a_sampled_request_draws_the_same_tokens_in_any_batch(smollm):
    """Sampling is seeded per request (its base seed + its content), not per batch: alone, in a batch, in another
    order or another batch size, a request samples the same text; the base seed still makes candidates differ.
    Before, `torch.manual_seed` once per batch made every row's draws depend on its batch-mates."""
    p = SamplingParams(max_tokens=12, temperature=1.0, seed=3)
    prompts = ["Once upon a time", "The best way to learn", "My favourite food is", "In the year 2050,"]
    reqs = [Request.completion(t, p) for t in prompts]
    batched = [c.text for c in smollm.generate(reqs)]
    alone = [smollm.generate([r])[0].text for r in reqs]
    reversed_batch = [c.text for c in smollm.generate(reqs[::-1])][::-1]
    smollm.batch_size = 2
    try:
        pairs = [c.text for c in smollm.generate(reqs)]
    finally:
        smollm.batch_size = 16
    assert batched == alone == reversed_batch == pairs
    other_seed = smollm.generate([Request.completion(prompts[0], SamplingParams(max_tokens=12, temperature=1.0,
                                                                                 seed=4))])[0].text
    assert other_seed != batched[0]
    assert len(set(batched)) == len(batched)  # rows do not copy each other's draws


@pytest.mark.slow
def test_the_shared_prefix_kv_cache_gives_the_plain_greedy_output(smollm):
    """Few-shot prompts share their first hundreds of tokens; the backend computes that prefix's KV cache once.
    The prompts here share a prefix far above `min_prefix_tokens`, so the cached path really runs (checked), and
    its greedy answers must equal those of the plain path (prefix caching disabled)."""
    head = ("You turn questions into templates. Example: who wrote hamlet -> who wrote <fi>a play</fi>. "
            "Example: capital of peru -> capital of <fi>a country</fi>. Example: ") * 2
    prompts = [head + q + " ->" for q in ("who painted the mona lisa", "how tall is everest", "when did rome fall")]
    reqs = [Request.completion(t, SamplingParams(max_tokens=10)) for t in prompts]
    cached = smollm.generate(reqs)
    assert smollm._prefix is not None and len(smollm._prefix[0]) >= smollm.min_prefix_tokens  # the KV path ran
    smollm.min_prefix_tokens, smollm._prefix = 10**9, None
    try:
        plain = smollm.generate(reqs)
        assert smollm._prefix is None
    finally:
        smollm.min_prefix_tokens = 32
    assert [c.text for c in cached] == [c.text for c in plain]
    assert all(c.ok and c.completion_tokens > 0 for c in cached)


def test_loglikelihood_prefers_fluent_text_and_does_not_depend_on_the_batch(smollm):
    texts = ["who painted the ceiling of the Sistine Chapel", "who painted the ceiling of ceiling the Chapel",
             "how long does it take to boil potatoes", "how long does it take to cooks potatoes", "a"]
    together = smollm.loglikelihood(texts)
    alone = [smollm.loglikelihood([t])[0] for t in texts]
    assert together == pytest.approx(alone, abs=1e-3)
    assert together[0] > together[1] and together[2] > together[3]
    assert all(v < 0 for v in together) and smollm.loglikelihood([]) == []
