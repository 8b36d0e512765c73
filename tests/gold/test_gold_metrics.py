"""Gold metric arithmetic on hand-made predictions: the definitions of the gold format, to the letter."""

from __future__ import annotations

import pytest

from fineinstructions.gold.metrics import (instantiate_metrics, judge_metrics, key_span_recall, ranks, span_quoted,
                                           spearman, templatize_metrics, token_f1)
from fineinstructions.gold.readback import read_back, slot_f1, slot_words

Q = "Who played Bilbo in The Hobbit?"
REFS = ["who played <fi>a character</fi> in <fi>a film</fi>", "who played <fi>a character</fi> in the hobbit"]


def test_read_back_folds_case_whitespace_apostrophes_and_the_final_mark():
    assert slot_words("WHO  played <fi>x</fi> in the hobbit", Q) == {2}
    assert slot_words("what is <fi>a person</fi>’s net worth", "What is Obama's net worth?") == {2}
    assert slot_words("<fi>a city</fi> weather today!", "paris weather today") == {0}
    assert read_back("who played <fi>x</fi> in the hobbit", "who sang bilbo in the hobbit") is None  # literal differs


def test_slot_f1_two_slots_best_reference_and_partial_overlap():
    # slots {bilbo}, {the hobbit}: reference 1 = {bilbo, the, hobbit} → P 1, R 1
    assert slot_f1("who played <fi>a role</fi> in <fi>a movie</fi>", Q, REFS) == 1.0
    # slots {bilbo, hobbit}: vs ref 1 {bilbo, the, hobbit}: P 2/2, R 2/3 → F1 0.8; vs ref 2 {bilbo}: P 1/2, R 1 → 0.667
    assert slot_f1("who played <fi>a role</fi> in the <fi>a movie</fi>", Q, REFS) == pytest.approx(0.8)
    # only the character slotted: ref 2 exactly
    assert slot_f1("who played <fi>a role</fi> in the hobbit", Q, REFS) == 1.0
    # a slot over words no reference slots
    assert slot_f1("<fi>a question word</fi> played bilbo in the hobbit", Q, REFS) == 0.0


def test_slot_f1_is_zero_for_missing_and_unreadable_templates():
    assert slot_f1(None, Q, REFS) == 0.0
    assert slot_f1("who directed <fi>a film</fi>", Q, REFS) == 0.0  # does not read back onto the query
    assert slot_f1("who played <fi>a role in <fi>nested</fi></fi>", Q, REFS) == 0.0  # broken markup
    assert slot_f1("who played bilbo in the hobbit", Q, REFS) == 0.0  # no slot
    # a reference that cannot be read back does not count; the readable one does
    assert slot_f1("who played <fi>x</fi> in the hobbit", Q, ["who is <fi>y</fi>", REFS[1]]) == 1.0


def test_templatize_rates_are_over_all_rows():
    rows = [{"query": Q, "reference_templates": REFS, "template": "who played <fi>a role</fi> in the hobbit"},
            {"query": Q, "reference_templates": REFS, "template": None},
            {"query": Q, "reference_templates": REFS, "template": "who played <fi>a</fi> in the <fi>b</fi>"}]
    m = templatize_metrics(rows)
    assert m["n"] == 3 and m["valid_rate"] == pytest.approx(2 / 3)
    assert m["slot_f1"] == pytest.approx((1.0 + 0.0 + 0.8) / 3)


def test_key_span_recall_at_the_80_percent_boundary():
    span = "one two three four five six seven eight nine ten"
    assert span_quoted(span, "x one two three four five six seven eight y")  # 8 of 10 = 80 %: quoted
    assert not span_quoted(span, "one two three four five six seven")  # 7 of 10
    assert span_quoted("the Battle of Hastings", "THE battle of hastings was in 1066")  # case folded
    assert not span_quoted("the the the the the", "the")  # multiplicity counts: 1 of 5
    assert key_span_recall([span, "the Battle of Hastings"], "the battle of hastings") == 0.5
    assert key_span_recall([span], None) == 0.0 and key_span_recall([], "x") == 0.0


def test_instantiate_metrics():
    def row(compatible, status, instruction=None, answer=None):
        return {"compatible": compatible, "status": status, "instruction": instruction, "answer": answer,
                "reference_instruction": "Who built the Eiffel Tower?" if compatible else None,
                "key_spans": ["Gustave Eiffel's company"] if compatible else []}

    rows = [row(True, "ok", "who built the Eiffel Tower", "It was built by Gustave Eiffel's company."),
            row(True, "excerpt_missing", "who built it", "x"),  # not kept: no credit for its answer
            row(True, "null"), row(False, "null"), row(False, "ok", "q", "a")]
    m = instantiate_metrics(rows)
    assert m["n"] == 5 and m["n_compatible"] == 3
    assert m["null_accuracy"] == pytest.approx(3 / 5)  # rows 1, 2 and 4 right
    assert m["grounded_rate"] == pytest.approx(1 / 3)
    assert m["key_span_recall"] == pytest.approx(1 / 3)
    assert m["instruction_f1"] == pytest.approx(token_f1("who built the Eiffel Tower", "Who built the Eiffel Tower?") / 3)
    assert token_f1("who built the Eiffel Tower", "Who built the Eiffel Tower?") == 1.0


def test_spearman_with_ties_matches_the_textbook_value():
    assert ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties on both sides: Pearson of the average ranks (scipy.stats.spearmanr gives 0.7071067811865476)
    assert spearman([1, 2, 2, 3], [1, 1, 2, 2]) == pytest.approx(0.7071067811865476)
    assert spearman([3, 3, 3], [1, 2, 3]) == 0.0  # a constant side has no ranking


def test_judge_metrics_count_unreadable_scores_as_zero():
    rows = [{"score": 5, "predicted": 5}, {"score": 4, "predicted": None}, {"score": 1, "predicted": 2},
            {"score": 2, "predicted": 4}]
    m = judge_metrics(rows)
    assert m["parse_rate"] == 0.75
    assert m["keep_accuracy"] == 0.5  # rows 1 and 3 right; the unreadable one counts as not kept
    assert m["mae"] == pytest.approx((0 + 1 + 2) / 3)
    assert m["spearman"] == pytest.approx(spearman([5, 0, 2, 4], [5, 4, 1, 2]))
