"""Backend `serve`: start an OpenAI-compatible model server for this worker, talk to it, stop it afterwards.

On a GPU node the fastest way to run a recipe stage is a real inference server (`vllm serve`, SGLang, llama.cpp's
`llama-server`): continuous batching, paged KV cache, CUDA graphs. Running one by hand per node and pointing
`--llm-base-url` at it works (backend `openai`), but on a cluster every task would need its own server, started
after the task lands on a node and stopped when it ends, even when it fails. This backend does that, the way
datatrove's inference runner does: pick a free port, launch the command with its output in a log file, poll
`GET /v1/models` until it answers, send every request through `OpenAIServerBackend` (concurrency, retries), and
stop the whole process group on `close()`, at interpreter exit, or when start-up fails. A server that dies or never
comes up is an exception carrying the tail of its log, not thousands of failed completions.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from fineinstructions.llm.base import Completion, LLMBackend, OnResult, Request
from fineinstructions.llm.cache import cache_home
from fineinstructions.llm.openai_server import OpenAIServerBackend, check_server

__all__ = ["PRESETS", "ManagedServer", "ManagedServerBackend", "ServerError", "server_argv"]

#: `server_command` shortcuts; `{model}` is filled when the command is built, `{host}` and `{port}` at each start
PRESETS: dict[str, list[str]] = {
    "vllm": ["vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}"],
    "sglang": [sys.executable, "-m", "sglang.launch_server", "--model-path", "{model}", "--host", "{host}",
               "--port", "{port}"],
    "llama-server": ["llama-server", "--model", "{model}", "--host", "{host}", "--port", "{port}"],
    # Hugging Face's own OpenAI-compatible server (pip install 'transformers[serving]'); runs on CPUs too
    "transformers": ["transformers", "serve", "{model}", "--host", "{host}", "--port", "{port}"],
}

_GUARD = Path(__file__).with_name("orphan_guard.py")
_PORT_CLASH = "address already in use"


class ServerError(RuntimeError):
    """The server could not be started, did not become ready, or died while serving."""


#: the name a LoRA adapter is served under (`--lora-modules adapter=DIR`); requests then carry it as their model
ADAPTER_NAME = "adapter"


def lora_rank(adapter: str | os.PathLike[str]) -> int:
    """The rank vLLM must allow for this adapter (its `max_lora_rank`, default 16): r rounded up to a power of 2."""
    import json

    r = int(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 8))
    return max(16, 1 << (r - 1).bit_length())


def server_argv(command: str | Sequence[str] | None, model: str, args: str = "",
                revision: str | None = None, adapter: str | None = None) -> list[str]:
    """The server's argument list: a preset name (default `vllm`) or a command line with `{model}`, `{host}`,
    `{port}` (and `{revision}`, `{adapter}`) placeholders, plus `args` (e.g. "--tensor-parallel-size 2").
    Placeholders are replaced literally, so arguments with braces (JSON options) pass through untouched. An adapter
    is served by vLLM as a LoRA module named `ADAPTER_NAME`; other servers need an `{adapter}` placeholder."""
    name = command or "vllm"
    template = PRESETS.get(name) if isinstance(name, str) else None
    argv = list(template) if template else (shlex.split(name) if isinstance(name, str) else list(name))
    if not argv:
        raise ValueError("server_command is empty")
    if revision:
        if name == "vllm":
            argv += ["--revision", "{revision}", "--tokenizer-revision", "{revision}"]
        elif not any("{revision}" in a for a in argv):
            raise ValueError(f"a revision was given but server_command {name!r} has no {{revision}} placeholder")
    if adapter:
        if name == "vllm":
            argv += ["--enable-lora", "--lora-modules", f"{ADAPTER_NAME}={{adapter}}",
                     "--max-lora-rank", str(lora_rank(adapter))]
        elif not any("{adapter}" in a for a in argv):
            raise ValueError(f"an adapter was given but server_command {name!r} cannot load one here: use the vllm "
                             "preset, or a command with an {adapter} placeholder that serves it as "
                             f"{ADAPTER_NAME!r}")
    argv += shlex.split(args or "")
    return [a.replace("{model}", model).replace("{revision}", revision or "").replace("{adapter}", adapter or "")
            for a in argv]


def check_command(argv: Sequence[str]) -> str:
    """The server executable's full path; a FileNotFoundError that says how to get it when it is missing.

    Also looks next to this Python: `vllm` or `transformers` installed into the same virtual environment must be
    found when that environment is used without being activated (`.venv/bin/python -m fineinstructions ...`)."""
    found = shutil.which(argv[0]) or shutil.which(argv[0], path=str(Path(sys.executable).parent))
    if found is None:
        hint = "pip install 'fineinstructions[vllm]'" if argv[0] == "vllm" else "install it"
        raise FileNotFoundError(f"server command {argv[0]!r} not found on PATH: {hint}, or set llm.server_command")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now. Another process may take it before the server binds it; `start`
    retries with a new port when the server says so."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: str | os.PathLike[str], lines: int = 25, max_bytes: int = 64 << 10) -> str:
    """The last lines of a (possibly huge) log file, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class ManagedServer:
    """One server process: `start()` launches it and waits until `ready_path` answers 200, `stop()` ends it and
    everything it spawned (it runs in its own process group), `alive`/`check_alive()` watch it.

    `argv` may contain `{host}` and `{port}`; with `port=None` a free port is picked at each start, and a start
    that loses the port to another process is retried on a new one.
    """

    def __init__(self, argv: Sequence[str], *, log_path: str | os.PathLike[str], host: str = "127.0.0.1",
                 port: int | None = None, ready_path: str = "/v1/models", startup_timeout: float = 900.0,
                 stop_timeout: float = 30.0, env: dict[str, str] | None = None, start_attempts: int = 3):
        self.argv, self.host, self.fixed_port = list(argv), host, port
        self.log_path = Path(log_path)
        self.ready_path, self.startup_timeout, self.stop_timeout = ready_path, startup_timeout, stop_timeout
        self.env = {**os.environ, **(env or {})}
        self.start_attempts = start_attempts if port is None else 1
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL (`.../v1`)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "ManagedServer":
        self.argv = [check_command(self.argv), *self.argv[1:]]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")
        for attempt in range(1, self.start_attempts + 1):
            try:
                self._spawn(self.fixed_port or free_port(self.host))
                self._wait_ready()
                return self
            except ServerError:
                self.stop()
                if attempt == self.start_attempts or _PORT_CLASH not in log_tail(self.log_path).lower():
                    raise
        raise AssertionError("unreachable")

    def _spawn(self, port: int) -> None:
        self.port = port
        argv = [a.replace("{host}", self.host).replace("{port}", str(port)) for a in self.argv]
        if sys.platform.startswith("linux"):  # dies with this process even when we cannot clean up (see guard)
            argv = [sys.executable, str(_GUARD), str(os.getpid()), *argv]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)

    def _wait_ready(self) -> None:
        url = f"http://{self.host}:{self.port}{self.ready_path}"
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        while True:
            self.check_alive(when="before it was ready")
            try:
                if httpx.get(url, timeout=min(5.0, self.startup_timeout)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise ServerError(self._explain(f"server did not answer GET {url} within "
                                                f"{self.startup_timeout:g}s (raise llm.server_timeout?)"))
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def check_alive(self, when: str = "while serving") -> None:
        if self.process is None:
            raise ServerError("server not started")
        code = self.process.poll()
        if code is not None:
            raise ServerError(self._explain(f"server exited with code {code} {when}"))

    def _explain(self, what: str) -> str:
        return f"{what}: {shlex.join(self.argv[:3])} …; log {self.log_path}, last lines:\n{log_tail(self.log_path)}"

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after `stop_timeout`; then SIGKILL whatever is left of the group
        (children that outlived a leader that exited cleanly are orphans by definition). Safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _served_models(url: str, api_key: str | None) -> list[str]:
    try:
        return check_server(url, api_key=api_key)
    except ConnectionError:
        return []  # a server without /v1/models (ready_path=/health): requests use the configured name


def _request_name(model: str, served: list[str]) -> str:
    """The model name requests must carry: the configured one, unless the server serves exactly one model under
    another name (`--served-model-name`, llama-server's file alias)."""
    return served[0] if model not in served and len(served) == 1 else model


class ManagedServerBackend(LLMBackend):
    """Starts the server when built (so a bad command fails the task's setup, not its first batch) and stops it on
    `close()` or at exit. Keyword arguments not listed go to `OpenAIServerBackend` (concurrency, timeout, ...).

    `model_id` is `openai:{model}` (like the `openai` backend for the same model), so answers cached from an
    external `vllm serve` of the same weights are reused, and vice versa. With an `adapter` the server loads it as
    a LoRA module and every request names it (the base model answers nothing).
    """

    def __init__(self, model: str, *, command: str | Sequence[str] | None = None, server_args: str = "",
                 revision: str | None = None, host: str = "127.0.0.1", port: int | None = None,
                 startup_timeout: float = 900.0, log_dir: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None, ready_path: str = "/v1/models", adapter: str | None = None,
                 **client_kwargs):
        argv = server_argv(command, model, server_args, revision, adapter)
        log_dir = Path(log_dir) if log_dir else cache_home() / "servers"
        log_path = log_dir / f"{Path(argv[0]).name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        self.server = ManagedServer(argv, log_path=log_path, host=host, port=port, ready_path=ready_path,
                                    startup_timeout=startup_timeout, env=env)
        atexit.register(self.close)
        try:
            self.server.start()
            served = _served_models(self.server.url, client_kwargs.get("api_key"))
        except BaseException:
            self.close()
            raise
        client_kwargs.setdefault("model_id", f"openai:{model}" + (f"@{revision}" if revision else ""))
        if adapter and ADAPTER_NAME not in served:
            self.close()
            raise ServerError(f"the server does not serve the adapter as {ADAPTER_NAME!r} (it serves {served})")
        self.client = OpenAIServerBackend(base_url=self.server.url,
                                          model=ADAPTER_NAME if adapter else _request_name(model, served),
                                          **client_kwargs)
        self.model_id = self.client.model_id

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        return self.generate_each(requests, lambda i, c: None)

    def generate_each(self, requests: Sequence[Request], on_result: OnResult) -> list[Completion]:
        """Raises ServerError if the server is or goes down: recorded as per-request failures, a crash would
        mark the task done with every answer missing; as an error, the task fails and a rerun redoes it. Answers
        that came back before it went down were already handed to `on_result` (and so cached)."""
        self.server.check_alive()
        out = self.client.generate_each(requests, on_result)
        self.server.check_alive(when="during a batch")
        return out

    def close(self) -> None:
        self.server.stop()
        atexit.unregister(self.close)
