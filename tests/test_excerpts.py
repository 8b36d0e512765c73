"""Excerpt expansion: tags become the document's exact text, or the answer is rejected with a reason."""

from __future__ import annotations

import time

from fineinstructions.excerpts import Expansion, expand_excerpts

DOC = (
    "The lighthouse at Port Avel was built in 1874 to guard the narrow channel between the harbour and the reef.\n"
    "Its keeper, a retired sailor named Tomas Reyes, kept a log book of every ship that passed.\n\n"
    "During the storm of 1891 the lamp failed for three hours, and two fishing boats ran aground on the reef.\n"
    "After the storm, the town council voted to replace the oil lamp with a brighter  kerosene burner.\n"
    "The new burner could be seen from twenty miles away on a clear night."
)
STORM = "During the storm of 1891 the lamp failed for three hours, and two fishing boats ran aground on the reef."
KEEPER = "Its keeper, a retired sailor named Tomas Reyes, kept a log book of every ship that passed."


def _ok(result: Expansion) -> str:
    assert result.reason is None, (result.reason, result.failed)
    assert result.failed is None
    assert result.text is not None
    return result.text


def _failed(result: Expansion, reason: str) -> None:
    assert result.reason == reason
    assert result.text is None
    assert result.copied_chars == 0 and result.grounding == 0.0


def test_unique_span_is_copied_exactly():
    result = expand_excerpts("Records say: <excerpt>During the storm<...>on the reef.</excerpt>", DOC)
    assert _ok(result) == "Records say: " + STORM
    assert result.excerpts == 1
    assert result.copied_chars == len(STORM)


def test_start_twice_with_end_after_each_is_ambiguous():
    # "the storm" occurs twice; each is followed by a different "lamp".
    result = expand_excerpts("<excerpt>the storm<...>lamp</excerpt>", DOC)
    _failed(result, "excerpt_ambiguous")
    assert result.failed == "the storm<...>lamp"
    assert result.excerpts == 1


def test_start_twice_leading_to_the_same_end_is_ambiguous():
    doc = "A cat slept. A cat sat here."
    _failed(expand_excerpts("<excerpt>A cat<...>here.</excerpt>", doc), "excerpt_ambiguous")


def test_missing_start():
    result = expand_excerpts("<excerpt>The harbour master<...>the reef.</excerpt>", DOC)
    _failed(result, "excerpt_missing")
    assert result.failed == "The harbour master<...>the reef."


def test_missing_end():
    _failed(expand_excerpts("<excerpt>During the storm<...>sank without trace.</excerpt>", DOC), "excerpt_missing")


def test_end_only_before_start_is_missing():
    _failed(expand_excerpts("<excerpt>The new burner<...>Tomas Reyes</excerpt>", DOC), "excerpt_missing")


def test_end_may_not_overlap_start():
    # END "1891" is inside START; the next "1891" does not exist, so nothing matches.
    _failed(expand_excerpts("<excerpt>the storm of 1891<...>1891</excerpt>", DOC), "excerpt_missing")


def test_whitespace_tolerance_keeps_document_whitespace():
    # The tag uses one space where the document has a blank line, and a newline where it has two spaces.
    answer = "<excerpt>  ship that passed. During<...>with a\nbrighter kerosene burner. </excerpt>"
    text = _ok(expand_excerpts(answer, DOC))
    start = DOC.index("ship that passed.")
    end = DOC.index("kerosene burner.") + len("kerosene burner.")
    assert text == DOC[start:end]
    assert "passed.\n\nDuring" in text and "brighter  kerosene" in text


def test_verbatim_whitespace_tolerance():
    text = _ok(expand_excerpts("<excerpt>ship that   passed.\tDuring the storm</excerpt>", DOC))
    assert text == "ship that passed.\n\nDuring the storm"


def test_curly_and_straight_quotes_and_dashes_match_both_ways():
    doc = "The keeper\u2019s daughter called it \u201cthe old lady\u201d \u2013 a name that stuck \u2014 for decades."
    text = _ok(expand_excerpts("<excerpt>The keeper's daughter<...>\"the old lady\" - a name</excerpt>", doc))
    assert text == "The keeper\u2019s daughter called it \u201cthe old lady\u201d \u2013 a name"

    straight = "It's called \"the old lady\" - a name that stuck - for decades."
    text = _ok(expand_excerpts("<excerpt>It\u2018s called \u201cthe old lady\u201d \u2014 a name</excerpt>", straight))
    assert text == "It's called \"the old lady\" - a name"


def test_ellipsis_three_dots_and_unicode_ellipsis_are_equal():
    doc = "She paused\u2026 then spoke. He waited... then left."
    assert _ok(expand_excerpts("<excerpt>She paused... then</excerpt>", doc)) == "She paused\u2026 then"
    assert _ok(expand_excerpts("<excerpt>He waited\u2026 then left.</excerpt>", doc)) == "He waited... then left."
    # The offset map must account for "…" being folded to three characters before a later span.
    assert _ok(expand_excerpts("<excerpt>spoke.<...>left.</excerpt>", doc)) == "spoke. He waited... then left."


