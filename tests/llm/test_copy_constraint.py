"""Constrained copying on the real SmolLM2 tokenizer and model: inside `<excerpt>` only the document can be written."""

from __future__ import annotations

import json
import re

import pytest

from fineinstructions.excerpts import expand_excerpts
from fineinstructions.llm.base import CONSTRAINT_RULES, Request, SamplingParams
from fineinstructions.llm.copy_constraint import MAX_EXCERPTS, OPEN, ExcerptTrie, _Row, opened_excerpt
from fineinstructions.llm.token_trie import token_bytes

DOC = ("The Eiffel Tower is a wrought-iron lattice tower in Paris. It is named after the engineer Gustave Eiffel, "
       "whose company designed and built it from 1887 to 1889. The tower is 330 metres tall. Māori \"quotes\" too.")


@pytest.fixture(scope="module")
def trie(smollm) -> ExcerptTrie:
    return ExcerptTrie(token_bytes(smollm.tokenizer))


def _ids(smollm, text: str) -> list[int]:
    return smollm.tokenizer(text, add_special_tokens=False)["input_ids"]


def _row(trie, source: str, generated: str) -> _Row:
    row = _Row(trie, source.encode(), None)
    row.generated += generated.encode()
    return row


def test_token_bytes_spell_every_text_back(smollm, trie):
    for text in (DOC, "line\n\n  tabs\t<excerpt>x<...>y</excerpt> é ü 東京 🙂"):
        assert b"".join(trie.tokens[t] for t in _ids(smollm, text)) == text.encode()
    assert all(trie.tokens[t] is None for t in smollm.tokenizer.all_special_ids)


def test_inside_an_excerpt_only_the_document_continues(trie):
    allowed, _ = _row(trie, DOC, "Answer: <excerpt>It is nam").allowed()
    texts = {trie.tokens[t] for t in allowed}
    rest = DOC.encode()[DOC.index("It is nam") + len("It is nam"):]
    assert b"ed" in texts and all(rest.startswith(b) for b in texts)  # mid-word: no tag may start yet
    word_end, _ = _row(trie, DOC, "Answer: <excerpt>It is named").allowed()
    texts = {trie.tokens[t] for t in word_end}
    assert b" after" in texts and b" by" not in texts and b"</" in texts


def test_a_quote_opens_at_word_starts_and_closes_once_unique(trie):
    start, _ = _row(trie, DOC, "<excerpt>").allowed()
    firsts = {trie.tokens[t] for t in start}
    assert b"The" in firsts and b"It" in firsts and b"he" not in firsts and b" " not in firsts
    # "The" occurs twice: it may not be closed yet; "The tower" once: it may
    ambiguous, _ = _row(trie, DOC, "<excerpt>The").allowed()
    assert not any(trie.tokens[t].startswith(b"</") for t in ambiguous)
    unique, _ = _row(trie, DOC, "<excerpt>The tower").allowed()
    closing = [trie.tokens[t] for t in unique if trie.tokens[t].startswith(b"</")]
    assert closing and all(b"</excerpt>".startswith(b) or b.startswith(b"</excerpt>") for b in closing)
    assert any(trie.tokens[t] == b"<" for t in unique)  # "<...>" or "</excerpt>" begins


def test_elision_once_then_end_words_after_start(trie):
    after, _ = _row(trie, DOC, "<excerpt>It is named after<...>").allowed()
    texts = {trie.tokens[t] for t in after}
    assert b"1" in texts and b"Gu" in texts and b"It" not in texts  # END words come after START only
    assert all(DOC.encode().find(b, DOC.index("named after")) != -1 for b in texts)
    end, _ = _row(trie, DOC, "<excerpt>It is named after<...>to 1889.").allowed()
    end_texts = {trie.tokens[t] for t in end}
    assert any(b.startswith(b"</") for b in end_texts)
    assert not any(b.startswith(b"<.") for b in end_texts)  # a second elision is not offered


