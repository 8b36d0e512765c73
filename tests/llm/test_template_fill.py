"""The instruction follows its template, slots filled from the document (real SmolLM2 tokenizer and model)."""

from __future__ import annotations

import pytest

from fineinstructions.llm.base import FillTemplate, Request, SamplingParams
from fineinstructions.llm.copy_constraint import ExcerptTrie, _Row
from fineinstructions.llm.token_trie import token_bytes

DOC = ("The Eiffel Tower is a wrought-iron lattice tower in Paris. It is named after the engineer Gustave Eiffel, "
       "whose company designed and built it from 1887 to 1889. The tower is 330 metres tall.")


@pytest.fixture(scope="module")
def trie(smollm) -> ExcerptTrie:
    return ExcerptTrie(token_bytes(smollm.tokenizer))


def _fill(trie, template: str, prefix: str = " ", suffix: str = "\n") -> _Row:
    return _Row(trie, DOC.encode(), None, FillTemplate(prefix, template, suffix))


def _spell(trie, row: _Row, text: str) -> bool:
    """Feed `text` token by token as the model would; False as soon as a token is not allowed."""
    data, pos = text.encode(), 0
    while pos < len(data):
        allowed, _ = row.next_tokens()
        if row.template is None:
            return True
        step = max((t for t in allowed or () if data.startswith(trie.tokens[t], pos)),
                   key=lambda t: len(trie.tokens[t]), default=None)
        if step is None:
            return False
        row.add(trie.tokens[step])
        pos += len(trie.tokens[step])
    return True


def test_the_instruction_keeps_the_template_and_fills_slots_from_the_document(trie):
    template = "who designed <fi>famous landmark</fi>"
    assert _spell(trie, _fill(trie, template), " Who designed The Eiffel Tower\n")
    assert _spell(trie, _fill(trie, template), " who designed Gustave Eiffel?\n")
    assert not _spell(trie, _fill(trie, template), " who designed famous landmark\n")  # the description stays out
    assert not _spell(trie, _fill(trie, template), " who built the Eiffel Tower\n")  # the template's words stay
    assert not _spell(trie, _fill(trie, template), " who designed The Eiff\n")  # a fill ends at a word end
    assert not _spell(trie, _fill(trie, template), " who designed the Eiffel Tower\n")  # "the Eiffel" is not there
    assert _spell(trie, _fill(trie, template), " null")  # the template may not fit
    json_row = _fill(trie, "how tall is <fi>a tower</fi>", '{"instantiated_instruction": "', '"')
    assert _spell(trie, json_row, '{"instantiated_instruction": "How tall is The tower"')  # "The tower is 330…"
    assert json_row.template is None  # written: the excerpt rules take over


def test_a_fill_never_runs_into_a_dead_end(trie):
    """Every fill the automaton accepts can still end at a word end within the cap, so decoding never gets stuck."""
    from fineinstructions.llm.template_fill import MAX_FILL

    fill = _fill(trie, "why <fi>x</fi> matters").template
    for d in (False, True):
        assert fill.fills[d] and all(any(e.startswith(f) for e in fill.ends[d]) for f in fill.fills[d])
        assert max(len(e) for e in fill.ends[d]) <= MAX_FILL


def test_a_fill_reads_as_a_noun_phrase(trie):
    """No fill of a lone function word, none ending on one or starting on a joining word, no double determiner."""
    template = "what is the <fi>a landmark</fi>"
    assert _spell(trie, _fill(trie, template), " what is the Eiffel Tower\n")
    assert _spell(trie, _fill(trie, template), " what is the engineer Gustave Eiffel\n")
    assert not _spell(trie, _fill(trie, template), " what is the a\n")  # a lone function word
    assert not _spell(trie, _fill(trie, template), " what is the The tower\n")  # two determiners in a row
    assert not _spell(trie, _fill(trie, template), " what is the tower in\n")  # ends on a preposition
    assert not _spell(trie, _fill(trie, template), " what is the in Paris\n")  # starts on a joining word
    who = "who designed <fi>a landmark</fi>"
    assert _spell(trie, _fill(trie, who), " who designed The tower\n")  # a determiner is fine where none precedes
    assert not _spell(trie, _fill(trie, who), " who designed a wrought-iron lattice tower in\n")


def test_the_real_model_fills_the_template(smollm):
    prompt = (f"Document: {DOC}\nTemplate: who designed <fi>famous landmark</fi>\nInstruction:")
    out, = smollm.generate([Request(prompt=prompt, params=SamplingParams(max_tokens=30, stop=("\n",)), copy_source=DOC,
                                    fill_template=FillTemplate(" ", "who designed <fi>famous landmark</fi>", "\n"))])
    text = out.text.strip().rstrip("?")
    assert text.lower().startswith("who designed ") and text[len("who designed "):] in DOC, out.text


def test_a_later_slot_does_not_repeat_an_earlier_fill(trie):
    """"a towel in a towel": two slots filled with the same span say nothing; the second must differ, and a fill
    that is the start of a used one may still go on to a longer span ("The tower" → "The tower is 330 metres")."""
    template = "compare <fi>a structure</fi> with <fi>another structure</fi>"
    assert not _spell(trie, _fill(trie, template), " compare Paris with Paris\n")
    assert not _spell(trie, _fill(trie, template), " compare Paris with paris\n")
    assert _spell(trie, _fill(trie, template), " compare The Eiffel Tower with Paris\n")
    assert _spell(trie, _fill(trie, template), " compare The tower with The tower is 330 metres\n")


def test_choices_limit_each_slot_to_the_fills_a_stage_picked(trie):
    """`FillTemplate.choices`: per slot, the fills it may take; rule-breaking choices are dropped, none left = any span."""
    template = "who designed <fi>a landmark</fi> in <fi>a city</fi>"
    row = lambda choices: _Row(trie, DOC.encode(), None, FillTemplate(" ", template, "\n", choices))  # noqa: E731
    picked = (("The Eiffel Tower", "Gustave Eiffel"), ("Paris",))
    assert _spell(trie, row(picked), " who designed The Eiffel Tower in Paris\n")
    assert not _spell(trie, row(picked), " who designed The tower in Paris\n")  # a span, but not a choice
    assert not _spell(trie, row(picked), " who designed Gustave Eiffel in France\n")  # not Paris
    assert _spell(trie, row((("of the",), ("Paris",))), " who designed The tower in Paris\n")  # no valid choice: any
    assert _spell(trie, row((("Paris",),)), " who designed The tower in Paris\n")  # 1 list for 2 slots: ignored


def test_document_fills_are_the_spans_the_rules_allow():
    from fineinstructions.llm.template_fill import document_fills

    fills = document_fills("The ceiling of the Sistine Chapel was painted by Michelangelo.")
    assert {"The ceiling", "the Sistine Chapel", "Michelangelo", "Sistine Chapel"} <= set(fills)
    assert not {"of the Sistine", "the", "painted by"} & set(fills)  # joining start, lone or final function word
    assert all(len(f.split()) <= 5 for f in fills)


def test_a_fill_stays_inside_one_sentence():
    from fineinstructions.llm.template_fill import document_fills

    fills = set(document_fills("Boil them until tender in the end. Many cooks salt the water: a spoonful.\nWell done"))
    assert {"the end", "Many cooks", "the water", "a spoonful"} <= fills
    assert not [f for f in fills if any(b in f for b in (". ", ": ", "\n"))]
