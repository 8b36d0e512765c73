"""Whole LLM stages against a real OpenAI-compatible server on 127.0.0.1 that fails a third of its requests at
random (500/503, 429 with Retry-After, answers slower than the client's timeout, connection resets, garbage and
cut-off bodies): the stage finishes, every input row comes out exactly once -- produced, or rejected with a reason
(`llm_error` when every retry failed) -- and nothing crashes."""

from __future__ import annotations

import json
import time

import pytest
from llm_stage_helpers import serving, table, write_shard

from fineinstructions import schemas
from fineinstructions.llm import LLMConfig
from fineinstructions.stages.judge import JudgeConfig
from fineinstructions.stages.judge import run as run_judge
from fineinstructions.stages.queries import QueriesConfig
from fineinstructions.stages.queries import run as run_queries
from fineinstructions.stages.templatize import TemplatizeConfig
from fineinstructions.stages.templatize import run as run_templatize
from openai_stub_server import CHAOS

QUERIES = 60
ALWAYS_FAILS = "FAIL500"  # a marker the stub answers with 500 on every attempt: retries run out, llm_error


def flaky_llm(stub) -> LLMConfig:
    """Short timeout (SLOW answers arrive after it) and fast retries, so the test stays bounded."""
    return LLMConfig(backend="openai", base_url=stub.url, model="stub", timeout=0.5, max_retries=3,
                     extra={"backoff": 0.01, "max_backoff": 0.05})


def templatizer_reply(query: str) -> str:
    *head, last = query.split()
    return json.dumps({"template": " ".join(head) + " <fi>thing</fi>",
                       "compatible_document_description": f"A document that mentions a {last}."})


def judge_reply(prompt: str) -> str:
    return "Clear and complete. Score: 5" if "even" in prompt else "Vague. Score: 2"


def assert_every_row_once(out, ids: list[str], id_column: str, summary, allowed: set[str]) -> list[dict]:
    kept, rejected = table(out), table(out, "rejects")
    seen = [r[id_column] for r in kept + rejected]
    assert sorted(seen) == sorted(ids), "every input row is produced or rejected, exactly once"
    assert {r["reason"] for r in rejected} <= allowed
    assert summary.rows_out == len(kept) and sum(summary.rejects.values()) == len(rejected)
    return rejected


def test_templatize_completes_against_a_flaky_server(tmp_path):
    queries = [f"who wrote book {i} of the {w} series" for i, w in enumerate(["first", "second"] * (QUERIES // 2))]
    queries[7] = f"{ALWAYS_FAILS} who wrote this book"
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps({"id": f"q{i}", "query": q}) + "\n" for i, q in enumerate(queries)))
    run_queries(QueriesConfig(input=str(src), output=str(tmp_path / "queries"), tasks=2, progress=False))
    with serving(templatizer_reply) as stub:
        stub.chaos(rate=0.35, seed=7).slow_seconds = 2.0
        start = time.time()
        summary = run_templatize(TemplatizeConfig(input=str(tmp_path / "queries"), output=str(tmp_path / "t"),
                                                  prompt_format="released", tasks=2, batch_size=16,
                                                  llm=flaky_llm(stub), progress=False))
        elapsed = time.time() - start
    assert elapsed < 30
    assert set(stub.injected) == set(CHAOS), stub.injected  # every kind of fault was met
    rejected = assert_every_row_once(tmp_path / "t", [f"q{i}" for i in range(QUERIES)], "query_id", summary,
                                     {"llm_error", "duplicate_template"})
    failed = {r["query_id"]: r["raw_output"] for r in rejected if r["reason"] == "llm_error"}
    assert "q7" in failed and "HTTP 500" in failed["q7"] and "gave up after 3 retries" in failed["q7"]
    # with 4 attempts at a 35 % fault rate, almost every other request gets through
    assert summary.rows_out + summary.rejects.get("duplicate_template", 0) >= QUERIES - 5


def test_judge_completes_against_a_flaky_server(tmp_path):
    rows = [{"pair_id": f"p{i}", "document_id": "d", "template_id": "t", "status": "ok", "grounding": 1.0,
             "instruction": f"question {i} {'even' if i % 2 == 0 else 'odd'}", "answer": f"answer {i}"}
            for i in range(QUERIES)]
    rows[3]["instruction"] = f"{ALWAYS_FAILS} question"
    write_shard(tmp_path / "pairs", schemas.PAIRS, rows)
    with serving(judge_reply) as stub:
        stub.chaos(rate=0.35, seed=11).slow_seconds = 2.0
        start = time.time()
        summary = run_judge(JudgeConfig(input=str(tmp_path / "pairs"), output=str(tmp_path / "j"),
                                        prompt_format="rubric", llm=flaky_llm(stub), progress=False))
        assert time.time() - start < 30
    rejected = assert_every_row_once(tmp_path / "j", [r["pair_id"] for r in rows], "pair_id", summary,
                                     {"llm_error", "low_score"})
    failed = [r for r in rejected if r["reason"] == "llm_error"]
    assert "p3" in {r["pair_id"] for r in failed} and all(r["score"] is None for r in failed)
    assert summary.rejects.get("low_score", 0) >= QUERIES // 2 - 5
    assert summary.llm["sent_requests"] == QUERIES


@pytest.mark.parametrize("fault", CHAOS)
def test_each_fault_alone_is_retried_then_recorded(tmp_path, fault):
    """Every fault kind on its own: an always-failing request ends as a per-row llm_error, never an exception."""
    from fineinstructions.llm.openai_server import OpenAIServerBackend
    from fineinstructions.llm.base import Request, SamplingParams

    with serving(lambda text: "fine") as stub:
        stub.slow_seconds = 2.0
        backend = OpenAIServerBackend(base_url=stub.url, model="stub", timeout=0.3, max_retries=2, backoff=0.01)
        params = SamplingParams(max_tokens=8)
        done = backend.generate([Request.completion(f"{fault} always", params),
                                 Request.completion(f"{fault}x1 once", params)])
    assert not done[0].ok and "gave up after 2 retries" in done[0].error
    assert done[1].ok and done[1].text == "fine"
