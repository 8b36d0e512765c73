"""Cache keys and the cached wrapper (a counting fake backend: this is control flow, not a model test)."""

from fineinstructions.llm import CachedBackend, Completion, Request, RequestCache, SamplingParams
from fineinstructions.llm.base import LLMBackend
from fineinstructions.llm.cache import cache_key


class Counting(LLMBackend):
    model_id = "fake@1"

    def __init__(self):
        self.seen = []

    def generate(self, requests):
        self.seen.extend(requests)
        return [Completion.failed("boom") if "fail" in (r.prompt or "") else Completion(text=f"out:{r.prompt}",
                completion_tokens=1) for r in requests]


def test_key_depends_on_model_prompt_and_params():
    r = Request.completion("hi", SamplingParams(max_tokens=5))
    assert cache_key("m", r) == cache_key("m", Request.completion("hi", SamplingParams(max_tokens=5)))
    assert cache_key("m", r) != cache_key("m2", r)
    assert cache_key("m", r) != cache_key("m", Request.completion("hi!", SamplingParams(max_tokens=5)))
    assert cache_key("m", r) != cache_key("m", Request.completion("hi", SamplingParams(max_tokens=6)))
    assert cache_key("m", r) != cache_key("m", Request.completion("hi", SamplingParams(max_tokens=5, seed=1)))
    chat = Request.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=5))
    assert cache_key("m", r) != cache_key("m", chat)


def test_rerun_sends_only_missing(tmp_path):
    inner = Counting()
    backend = CachedBackend(inner, RequestCache(tmp_path / "c.sqlite"))
    first = backend.generate([Request.completion(p) for p in ("a", "b", "fail")])
    assert [c.text for c in first] == ["out:a", "out:b", ""] and not first[2].ok
    inner.seen.clear()
    second = backend.generate([Request.completion(p) for p in ("b", "c", "fail", "a")])
    # b and a come from the cache, in order; c is new; the failure is retried, never cached
    assert [r.prompt for r in inner.seen] == ["c", "fail"]
    assert [c.text for c in second] == ["out:b", "out:c", "", "out:a"]
    assert [c.cached for c in second] == [True, False, False, True]
    backend.close()
    # persisted across processes/instances
    again = CachedBackend(Counting(), RequestCache(tmp_path / "c.sqlite"))
    assert len(again.cache) == 3
    assert again.generate([Request.completion("c")])[0].cached


def test_optional_backends_fail_with_an_install_hint():
    import importlib.util

    import pytest

    from fineinstructions.llm import LLMConfig, make_backend

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match=r"fineinstructions\[vllm\]"):
            make_backend(LLMConfig(backend="vllm", model="some/model", cache=False))
    with pytest.raises(ValueError, match="unknown llm backend"):
        make_backend(LLMConfig(backend="nope", cache=False))
