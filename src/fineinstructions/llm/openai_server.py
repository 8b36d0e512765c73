"""Backend for any OpenAI-compatible HTTP server (vLLM serve, SGLang, llama.cpp server, hosted APIs).

The pipeline sends batches of thousands of requests; a server that hiccups (restarts, rate limits, drops a
connection) must cost a retry, not the batch. So transient failures are retried with capped exponential backoff
and jitter, permanent ones (bad request, bad key, unknown model) come back at once as `Completion.failed(...)`,
and `generate()` never raises for a single request's failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import socket
from collections.abc import Sequence
from typing import Any

import httpx

from fineinstructions.llm.base import Completion, LLMBackend, OnResult, Request, request_seed

__all__ = ["OpenAIServerBackend", "check_server"]

# 408 (request timeout) and 429 (rate limited) are the 4xx codes that mean "try again later"; every other 4xx
# means the request itself is wrong and repeating it would only waste time.
_RETRYABLE_4XX = frozenset({408, 429})


class _Retryable(Exception):
    """A failure worth another attempt; `delay` is a server-requested wait (Retry-After) when it gave one."""

    def __init__(self, message: str, delay: float | None = None, unreachable: bool = False):
        super().__init__(message)
        self.delay = delay
        self.unreachable = unreachable  # nothing answered at all: the final error suggests checking the server


class _Fatal(Exception):
    """A failure that another attempt cannot fix (4xx other than 408/429, invalid URL…)."""


def _one_line(text: str, limit: int = 300) -> str:
    """Errors end up in JSONL records and log lines: keep them single-line and bounded."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes. httpx's async errors often say only "All connection attempts failed" or
    nothing at all; the useful errno is further down the chain."""
    out: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(out) < 10:  # bounded: chains can in principle be cyclic
        out.append(cause)
        cause = cause.__cause__ or cause.__context__
    return out


def _connect_failure(exc: BaseException, url: str) -> str:
    for cause in _chain(exc):
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused at {url}"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve host of {url} ({cause.strerror})"
    return f"cannot connect to {url} ({_one_line(exc) or type(exc).__name__})"


def _dropped(exc: BaseException, url: str) -> str:
    if any(isinstance(cause, ConnectionResetError) for cause in _chain(exc)):
        return f"connection reset by {url} before a response"
    return f"connection to {url} dropped ({_one_line(exc) or type(exc).__name__})"


def _server_message(response: httpx.Response) -> str:
    """The server's own explanation: OpenAI-style `{"error": {"message": ...}}` when present, else the raw body."""
    try:
        data = response.json()
    except ValueError:
        return _one_line(response.text or response.reason_phrase, 200)
    if isinstance(data, dict):
        err = data.get("error", data.get("message", data.get("detail")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return _one_line(str(err), 200)
    return _one_line(response.text, 200)


def _count(value: Any) -> int:
    """Token counts are bookkeeping, not worth failing a good answer over: anything odd counts as 0."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _cut_at_stop(completion: Completion, stop: tuple[str, ...]) -> Completion:
    """The text before the first stop string. OpenAI's API leaves stop strings out, but not every compatible
    server does (`transformers serve` keeps the one it stopped at), and the in-process backends cut there too."""
    cut = min((i for i in (completion.text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut >= 0:
        completion.text, completion.finish_reason = completion.text[:cut], "stop"
    return completion


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds; the HTTP-date form is rare from model servers and falls back to our backoff."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class OpenAIServerBackend(LLMBackend):
    """Talks to `{base_url}/chat/completions` (chat requests) and `{base_url}/completions` (raw prompts).

    Requests run concurrently (at most `concurrency` in flight) on an httpx.AsyncClient; `generate()` stays a plain
    synchronous call so stages need not know about asyncio.
    """

    def __init__(
        self,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "default",
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        extra_body: dict[str, Any] | None = None,
        model_id: str | None = None,
    ):
        """`timeout` bounds one attempt (connect + wait for the full answer); `max_retries` counts attempts after
        the first. `extra_body` is merged last into every request body, so it can add server-specific options
        (e.g. vLLM's `top_k`, `repetition_penalty`) or override the mapped ones.

        `model_id` defaults to `openai:{model}` — deliberately without the URL, so restarting the server on another
        host or port keeps the cache valid. Pass an explicit `model_id` (e.g. with a revision or weights hash) when
        the server's model name alone does not identify the weights (llama.cpp serves any file under one name).
        """
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.extra_body = dict(extra_body or {})
        self.model_id = model_id or f"openai:{model}"

    # -- public API ---------------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        return self.generate_each(requests, lambda i, c: None)

    def generate_each(self, requests: Sequence[Request], on_result: OnResult) -> list[Completion]:
        """One Completion per Request, in order; `on_result(i, c)` is called as each one arrives. Runs its own
        event loop; if the calling thread already runs one (a notebook, an async caller), the batch runs on a
        helper thread instead of failing with "asyncio.run() cannot be called from a running event loop"."""
        requests = list(requests)
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._run_batch(requests, on_result))
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._run_batch(requests, on_result)).result()

    def close(self) -> None:
        """Nothing to release: each batch opens and closes its own connection pool, because an AsyncClient is
        bound to the event loop that created it and every `generate()` call gets a fresh loop."""

    # -- internals ----------------------------------------------------------------------------------------------

    def _body(self, request: Request) -> tuple[str, dict[str, Any]]:
        p = request.params
        body: dict[str, Any] = {"model": self.model}
        if request.messages is not None:
            url = f"{self.base_url}/chat/completions"
            body["messages"] = [dict(m) for m in request.messages]
        else:
            url = f"{self.base_url}/completions"
            body["prompt"] = request.prompt
        body.update(max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p)
        if p.stop:
            body["stop"] = list(p.stop)
        if (seed := request_seed(request)) is not None:
            body["seed"] = seed
        body.update(self.extra_body)
        return url, body

    async def _run_batch(self, requests: list[Request], on_result: OnResult) -> list[Completion]:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        headers = {"Authorization": f"Bearer {self.api_key}"}
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(i: int, request: Request) -> Completion:
            completion = await self._one(client, semaphore, request)
            on_result(i, completion)
            return completion

        async with httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=headers) as client:
            return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))

    async def _one(self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore, request: Request) -> Completion:
        url, body = self._body(request)
        chat = request.messages is not None
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            try:
                # The slot is held only while a request is on the wire, not during backoff sleeps, so one
                # struggling request does not starve the rest of the batch.
                async with semaphore:
                    return _cut_at_stop(await self._attempt(client, url, body, chat), request.params.stop)
            except _Fatal as exc:
                return Completion.failed(str(exc))
            except _Retryable as exc:
                last = exc
                if attempt == self.max_retries:
                    break
                await asyncio.sleep(self._delay(attempt, exc.delay))
            except Exception as exc:  # a bug or an unserialisable extra_body must not take down the whole batch
                return Completion.failed(f"request to {url} failed: {type(exc).__name__}: {_one_line(exc)}")
        n = self.max_retries
        tries = f"; gave up after {n} {'retry' if n == 1 else 'retries'}" if n else ""
        hint = " — is the server running?" if last is not None and last.unreachable else ""
        return Completion.failed(f"{last}{tries}{hint}")

    def _delay(self, attempt: int, server_delay: float | None) -> float:
        """Retry-After if the server sent one, else backoff·2^attempt with ±50 % jitter (so a batch that failed
        together does not retry in lockstep); both capped at `max_backoff`."""
        if server_delay is not None:
            return min(server_delay, self.max_backoff)
        return min(self.backoff * 2**attempt, self.max_backoff) * random.uniform(0.5, 1.0)

    async def _attempt(self, client: httpx.AsyncClient, url: str, body: dict[str, Any], chat: bool) -> Completion:
        """One HTTP round trip, translated into a Completion or a _Retryable/_Fatal with a readable message."""
        try:
            # httpx's timeout is per phase (connect, each read…); wait_for makes `timeout` bound the whole attempt,
            # so a server that trickles bytes cannot stall a batch forever.
            response = await asyncio.wait_for(client.post(url, json=body), self.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise _Retryable(f"request to {url} timed out after {self.timeout:g}s") from None
        except httpx.ConnectError as exc:
            raise _Retryable(_connect_failure(exc, url), unreachable=True) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Retryable(_dropped(exc, url)) from None
        except httpx.HTTPError as exc:  # invalid URL, unsupported scheme, proxy errors: retrying cannot help
            raise _Fatal(f"request to {url} failed: {type(exc).__name__}: {_one_line(exc)}") from None

        status = response.status_code
        if status == 429:
            raise _Retryable(f"rate limited (HTTP 429) by {url}: {_server_message(response)}", _retry_after(response))
        if status >= 500 or status in _RETRYABLE_4XX:
            raise _Retryable(f"HTTP {status} from {url}: {_server_message(response)}", _retry_after(response))
        if status >= 400:
            raise _Fatal(f"HTTP {status} from {url}: {_server_message(response)}")
        return self._parse(response, url, chat)

    @staticmethod
    def _parse(response: httpx.Response, url: str, chat: bool) -> Completion:
        """Malformed 2xx bodies are retried: in practice they come from proxies and half-restarted servers."""
        try:
            data = response.json()
        except ValueError:
            raise _Retryable(f"malformed response from {url}: not JSON: {_one_line(response.text, 120)!r}") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise _Retryable(f"malformed response from {url}: no choices in {_one_line(response.text, 120)!r}")
        choice = choices[0]
        message = choice.get("message")
        text = (message.get("content") if isinstance(message, dict) else None) if chat else choice.get("text")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Completion(
            text=text if isinstance(text, str) else "",  # content is null for e.g. tool calls: empty, not an error
            finish_reason=str(choice.get("finish_reason") or "stop"),
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
        )


def check_server(base_url: str, timeout: float = 5.0, api_key: str | None = None) -> list[str]:
    """Model names served at `base_url` (GET /models). Raises ConnectionError with a one-line reason, so a
    pipeline can fail fast (or poll while a server starts) before queueing a large batch against nothing."""
    url = f"{base_url.rstrip('/')}/models"
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY")
    try:
        response = httpx.get(url, timeout=timeout, headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        raise ConnectionError(f"cannot reach {url}: {_one_line(exc) or type(exc).__name__}") from None
    if response.status_code != 200:
        raise ConnectionError(f"HTTP {response.status_code} from {url}: {_server_message(response)}")
    try:
        return [m["id"] for m in response.json().get("data", []) if isinstance(m, dict) and "id" in m]
    except (ValueError, AttributeError):
        raise ConnectionError(f"malformed response from {url}: {_one_line(response.text, 120)!r}") from None
