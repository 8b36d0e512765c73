"""AlpacaEval-style head-to-head comparison: an LLM judge picks the better of two models' answers.

Judges favour whichever answer they read first (or second), so every query is judged twice with the positions
swapped; only a preference that survives the swap counts as a win. The judge is any backend of the package's LLM
layer (`fineinstructions.llm`), so the same code runs with the embedded CPU model or a vLLM / OpenAI-compatible
server.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fineinstructions.llm import Completion, LLMBackend, Request, SamplingParams

JUDGE_SYSTEM = (
    "You are a careful, impartial judge. You are shown an instruction and two answers to it, Answer A and "
    "Answer B. Decide which answer better answers the instruction: it is correct, helpful and to the point. "
    "Ignore the order the answers are shown in and their length. Reply with exactly one letter: A or B."
)

_JUDGE_USER = (
    "Instruction:\n{query}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\nWhich answer is better? Reply A or B."
)

# the whole reply is the letter, maybe in markup ("B", "**A**", "(B)"), or it leads the reply ("A. Because ...")
_LEADING = re.compile(r"^[\W_]*([AB])(?:[\W_]*$|[.:)\]*]|\s*\n)")
# a labelled letter: "Answer A", "Output (B)", "response: A"; the letter itself must be upper case
_LABELLED = re.compile(r"\b(?:answer|output|response|option|assistant)\s*[:(\[]?\s*((?-i:[AB]))\b", re.IGNORECASE)
# any upper-case A or B standing alone ("I prefer A.")
_BARE = re.compile(r"(?<![A-Za-z0-9])([AB])(?![A-Za-z0-9])")


def parse_preference(text: str) -> str | None:
    """"A" or "B" from a judge reply, or None when the reply names both or neither.

    Tried from most to least specific, so "Answer B is better than answer A" is ambiguous (None) while
    "A. Answer B misses the date" is A. A capitalised article ("A good answer ...") counts as a bare letter,
    which at worst turns a reply into None, never into the wrong letter when the other one is named too."""
    text = text.strip()
    leading = _LEADING.match(text)
    if leading:
        return leading.group(1)
    flat = " ".join(text.split())  # `\s*[:(\[]?\s*` backtracks quadratically over a long whitespace run
    for pattern in (_LABELLED, _BARE):
        letters = set(pattern.findall(flat))
        if len(letters) == 1:
            return letters.pop()
        if letters:
            return None
    return None


def _judge_request(query: str, first: str, second: str, max_tokens: int) -> Request:
    user = _JUDGE_USER.format(query=query, first=first, second=second)
    messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]
    return Request.chat(messages, SamplingParams(max_tokens=max_tokens, temperature=0.0))


def _vote(completion: Completion, a_shown_first: bool) -> str | None:
    """Which original answer ("a" or "b") a judgement prefers; None for a failed or unparseable one."""
    letter = parse_preference(completion.text) if completion.ok else None
    if letter is None:
        return None
    return "a" if (letter == "A") == a_shown_first else "b"


def pairwise_win_rate(
    backend: LLMBackend, queries: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str], max_tokens: int = 8
) -> dict:
    """Judge answers_a against answers_b on each query, in both orders.

    A query is a win for A when A is preferred in both orders, a win for B likewise, a tie when the two readable
    judgements disagree, and `unreadable` when either judgement failed or named no single answer: whether a
    preference survives the swap is then unknown, and counting it as a tie would pull the win rate towards 50 %.
    win_rate_a (a tie is half a win) and position_consistency (the share of queries whose two judgements agree,
    a check on the judge: one that always picks the first position scores 0) are over the readable queries only,
    None when there are none; `unreadable_rate` says how much of the sample that left out."""
    if not len(queries) == len(answers_a) == len(answers_b):
        raise ValueError(f"need one answer per query: {len(queries)} queries, {len(answers_a)} A, {len(answers_b)} B")
    if not queries:
        raise ValueError("no queries to judge")
    requests = []
    for query, a, b in zip(queries, answers_a, answers_b):
        requests += [_judge_request(query, a, b, max_tokens), _judge_request(query, b, a, max_tokens)]
    completions = backend.generate(requests)
    votes = [(_vote(completions[2 * i], True), _vote(completions[2 * i + 1], False)) for i in range(len(queries))]
    readable = [v for v in votes if None not in v]
    wins_a = sum(v == ("a", "a") for v in readable)
    wins_b = sum(v == ("b", "b") for v in readable)
    ties = len(readable) - wins_a - wins_b
    n, judged = len(votes), len(readable)
    return {
        "n": n,
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": ties,
        "unreadable": n - judged,
        "unreadable_rate": (n - judged) / n,
        "win_rate_a": (wins_a + 0.5 * ties) / judged if judged else None,
        "position_consistency": (wins_a + wins_b) / judged if judged else None,
    }
