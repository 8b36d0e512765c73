"""A real OpenAI-compatible server in the tests: `transformers serve` (Hugging Face's server, from
`transformers[serving]`) on 127.0.0.1, serving the embedded model's de-quantised weights.

* templatize, instantiate and judge through the `openai` backend (4 requests in flight) give the in-process
  backend's outputs at temperature 0;
* the `serve` backend starts and stops `transformers serve` itself (`--llm-server-command transformers`);
* a server killed mid-stage stops the stage with the server's log tail, and the rerun re-sends only the requests
  that never came back (counted in the new server's access log).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from fineinstructions.gold.evaluate import goldeval
from fineinstructions.llm import LLMConfig
from fineinstructions.llm.hf_local import default_model_dir
from fineinstructions.recipe import BY_NAME

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    shutil.which("transformers", path=str(Path(sys.executable).parent)) is None
    or __import__("importlib").util.find_spec("fastapi") is None,
    reason="transformers serve needs transformers[serving] (fastapi, uvicorn)")]

GOLD = Path(__file__).resolve().parents[2] / "data" / "gold" / "dev"
FORMATS = {"templatize": "fewshot-completion", "instantiate": "fewshot-completion", "judge": "rubric-completion"}
BIN = Path(sys.executable).parent / "transformers"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "transformers serve exited while starting"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise TimeoutError("transformers serve did not start")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = default_model_dir()
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    proc = subprocess.Popen([str(BIN), "serve", str(model), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield {"url": f"http://127.0.0.1:{port}/v1", "model": str(model)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def few(stage: str, tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"{stage}.jsonl"
    path.write_text("".join((GOLD / f"{stage}.jsonl").read_text().splitlines(keepends=True)[:n]))
    return path


def predictions(stage: str, llm: LLMConfig, gold: Path, out: Path) -> list[tuple]:
    # a server does not constrain copying; the answer is the LLM's on both paths (retrieval would not test the server)
    extra = {"copy_excerpts": False, "answer_by": "generate"} if stage == "instantiate" else {}
    if stage == "templatize":  # greedy only: sampled candidates are not bit-identical across the two backends
        extra["best_of"] = 1
    cfg = BY_NAME[stage].config(output=str(out), prompt_format=FORMATS[stage], llm=llm, progress=False, **extra)
    goldeval(stage, cfg, str(gold), str(out), progress=False)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    keys = {"templatize": ("template",), "instantiate": ("instruction", "answer"), "judge": ("score",)}[stage]
    return [(r["id"], r["status"], *(r["prediction"].get(k) for k in keys)) for r in rows]


@pytest.mark.parametrize("stage, n", [("templatize", 6), ("instantiate", 3), ("judge", 6)])
def test_the_http_path_gives_the_in_process_outputs(server, tmp_path, stage, n):
    gold = few(stage, tmp_path, n)
    local = predictions(stage, LLMConfig(adapter="none", cache=False), gold, tmp_path / "local")
    served = predictions(stage, LLMConfig(backend="openai", base_url=server["url"], model=server["model"],
                                          concurrency=4, cache=False), gold, tmp_path / "served")
    assert served == local


def stage_args(queries: str, out: Path, cache: Path, model: str) -> list[str]:
    return ["templatize", "--input", queries, "--output", str(out), "--prompt-format", "fewshot-completion",
            "--batch-size", "64", "--llm-backend", "serve", "--llm-server-command", "transformers",
            "--llm-model", model, "--llm-concurrency", "2", "--llm-max-retries", "1", "--llm-timeout", "60",
            "--llm-server-timeout", "180", "--llm-cache-path", str(cache), "--no-progress"]


def served_requests(out: Path) -> list[int]:
    """Completion requests each managed server of the stage answered, from its access logs, oldest first."""
    logs = sorted((out / "logs" / "servers").glob("*.log"), key=lambda p: p.stat().st_mtime)
    return [p.read_text(errors="replace").count('"POST /v1/completions HTTP/1.1" 200') for p in logs]


def test_a_server_killed_mid_stage_stops_it_and_the_rerun_resends_only_the_missing(server, tmp_path):
    from fineinstructions.stages.queries import QueriesConfig
    from fineinstructions.stages.queries import run as queries

    raw = tmp_path / "q.jsonl"
    raw.write_text("".join(json.dumps({"id": f"q{i}", "query": q}) + "\n" for i, q in enumerate(
        [f"what is the capital of {c}" for c in ("france", "italy", "spain", "peru", "chile", "kenya", "japan",
                                                  "egypt", "india", "nepal")])))
    queries(QueriesConfig(input=str(raw), output=str(tmp_path / "queries"), progress=False))
    out, cache = tmp_path / "templatize", tmp_path / "cache.sqlite"
    args = [sys.executable, "-m", "fineinstructions", *stage_args(str(tmp_path / "queries"), out, cache,
                                                                   server["model"])]
    stage = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while True:  # kill the stage's own server once a few answers are in the cache
        assert stage.poll() is None and time.time() < deadline, stage.stderr.read()
        try:
            with sqlite3.connect(cache, timeout=1) as db:
                if db.execute("SELECT COUNT(*) FROM completions").fetchone()[0] >= 3:
                    break
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    log = next((out / "logs" / "servers").glob("*.log"))
    port = log.read_text().split("--port ", 1)[1].split()[0]
    subprocess.run(["pkill", "-KILL", "-f", "--", f"--port {port}"], check=False)
    _, err = stage.communicate(timeout=300)
    assert stage.returncode != 0 and "server exited" in err and "$ " in err  # the reason and the log's tail
    with sqlite3.connect(cache) as db:
        cached = db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    assert 3 <= cached < 10
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    first, second = served_requests(out)
    assert second == 10 - cached  # only what never came back; answers in flight at the kill were never cached
    rows = [r for f in sorted(out.glob("*.parquet")) + sorted((out / "rejects").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    assert len({r["query_id"] for r in rows}) == 10