def test_outside_no_stray_tags_and_a_cap_on_quotes(trie):
    allowed, banned = _row(trie, DOC, "<excerpt>The tower is 330 metres tall.</excerpt> And ").allowed()
    assert allowed is None and banned
    assert all(not trie.tokens[t].startswith(b"</") for t in set(range(len(trie.tokens))) - banned if trie.tokens[t])
    assert not any(trie.tokens[t] == b"<" for t in banned)  # a new <excerpt> may still open
    half, _ = _row(trie, DOC, "<excerpt>The tower is 330 metres tall.</excerpt> <exc").allowed()
    assert half and all(b"erpt>".startswith(trie.tokens[t]) or trie.tokens[t].startswith(b"erpt>") for t in half)
    full = "".join("<excerpt>The tower is 330 metres tall.</excerpt> " for _ in range(MAX_EXCERPTS))
    _, capped = _row(trie, DOC, full).allowed()
    assert any(trie.tokens[t] == b"<" for t in capped)


def test_json_escaped_source_and_an_excerpt_left_open_by_the_prompt(trie):
    escaped = json.dumps(DOC, ensure_ascii=False)[1:-1]
    allowed, _ = _row(trie, escaped, '"answer": "<excerpt>Māori ').allowed()
    assert {trie.tokens[t] for t in allowed} & {b"\\", b'\\"'}
    assert opened_excerpt("Answer: <excerpt>The tower") == b"The tower"
    assert opened_excerpt("<excerpt>a</excerpt> done") is None
    assert _Row(trie, DOC.encode(), b"The tower").generated.startswith(OPEN)


def test_the_real_model_copies_verbatim_under_the_constraint(smollm):
    """A prompt that opens a quote: whatever the 135M model writes inside excerpts is found in the document."""
    prompt = (f"Document: {DOC}\nQuestion: How tall is the tower and who built it?\n"
              "Answer (quote the document): <excerpt>The")
    params = SamplingParams(max_tokens=60, stop=("\n",))
    copied, = smollm.generate([Request(prompt=prompt, params=params, copy_source=DOC)])
    text = "<excerpt>The" + copied.text
    text = text if re.search(r"</excerpt>\s*$", text) else text + "</excerpt>"
    expansion = expand_excerpts(text, DOC)
    assert expansion.reason is None and expansion.grounding > 0.5, (copied.text, expansion)
    for content in re.findall(r"<excerpt>(.*?)</excerpt>", text):
        assert all(part.strip() in DOC for part in content.split("<...>")), content
    # the constraint is part of the request, so cached answers are never shared with unconstrained ones
    assert Request(prompt=prompt, params=params, copy_source=DOC).to_dict() != Request(prompt=prompt, params=params).to_dict()
    assert "copy_source" not in Request(prompt=prompt, params=params).to_dict()
    # ... and so is the version of the rules: answers decoded under older rules are not reused
    assert Request(prompt=prompt, params=params, copy_source=DOC).to_dict()["constraint_rules"] == CONSTRAINT_RULES


def test_sampled_rows_obey_the_constraint_too(smollm):
    params = SamplingParams(max_tokens=40, temperature=1.0, seed=3, stop=("\n",))
    outs = smollm.generate([Request(prompt=f"Document: {DOC}\nQuote {what}: <excerpt>", params=params, copy_source=DOC)
                            for what in ("one sentence", "the height", "the engineer")])
    for out in outs:
        content = out.text.split("</excerpt>")[0]
        assert all(part in DOC for part in content.split("<...>") if part), out.text


def test_the_instruction_before_any_quote_gets_no_excerpt_markup(trie):
    _, banned = _row(trie, DOC, '{"instantiated_instruction": "Why did President').allowed()
    assert banned and all(b"</" in trie.tokens[t] or b"<." in trie.tokens[t] or b"<\xe2\x80\xa6" in trie.tokens[t]
                          for t in banned)
    _, after_angle = _row(trie, DOC, '{"instantiated_instruction": "Is x <').allowed()
    assert {trie.tokens[t] for t in after_angle} >= {b"/", b"...", b"."}
    assert not {trie.tokens[t] for t in after_angle} & {b"unk", b" 5"}

