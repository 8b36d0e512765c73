"""PII detectors on hand-made cases and on real text (speeches, Wikipedia) that must come through untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fineinstructions.pii import find_pii, luhn_valid, scrub

SHARED_DOCS = Path(__file__).resolve().parents[2] / "shared" / "data" / "documents"


@pytest.mark.parametrize("text, kinds", [
    ("Write to jane.doe+news@mail.example.co.uk today", ["email"]),
    ("the server 8.8.8.8 answered", ["ip"]),
    ("call (202) 555-0143 or +44 20 7946 0958", ["phone", "phone"]),
    ("card 4111 1111 1111 1111, exp 12/27", ["card"]),
    ("card 4111-1111-1111-1111", ["card"]),
    ("amex 378282246310005", ["card"]),
    ("mail bob@corp.com from 203.0.113.7? no: from 93.184.216.34", ["email", "ip"]),
])
def test_finds_each_kind(text, kinds):
    assert [s.kind for s in find_pii(text)] == kinds


@pytest.mark.parametrize("text", [
    "Between 1999-2005 the population grew to 1,234,567.",
    "ISBN 978-3-16-148410-0 and DOI 10.1000/182",
    "private hosts 127.0.0.1, 10.0.0.1 and 192.168.1.1",
    "version 1.2.3.4.5 of the package",
    "order 4111 1111 1111 1112",  # fails the Luhn check
    "0000 0000 0000 0000",  # passes Luhn but is all one digit
    "it costs $4,000,000,000 and weighs 12.5 kg",
    "123-456-7890",  # no US area code starts with 1
])
def test_leaves_look_alikes(text):
    assert find_pii(text) == [] and scrub(text) == (text, {})


def test_scrub_replaces_and_counts_without_rescanning_replacements():
    text, counts = scrub("Mail a@b.org, ip 8.8.4.4, phone 212-736-5000, card 5555555555554444.")
    assert counts == {"email": 1, "ip": 1, "phone": 1, "card": 1}
    assert "a@b.org" not in text and "8.8.4.4" not in text and "736-5000" not in text and "4444" not in text
    assert find_pii(text, kinds=("card", "phone")) == []  # replacement values are not PII themselves
    assert scrub("ip 8.8.4.4", kinds=("email",)) == ("ip 8.8.4.4", {})


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")


@pytest.mark.skipif(not SHARED_DOCS.is_dir(), reason="../shared/data not present (fresh clone)")
def test_real_documents_have_no_false_positives_and_planted_pii_is_found():
    texts = [json.loads(line)["text"] for f in sorted(SHARED_DOCS.glob("*.jsonl")) for line in f.open()][::4]
    assert sum(len(t) for t in texts) > 500_000
    assert all(find_pii(t) == [] for t in texts)  # 1M characters of speeches and Wikipedia: numbers, dates, money
    planted = texts[0][:2000] + " Contact the office at press@whitehouse.gov or (202) 456-1111. " + texts[1][:2000]
    text, counts = scrub(planted)
    assert counts == {"email": 1, "phone": 1}
    assert text.startswith(texts[0][:2000]) and text.endswith(texts[1][:2000])
