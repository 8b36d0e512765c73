"""OpenAIServerBackend against a real local HTTP stub (see openai_stub_server.py for the fault markers)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

from fineinstructions.llm.base import Completion, Request, SamplingParams, request_seed
from fineinstructions.llm.openai_server import OpenAIServerBackend, check_server


def make_backend(url: str, **kw: Any) -> OpenAIServerBackend:
    """Fast settings so the failure paths cost milliseconds, not the production half-second backoffs."""
    defaults: dict[str, Any] = dict(model="stub-model", concurrency=8, timeout=2.0, max_retries=3, backoff=0.01,
                                    max_backoff=0.5, api_key="test-key")
    return OpenAIServerBackend(base_url=url, **{**defaults, **kw})


def chat(text: str, **params: Any) -> Request:
    return Request.chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": text}],
                        SamplingParams(**params) if params else None)


def comp(text: str, **params: Any) -> Request:
    return Request.completion(text, SamplingParams(**params) if params else None)


def closed_port() -> int:
    """A port nothing listens on: bind an ephemeral one, then release it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_line_error(c: Completion, *fragments: str) -> None:
    assert not c.ok and c.finish_reason == "error" and c.text == ""
    assert c.error and "\n" not in c.error
    for f in fragments:
        assert f in c.error, (f, c.error)


# -- happy path -------------------------------------------------------------------------------------------------


def test_mixed_batch_returns_in_order(stub):
    markers = ["", "", "FAIL500x1", "FAIL503x2", "FAIL429x1", "RESETx1", "BADJSONx1", "NOCHOICESx1", "DELAY", ""]
    texts = [f"item {i} {markers[i % len(markers)]}".strip() for i in range(50)]
    requests = [chat(t) if i % 2 else comp(t) for i, t in enumerate(texts)]
    with make_backend(stub.url) as llm:
        out = llm.generate(requests)
    assert len(out) == 50
    for i, (t, c) in enumerate(zip(texts, out)):
        assert c.ok, c.error
        assert c.text == ("chat:" if i % 2 else "text:") + t
        assert c.finish_reason == "stop"
    assert stub.seen["item 3 FAIL503x2"] == 3
    assert stub.count() == 50 + 5 * (1 + 2 + 1 + 1 + 1 + 1)  # 5 copies of each faulty marker, plus retries


