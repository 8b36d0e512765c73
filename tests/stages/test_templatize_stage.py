"""Stage templatize: control flow against a real local OpenAI-compatible server, resume after kill -9, and a
real run with the embedded SmolLM2 model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from fineinstructions import schemas
from fineinstructions.errors import UserError
from fineinstructions.llm import Completion, LLMConfig
from fineinstructions.stages.queries import QueriesConfig
from fineinstructions.stages.queries import run as run_queries
from fineinstructions.stages.templatize import Templatizer, TemplatizeConfig, run
from fineinstructions.templates import validate

from llm_stage_helpers import serving, table


def make_queries(tmp_path, queries, shards=1) -> str:
    src = tmp_path / "raw"
    src.mkdir()
    for s in range(shards):
        with open(src / f"q{s}.jsonl", "w") as f:
            for i, q in enumerate(queries[s::shards]):
                f.write(json.dumps({"id": f"q{s}-{i}", "query": q}) + "\n")
    out = tmp_path / "queries"
    run_queries(QueriesConfig(input=str(src), output=str(out), tasks=shards, progress=False))
    return str(out)


def slot_last_word(query: str, delay: float = 0.0) -> str:
    """A deterministic 'model' in the released templatizer's JSON format."""
    time.sleep(delay)
    if "garbage" in query:
        return "Sorry, I can't help with that."
    *head, last = query.split()
    return json.dumps({"template": " ".join(head) + " <fi>thing</fi>",
                       "compatible_document_description": f"A document that mentions a {last}."})


@pytest.fixture
def stub():
    with serving(slot_last_word) as server:
        yield server


def stub_config(stub, queries_dir, out, **kw) -> TemplatizeConfig:
    llm = LLMConfig(backend="openai", base_url=stub.url, model="stub", max_retries=1, timeout=10)
    return TemplatizeConfig(input=queries_dir, output=str(out), prompt_format="released", llm=llm, progress=False, **kw)


def test_validates_dedups_and_records_every_reject(tmp_path, stub):
    queries = ["what is the capital of france", "what is the capital of spain", "please produce garbage now",
               "who wrote the hobbit", "FAIL400 this request", "when did the war of 1812 end"]
    summary = run(stub_config(stub, make_queries(tmp_path, queries), tmp_path / "t", best_of=1))
    kept = table(tmp_path / "t")
    assert [r["template"] for r in kept] == ["what is the capital of <fi>thing</fi>", "who wrote the <fi>thing</fi>",
                                             "when did the war of 1812 <fi>thing</fi>"]
    assert pq.read_schema(next((tmp_path / "t").glob("part-*.parquet"))) == schemas.TEMPLATES
    for r in kept:
        assert r["num_slots"] == 1 and r["model_id"] == "openai:stub" and len(r["prompt_fingerprint"]) == 16
        assert r["alignment"] == 1.0 and r["compatible_document_description"].startswith("A document")
    reasons = {r["query"]: r["reason"] for r in table(tmp_path / "t", "rejects")}
    assert reasons == {"what is the capital of spain": "duplicate_template",
                       "please produce garbage now": "unparseable", "FAIL400 this request": "llm_error"}
    llm_error = next(r for r in table(tmp_path / "t", "rejects") if r["reason"] == "llm_error")
    assert "HTTP 400" in llm_error["raw_output"]
    assert summary.rows_in == 6 and summary.rows_out == 3
    assert summary.llm == {"sent_requests": 6} and summary.tokens["completion"] > 0


def test_rerun_uses_the_cache_and_settings_are_guarded(tmp_path, stub):
    qdir = make_queries(tmp_path, ["who wrote the hobbit", "who painted the mona lisa"])
    run(stub_config(stub, qdir, tmp_path / "t1"))
    sent = len(stub.requests)
    summary = run(stub_config(stub, qdir, tmp_path / "t2"))  # a new output dir, same requests: all cached
    assert len(stub.requests) == sent and summary.llm == {"cached_requests": 2}
    with pytest.raises(UserError, match="other settings.*min_alignment"):
        run(stub_config(stub, qdir, tmp_path / "t2", min_alignment=0.9))


def test_bad_inputs(tmp_path, stub):
    with pytest.raises(UserError, match="run the queries stage first"):
        run(stub_config(stub, str(tmp_path), tmp_path / "t"))
    qdir = make_queries(tmp_path, ["who wrote the hobbit"])
    with pytest.raises(UserError, match="cannot reach"):
        cfg = stub_config(stub, qdir, tmp_path / "t")
        cfg.llm.base_url = "http://127.0.0.1:9/v1"
        run(cfg)
    with pytest.raises(UserError, match="GGUF file not found"):
        run(TemplatizeConfig(input=qdir, output=str(tmp_path / "t"), llm=LLMConfig(model=str(tmp_path / "x.gguf"))))
    with pytest.raises(UserError, match="unknown templatize prompt format"):
        run(TemplatizeConfig(input=qdir, output=str(tmp_path / "t"), prompt_format="nope"))