def test_unicode_offsets_are_exact():
    # Length-changing folds (ellipsis, whitespace runs) before the spans shift folded offsets; emoji, CJK and
    # accented letters are single code points in Python, so the copied text must be exactly the document slice.
    doc = (
        "Pr\u00e9face\u2026   \n\n Le caf\u00e9 de la Mairie servait "
        "du th\u00e9 vert \U0001f375 et des cr\u00eapes.\n\n"
        "\u6771\u4eac\u306e\u8336\u5c4b\u3067\u306f  \u62b9\u8336\u304c\u4eba\u6c17\u3067\u3059\u3002 "
        "Z\u00fcrich f\u00eate le Sechsel\u00e4uten \U0001f389 chaque avril."
    )
    tea = "du th\u00e9 vert \U0001f375 et des cr\u00eapes."
    answer = "<excerpt>du th\u00e9 vert<...>cr\u00eapes.</excerpt>"
    result = expand_excerpts(answer, doc)
    assert _ok(result) == tea
    assert result.copied_chars == len(tea) == 28

    japanese = "\u6771\u4eac\u306e\u8336\u5c4b\u3067\u306f  \u62b9\u8336\u304c\u4eba\u6c17\u3067\u3059\u3002"
    text = _ok(expand_excerpts("<excerpt>\u6771\u4eac\u306e<...>\u4eba\u6c17\u3067\u3059\u3002</excerpt>", doc))
    assert text == japanese
    start = doc.index(japanese)
    assert doc[start : start + len(text)] == text

    text = _ok(expand_excerpts("<excerpt>\u3067\u3059\u3002 Z\u00fcrich<...>\U0001f389</excerpt>", doc))
    assert text == "\u3067\u3059\u3002 Z\u00fcrich f\u00eate le Sechsel\u00e4uten \U0001f389"


def test_no_implicit_unicode_normalisation():
    # Decomposed "é" in the document does not match a composed "é" in the tag: nothing is NFC-folded.
    doc = "Le cafe\u0301 est ouvert."
    _failed(expand_excerpts("<excerpt>caf\u00e9 est</excerpt>", doc), "excerpt_missing")
    assert _ok(expand_excerpts("<excerpt>cafe\u0301 est</excerpt>", doc)) == "cafe\u0301 est"


def test_matching_is_case_sensitive():
    _failed(expand_excerpts("<excerpt>during the storm<...>on the reef.</excerpt>", DOC), "excerpt_missing")


def test_overlapping_excerpts_expand_independently():
    answer = (
        "First <excerpt>During the storm<...>three hours,</excerpt> and then "
        "<excerpt>the lamp failed<...>on the reef.</excerpt>"
    )
    result = expand_excerpts(answer, DOC)
    first = "During the storm of 1891 the lamp failed for three hours,"
    second = "the lamp failed for three hours, and two fishing boats ran aground on the reef."
    assert _ok(result) == f"First {first} and then {second}"
    assert result.excerpts == 2
    assert result.copied_chars == len(first) + len(second)


def test_excerpt_without_elision_must_occur_whole():
    assert _ok(expand_excerpts("<excerpt>a retired sailor named Tomas Reyes</excerpt>", DOC)) == (
        "a retired sailor named Tomas Reyes"
    )
    _failed(expand_excerpts("<excerpt>a retired captain named Tomas Reyes</excerpt>", DOC), "excerpt_missing")
    _failed(expand_excerpts("<excerpt>the reef.</excerpt>", DOC), "excerpt_ambiguous")


def test_elision_marker_variants():
    for marker in ("<\u2026>", "<..>", "<....>", "< ... >"):
        text = _ok(expand_excerpts(f"<excerpt>During the storm{marker}on the reef.</excerpt>", DOC))
        assert text == STORM, marker


def test_empty_excerpts():
    for answer in (
        "See <excerpt></excerpt>.",
        "See <excerpt> \n </excerpt>.",
        "<excerpt><...>on the reef.</excerpt>",
        "<excerpt>During the storm<...>  </excerpt>",
        "<excerpt><\u2026></excerpt>",
    ):
        result = expand_excerpts(answer, DOC)
        _failed(result, "excerpt_empty")
        assert result.excerpts == 1


def test_malformed_tags():
    cases = {
        "unclosed": "Intro <excerpt>During the storm<...>on the reef.",
        "stray close": "During the storm</excerpt> and more",
        "nested": "<excerpt>During <excerpt>the storm</excerpt> of 1891</excerpt>",
        "close before open": "</excerpt>During the storm<excerpt>",
    }
    for name, answer in cases.items():
        result = expand_excerpts(answer, DOC)
        _failed(result, "excerpt_malformed")
        assert result.failed is not None and "excerpt>" in result.failed, name


