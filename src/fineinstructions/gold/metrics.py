"""The gold-set metrics, as defined in the gold format (`data/gold/README.md`), as pure functions.

Each stage's metrics are computed from one record per gold row (what the stage did with it); every rate is over
all evaluated rows unless its definition says otherwise. Kept separate from running the model so the arithmetic is
tested on hand-made predictions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from statistics import fmean

from fineinstructions.gold.readback import WORD, slot_f1

#: a key span counts as quoted when this share of its word tokens appears in the answer
KEY_SPAN_SHARE = 0.8


def word_tokens(text: str | None) -> list[str]:
    """Case-folded `\\w+` tokens: the unit of instruction F1 and key-span recall."""
    return [w.casefold() for w in WORD.findall(text or "")]


def token_f1(predicted: str | None, reference: str | None) -> float:
    """Bag-of-words F1 between two texts (multiset overlap of word tokens); 0 when either is empty."""
    p, r = Counter(word_tokens(predicted)), Counter(word_tokens(reference))
    common = sum((p & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def span_quoted(span: str, answer: str | None) -> bool:
    """At least 80 % of the span's word tokens (with multiplicity) appear in the answer."""
    need = Counter(word_tokens(span))
    if not need or not answer:
        return False
    have = Counter(word_tokens(answer))
    return sum((need & have).values()) >= KEY_SPAN_SHARE * sum(need.values())


def key_span_recall(spans: Sequence[str], answer: str | None) -> float:
    """Share of a row's key spans quoted by the kept answer (0 without one)."""
    if not spans:
        return 0.0
    return sum(span_quoted(s, answer) for s in spans) / len(spans)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation with ties (Pearson on average ranks); 0 when either side is constant."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of the same length")
    if len(x) < 2:
        return 0.0
    rx, ry = ranks(x), ranks(y)
    mx, my = fmean(rx), fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else 0.0


def _mean(values: list[float]) -> float:
    return fmean(values) if values else 0.0


def templatize_metrics(rows: Sequence[dict]) -> dict:
    """rows: {"query", "reference_templates", "template" (the kept template or None)}."""
    scores = [slot_f1(r.get("template"), r["query"], r["reference_templates"]) for r in rows]
    return {"n": len(rows), "valid_rate": _mean([float(r.get("template") is not None) for r in rows]),
            "slot_f1": _mean(scores)}


def instantiate_metrics(rows: Sequence[dict]) -> dict:
    """rows: {"compatible", "status" (the stage's: ok | null | a reject reason), "instruction", "answer" (kept
    pair's, else None), "reference_instruction", "key_spans"}."""
    compatible = [r for r in rows if r["compatible"]]
    kept = [r for r in compatible if r["status"] == "ok"]
    return {
        "n": len(rows), "n_compatible": len(compatible),
        "null_accuracy": _mean([float((r["status"] == "null") == (not r["compatible"])) for r in rows]),
        "grounded_rate": len(kept) / len(compatible) if compatible else 0.0,
        "key_span_recall": _mean([key_span_recall(r["key_spans"], r["answer"] if r["status"] == "ok" else None)
                                  for r in compatible]),
        "instruction_f1": _mean([token_f1(r["instruction"], r["reference_instruction"]) if r["status"] == "ok"
                                 else 0.0 for r in compatible]),
    }


def judge_metrics(rows: Sequence[dict]) -> dict:
    """rows: {"score" (gold, 1-5), "predicted" (1-5 or None when unreadable)}."""
    readable = [r for r in rows if r["predicted"] is not None]
    predicted = [r["predicted"] if r["predicted"] is not None else 0 for r in rows]
    return {
        "n": len(rows),
        "parse_rate": len(readable) / len(rows) if rows else 0.0,
        "spearman": spearman(predicted, [r["score"] for r in rows]),
        "keep_accuracy": _mean([float((p >= 4) == (r["score"] >= 4)) for p, r in zip(predicted, rows)]),
        "mae": _mean([abs(r["predicted"] - r["score"]) for r in readable]) if readable else None,
    }


METRICS = {"templatize": templatize_metrics, "instantiate": instantiate_metrics, "judge": judge_metrics}
