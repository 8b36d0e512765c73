import pytest

from fineinstructions.parsing import extract_json_object, is_null_answer


@pytest.mark.parametrize(
    "text",
    [
        '{"template": "a <fi>b</fi>", "compatible_document_description": "d"}',
        'Sure! Here is the JSON:\n```json\n{"template": "a <fi>b</fi>", "compatible_document_description": "d"}\n```',
        'prose {not json} then {"template": "a <fi>b</fi>", "compatible_document_description": "d"} trailing',
        '```\n{"template": "a <fi>b</fi>", "compatible_document_description": "d"}\n```\nAnd another {"x": 1}',
    ],
)
def test_extracts_first_object(text):
    assert extract_json_object(text) == {"template": "a <fi>b</fi>", "compatible_document_description": "d"}


@pytest.mark.parametrize("text", [None, "", "no json here", '{"template": "unterminated', "[1, 2, 3]", "{" * 5000])
def test_no_object(text):
    assert extract_json_object(text) is None


def test_nested_and_unicode():
    obj = extract_json_object('x {"a": {"b": [1, {"c": "ünï"}]}, "d": "}"} y')
    assert obj == {"a": {"b": [1, {"c": "ünï"}]}, "d": "}"}


@pytest.mark.parametrize("text,expected", [("null", True), (" NULL. ", True), ('"null"', True), ("```\nnull\n```", True),
                                           ("nullable", False), ("", False), (None, False)])
def test_null_answers(text, expected):
    assert is_null_answer(text) is expected


@pytest.mark.parametrize("text,score", [
    ("Score: 4/5", 4), ("**4**", 4), ("Reasoning first. Score: 5", 5), ("4", 4), (" 3.\n", 3),
    ("<feedback>fine</feedback>\n<score>3</score>", 3), ('{"score": 2, "why": "short"}', 2),
    ("Rating: 4 out of 5", 4), ("I would give it a four.", 4), ("Score: 2 ... on reflection, Score: 3", 3),
    ("nothing useful here", None), ("", None), (None, None), ("3 reasons why this is bad", None),
    ("score of 6", None), ("Score:**3**", 3),
])
def test_parse_score_on_messy_judgements(text, score):
    from fineinstructions.parsing import parse_score

    assert parse_score(text) == score
