"""Answers by retrieval, with the real all-MiniLM-L6-v2 embedder: sentence cutting, ranking, null, excerpts."""

from __future__ import annotations

import pytest

from fineinstructions.answer_retrieval import (SentenceRetriever, candidate_spans, is_candidate, sentence_spans,
                                              template_query)
from fineinstructions.embed import Embedder, default_embedder_path
from fineinstructions.excerpts import expand_excerpts

DOC = ("Boiling potatoes\n"
       "Boiling is the simplest way to cook potatoes. Bring the pot to a boil, then lower the heat to a steady "
       "simmer. Small new potatoes take 10 to 15 minutes, and large ones 25 to 30 minutes or more. To test for "
       "doneness, push a fork into the thickest piece. The fork should slide in with almost no resistance. "
       "Potatoes were first grown in the Andes of South America, long before they reached Europe.")


@pytest.fixture(scope="module")
def retriever() -> SentenceRetriever:
    return SentenceRetriever(Embedder(default_embedder_path(), device="cpu"), sentences=2, min_similarity=0.30)


def test_sentences_are_cut_verbatim_and_headings_are_not_candidates():
    text = 'Everyday care\nClean it warm. Heat to 3.5 degrees, e.g. in the oven! He said "done." Then "stop".'
    pieces = [text[a:b] for a, b in sentence_spans(text)]
    assert pieces == ["Everyday care", "Clean it warm.", "Heat to 3.5 degrees, e.g. in the oven!", 'He said "done."',
                      'Then "stop".']
    assert [is_candidate(p) for p in pieces] == [False, False, True, False, False]  # a heading; under 4 words
    assert is_candidate("A line of eight words without any end mark")  # long lines count without punctuation
    assert sentence_spans("") == [] and sentence_spans(" \n ") == []


def test_the_sentences_a_window_cuts_into_are_not_answers():
    window = ("that gives you tax advantages for saving toward retirement. When you withdraw it in retirement, "
              "withdrawals are taxed as ordinary income. In exchange, the investments grow and qualified withdrawals")
    assert [window[a:b] for a, b in candidate_spans(window)] == [
        "When you withdraw it in retirement, withdrawals are taxed as ordinary income."]
    assert len(candidate_spans(window + " are not taxed.")) == 2  # a whole last sentence stays
    assert template_query("how long does it take to <fi>a cooking method</fi> <fi>a vegetable</fi>") == \
        "how long does it take to a cooking method a vegetable"


def test_the_answer_is_the_best_sentences_in_document_order(retriever):
    answer = retriever.answer("how long does it take to <fi>a cooking method</fi> <fi>a vegetable</fi>",
                              "how long does it take to boil potatoes", DOC)
    assert "Small new potatoes take 10 to 15 minutes" in answer
    assert answer in DOC or all(s in DOC for s in answer.split(". "))  # verbatim, in the document's order
    assert DOC.index(answer.split(". ")[0]) < DOC.index(answer.split(". ")[-1])
    assert "Andes" not in answer
    raw = retriever.excerpt_answer("how long does it take to <fi>a cooking method</fi> <fi>a vegetable</fi>",
                                   "how long does it take to boil potatoes", DOC)
    assert raw.startswith("<excerpt>")
    expansion = expand_excerpts(raw, DOC)
    assert expansion.reason is None and expansion.grounding > 0.99  # only the spaces between excerpts are ours
    assert expansion.text.split() == answer.split()


def test_a_window_that_cannot_answer_is_null(retriever):
    assert retriever.fits("how do I know when <fi>a vegetable</fi> is cooked", DOC)
    assert not retriever.fits("what is the exchange rate of <fi>a currency</fi> to the euro", DOC)
    assert retriever.similarity("what is <fi>a thing</fi>", "Short.") == 0.0  # no candidate sentence at all
    assert retriever.answer("what is <fi>a thing</fi>", "what is it", "Short.") == ""
    with pytest.raises(ValueError):
        SentenceRetriever(retriever.embedder, sentences=0)


def test_slots_are_filled_from_the_sentences_that_fit_the_template(retriever):
    focus = retriever.focus("how long does it take to <fi>a cooking method</fi> <fi>a vegetable</fi>", DOC)
    assert "Small new potatoes take 10 to 15 minutes" in focus and "Andes" not in focus
    assert all(part.strip() in DOC for part in focus.split(". "))
    assert retriever.focus("what is <fi>a thing</fi>", "Short.") == "Short."  # nothing to rank: the whole window


def names(retriever: SentenceRetriever, template: str, text: str, n: int = 8) -> list[list[str]]:
    """`ranked_fills` without the cosines."""
    return [[fill for fill, _ in slot] for slot in retriever.ranked_fills(template, text, n)]


def test_each_slot_gets_the_spans_closest_to_its_description(retriever):
    template = "how long does it take to <fi>a cooking method</fi> <fi>a vegetable</fi>"
    focus = retriever.focus(template, DOC)
    method, vegetable = names(retriever, template, focus, n=3)
    assert len(method) == len(vegetable) == 3 and all(c in focus for c in method + vegetable)
    assert any("potatoes" in c for c in vegetable)
    assert names(retriever, "no slot here", focus) == []
    assert names(retriever, template, "") == [[], []]


def test_a_fill_choice_never_doubles_the_template_word_next_to_it(retriever):
    text = "Michelangelo painted the ceiling of the Sistine Chapel. The chapel ceiling took four years."
    (painter, ceiling), = [names(retriever, "when did <fi>a painter</fi> paint the <fi>a part of a building</fi>"
                                                 " ceiling", text, n=50)]
    assert ceiling and not [c for c in ceiling if c.lower().split()[-1] == "ceiling"]
    assert "Michelangelo" in painter and "the Sistine Chapel" not in ceiling  # "the the"


def test_a_heading_between_two_chosen_sentences_stays_out(retriever):
    doc = ("The aurora glows when particles from the Sun hit the upper atmosphere.\nColours by gas\n"
           "The colour of the aurora depends on which gas is glowing.")
    answer = retriever.answer("what colour is <fi>a natural phenomenon</fi>", "what colour is the aurora", doc)
    assert answer == ("The aurora glows when particles from the Sun hit the upper atmosphere. "
                      "The colour of the aurora depends on which gas is glowing.")
