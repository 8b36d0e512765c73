from fineinstructions.templates import (alignment, copied_descriptions, fixed_text, num_slots, replaced_spans, slots,
                                        tag_problem, validate)

Q = "when was the last time anyone was on the moon"


def test_slots_and_counts():
    t = "Between <fi>Entity A</fi> and <fi>Entity B</fi> which is more <fi>characteristic</fi>?"
    assert slots(t) == ["Entity A", "Entity B", "characteristic"]
    assert num_slots(t) == 3
    assert "<fi>" not in fixed_text(t)


def test_well_formed_template_passes():
    assert validate("when was the last time anyone was on <fi>celestial body</fi>", Q) is None


def test_tag_problems():
    assert tag_problem("") == "empty_template"
    assert tag_problem("what is the capital of france") == "no_slot"
    assert tag_problem("what is <fi>a</fi> and <fi>b") == "unbalanced_tags"
    assert tag_problem("what is a</fi> and <fi>b</fi>") == "unbalanced_tags"
    assert tag_problem("what is <fi>a <fi>nested</fi></fi>") == "unbalanced_tags"
    assert tag_problem("what is <fi> </fi> here") == "empty_slot"
    assert tag_problem("what is <FI>x</FI>") == "malformed_tag"
    assert tag_problem("what is <fi >x</fi>") == "malformed_tag"
    assert tag_problem("what is <fi>" + "x" * 500 + "</fi>") == "slot_too_long"


def test_rewrite_instead_of_genericise_is_not_aligned():
    # a small model often answers a different question instead of slotting the query
    assert validate("what is the history of <fi>space programme</fi> and its famous missions", Q) == "not_aligned"


def test_slot_that_replaces_nothing():
    assert validate(Q + " <fi>extra detail</fi>", Q) == "slot_replaces_nothing"


def test_slots_wrapping_the_original_words_are_not_generic():
    assert validate("when was the last time anyone was on <fi>the moon</fi>", Q) == "same_as_query"


def test_only_slots_is_rejected():
    assert validate("<fi>question</fi>", Q) == "no_fixed_text"


def test_alignment_scores():
    a = alignment("when was the last time anyone was on <fi>celestial body</fi>", Q)
    assert a.precision == 1.0
    assert a.coverage == 0.8  # 8 of 10 query words kept
    assert a.fixed_words == 8
    # punctuation and case do not matter
    assert alignment("When was the LAST time anyone was on <fi>x</fi>?", Q).precision == 1.0


def test_slot_described_by_the_replaced_words_is_not_generic():
    q = "who is the girl that played darlene in roseanne"
    assert validate("who is the girl that played <fi>darlene</fi> in <fi>TV show</fi>", q) == "slot_not_generic"
    assert validate("who is the girl that played <fi>character</fi> in <fi>TV show</fi>", q) is None
    # a type word that happens to occur inside the replaced span is a fine description
    assert validate("who played the villain in <fi>movie</fi>", "who played the villain in the first die hard movie") is None


def test_replaced_spans():
    assert replaced_spans("who is the girl that played <fi>darlene</fi> in <fi>TV show</fi>",
                          "who is the girl that played darlene in roseanne") == [("darlene", "darlene"), ("TV show", "roseanne")]


def test_a_slot_filled_with_its_own_description_is_caught():
    t = "when is the best time to plant <fi>a type of plant</fi> in <fi>a region</fi>"
    assert copied_descriptions(t, "when is the best time to plant a type of plant in Texas") == ["a type of plant"]
    assert copied_descriptions(t, "When is the best time to plant A TYPE OF PLANT in the region?") == ["a type of plant"]
    # the article may change ("the type of plant"); the rest of a two-word-or-longer description still counts
    assert copied_descriptions(t, "when is the best time to plant the type of plant in a region") == [
        "a type of plant", "a region"]
    assert copied_descriptions(t, "when is the best time to plant tomatoes in Texas") == []
    # one-word descriptions are left alone: "person" may be the right fill; words the template keeps don't count
    assert copied_descriptions("who is the <fi>person</fi> in <fi>film</fi>", "who is the person in Alien") == []
    assert copied_descriptions("how far is a mile from <fi>a city</fi> centre", "how far is a mile from Paris centre") == []
    assert copied_descriptions("what is <fi>a mile</fi> in km", "what is a mile in km") == ["a mile"]
