"""The request cache under kill -9: answers are stored the moment they come back, so a rerun re-sends only the
requests that never came back (at most the ones in flight), and sampled candidates are the same after a resume.
Both against real processes: a stub OpenAI server process with a request counter, and the real embedded model."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fineinstructions.llm.cache import RequestCache, filesystem_type

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from kill_trials import final_rows  # noqa: E402

STUB = Path(__file__).with_name("stub_server_main.py")
QUERIES = [f"what is the capital of country number {i}" for i in range(40)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    """The stub as a separate process (like `vllm serve`): 0.1 s per request, answers like a templatizer."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(STUB), "--port", str(port), "--delay", "0.1", "--reply", "template"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            httpx.get(f"{url}/v1/models", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def stats(url: str) -> dict:
    return httpx.get(f"{url}/stub/stats", timeout=5).json()


def write_queries(tmp_path: Path) -> str:
    from fineinstructions.stages.queries import QueriesConfig, run

    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({"id": f"q{i}", "query": q}) + "\n" for i, q in enumerate(QUERIES)))
    run(QueriesConfig(input=str(raw), output=str(tmp_path / "queries"), progress=False))
    return str(tmp_path / "queries")


def launch(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fineinstructions", *args, "--no-progress"],
                            env={**os.environ, **(env or {})}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_killed_stage_resends_only_the_requests_that_never_came_back(tmp_path, server):
    """All 40 queries go in ONE batch (4 in flight at a time). The stage is SIGKILLed after about a third of the
    answers came back; the rerun must not ask for those again. Before, the cache was written when the whole
    batch was done, so every answer of a killed batch was paid for twice."""
    queries = write_queries(tmp_path)
    args = ["templatize", "--input", queries, "--output", str(tmp_path / "templatize"), "--prompt-format", "released",
            "--batch-size", "64", "--llm-backend", "openai", "--llm-base-url", f"{server}/v1", "--llm-model", "stub",
            "--llm-concurrency", "4", "--llm-cache-path", str(tmp_path / "cache.sqlite")]
    proc = launch(args)
    deadline = time.time() + 120
    while stats(server)["answered"] < 14:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    answered_before_kill = stats(server)["answered"]
    rerun = launch(args)
    _, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err[-2000:]
    seen = stats(server)["seen"]
    assert sorted(seen) == sorted(QUERIES)  # every query was answered in the end
    resent = [q for q, n in seen.items() if n > 1]
    assert len(resent) <= 4, (answered_before_kill, resent)  # at most the requests in flight at the kill
    assert sum(seen.values()) <= len(QUERIES) + 4
    assert len(final_rows(tmp_path / "templatize")) == len(QUERIES)


def test_sampled_candidates_are_the_same_after_a_kill_and_a_resume(tmp_path):
    """The real embedded model, best_of 3 (two sampled candidates per query): killed mid-stage and resumed with
    another --llm-batch-size (a transport setting a resumed run may change), the stage's rows equal those of an
    uninterrupted run. Before, a sampled candidate depended on the batch it was drawn in."""
    queries = write_queries(tmp_path)
    base = ["templatize", "--input", queries, "--prompt-format", "released", "--best-of", "3", "--max-tokens", "24",
            "--batch-size", "5", "--llm-batch-size", "8"]
    clean = launch([*base, "--output", str(tmp_path / "clean")],
                   {"FINEINSTRUCTIONS_CACHE": str(tmp_path / "clean-cache")})
    _, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err[-2000:]
    cache = tmp_path / "killed-cache" / "llm_cache.sqlite"
    env = {"FINEINSTRUCTIONS_CACHE": str(tmp_path / "killed-cache")}
    proc = launch([*base, "--output", str(tmp_path / "killed")], env)
    deadline = time.time() + 600
    while True:  # kill once some, but not all, answers are cached
        assert proc.poll() is None and time.time() < deadline
        try:
            with sqlite3.connect(cache, timeout=1) as db:
                if db.execute("SELECT COUNT(*) FROM completions").fetchone()[0] >= 20:
                    break
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM completions").fetchone()[0] < 3 * len(QUERIES)
    resumed = launch([*base[:-1], "3", "--output", str(tmp_path / "killed")], env)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    assert final_rows(tmp_path / "killed") == final_rows(tmp_path / "clean")


def test_sqlite_uses_a_rollback_journal_on_network_filesystems(tmp_path, monkeypatch):
    assert filesystem_type("/proc") == "proc" and filesystem_type(tmp_path) is not None
    assert RequestCache(tmp_path / "local.sqlite").journal_mode == "WAL"
    monkeypatch.setattr("fineinstructions.llm.cache.filesystem_type", lambda path: "nfs4")
    cache = RequestCache(tmp_path / "shared.sqlite")
    assert cache.journal_mode == "DELETE"
    with sqlite3.connect(tmp_path / "shared.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_on_a_cluster_each_task_keeps_its_cache_under_the_stage_folder(tmp_path):
    from fineinstructions.llm import LLMConfig
    from fineinstructions.stages.templatize import Templatizer, TemplatizeConfig

    for executor, expected in (("local", None), ("slurm", tmp_path / "llm_cache" / "rank-00003.sqlite")):
        step = Templatizer(TemplatizeConfig(output=str(tmp_path), executor=executor, prompt_format="released",
                                            llm=LLMConfig(backend="openai", model="m", base_url="http://127.0.0.1:9")))
        step.setup(3)
        try:
            path = step.backend.cache.path
            assert path == expected if expected else path != tmp_path / "llm_cache" / "rank-00003.sqlite"
        finally:
            step.teardown()
