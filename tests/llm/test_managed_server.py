"""The `serve` backend's server lifecycle, for real: each test launches stub_server_main.py (a real
OpenAI-compatible HTTP server process) as the configured server command, exactly as `vllm serve` would be."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fineinstructions.errors import UserError
from fineinstructions.llm import LLMConfig, make_backend, preflight
from fineinstructions.llm import managed_server
from fineinstructions.llm.base import Request, SamplingParams
from fineinstructions.llm.managed_server import ManagedServerBackend, ServerError, server_argv

STUB_MAIN = Path(__file__).with_name("stub_server_main.py")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find processes")


def stub_command(*flags: str) -> list[str]:
    return [sys.executable, str(STUB_MAIN), "--host", "{host}", "--port", "{port}", *flags]


def start(tmp_path: Path, *flags: str, **kw) -> ManagedServerBackend:
    kw.setdefault("startup_timeout", 20.0)
    return ManagedServerBackend("stub-model", command=stub_command(*flags), log_dir=tmp_path, max_retries=0,
                                timeout=5.0, **kw)


def logged_pid(log: Path, label: str) -> int:
    """The pid the stub printed as `stub: <label> N`."""
    for line in log.read_text().splitlines():
        if line.startswith(f"stub: {label} "):
            return int(line[len(f"stub: {label} "):].split()[0])
    raise AssertionError(f"no '{label}' line in {log}:\n{log.read_text()}")


def gone(pid: int, within: float = 5.0) -> bool:
    """True once `pid` no longer runs (absent, or a zombie nobody has reaped yet)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def chat(text: str) -> Request:
    return Request.chat([{"role": "user", "content": text}], SamplingParams(max_tokens=16))


@linux_only
def test_starts_answers_logs_and_stops_everything(tmp_path):
    cfg = LLMConfig(backend="serve", model="stub-model", cache=False, max_retries=0, server_timeout=20.0,
                    server_command=shlex.join(stub_command("--startup-delay", "0.3", "--child")),
                    server_log_dir=str(tmp_path))
    preflight(cfg)
    llm = make_backend(cfg)
    try:
        log = llm.log_path
        server_pid, child_pid = logged_pid(log, "pid"), logged_pid(log, "child pid")
        out = llm.generate([chat("hello"), Request.completion("once upon", SamplingParams(max_tokens=16))])
        assert [c.text for c in out] == ["chat:hello", "text:once upon"] and all(c.ok for c in out)
        assert llm.model_id == "openai:stub-model"
        assert log.parent == tmp_path and "stub: serving on" in log.read_text()
        assert log.read_text().startswith("$ ")  # the exact command line heads the log
        url = llm.server.url
    finally:
        llm.close()
    assert gone(server_pid) and gone(child_pid)  # the child ignores SIGTERM: only the group SIGKILL ends it
    assert "stub: stopped on SIGTERM" in log.read_text()  # the server was asked to stop before anything was killed
    with pytest.raises(OSError):
        socket.create_connection((url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1].split("/")[0])), 1)
    llm.close()  # twice is fine


def test_server_that_fails_to_load_is_an_error_with_its_log(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"exited with code 3 before it was ready") as err:
        start(tmp_path, "--fail", "CUDA out of memory while loading weights")
    assert "CUDA out of memory while loading weights" in str(err.value)  # the log tail is in the message
    assert str(tmp_path) in str(err.value)
    assert time.monotonic() - t0 < 10


@linux_only
def test_startup_timeout_stops_the_server(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"did not answer GET .*/v1/models within 1.5s"):
        start(tmp_path, "--startup-delay", "60", startup_timeout=1.5)
    assert time.monotonic() - t0 < 10
    (log,) = tmp_path.glob("*.log")
    assert gone(logged_pid(log, "pid"))


def test_missing_command_is_clear_before_anything_starts(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"server command 'no-such-server' not found on PATH"):
        ManagedServerBackend("m", command="no-such-server --model {model}", log_dir=tmp_path)
    if managed_server.shutil.which("vllm") is None:  # the default command, checked by preflight before any task
        with pytest.raises(UserError, match=r"'vllm' not found on PATH: pip install 'fineinstructions\[vllm\]'"):
            preflight(LLMConfig(backend="serve", model="fineinstructions/query_templatizer"))