def test_best_of_keeps_the_first_valid_candidate(tmp_path):
    """Control flow of candidate picking (a scripted backend: this tests selection, not a model)."""

    class Scripted:
        model_id = "scripted"

        def __init__(self, texts):
            self.texts, self.calls = list(texts), 0

        def generate(self, requests):  # candidates come one call per round: greedy, then a sample per failure
            self.calls += 1
            return [Completion(text=self.texts.pop(0)) for _ in requests]

    step = Templatizer(TemplatizeConfig(output=str(tmp_path), prompt_format="released", best_of=3))
    row = {"query_id": "1", "source": "s", "query": "who wrote the hobbit"}
    step.backend = Scripted(["no json", json.dumps({"template": "who wrote <fi>x</fi> and more stuff here",
                                                     "compatible_document_description": "d"}),
                             json.dumps({"template": "who wrote the <fi>book</fi>", "compatible_document_description": "d"})])
    (out, reason), = step.process([row])
    assert reason is None and out["template"] == "who wrote the <fi>book</fi>" and step.backend.calls == 3
    step.backend = Scripted([json.dumps({"template": "who wrote the <fi>book</fi>", "compatible_document_description": "d"})])
    (out, reason), = step.process([row])
    assert reason is None and step.backend.calls == 1  # the greedy one passed: nothing sampled
    step.backend = Scripted(["no json", "still none", "{}"])
    (out, reason), = step.process([row])
    assert reason == "unparseable" and out["raw_output"] == "no json"  # the greedy answer speaks for the query


def test_kill_and_resume_loses_and_duplicates_nothing(tmp_path, stub):
    stub.responder = lambda q: slot_last_word(q, delay=0.05)
    queries = [f"who wrote book number {i} of the series" for i in range(40)] + ["what is garbage 1", "what is garbage 2"]
    qdir = make_queries(tmp_path, queries, shards=4)
    cmd = [sys.executable, "-m", "fineinstructions", "templatize", "--input", qdir, "--prompt-format", "released",
           "--llm-backend", "openai", "--llm-base-url", stub.url, "--llm-model", "stub", "--tasks", "4",
           "--batch-size", "4", "--no-progress"]

    def launch(out, cache):
        env = {**os.environ, "FINEINSTRUCTIONS_CACHE": str(tmp_path / cache)}
        return subprocess.Popen(cmd + ["--output", str(out)], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    assert launch(tmp_path / "clean", "c1").wait(timeout=120) == 0
    proc = launch(tmp_path / "killed", "c2")
    done = tmp_path / "killed" / "logs" / "map" / "completions"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(done.glob("*")) if done.is_dir() else []) < 1:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(done.glob("*")))
    assert 1 <= finished < 4, "the kill should land part-way through the stage"
    sent_before = len(stub.requests)
    rerun = launch(tmp_path / "killed", "c2")
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read()
    resent = len(stub.requests) - sent_before
    assert resent < 42 - 10 * finished + 4  # finished tasks and cached requests are not sent again

    def outcome(folder):
        rows = table(folder) + table(folder, "rejects")
        return sorted((r["query_id"], r.get("template"), r.get("reason")) for r in rows)

    assert outcome(tmp_path / "killed") == outcome(tmp_path / "clean")
    ids = [r["query_id"] for r in table(tmp_path / "killed") + table(tmp_path / "killed", "rejects")]
    assert len(ids) == len(set(ids)) == 42
    assert not list((tmp_path / "killed").rglob("*.tmp"))


@pytest.mark.slow
def test_real_run_with_the_embedded_model(tmp_path, real_queries):
    rows = real_queries(8)
    qdir = make_queries(tmp_path, [r["query"] for r in rows])
    cfg = TemplatizeConfig(input=qdir, output=str(tmp_path / "t"), best_of=2, progress=False,
                           llm=LLMConfig(num_threads=os.cpu_count()))
    summary = run(cfg)
    kept, rejected = table(tmp_path / "t"), table(tmp_path / "t", "rejects")
    assert summary.rows_in == 8 and len(kept) + len(rejected) == 8
    sent = summary.llm["sent_requests"]  # greedy for all 8, a sample only where the greedy one failed
    assert summary.tokens["prompt"] > 0 and 8 + len(rejected) <= sent <= 16
    for r in kept:
        assert validate(r["template"], r["query"]) is None and r["num_slots"] >= 1
        assert r["model_id"].startswith("gguf:SmolLM2-135M-Instruct")
    for r in rejected:
        assert r["reason"] and r["raw_output"] is not None
    again = run(TemplatizeConfig(input=qdir, output=str(tmp_path / "t2"), best_of=2, progress=False))
    assert again.llm == {"cached_requests": sent} and again.rows_out == summary.rows_out
