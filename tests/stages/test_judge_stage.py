"""Stage `judge` against a real local HTTP server whose 'judge' answers in the messy ways real ones do."""

from __future__ import annotations

import re

import pytest
from llm_stage_helpers import serving, stub_llm, table, write_shard

from fineinstructions import schemas
from fineinstructions.errors import UserError
from fineinstructions.prompts import load_format
from fineinstructions.stages.judge import RUBRIC, JudgeConfig, run

VERDICTS = {
    "q-clean": "The answer is complete.\nScore: 5",
    "q-slash": "Mostly fine. Score: 4/5",
    "q-bold": "I would rate this **4**",
    "q-low": "Off-topic. Score: 2",
    "q-prose": "It is hard to say whether this helps.",
    "q-empty": "",
}


def verdict(text: str) -> str:
    return VERDICTS[re.search(r"Instruction: (q-\w+)", text).group(1)]


@pytest.fixture
def stub():
    with serving(verdict) as server:
        yield server


def pairs(tmp_path) -> str:
    rows = [{"pair_id": f"p-{q}", "document_id": "d", "template_id": "t", "instruction": q, "answer": f"answer to {q}",
             "grounding": 1.0, "status": "ok"} for q in VERDICTS]
    return write_shard(tmp_path / "instantiate", schemas.PAIRS, rows)


def test_scores_are_parsed_kept_on_every_row_and_thresholded(tmp_path, stub):
    out = tmp_path / "judge"
    summary = run(JudgeConfig(input=pairs(tmp_path), output=str(out), prompt_format="rubric", llm=stub_llm(stub),
                              progress=False))
    kept = {r["instruction"]: r for r in table(out)}
    rejected = {r["instruction"]: r for r in table(out, "rejects")}
    assert {k: r["score"] for k, r in kept.items()} == {"q-clean": 5, "q-slash": 4, "q-bold": 4}
    assert {k: (r["score"], r["reason"]) for k, r in rejected.items()} == {
        "q-low": (2, "low_score"), "q-prose": (None, "unparseable_score"), "q-empty": (None, "unparseable_score")}
    assert kept["q-slash"]["judgement"] == "Mostly fine. Score: 4/5"  # the raw judgement travels with the row
    assert all(r["judge_model_id"] == "openai:stub" and r["answer"].startswith("answer to") for r in kept.values())
    assert summary.distributions["score"] == {"2": 1, "4": 2, "5": 1}
    assert summary.rows_in == 6 and summary.rows_out == 3
    # the rubric reaches the judge
    system = stub.requests[0]["body"]["messages"][0]["content"]
    assert RUBRIC.splitlines()[0] in system and "{rubric}" not in system


def test_threshold_is_configurable(tmp_path, stub):
    summary = run(JudgeConfig(input=pairs(tmp_path), output=str(tmp_path / "j"), prompt_format="rubric",
                              min_score=2, llm=stub_llm(stub), progress=False))
    assert summary.rows_out == 4
    with pytest.raises(UserError, match="--min-score"):
        run(JudgeConfig(input=pairs(tmp_path), output=str(tmp_path / "x"), min_score=6))


@pytest.mark.parametrize("name", ["rubric", "rubric-completion", "flow-judge"])
def test_judge_formats_render_the_pair_and_rubric(name):
    fmt = load_format("judge", name)
    req = fmt.render({"instruction": "who designed {it}", "answer": "Gustave Eiffel", "rubric": RUBRIC})
    text = req.prompt if fmt.mode == "completion" else "\n".join(m["content"] for m in req.messages)
    assert "who designed {it}" in text and "Gustave Eiffel" in text and "5 = the answer fully addresses" in text


#: every reply shape the README promises to read, as the judge's whole reply, with the score it must give
REPLY_SHAPES = {
    "q-label": ("Clear and complete.\nScore: 4/5", 4),
    "q-bold": ("I would rate this **4**", 4),
    "q-flow": ("<feedback>Good.</feedback>\n<score>5</score>", 5),
    "q-json": ('{"score": 4}', 4),
    "q-jsonstr": ('{"score": "5", "why": "complete"}', 5),
    "q-jsonfloat": ('{"score": 3.0}', 3),
    "q-word": ("Solid answer; I would give it a four.", 4),
    "q-range": ('{"score": 7}', None),
    "q-list": ('{"score": [4]}', None),
}


