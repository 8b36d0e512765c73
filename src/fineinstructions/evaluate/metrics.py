"""SQuAD-style answer metrics for short-answer QA (Natural Questions, WebQuestions, ...).

Generated answers differ from references in case, punctuation and articles ("The Beatles" vs "beatles"), so
both sides are normalised the way the SQuAD evaluation script does before comparing. Every reference counts:
the score against a list of references is the best score against any one of them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    """Lowercase, strip punctuation, drop the articles a/an/the and collapse whitespace (SQuAD order)."""
    s = s.lower().translate(_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0 (also for no references)."""
    pred = normalize_answer(prediction)
    return max((float(pred == normalize_answer(ref)) for ref in references), default=0.0)


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    """Bag-of-tokens F1; two empty answers agree perfectly, one empty answer shares nothing."""
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """Best token-overlap F1 of the prediction against any reference (0.0 for no references).

    Partial credit matters for small models, which often get the entity right but add or drop a word."""
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(ref).split()) for ref in references), default=0.0)