def test_two_elision_markers_are_malformed():
    result = expand_excerpts("<excerpt>During<...>1891<...>the reef.</excerpt>", DOC)
    _failed(result, "excerpt_malformed")
    assert result.failed == "During<...>1891<...>the reef."


def test_first_failing_tag_is_reported():
    answer = (
        "<excerpt>During the storm<...>on the reef.</excerpt> "
        "<excerpt>Nobody<...>knows</excerpt> <excerpt>the reef.</excerpt>"
    )
    result = expand_excerpts(answer, DOC)
    _failed(result, "excerpt_missing")
    assert result.failed == "Nobody<...>knows"
    assert result.excerpts == 3


def test_grounding_arithmetic():
    assert len(KEEPER) == 90
    answer = "In short, <excerpt>Its keeper<...>ship that passed.</excerpt>\n"
    result = expand_excerpts(answer, DOC)
    assert _ok(result) == "In short, " + KEEPER + "\n"
    assert result.copied_chars == 90
    assert result.grounding == 0.9  # 90 copied / 100 characters after stripping the trailing newline


def test_grounding_is_capped_and_full_for_a_bare_excerpt():
    result = expand_excerpts("<excerpt>Its keeper<...>ship that passed.</excerpt>", DOC)
    assert result.grounding == 1.0 and result.copied_chars == 90


def test_no_tags_passes_through_with_zero_grounding():
    answer = "The lighthouse was built in 1874."
    assert expand_excerpts(answer, DOC) == Expansion(
        text=answer, reason=None, excerpts=0, copied_chars=0, grounding=0.0, failed=None
    )
    assert expand_excerpts("", DOC).grounding == 0.0


def test_tag_names_are_case_insensitive():
    text = _ok(expand_excerpts("<EXCERPT>During the storm<...>on the reef.</Excerpt>", DOC))
    assert text == STORM
    assert _ok(expand_excerpts("< Excerpt >Tomas Reyes</ EXCERPT >", DOC)) == "Tomas Reyes"


def test_max_span_chars_drops_long_candidates():
    filler = "Nothing happened that year. " * 20
    doc = f"Alpha begins here. {filler}Alpha begins again. Short tail. End mark."
    answer = "<excerpt>Alpha begins<...>End mark.</excerpt>"
    # With the default limit both STARTs reach the same END: ambiguous.
    _failed(expand_excerpts(answer, doc), "excerpt_ambiguous")
    # With a tight limit only the near START is a candidate.
    assert _ok(expand_excerpts(answer, doc, max_span_chars=100)) == "Alpha begins again. Short tail. End mark."
    _failed(expand_excerpts(answer, doc, max_span_chars=10), "excerpt_missing")


def test_one_megabyte_document_is_fast():
    paragraph = (
        "[p{:06d}] The survey team recorded \u201ctidal\u201d readings \u2013 twice a day\u2026  "
        "and logged them.\n\n"
        "Each  reading was checked by the keeper\u2019s assistant before it was filed away.\n"
    )
    parts: list[str] = []
    size = 0
    i = 0
    while size < 1_000_000:
        parts.append(paragraph.format(i))
        size += len(parts[-1])
        i += 1
    doc = "".join(parts)
    picks = [i * k // 10 for k in range(10)]
    answer = " and ".join(f"<excerpt>[p{n:06d}] The survey<...>filed away.</excerpt>" for n in picks)

    started = time.perf_counter()
    result = expand_excerpts(answer, doc)
    elapsed = time.perf_counter() - started

    text = _ok(result)
    assert result.excerpts == 10
    assert text.count("\u201ctidal\u201d readings \u2013 twice a day\u2026  and logged them.\n\nEach  reading") == 10
    assert elapsed < 0.5, elapsed


def test_seed_words_come_verbatim_from_the_best_overlapping_sentence():
    from fineinstructions.excerpts import seed_words

    doc = ("Boil the potatoes for twenty minutes. The ceiling of the Sistine Chapel was painted by "
           "Michelangelo between 1508 and 1512. It shows nine scenes.")
    seed = seed_words(doc, "who painted the ceiling of the sistine chapel")
    assert seed == "The ceiling of the" and seed in doc
    assert seed_words(doc, "nothing in common here", n=3) == "Boil the potatoes"  # ties: the earliest
    assert seed_words("Too short.", "short") == ""


def test_an_excerpt_left_open_by_a_stop_string_is_closed():
    from fineinstructions.excerpts import close_open_excerpt

    assert close_open_excerpt("<excerpt>The ceiling of the") == "<excerpt>The ceiling of the</excerpt>"
    assert close_open_excerpt("<excerpt>a</excerpt>") == "<excerpt>a</excerpt>"
    assert close_open_excerpt("no tags") == "no tags"