def test_chat_and_completion_use_their_endpoints_and_map_params(stub):
    with make_backend(stub.url, extra_body={"top_k": 5, "repetition_penalty": 1.1}) as llm:
        out = llm.generate([
            chat("hello", max_tokens=32, temperature=0.7, top_p=0.9),
            comp("once upon", stop=("\n", "END"), seed=42, temperature=0.5),
        ])
    assert [c.text for c in out] == ["chat:hello", "text:once upon"]
    # the two requests are sent concurrently, so they may arrive in either order
    (r1,) = [r for r in stub.requests if r["path"] == "/v1/chat/completions"]
    (r2,) = [r for r in stub.requests if r["path"] == "/v1/completions"]
    assert r1["body"] == {"model": "stub-model", "max_tokens": 32, "temperature": 0.7, "top_p": 0.9,
                          "top_k": 5, "repetition_penalty": 1.1,
                          "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]}
    assert "stop" not in r1["body"] and "seed" not in r1["body"] and "prompt" not in r1["body"]
    assert r2["body"]["prompt"] == "once upon" and "messages" not in r2["body"]
    # a sampled request is seeded by its base seed and its own content (the same on any rerun, in any batch)
    seed = request_seed(comp("once upon", stop=("\n", "END"), seed=42, temperature=0.5))
    assert r2["body"]["stop"] == ["\n", "END"] and r2["body"]["seed"] == seed
    assert seed != request_seed(comp("twice upon", stop=("\n", "END"), seed=42, temperature=0.5))
    assert r1["headers"]["Authorization"] == "Bearer test-key"


def test_extra_body_overrides_mapped_fields(stub):
    with make_backend(stub.url, extra_body={"max_tokens": 1}) as llm:
        (c,) = llm.generate([comp("a b c", max_tokens=100)])
    assert stub.requests[0]["body"]["max_tokens"] == 1
    assert c.finish_reason == "length"


def test_usage_and_finish_reason_parsed(stub):
    with make_backend(stub.url) as llm:
        full, cut, no_usage = llm.generate([comp("a b c"), chat("a b c d e", max_tokens=2), comp("x NOUSAGE")])
    assert (full.text, full.finish_reason, full.prompt_tokens, full.completion_tokens) == ("text:a b c", "stop", 3, 3)
    # chat prompt_tokens count every message ("be brief" + 5 words); reply cut at 2 "tokens"
    assert (cut.text, cut.finish_reason, cut.prompt_tokens, cut.completion_tokens) == ("chat:a b", "length", 7, 2)
    assert no_usage.ok and no_usage.finish_reason == "stop"  # null finish_reason means a normal stop
    assert (no_usage.prompt_tokens, no_usage.completion_tokens) == (0, 0)


def test_api_key_from_environment(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    with OpenAIServerBackend(base_url=stub.url, model="m") as llm:
        assert llm.generate([comp("hi")])[0].ok
    monkeypatch.delenv("OPENAI_API_KEY")
    with OpenAIServerBackend(base_url=stub.url, model="m") as llm:
        assert llm.generate([comp("hi")])[0].ok
    assert [r["headers"]["Authorization"] for r in stub.requests] == ["Bearer sk-from-env", "Bearer EMPTY"]


def test_model_id_is_stable_across_urls_and_overridable():
    a = OpenAIServerBackend(base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-0.5B-Instruct")
    b = OpenAIServerBackend(base_url="http://gpu-node-7:31337/v1/", model="Qwen/Qwen2.5-0.5B-Instruct")
    assert a.model_id == b.model_id == "openai:Qwen/Qwen2.5-0.5B-Instruct"
    assert OpenAIServerBackend(model="x", model_id="x@sha256:abc").model_id == "x@sha256:abc"


def test_empty_batch_and_close_is_idempotent(stub):
    llm = make_backend(stub.url)
    assert llm.generate([]) == []
    llm.close()
    llm.close()
    assert llm.generate([comp("still works")])[0].text == "text:still works"
    llm.close()
    assert stub.count() == 1


# -- retries ------------------------------------------------------------------------------------------------------


def test_500_then_success_is_retried(stub):
    with make_backend(stub.url) as llm:
        (c,) = llm.generate([chat("please FAIL500x2")])
    assert c.ok and c.text == "chat:please FAIL500x2"
    assert stub.seen["please FAIL500x2"] == 3


def test_persistent_500_gives_error_after_retries(stub):
    with make_backend(stub.url, max_retries=3) as llm:
        (c,) = llm.generate([comp("always FAIL500")])
    assert_one_line_error(c, "HTTP 500", f"{stub.url}/completions", "injected FAIL500", "after 3 retries")
    assert stub.seen["always FAIL500"] == 4  # first attempt + 3 retries


def test_429_honours_retry_after(stub):
    stub.retry_after = "1"
    with make_backend(stub.url, backoff=0.001, max_backoff=5) as llm:
        t0 = time.monotonic()
        (c,) = llm.generate([comp("slow down FAIL429x1")])
        elapsed = time.monotonic() - t0
    assert c.ok and stub.seen["slow down FAIL429x1"] == 2
    assert 0.9 <= elapsed < 3, elapsed  # waited the server's 1 s, not the 1 ms backoff


def test_429_retry_after_is_capped(stub):
    stub.retry_after = "3600"
    with make_backend(stub.url, max_backoff=0.1) as llm:
        t0 = time.monotonic()
        (c,) = llm.generate([comp("FAIL429x2")])
    assert c.ok and time.monotonic() - t0 < 2


def test_429_without_retry_after_uses_backoff(stub):
    stub.retry_after = None
    with make_backend(stub.url, max_retries=2) as llm:
        ok, bad = llm.generate([comp("a FAIL429x1"), comp("b FAIL429")])
    assert ok.ok
    assert_one_line_error(bad, "HTTP 429", "after 2 retries")
    assert stub.seen["b FAIL429"] == 3


def test_timeout_is_retried_then_reported(stub):
    with make_backend(stub.url, timeout=0.3, max_retries=1) as llm:
        t0 = time.monotonic()
        stuck, recovers, fine = llm.generate([comp("stuck SLOW"), comp("once SLOWx1"), comp("fine")])
        elapsed = time.monotonic() - t0
    assert_one_line_error(stuck, "timed out after 0.3s", f"{stub.url}/completions", "after 1 retry")
    assert recovers.ok and recovers.text == "text:once SLOWx1"
    assert fine.ok
    assert stub.seen["stuck SLOW"] == 2 and stub.seen["once SLOWx1"] == 2
    assert elapsed < 2.5, elapsed


def test_connection_reset_is_survived(stub):
    with make_backend(stub.url) as llm:
        (c,) = llm.generate([chat("RESETx2 then fine")])
    assert c.ok and c.text == "chat:RESETx2 then fine"
    assert stub.seen["RESETx2 then fine"] == 3


def test_persistent_reset_is_reported(stub):
    with make_backend(stub.url, max_retries=2) as llm:
        (c,) = llm.generate([chat("RESET")])
    assert_one_line_error(c, f"connection reset by {stub.url}/chat/completions", "after 2 retries")


@pytest.mark.parametrize("marker", ["BADJSON", "NOCHOICES"])
def test_malformed_body_is_retried(stub, marker):
    with make_backend(stub.url, max_retries=2) as llm:
        recovers, broken = llm.generate([comp(f"{marker}x2"), comp(marker)])
    assert recovers.ok and stub.seen[f"{marker}x2"] == 3
    assert_one_line_error(broken, "malformed response", f"{stub.url}/completions", "after 2 retries")
    assert stub.seen[marker] == 3


@pytest.mark.parametrize("code", [400, 401, 404, 422])
def test_client_errors_are_not_retried(stub, code):
    with make_backend(stub.url, max_retries=5) as llm:
        bad, good = llm.generate([chat(f"FAIL{code}"), chat("ok")])
    assert_one_line_error(bad, f"HTTP {code}", f"{stub.url}/chat/completions", f"injected FAIL{code}")
    assert "retries" not in bad.error
    assert good.ok
    assert stub.seen[f"FAIL{code}"] == 1  # exactly one attempt


def test_unknown_route_is_a_clear_error(stub):
    with make_backend(stub.url.removesuffix("/v1") + "/v2") as llm:
        (c,) = llm.generate([comp("hi")])
    assert_one_line_error(c, "HTTP 404", "/v2/completions", "no route")


# -- unreachable servers ------------------------------------------------------------------------------------------


def test_refused_connection_fails_fast_with_clear_error():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with make_backend(url, max_retries=5, backoff=0.01) as llm:
        t0 = time.monotonic()
        out = llm.generate([chat(f"q{i}") if i % 2 else comp(f"q{i}") for i in range(20)])
        elapsed = time.monotonic() - t0
    assert len(out) == 20
    for i, c in enumerate(out):
        endpoint = "/chat/completions" if i % 2 else "/completions"
        assert_one_line_error(c, f"connection refused at {url}{endpoint}", "after 5 retries", "is the server running?")
    assert elapsed < 5, elapsed


def test_unsupported_url_is_an_error_not_an_exception():
    with OpenAIServerBackend(base_url="ftp://127.0.0.1/v1", model="m", backoff=0.01) as llm:
        (c,) = llm.generate([comp("hi")])
    assert_one_line_error(c, "ftp://127.0.0.1/v1/completions")


def test_unserialisable_extra_body_is_an_error_not_an_exception(stub):
    with make_backend(stub.url, extra_body={"bad": object()}) as llm:
        (c,) = llm.generate([comp("hi")])
    assert_one_line_error(c, f"{stub.url}/completions")


def test_check_server(stub):
    assert check_server(stub.url) == ["stub-model"]
    with pytest.raises(ConnectionError, match="cannot reach"):
        check_server(f"http://127.0.0.1:{closed_port()}/v1", timeout=1)


# -- concurrency and calling contexts -----------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4])
def test_concurrency_limit_is_respected(stub, concurrency):
    stub.delay_seconds = 0.05
    with make_backend(stub.url, concurrency=concurrency) as llm:
        out = llm.generate([comp(f"DELAY {i}") for i in range(4 * concurrency)])
    assert all(c.ok for c in out)
    assert stub.max_in_flight == concurrency  # never more, and actually parallel when allowed


def test_generate_inside_a_running_event_loop(stub):
    async def caller() -> list[Completion]:
        await asyncio.sleep(0)
        return make_backend(stub.url).generate([comp("from async"), chat("too")])

    out = asyncio.run(caller())
    assert [c.text for c in out] == ["text:from async", "chat:too"]


def test_generate_from_worker_threads(stub):
    llm = make_backend(stub.url)
    results: dict[int, list[Completion]] = {}

    def work(k: int) -> None:
        results[k] = llm.generate([comp(f"thread {k} item {i}") for i in range(5)])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    for k in range(3):
        assert [c.text for c in results[k]] == [f"text:thread {k} item {i}" for i in range(5)]