@pytest.mark.parametrize("fmt", ["rubric", "rubric-completion", "flow-judge", "json"])
def test_every_documented_reply_shape_goes_through_the_stage(tmp_path, fmt):
    """`{"score": 4}` under a JSON judge format used to crash the stage (parse_score called .split() on the int),
    and the cached reply crashed every rerun. Each format must read every shape -- and a rerun from the cache too."""
    if fmt == "json":  # a user's own JSON judge format: the score arrives as a parsed JSON value
        path = tmp_path / "judge-json.yaml"
        path.write_text('name: judge-json\nmode: chat\nparser: json\nfields: {score: score}\n'
                        'system: "Rate 1-5 with {rubric}. Reply with JSON."\nuser: "Instruction: {instruction}"\n')
        fmt = str(path)
    rows = [{"pair_id": f"p-{q}", "document_id": "d", "template_id": "t", "instruction": q, "answer": f"a {q}",
             "grounding": 1.0, "status": "ok"} for q in REPLY_SHAPES]
    shard = write_shard(tmp_path / "instantiate", schemas.PAIRS, rows)
    one_line = fmt == "rubric-completion"  # its stop string is "\n": a completion judge answers on one line
    with serving(lambda text: (lambda r: r.replace("\n", " ") if one_line else r)(
            REPLY_SHAPES[re.search(r"(q-\w+)", text).group(1)][0])) as server:
        llm = stub_llm(server)
        llm.cache_path = str(tmp_path / "cache.sqlite")
        for attempt in ("fresh", "from cache"):
            out = tmp_path / f"judge-{attempt.replace(' ', '-')}"
            summary = run(JudgeConfig(input=shard, output=str(out), prompt_format=fmt, llm=llm, progress=False,
                                      min_score=1, max_tokens=64))  # rubric-completion's own cap is 4 words
            scores = {r["instruction"]: r["score"] for r in table(out) + table(out, "rejects")}
            assert scores == {q: want for q, (_, want) in REPLY_SHAPES.items()}, attempt
            assert summary.rejects == {"unparseable_score": 2}
        assert summary.llm.get("cached_requests") == len(REPLY_SHAPES)


def test_a_classifier_judge_scores_every_pair_without_an_llm(tmp_path):
    """The shipped judge student is a classifier (real MiniLM features): no LLM is reached -- the configured server
    does not exist -- every pair gets a score, the expected score is the judgement, and the threshold applies."""
    from fineinstructions.llm import LLMConfig, student_path

    rows = [{"pair_id": "good", "instruction": "who painted the ceiling of the Sistine Chapel",
             "answer": "The ceiling of the Sistine Chapel in Vatican City was painted by Michelangelo Buonarroti "
                       "between 1508 and 1512.", "status": "ok"},
            {"pair_id": "echo", "instruction": "who painted the ceiling of the Sistine Chapel",
             "answer": "Who painted the ceiling of the Sistine Chapel?", "status": "ok"},
            {"pair_id": "unfilled", "instruction": "how long does it take to boil <fi>a vegetable</fi>",
             "answer": "Potatoes were first grown in the Andes.", "status": "ok"}]
    src = write_shard(tmp_path / "instantiate", schemas.PAIRS, [{"document_id": "d", "template_id": "t", **r}
                                                                for r in rows])
    nowhere = LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", adapter=str(student_path("judge")))
    summary = run(JudgeConfig(input=src, output=str(tmp_path / "j"), llm=nowhere, progress=False, min_score=1))
    judged = {r["pair_id"]: r for r in table(tmp_path / "j")}
    assert set(judged) == {"good", "echo", "unfilled"} and summary.rows_out == 3
    expected = {k: float(r["judgement"].split()[-1]) for k, r in judged.items()}
    assert all(r["judgement"].startswith("expected score ") and 1 <= r["score"] <= 5 for r in judged.values())
    assert expected["good"] > expected["echo"] and expected["good"] > expected["unfilled"]
    assert judged["good"]["judge_model_id"].startswith("judge-classifier:")
    strict = run(JudgeConfig(input=src, output=str(tmp_path / "k"), llm=nowhere, progress=False))
    assert strict.rows_out == sum(r["score"] >= 4 for r in judged.values())