def test_server_dying_mid_run_fails_the_batch(tmp_path):
    llm = start(tmp_path, "--die-after", "1.0")
    try:
        assert llm.generate([chat("before")])[0].text == "chat:before"
        deadline = time.monotonic() + 10
        while llm.server.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(ServerError, match=r"exited with code 4 while serving"):
            llm.generate([chat("after")])
    finally:
        llm.close()


def test_port_taken_before_the_server_binds_is_retried_on_another(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: the health check is refused, the server's bind fails
        ports = iter([taken.getsockname()[1]])
        real = managed_server.free_port
        monkeypatch.setattr(managed_server, "free_port", lambda host: next(ports, None) or real(host))
        with start(tmp_path) as llm:
            assert llm.server.port != taken.getsockname()[1]
            assert llm.generate([chat("hi")])[0].text == "chat:hi"
            assert "address already in use" in llm.log_path.read_text().lower()


@linux_only
def test_server_dies_with_a_killed_worker(tmp_path):
    """A worker killed with SIGKILL runs no cleanup at all; the kernel's parent-death signal ends its server."""
    worker = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from fineinstructions.llm.managed_server import ManagedServerBackend\n"
         f"b = ManagedServerBackend('stub-model', command={stub_command()!r}, log_dir={str(tmp_path)!r})\n"
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "ready"
        (log,) = tmp_path.glob("*.log")
        server_pid = logged_pid(log, "pid")
        assert not gone(server_pid, within=0.2)
    finally:
        worker.kill()
        worker.wait()
    assert gone(server_pid)


def test_server_argv_presets_and_placeholders():
    assert server_argv(None, "org/m", "--tensor-parallel-size 2", revision="abc") == [
        "vllm", "serve", "org/m", "--host", "{host}", "--port", "{port}", "--revision", "abc",
        "--tokenizer-revision", "abc", "--tensor-parallel-size", "2"]
    assert server_argv("llama-server", "/w/m.gguf")[:3] == ["llama-server", "--model", "/w/m.gguf"]
    assert server_argv("sglang", "org/m")[1:4] == ["-m", "sglang.launch_server", "--model-path"]
    custom = server_argv("""my-server {model}@{revision} --opts '{"a": 1}'""", "m", revision="r1")
    assert custom == ["my-server", "m@r1", "--opts", '{"a": 1}']  # braces in options pass through
    with pytest.raises(ValueError, match="no {revision} placeholder"):
        server_argv("llama-server", "m", revision="r1")
    with pytest.raises(UserError, match="no {revision} placeholder"):
        preflight(LLMConfig(backend="serve", model="m", revision="r1", server_command="llama-server"))


def adapter_folder(path: Path, r: int) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(f'{{"peft_type": "LORA", "r": {r}}}')
    return path


def test_an_adapter_becomes_vllms_lora_flags_or_an_adapter_placeholder(tmp_path):
    small, big = adapter_folder(tmp_path / "a8", 8), adapter_folder(tmp_path / "a48", 48)
    assert server_argv(None, "org/m", adapter=str(small))[7:] == [
        "--enable-lora", "--lora-modules", f"adapter={small}", "--max-lora-rank", "16"]  # vLLM's default rank cap
    assert server_argv("vllm", "org/m", adapter=str(big))[-1] == "64"  # r rounded up to a rank vLLM accepts
    assert server_argv("my-server {model} --lora {adapter}", "m", adapter="/a") == ["my-server", "m", "--lora", "/a"]
    with pytest.raises(ValueError, match="cannot load one here"):
        server_argv("llama-server", "m.gguf", adapter=str(small))
    with pytest.raises(UserError, match="needs the transformers, vllm or serve backend"):
        preflight(LLMConfig(backend="openai", model="m", adapter=str(small)))
    with pytest.raises(UserError, match="not a PEFT adapter folder"):
        preflight(LLMConfig(backend="vllm", model="m", adapter=str(tmp_path)))


def test_the_serve_backend_sends_every_request_to_the_served_adapter(tmp_path):
    import httpx

    adapter = adapter_folder(tmp_path / "student", 8)
    backend = start(tmp_path, "--lora-modules", "adapter={adapter}", adapter=str(adapter))
    try:
        assert backend.generate([chat("hello"), chat("again")])[0].ok
        stats = httpx.get(backend.server.url.removesuffix("/v1") + "/stub/stats", timeout=5).json()
        assert stats["models"] == {"adapter": 2}
    finally:
        backend.close()
    with pytest.raises(ServerError, match="does not serve the adapter"):  # served under another name
        start(tmp_path, "--lora-modules", "other={adapter}", adapter=str(adapter))
