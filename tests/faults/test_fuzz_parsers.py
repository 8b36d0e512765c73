"""Hostile LLM replies through every parser and every LLM stage's reply handling: nothing raises, and every
stage-level outcome is either accepted or a reject with a known reason, counted.

Replies are built by Hypothesis from the pieces models actually get wrong: JSON cut off mid-way or wrapped in prose,
`<fi>` tags unbalanced, nested or mangled, `<excerpt>` tags pointing nowhere, empty or control-character soup,
all of unicode. 1 MB replies go through the same functions from a fixed list (Hypothesis cannot draw them fast).
Runs derandomized, so CI sees the same >= 10k replies every time.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fineinstructions.evaluate.pairwise import parse_preference
from fineinstructions.excerpts import REASONS as EXCERPT_REASONS
from fineinstructions.excerpts import close_open_excerpt, expand_excerpts, seed_words
from fineinstructions.llm import Completion, LLMConfig
from fineinstructions.parsing import extract_json_object, is_null_answer, parse_score
from fineinstructions.prompts import available, load_format
from fineinstructions.stages.instantiate import InstantiateConfig, Instantiator
from fineinstructions.stages.judge import JudgeConfig, Judge
from fineinstructions.stages.rephrase import RephraseConfig, Rephraser
from fineinstructions.pipeline.llm_step import first_passing
from fineinstructions.stages.templatize import TemplatizeConfig, Templatizer
from fineinstructions.templates import slots, tag_problem, validate

QUERY = "who wrote the novel war and peace"
TEMPLATE = "who wrote the <fi>type of book</fi> <fi>title</fi>"
DOCUMENT = ("War and Peace is a novel by the Russian author Leo Tolstoy. It was published serially, then in its "
            "entirety in 1869. The novel chronicles the French invasion of Russia. Tolstoy said it was not a novel.")

TAG_REASONS = {"empty_template", "malformed_tag", "unbalanced_tags", "no_slot", "empty_slot", "slot_too_long"}
#: every reject reason each stage can give a reply; anything else is a bug
KNOWN = {
    "templatize": {"llm_error", "truncated", "unparseable", "missing_template", "missing_description",
                   "tag_in_description", "same_as_query", "slot_not_generic", "no_fixed_text", "not_aligned",
                   "slot_replaces_nothing"} | TAG_REASONS,
    "instantiate": {"llm_error", "null", "truncated", "unparseable", "missing_instruction", "missing_answer",
                    "unfilled_slot", "excerpt_in_instruction", "slot_description_copied", "low_grounding",
                    } | set(EXCERPT_REASONS),
    "judge": {"llm_error", "unparseable_score", "low_score"},
    "rephrase": {"llm_error", "empty"},
}
FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

# -- hostile replies ----------------------------------------------------------------------------------------------

_PIECES = [
    "<fi>", "</fi>", "<fi >", "< /fi>", "<FI>", "<fi", "fi>", "</fi", "<fi><fi>", "</fi></fi>",
    "<excerpt>", "</excerpt>", "<Excerpt >", "</ excerpt>", "<...>", "<…>", "<..>", "<....>",
    "{", "}", "[", "]", '"', ":", ",", "\\", "\\u", "```", "```json", "null", "None", "true", "1e999", "NaN",
    "Template:", "Document:", "Instruction:", "Answer:", "Score:", "<score>", "</score>", "score", "A", "B",
    "1", "3", "5", "7", "4/5", "**4**", "five", "\n", "\t", "\r", "\x00", "\x1b[31m", "\u202e", "\ufeff",
    "\ud7ff", "😀", "é", "ß", "字", " ", "  ", "...", "…", "—", "“", "”",
    *QUERY.split(), *DOCUMENT.split()[:40], "Leo Tolstoy", "War and Peace", "the French invasion of Russia",
]
JSON_KEYS = ["template", "compatible_document_description", "instruction", "instantiated_instruction", "answer",
             "score", "text", "feedback", ""]

soup = st.lists(st.sampled_from(_PIECES), max_size=16).map("".join)
json_leaf = st.one_of(soup, st.none(), st.integers(-9, 99), st.floats(), st.lists(soup, max_size=2),
                      st.dictionaries(st.sampled_from(JSON_KEYS), soup, max_size=2))


@st.composite
def json_reply(draw) -> str:
    """A JSON object with the keys the formats look for, then maybe cut off, fenced, wrapped in prose or doubled."""
    text = json.dumps(draw(st.dictionaries(st.sampled_from(JSON_KEYS), json_leaf, max_size=3)),
                      ensure_ascii=draw(st.booleans()))
    cut = draw(st.integers(0, len(text)))
    mangle = draw(st.sampled_from([lambda t: t, lambda t: t[:cut], lambda t: t[cut:], lambda t: f"```json\n{t}\n```",
                                   lambda t: f"Sure! {t} Hope it helps.", lambda t: t + t,
                                   lambda t: t.replace('"', "'"), lambda t: "null"]))
    return mangle(text)


labelled = st.lists(st.tuples(st.sampled_from(["Template:", "Document:", "Instruction:", "Answer:", "Score:",
                                               "<score>", "Conversation:", ""]), soup),
                    max_size=3).map(lambda lines: "\n".join(f"{label} {value}" for label, value in lines))
GOOD = [  # well-formed answers of each stage, so the accept path is fuzzed too (alone, or spliced into soup)
    json.dumps({"template": "who wrote the <fi>type of work</fi> war and peace",
                "compatible_document_description": "A document about a novel."}),
    "Template: who wrote the novel <fi>title</fi>\nDocument: A text about a novel.",
    json.dumps({"instruction": "who wrote the novel War and Peace",
                "answer": "<excerpt>War and Peace is<...>Leo Tolstoy.</excerpt>"}),
    "Instruction: who wrote the novel War and Peace\nAnswer: <excerpt>War and Peace<...>author Leo Tolstoy.",
    "The answer is complete. Score: 5", "<score>4</score>", "Q: Who wrote it?\nA: Tolstoy.",
]
replies = st.one_of(json_reply(), soup, labelled, st.text(max_size=40), st.sampled_from(["", " ", "\n\n", "null"]),
                    st.sampled_from(GOOD), st.tuples(st.sampled_from(GOOD), soup).map("".join))
completions = st.builds(
    lambda text, finish, failed: Completion(text=text, finish_reason="error" if failed else finish,
                                            error="HTTP 500 from stub: injected" if failed else None),
    replies, st.sampled_from(["stop", "length"]), st.integers(0, 9).map(lambda n: n == 0),
)
#: replies per Hypothesis example: a batch, as the stages get them (and far cheaper to draw than one at a time)
BATCH = dict(min_size=5, max_size=8)

HUGE = [  # 1 MB runaway outputs: repetition loops, unclosed structures, whitespace floods
    "{" * 1_000_000, '{"a":' * 200_000, "<fi>" * 250_000, "<excerpt>War<...>" + "and " * 250_000,
    "Score:" + " " * 1_000_000, "answer" + "\n" * 1_000_000 + "A", "\x00" * 1_000_000,
    json.dumps({"instruction": "who wrote war and peace", "answer": "<excerpt>Leo<...>Tolstoy</excerpt> " * 30_000}),
]

# -- the functions under test -------------------------------------------------------------------------------------

FORMATS = {stage: [load_format(stage, name) for name in available(stage)]
           for stage in ("templatize", "instantiate", "judge", "rephrase")}


def every_parser(text: str) -> None:
    """Each pure parser of the package on one reply: must return, never raise."""
    extract_json_object(text)
    is_null_answer(text)
    parse_score(text)
    parse_preference(text)
    slots(text)
    tag_problem(text)
    validate(text, QUERY)
    expansion = expand_excerpts(close_open_excerpt(text), DOCUMENT)
    assert expansion.reason in (None, *EXCERPT_REASONS)
    seed_words(DOCUMENT, text)
    for formats in FORMATS.values():
        for fmt in formats:
            parsed = fmt.parse(text)
            assert parsed is None or set(parsed) == set(fmt.fields)


class Scripted:
    """A backend that answers with the given completions, in order (the replies are what is tested here)."""

    model_id = "scripted"

    def __init__(self, completions: list[Completion]):
        self.completions = completions

    def generate(self, requests):
        assert len(requests) == len(self.completions)
        return list(self.completions)

    def close(self):
        pass


LLM = LLMConfig(backend="openai", model="fuzz")


@functools.cache
def templatizer(fmt: str) -> Templatizer:
    step = Templatizer(TemplatizeConfig(output="unused", prompt_format=fmt, llm=LLM))
    step.backend = Scripted([])
    return step


def templatize_outcomes(fmt: str, batch: list[Completion]) -> list[str | None]:
    """Each reply as one candidate (`judge_candidate`), and the batch as best-of candidates of one query
    (`first_passing`, then `output_row`)."""
    row = {"query_id": "q", "source": "s", "query": QUERY}
    step = templatizer(fmt)
    outcomes = [step.judge_candidate(row, c) for c in batch]
    chosen, = first_passing(1, len(batch), lambda todo: [batch[k] for _, k in todo],
                            lambda _, c: step.judge_candidate(row, c))
    picked, reason = step.output_row(row, chosen)
    assert reason == next((r for _, r in outcomes if r is None), outcomes[0][1])
    if reason is None:
        assert validate(picked["template"], QUERY) is None and picked["num_slots"] >= 1
    return [reason for _, reason in outcomes]


@functools.cache
def instantiator(fmt: str) -> Instantiator:
    return Instantiator(InstantiateConfig(output="unused", prompt_format=fmt, llm=LLM), k=5)


def instantiate_outcomes(fmt: str, batch: list[Completion]) -> list[str | None]:
    base = {"pair_id": "p", "document_id": "d", "template_id": "t", "template": TEMPLATE, "model_id": "m"}
    out = []
    for c in batch:
        row, reason = instantiator(fmt).evaluate(c, base, DOCUMENT)
        if reason is None:
            assert 0.8 <= row["grounding"] <= 1.0 and row["answer"] and row["instruction"]
        out.append(reason)
    return out


@functools.cache
def judge(fmt: str) -> Judge:
    return Judge(JudgeConfig(output="unused", prompt_format=fmt, llm=LLM))


def judge_outcomes(fmt: str, batch: list[Completion]) -> list[str | None]:
    step = judge(fmt)
    step.backend = Scripted(batch)
    rows = [{"pair_id": f"p{i}", "instruction": "who wrote war and peace", "answer": "Leo Tolstoy"}
            for i in range(len(batch))]
    outcomes = list(step.process(rows))
    for row, reason in outcomes:
        assert (row["score"] is None) == (reason in ("llm_error", "unparseable_score"))
    return [reason for _, reason in outcomes]


@functools.cache
def rephraser(fmt: str) -> Rephraser:
    return Rephraser(RephraseConfig(output="unused", prompt_format=fmt, chunk_chars=100_000, llm=LLM))


def rephrase_outcomes(fmt: str, batch: list[Completion]) -> list[str | None]:
    step = rephraser(fmt)
    step.backend = Scripted(batch)
    rows = [{"document_id": f"d{i}", "text": DOCUMENT} for i in range(len(batch))]
    return [reason for _, reason in step.process(rows)]


STAGES: dict[str, Callable[[str, list[Completion]], list[str | None]]] = {
    "templatize": templatize_outcomes, "instantiate": instantiate_outcomes, "judge": judge_outcomes,
    "rephrase": rephrase_outcomes,
}

# -- the tests -----------------------------------------------------------------------------------------------------
#: examples per test; each brings >= BATCH["min_size"] replies, so the file sends >= 5 x 400 x 5 = 10,000 replies
EXAMPLES = 400


def test_every_parser_survives_hostile_replies():
    seen = Counter()

    @settings(FUZZ, max_examples=EXAMPLES)
    @given(st.lists(replies, **BATCH))
    def check(texts):
        for text in texts:
            every_parser(text)
        seen["replies"] += len(texts)

    check()
    assert seen["replies"] >= EXAMPLES * BATCH["min_size"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_outcome_is_accepted_or_a_known_reject(stage):
    """Replies (and failed requests) through the stage's own reply handling, for each of its bundled formats."""
    counts: Counter[str] = Counter()
    fed = Counter()

    @settings(FUZZ, max_examples=EXAMPLES)
    @given(st.sampled_from(available(stage)), st.lists(completions, **BATCH))
    def check(fmt, batch):
        outcomes = STAGES[stage](fmt, batch)
        assert len(outcomes) == len(batch)  # one outcome per reply: nothing dropped, nothing doubled
        fed["replies"] += len(batch)
        counts.update("accepted" if reason is None else reason for reason in outcomes)

    check()
    rejects = {k: v for k, v in counts.items() if k != "accepted"}
    assert set(rejects) <= KNOWN[stage], set(rejects) - KNOWN[stage]
    assert counts["accepted"] + sum(rejects.values()) == fed["replies"] >= EXAMPLES * BATCH["min_size"]
    assert "llm_error" in rejects and len(rejects) >= 2, counts
    print(stage, dict(counts))


@pytest.mark.parametrize("text", HUGE, ids=range(len(HUGE)))
def test_one_megabyte_replies_are_bounded_work(text):
    import time

    start = time.time()
    every_parser(text)
    for stage, outcomes in STAGES.items():
        for fmt in available(stage):
            (reason, *_) = outcomes(fmt, [Completion(text=text, finish_reason="length")])
            assert reason is None or reason in KNOWN[stage]
    assert time.time() - start < 20
