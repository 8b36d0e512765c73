from fineinstructions.text import dedup_key, normalize_whitespace, stable_hash


def test_whitespace():
    assert normalize_whitespace("  a\tb\n\n c\u00a0d  ") == "a b c d"


def test_dedup_key_collisions():
    assert dedup_key("What is X?") == dedup_key("what  is x")
    assert dedup_key("Café") == dedup_key("CAFÉ")
    assert dedup_key("what is x") != dedup_key("what is y")


def test_stable_hash():
    assert stable_hash("abc") == stable_hash("abc") and len(stable_hash("abc")) == 16
    assert stable_hash("abc") != stable_hash("abd")
