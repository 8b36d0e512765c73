import pytest

from fineinstructions.evaluate.pairwise import JUDGE_SYSTEM, pairwise_win_rate, parse_preference
from fineinstructions.llm.base import Completion


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
        "n": 4, "wins_a": 0, "wins_b": 0, "ties": 4, "unparseable": 0, "win_rate_a": 0.5, "position_consistency": 0.0,
    }
    assert len(judge.requests) == 8
    assert judge.requests[0].messages[0]["content"] == JUDGE_SYSTEM
    assert [_shown_answers(r) for r in judge.requests[:2]] == [("a1", "b1"), ("b1", "a1")]
    assert judge.requests[0].params.temperature == 0.0


def test_judge_preferring_good_answers_counts_wins():
    answers_a = ["good one", "bad", "good", "meh"]
    answers_b = ["bad", "good!", "also good", "meh too"]
    result = pairwise_win_rate(ScriptedJudge(_prefers_good), QUERIES, answers_a, answers_b, max_tokens=4)
    # q1: A wins; q2: B wins; q3: both good -> first position each time -> tie; q4: neither -> unparseable tie
    assert result["wins_a"] == 1 and result["wins_b"] == 1 and result["ties"] == 2
    assert result["unparseable"] == 1
    assert result["win_rate_a"] == pytest.approx((1 + 0.5 * 2) / 4)
    assert result["position_consistency"] == pytest.approx(0.5)


def test_failed_judgements_are_ties_not_crashes():
    judge = ScriptedJudge(lambda first, second: Completion.failed("server down"))
    result = pairwise_win_rate(judge, ["q"], ["a"], ["b"])
    assert result["ties"] == 1 and result["unparseable"] == 1 and result["win_rate_a"] == 0.5


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
