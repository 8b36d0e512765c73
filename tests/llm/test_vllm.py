"""The GPU path: in-process vLLM and a managed `vllm serve`, on a tiny real model.

Everything except the import-safety test needs `pip install 'fineinstructions[vllm]'` and a CUDA device, and skips
with the reason otherwise (scripts/gpu_check.sh runs this file on a GPU machine). The model is
$FINEINSTRUCTIONS_TEST_VLLM_MODEL (default HuggingFaceTB/SmolLM2-135M-Instruct, fetched from the hub).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time

import pytest

from fineinstructions.llm.base import Request, SamplingParams

MODEL = os.environ.get("FINEINSTRUCTIONS_TEST_VLLM_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
#: small footprint and fast start: both engines of this file fit one GPU at once
ENGINE = dict(max_model_len=2048, gpu_memory_utilization=0.3, enforce_eager=True)
GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


def require_gpu_vllm() -> None:
    pytest.importorskip("vllm", reason="vllm is not installed: pip install 'fineinstructions[vllm]' on a CUDA machine")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the vLLM tests need a GPU")


@pytest.fixture(scope="module")
def engine():
    require_gpu_vllm()
    from fineinstructions.llm.vllm_engine import VLLMBackend

    backend = VLLMBackend(MODEL, **ENGINE)
    yield backend
    backend.close()


def test_gpu_modules_import_without_vllm():
    """CPU machines import every backend module; only building the vLLM backend needs vLLM."""
    import fineinstructions.llm.managed_server  # noqa: F401
    from fineinstructions.llm.vllm_engine import VLLMBackend

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed: nothing to check about its absence")
    with pytest.raises(ImportError, match=r"pip install 'fineinstructions\[vllm\]'"):
        VLLMBackend(MODEL)


def test_chat_and_completion_in_order(engine):
    reqs = [
        Request.chat([{"role": "user", "content": "Name one primary colour. Answer in one word."}], GREEDY),
        Request.completion("The capital of France is", GREEDY),
        Request.chat([{"role": "user", "content": "Count from 1 to 50, separated by commas."}],
                     SamplingParams(max_tokens=8, temperature=0.0)),
    ]
    out = engine.generate(reqs)
    assert len(out) == 3 and all(c.ok for c in out), [c.error for c in out]
    assert all(c.text.strip() and c.prompt_tokens > 0 and c.completion_tokens > 0 for c in out)
    assert out[2].finish_reason == "length" and out[2].completion_tokens == 8
    assert engine.generate(reqs[:2])[1].text == out[1].text  # greedy is repeatable
    assert engine.model_id == f"hf:{MODEL}@main"


def test_one_bad_request_fails_alone(engine):
    too_long = "word " * 5000  # over max_model_len: vLLM rejects the whole batch it is in
    reqs = [Request.completion(f"Fact {i}:", GREEDY) for i in range(6)]
    reqs.insert(3, Request.completion(too_long, GREEDY))
    out = engine.generate(reqs)
    assert [c.ok for c in out] == [True, True, True, False, True, True, True]
    assert out[3].finish_reason == "error" and out[3].error


def test_managed_vllm_serve(tmp_path):
    require_gpu_vllm()
    if shutil.which("vllm") is None:
        pytest.skip("the `vllm` command is not on PATH")
    from fineinstructions.llm.managed_server import ManagedServerBackend

    args = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in ENGINE.items())
    with ManagedServerBackend(MODEL, server_args=args, log_dir=tmp_path, startup_timeout=600) as llm:
        out = llm.generate([Request.chat([{"role": "user", "content": "Say hello."}], GREEDY),
                            Request.completion("The capital of France is", GREEDY)])
        assert all(c.ok and c.text.strip() for c in out), [c.error for c in out]
        pid = llm.server.process.pid
    assert llm.server.process is None
    deadline = time.monotonic() + 10  # the server and every engine process it started are gone (and reaped)
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"processes of group {pid} outlived close()")
