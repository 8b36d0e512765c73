import random
from collections import Counter

import pytest

from fineinstructions.sampling import Candidate, draw, slot_distribution


def bank(per_slot: dict[int, int]) -> list[Candidate]:
    return [Candidate(f"t{s}-{i}", s, 0.9, 0) for s, n in per_slot.items() for i in range(n)]


def test_slot_distribution():
    assert slot_distribution([1, 1, 2, 3]) == {1: 0.5, 2: 0.25, 3: 0.25}
    with pytest.raises(ValueError):
        slot_distribution([])


def test_10k_draws_follow_the_target_even_when_candidates_are_skewed():
    target = {1: 0.5, 2: 0.3, 3: 0.15, 4: 0.05}
    # retrieval is biased: many-slot templates dominate the candidates
    candidates = bank({1: 5, 2: 10, 3: 40, 4: 80})
    rng = random.Random(0)
    hist = Counter(c.num_slots for _ in range(10_000) for c in draw(candidates, 1, target, rng))
    for s, p in target.items():
        assert abs(hist[s] / 10_000 - p) < 0.02, (s, hist)
    # uniform picking would have given ~0.6 for 4 slots
    assert hist[4] / 10_000 < 0.08


def test_no_template_twice_and_fewer_candidates_than_n():
    rng = random.Random(1)
    candidates = bank({1: 2, 2: 1})
    out = draw(candidates, 6, {1: 0.5, 2: 0.5}, rng)
    assert len(out) == 3 and len({c.template_id for c in out}) == 3
    assert draw([], 6, {1: 1.0}, rng) == []


def test_unknown_slot_counts_fall_back_to_uniform():
    out = draw(bank({7: 3}), 2, {1: 1.0}, random.Random(2))
    assert len(out) == 2 and all(c.num_slots == 7 for c in out)


def test_higher_scores_are_drawn_more_often():
    cands = [Candidate("hi", 1, 0.95, 0), Candidate("lo", 1, 0.05, 0)]
    rng = random.Random(3)
    first = Counter(draw(cands, 1, {1: 1.0}, rng)[0].template_id for _ in range(2000))
    assert first["hi"] > 15 * first["lo"]
