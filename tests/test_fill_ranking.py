"""Instructions by ranking: the combinations tried, and the likeliest filling chosen -- with a stand-in scorer for
the control flow, and with the real SmolLM2 and MiniLM on a document."""

from __future__ import annotations

import pytest

from fineinstructions.fill_ranking import PER_SLOT, combinations, filled, rank_instructions

TEMPLATE = "how long does it take to <fi>a cooking method</fi> <fi>a vegetable</fi>"


def test_filled_replaces_the_slots_in_order():
    assert filled(TEMPLATE, ["boil", "potatoes"]) == "how long does it take to boil potatoes"


def test_combinations_take_the_top_choices_and_never_one_fill_twice():
    method = [("boil", 0.9), ("Potatoes", 0.5)] + [(f"m{i}", 0.1) for i in range(10)]
    vegetable = [("potatoes", 0.8)] + [(f"v{i}", 0.1) for i in range(10)]
    combos = combinations([method, vegetable])
    assert len({c[0] for c in combos}) == len({c[1] for c in combos}) == PER_SLOT[2]
    assert (("Potatoes", 0.5), ("potatoes", 0.8)) not in combos  # the same fill in two slots (any case)
    assert combinations([method, []]) == [] and combinations([]) == []


def test_the_likeliest_instruction_wins_and_a_slot_without_choices_gives_none():
    seen = []

    def scorer(texts):
        seen.extend(texts)
        return [-len(t) for t in texts]  # stand-in: shorter is likelier

    choices = [[("boil", 0.5), ("bring to a boil", 0.5)], [("potatoes", 0.5), ("new potatoes", 0.5)]]
    out = rank_instructions([(TEMPLATE, choices), ("what is <fi>a thing</fi>", [[]])], scorer)
    assert out == ["how long does it take to boil potatoes", None]
    assert len(seen) == 4  # one call for every job's candidates
    # the fills' cosine to their descriptions counts too: a much closer fill beats a slightly likelier text
    out = rank_instructions([("what is <fi>a thing</fi>", [[("ab", 0.0), ("abc", 0.9)]])], scorer)
    assert out == ["what is abc"]


@pytest.mark.slow
def test_ranking_fills_a_template_from_a_document_with_the_real_models(smollm):
    from fineinstructions.answer_retrieval import SentenceRetriever
    from fineinstructions.embed import Embedder

    retriever = SentenceRetriever(Embedder(None, device="cpu"))
    doc = ("The ceiling of the Sistine Chapel in Vatican City was painted by Michelangelo between 1508 and 1512. "
           "Its walls were decorated by leading painters of the 15th century.")
    template = "who painted the ceiling of <fi>a church</fi>"
    choices = retriever.ranked_fills(template, retriever.focus(template, doc))
    (instruction,) = rank_instructions([(template, choices)], smollm.loglikelihood)
    assert instruction == "who painted the ceiling of the Sistine Chapel"
