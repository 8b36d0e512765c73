import sys
from pathlib import Path

import pytest

from fineinstructions.evaluate.pairwise import JUDGE_SYSTEM, pairwise_win_rate, parse_preference
from fineinstructions.llm.base import Completion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
from llm_stage_helpers import serving, stub_llm


def _shown_answers(request) -> tuple[str, str]:
    user = request.messages[-1]["content"]
    first = user.split("Answer A:\n", 1)[1].split("\n\nAnswer B:\n", 1)[0]
    second = user.split("\n\nAnswer B:\n", 1)[1].split("\n\n", 1)[0]
    return first, second


class ScriptedJudge:
    """Answers each judge request with `reply(first_answer, second_answer)` and records the requests."""

    def __init__(self, reply):
        self.reply = reply
        self.requests = []

    def generate(self, requests):
        self.requests += list(requests)
        return [self.reply(*_shown_answers(r)) for r in requests]


def _prefers_first(first, second):
    return Completion(text="A")


def _prefers_good(first, second):
    return Completion(text="**A**" if "good" in first else "Answer B" if "good" in second else "no idea")


QUERIES = ["q1", "q2", "q3", "q4"]


def test_position_biased_judge_gives_only_ties():
    judge = ScriptedJudge(_prefers_first)
    result = pairwise_win_rate(judge, QUERIES, ["a1", "a2", "a3", "a4"], ["b1", "b2", "b3", "b4"])
    assert result == {
        "n": 4, "wins_a": 0, "wins_b": 0, "ties": 4, "unreadable": 0, "unreadable_rate": 0.0, "win_rate_a": 0.5,
        "position_consistency": 0.0,
    }
    assert len(judge.requests) == 8
    assert judge.requests[0].messages[0]["content"] == JUDGE_SYSTEM
    assert [_shown_answers(r) for r in judge.requests[:2]] == [("a1", "b1"), ("b1", "a1")]
    assert judge.requests[0].params.temperature == 0.0


def test_judge_preferring_good_answers_counts_wins():
    answers_a = ["good one", "bad", "good", "meh"]
    answers_b = ["bad", "good!", "also good", "meh too"]
    result = pairwise_win_rate(ScriptedJudge(_prefers_good), QUERIES, answers_a, answers_b, max_tokens=4)
    # q1: A wins; q2: B wins; q3: both good -> first position each time -> tie; q4: neither -> unreadable
    assert result["wins_a"] == 1 and result["wins_b"] == 1 and result["ties"] == 1
    assert result["unreadable"] == 1 and result["unreadable_rate"] == 0.25
    assert result["win_rate_a"] == pytest.approx((1 + 0.5 * 1) / 3)  # over the 3 readable queries
    assert result["position_consistency"] == pytest.approx(2 / 3)


def test_failed_judgements_are_unreadable_not_ties_nor_crashes():
    judge = ScriptedJudge(lambda first, second: Completion.failed("server down"))
    result = pairwise_win_rate(judge, ["q"], ["a"], ["b"])
    assert result["ties"] == 0 and result["unreadable"] == 1 and result["unreadable_rate"] == 1.0
    assert result["win_rate_a"] is None and result["position_consistency"] is None


def test_unreadable_judgements_through_a_real_http_judge_do_not_pull_the_win_rate_to_half():
    """A real OpenAI-compatible server as the judge: it prefers the correct answer, except on two questions where
    it rambles without naming a letter in one of the two orders. Those questions are unreadable, not ties: A
    won every question the judge decided, so its win rate is 1.0, not (3 + 0.5 x 2) / 5 = 0.8."""
    from fineinstructions.stages.evaluate import judge_backend

    def judge(text: str) -> str:
        first = text.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
        if "rambling" in text and first.startswith("wrong"):
            return "Both have merit; it depends on what the user wants."
        return "A" if first.startswith("right") else "B"

    queries = ["q1", "q2", "q3 rambling", "q4", "q5 rambling"]
    with serving(judge) as stub:
        backend = judge_backend(stub_llm(stub))
        try:
            result = pairwise_win_rate(backend, queries, [f"right {i}" for i in range(5)],
                                       [f"wrong {i}" for i in range(5)])
        finally:
            backend.close()
    assert result["n"] == 5 and result["wins_a"] == 3 and result["wins_b"] == result["ties"] == 0
    assert result["unreadable"] == 2 and result["unreadable_rate"] == pytest.approx(0.4)
    assert result["win_rate_a"] == 1.0 and result["position_consistency"] == 1.0


def test_mismatched_or_empty_inputs_are_rejected():
    with pytest.raises(ValueError, match="one answer per query"):
        pairwise_win_rate(ScriptedJudge(_prefers_first), ["q1", "q2"], ["a"], ["b", "c"])
    with pytest.raises(ValueError, match="no queries"):
        pairwise_win_rate(ScriptedJudge(_prefers_first), [], [], [])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A", "A"),
        ("B", "B"),
        (" Answer A", "A"),
        ("**B**", "B"),
        ("Output (B)", "B"),
        ("I prefer A.", "A"),
        ("(A)", "A"),
        ("A. Answer B misses the date.", "A"),
        ("B\n\nAnswer A is wrong.", "B"),
        ("The better one is Answer (B).", "B"),
        ("A and B are equally good", None),
        ("Answer B is better than answer A", None),
        ("Neither answer is right", None),
        ("", None),
    ],
)
def test_parse_preference(text, expected):
    assert parse_preference(text) == expected
