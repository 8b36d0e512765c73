"""Text normalisation shared by every stage, so "the same query" means the same thing everywhere."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace (newlines, tabs, NBSP) to one space and trim the ends."""
    return _WS.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    """Key for *normalised* dedup: case, accents-as-composed, punctuation and spacing don't make a new query.

    "What is X?" and "what is x" collide; "what is X" and "what is Y" don't.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return normalize_whitespace(_PUNCT.sub(" ", text))


def stable_hash(text: str, length: int = 16) -> str:
    """Short content hash used for ids, so ids are the same on every machine and every rerun."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]
