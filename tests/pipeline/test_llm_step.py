"""`first_passing`: best-of candidates drawn lazily, with the choice eager generation would make."""

from __future__ import annotations

import itertools

from fineinstructions.llm import Completion
from fineinstructions.pipeline.llm_step import first_passing

# input i passes at candidate PASS[i] (None: never)
PASS = {0: 0, 1: 2, 2: None, 3: 1}


def judge(i: int, c: Completion):
    k = int(c.text)
    return {"input": i, "candidate": k}, None if PASS[i] == k else f"fail-{k}"


def test_only_inputs_whose_candidates_failed_get_another_and_the_choice_matches_eager():
    asked: list[tuple[int, int]] = []

    def generate(todo):
        asked.extend(todo)
        return [Completion(text=str(k)) for _, k in todo]

    chosen = first_passing(len(PASS), 3, generate, judge)
    assert asked == [(0, 0), (1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (3, 1), (1, 2), (2, 2)]
    eager = [[judge(i, Completion(text=str(k))) for k in range(3)] for i in PASS]
    expect = [next((o for o in outcomes if o[1] is None), outcomes[0]) for outcomes in eager]
    assert chosen == expect
    assert chosen[2] == ({"input": 2, "candidate": 0}, "fail-0")  # none passed: the greedy one speaks for it


def test_best_of_one_is_one_call():
    calls = itertools.count()
    first_passing(2, 1, lambda todo: (next(calls), [Completion(text="0") for _ in todo])[1], judge)
    assert next(calls) == 1
