import pytest

from fineinstructions.evaluate.metrics import exact_match, normalize_answer, token_f1


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("The Beatles", "beatles"),
        ("  An  apple,  a DAY! ", "apple day"),
        ("14 December 1972 (UTC)", "14 december 1972 utc"),
        ("theatre", "theatre"),  # articles only as whole words
        ("", ""),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match_takes_the_best_reference():
    assert exact_match("the Beatles.", ["Rolling Stones", "Beatles"]) == 1.0
    assert exact_match("Beatles", ["The Rolling Stones"]) == 0.0
    assert exact_match("anything", []) == 0.0


def test_token_f1_values():
    assert token_f1("the cat sat", ["cat sat down"]) == pytest.approx(0.8)
    assert token_f1("cat", ["dog", "cat sat"]) == pytest.approx(2 / 3)
    assert token_f1("a b c", ["x y"]) == 0.0
    assert token_f1("Paris, France", ["paris france"]) == 1.0


def test_token_f1_empty_answers():
    assert token_f1("", [""]) == 1.0
    assert token_f1("the", ["an"]) == 1.0  # both normalise to nothing
    assert token_f1("", ["Paris"]) == 0.0
    assert token_f1("Paris", [""]) == 0.0
    assert token_f1("Paris", []) == 0.0
