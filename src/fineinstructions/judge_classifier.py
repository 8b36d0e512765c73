"""The judge as a small classifier: annotated pairs → features of frozen sentence embeddings → a linear head (the
FineWeb-Edu pattern: LLM or human annotations distilled into a classifier that runs at corpus scale).

Why not the LoRA student on the 135M LLM: on the gold dev split the classifier agrees with the annotators more
(keep accuracy 0.85 against 0.78, Spearman 0.66 against 0.60; `benchmarks/judge_student_choice.py`), it needs no
generation (the judge stage runs at embedding speed), and it weighs a few kilobytes instead of 5 MB.

Like the paper's judge it reads only the instruction and the answer, as a training example will show them. The
features are the ones an annotator's reasons name (the gold `why` field): does the answer address the instruction
(cosines of the instruction to the answer and to its sentences), is the instruction finished (an unfilled `<fi>`
slot) and specific, is the answer long enough, a refusal, an echo of the question, repetitive, cut off, of the kind
the question asks for (a date for "when", a number for "how many", a name for "who").

The head is a multinomial logistic regression over the scores 1-5 (scikit-learn); its expected score becomes an
integer with a keep cut chosen by cross-validation on the training rows: at or above the cut the score is
`max(4, round(e))`, below it `min(3, round(e))`, so `--min-score 4` keeps exactly the pairs the cut keeps. The
classifier is saved as JSON (no pickle) with the embedder it was trained on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fineinstructions.answer_retrieval import sentence_spans

FILE = "classifier.json"
SCORES = np.arange(1, 6)
FEATURES = ("cos_instruction_answer", "cos_best_sentence", "cos_mean_sentence", "cos_first_sentence",
            "unfilled_slot", "log_answer_words", "log_instruction_words", "answer_distinct_words",
            "instruction_answer_overlap", "repeated_sentence", "refusal", "answer_ends_a_sentence",
            "answer_kind_matches", "empty_answer")

_WORDS = re.compile(r"\w+")
_REFUSAL = re.compile(r"\b(cannot|can't|unable to|not (mentioned|provided|stated|given|say|said)|no information|"
                      r"does not (say|mention|state)|I'm sorry|I don't know|null)\b", re.I)
_DATE = re.compile(r"\b(1\d{3}|20\d{2}|January|February|March|April|May|June|July|August|September|October|"
                   r"November|December|century)\b")
_NUMBER = re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|hundred|thousand|million|dozen|"
                     r"several)\b", re.I)
_NAME = re.compile(r"(?<!^)(?<![.!?]\s)\b[A-Z][a-z]+")


def answer_kind_matches(instruction: str, answer: str) -> float:
    """1.0 unless the instruction asks for a date, a number or a person and the answer has none."""
    ask = instruction.lower()
    if re.search(r"\b(when|what year|which year|what date)\b", ask):
        return float(bool(_DATE.search(answer)))
    if re.search(r"\bhow (many|much|long|old|far|big|tall|often)\b", ask):
        return float(bool(_NUMBER.search(answer)))
    if re.search(r"^\s*who\b|\bwho (was|is|were|did)\b", ask):
        return float(bool(_NAME.search(answer)))
    return 1.0


def pair_features(embedder, instructions: Sequence[str], answers: Sequence[str | None]) -> np.ndarray:
    """One row of `FEATURES` per (instruction, answer); `embedder` is an `embed.Embedder` (unit vectors)."""
    answers = [a or "" for a in answers]
    if not instructions:
        return np.zeros((0, len(FEATURES)))
    vi = embedder.embed_texts(list(instructions))
    va = embedder.embed_texts([a if a.strip() else "-" for a in answers])
    sentences = [[a[s:e] for s, e in sentence_spans(a)] or ["-"] for a in answers]
    vs = embedder.embed_texts([s for group in sentences for s in group])
    rows, k = [], 0
    for n, (instruction, answer, group) in enumerate(zip(instructions, answers, sentences)):
        cos = vs[k:k + len(group)] @ vi[n]
        k += len(group)
        a_words, i_words = _WORDS.findall(answer.lower()), _WORDS.findall(instruction.lower())
        rows.append([
            float(vi[n] @ va[n]), float(cos.max()), float(cos.mean()), float(cos[0]),
            float("<fi>" in instruction or "</fi>" in instruction),
            math.log1p(len(a_words)), math.log1p(len(i_words)),
            len(set(a_words)) / max(1, len(a_words)),
            len(set(a_words) & set(i_words)) / max(1, len(set(a_words) | set(i_words))),
            float(len(set(group)) < len(group)),
            float(bool(_REFUSAL.search(answer))),
            float(answer.rstrip()[-1:] in ".!?\"')"),
            answer_kind_matches(instruction, answer),
            float(not a_words),
        ])
    return np.asarray(rows, dtype=np.float64)


def is_classifier(folder: str | Path | None) -> bool:
    """Whether an `--llm-adapter` folder holds a classifier judge rather than a PEFT adapter."""
    return bool(folder) and (Path(folder) / FILE).is_file()


class JudgeClassifier:
    """Standardised features → multinomial logistic regression → expected score → integer score with the keep cut."""

    def __init__(self, params: dict[str, Any]):
        if tuple(params.get("features", ())) != FEATURES:
            raise ValueError("the classifier was trained on other features than this version computes: train it "
                             "again (`fineinstructions distill --stage judge --method classifier`)")
        self.params = params
        self.mean, self.scale = np.asarray(params["mean"]), np.asarray(params["scale"])
        self.coef, self.intercept = np.asarray(params["coef"]), np.asarray(params["intercept"])
        self.classes = np.asarray(params["classes"])
        self.cut = float(params["cut"])

    @classmethod
    def load(cls, folder: str | Path) -> JudgeClassifier:
        return cls(json.loads((Path(folder) / FILE).read_text()))

    def save(self, folder: str | Path) -> None:
        from fineinstructions import atomic

        atomic.write_json(Path(folder) / FILE, self.params)

    @property
    def embedder(self) -> str | None:
        """The sentence-transformers model the features were computed with (None: the embedded MiniLM)."""
        return self.params.get("embedder")

    def expected(self, features: np.ndarray) -> np.ndarray:
        """The expected score (1-5) of each row under the predicted score distribution."""
        logits = ((features - self.mean) / self.scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)) @ self.classes

    def score(self, expected: float) -> int:
        rounded = int(min(5, max(1, round(expected))))
        return max(4, rounded) if expected >= self.cut else min(3, rounded)


def best_cut(expected: np.ndarray, gold: np.ndarray) -> float:
    """The keep cut (on the expected score) with the best keep accuracy; ties go to the highest cut."""
    keep = gold >= 4
    candidates = np.unique(expected)
    accuracy = [((expected >= c) == keep).mean() for c in candidates]
    best = max(accuracy)
    return float(max(c for c, a in zip(candidates, accuracy) if a == best))


def fit(features: np.ndarray, scores: Sequence[int], c: float = 0.3, seed: int = 0, embedder: str | None = None,
        folds: int = 5) -> JudgeClassifier:
    """Train on annotated pairs: standardise, fit the head, and choose the keep cut on cross-validated expected
    scores (in-sample ones would set it too high: the head is surest on the rows it was fitted to)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(scores)
    if len(set(y.tolist())) < 2:
        raise ValueError("the teacher data needs pairs with at least two different scores")
    scaler = StandardScaler().fit(features)
    x = scaler.transform(features)
    head = LogisticRegression(C=c, max_iter=5000)
    counts = np.bincount(y)
    k = max(2, min(folds, int(counts[counts > 0].min())))  # every fold can hold every score
    probs = cross_val_predict(head, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                              method="predict_proba")
    classes = np.unique(y)
    head.fit(x, y)
    coef, intercept = head.coef_, head.intercept_
    if len(classes) == 2:  # scikit-learn keeps one row for two classes: the first class's logit is 0
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return JudgeClassifier({
        "features": list(FEATURES), "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
        "coef": coef.tolist(), "intercept": intercept.tolist(),
        "classes": classes.tolist(), "cut": best_cut(probs @ classes, y), "c": c, "embedder": embedder,
        "trained_on": int(len(y)),
    })
