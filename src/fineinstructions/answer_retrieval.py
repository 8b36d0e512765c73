"""Answers by retrieval: the document sentences closest to the instruction, copied verbatim.

The paper's instantiator writes its answer as excerpts of the document. The embedded 135M model cannot choose them
well: prompted (with constrained copying) it recalls 0.40 of the gold key spans on the dev split, and the log-prob
of answering `null` carries no signal about whether a template fits (AUC 0.50 on the train split). The sentence
embedder that already runs the match stage does both better, measured on the gold train/dev splits
(`benchmarks/answer_retrieval.py`): the 3 sentences closest to "template + reference instruction" recall 0.66 / 0.74
of the key spans, and their mean similarity to the template separates fitting from non-fitting windows (AUC 0.80 /
0.76; 0.30 and 0.32 tie as the best threshold on train, right for 0.78 of the rows, against 0.67 for never answering
null; 0.30, which nulls fewer fitting rows, is right for 0.78 of the dev rows, against 0.73). So, for the small
default, the LLM only fills the slots (under the fill constraint); the answer is the `sentences` best sentences in
document order; a window whose best sentences stay below `min_similarity` answers `null` before the LLM is asked
anything. Sentences are cut verbatim, so the answer is grounded by construction (only the spaces joining non-
adjacent sentences are not the document's).
"""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np

from fineinstructions.excerpts import compress_excerpts
from fineinstructions.llm.template_fill import document_fills
from fineinstructions.templates import ANY_TAG, SLOT

# A sentence ends at . ! or ? (plus closing quotes/brackets) followed by white space and no lower-case letter, or
# at a line break. "3.5" and "e.g. in" stay inside; an abbreviation before a capital ("Dr. Smith") splits --
# harmless for an answer, which joins neighbouring sentences back together.
_SENTENCE_END = re.compile(r"""[.!?]+["'\u2019\u201d)\]]*(?=\s+(?![a-z]))|\n""")


#: shorter "sentences" (list stubs) are not answer candidates, nor are headings: lines shorter than
#: `HEADING_WORDS` words without end punctuation ("Everyday cleaning after cooking")
MIN_WORDS, HEADING_WORDS = 4, 8


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of `text`, stripped of surrounding white space; empty ones dropped."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        a += len(piece) - len(piece.lstrip())
        b -= len(piece) - len(piece.rstrip())
        if b - a > 1 and re.search(r"\w", text[a:b]):
            out.append((a, b))
    return out


def is_candidate(sentence: str) -> bool:
    """Whether a sentence can be (part of) an answer: long enough, not a heading, and not the tail of a sentence
    (a lower-case start: where a document window cuts into a sentence, "that gives you tax advantages …")."""
    n = len(sentence.split())
    return (n >= MIN_WORDS and not sentence[:1].islower()
            and (n >= HEADING_WORDS or _ends_a_sentence(sentence)))


def _ends_a_sentence(text: str) -> bool:
    return text.rstrip("\"')]\u2019\u201d")[-1:] in ".!?:;"


def candidate_spans(window: str) -> list[tuple[int, int]]:
    """The window's sentences that can be answer sentences: `is_candidate`, and not a last sentence the window's
    end cuts off (no end mark)."""
    spans = [(a, b) for a, b in sentence_spans(window) if is_candidate(window[a:b])]
    if spans and spans[-1][1] == len(window.rstrip()) and not _ends_a_sentence(window[slice(*spans[-1])]):
        spans.pop()
    return spans


def template_query(template: str) -> str:
    """The template as plain text: slot tags dropped, their descriptions kept ("who designed famous landmark")."""
    return re.sub(r"\s+", " ", ANY_TAG.sub("", template)).strip()


_WORDS = re.compile(r"\w+")


def _neighbours(template: str, slot: re.Match) -> tuple[str, str]:
    """The template words right before and after a slot, lower-cased ("" next to another slot or an end)."""
    before = _WORDS.findall(template[:slot.start()].rsplit("</fi>", 1)[-1])
    after = _WORDS.findall(template[slot.end():].split("<fi>", 1)[0])
    return (before[-1].lower() if before else ""), (after[0].lower() if after else "")


def _repeats(fill: str, before: str, after: str) -> bool:
    """Whether a fill would double the template word next to it ("paint the ceiling ceiling", "plant plant")."""
    words = _WORDS.findall(fill.lower())
    return bool(words) and (words[0] == before or words[-1] == after)


class SentenceRetriever:
    """Ranks a window's sentences against a template and its instruction with a sentence embedder.

    One instance serves a whole stage: the vectors of the last few windows' sentences and of the last few templates
    are kept, because a document window is asked about by each of its ~6 matched templates in a row, and each
    template is asked about a window three times (null or not, what to fill from, what to answer)."""

    def __init__(self, embedder, sentences: int = 3, min_similarity: float = 0.30, cache: int = 64):
        if sentences < 1:
            raise ValueError("sentences must be at least 1")
        self.embedder, self.sentences, self.min_similarity = embedder, sentences, min_similarity
        self._windows: OrderedDict[str, tuple[list[tuple[int, int]], np.ndarray]] = OrderedDict()
        self._templates: OrderedDict[str, np.ndarray] = OrderedDict()  # a template is asked of several windows
        self._cache = cache

    def _cached(self, store: OrderedDict, key: str, make):
        """`store[key]`, made on a miss; the `cache` most recently used keys are kept."""
        if key in store:
            store.move_to_end(key)
        else:
            store[key] = make()
            if len(store) > self._cache:
                store.popitem(last=False)
        return store[key]

    def _sentences(self, window: str) -> tuple[list[tuple[int, int]], np.ndarray]:
        def make():
            spans = candidate_spans(window)
            return spans, self.embedder.embed_texts([window[a:b] for a, b in spans])
        return self._cached(self._windows, window, make)

    def _template(self, template: str) -> np.ndarray:
        return self._cached(self._templates, template,
                            lambda: self.embedder.embed_texts([template_query(template)])[0])

    def _best(self, template: str, window: str) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
        """(the window's candidate spans, the indices of the `sentences` closest to the template, best first, and
        their cosines): what `similarity` and `focus` both read."""
        spans, vectors = self._sentences(window)
        if not spans:
            return spans, np.zeros(0, dtype=int), np.zeros(0)
        scores = vectors @ self._template(template)
        best = np.argsort(-scores, kind="stable")[: self.sentences]
        return spans, best, scores[best]

    def similarity(self, template: str, window: str) -> float:
        """How well the window can answer the template: the mean cosine of its `sentences` best sentences to the
        template's plain text (0.0 for a window without sentences). Below `min_similarity` the answer is null."""
        _, best, scores = self._best(template, window)
        return float(scores.mean()) if len(best) else 0.0

    def focus(self, template: str, window: str) -> str:
        """The `sentences` sentences closest to the template alone, in document order: the text the slots are
        filled from, so that the instruction asks about what the answer will say (from the whole window a small
        model fills "how long does it take to <fi>…</fi>" with any phrase at all)."""
        spans, best, _ = self._best(template, window)
        if not spans:
            return window
        return " ".join(window[spans[i][0]:spans[i][1]] for i in sorted(best))

    def ranked_fills(self, template: str, text: str, n: int = 8) -> list[list[tuple[str, float]]]:
        """Per `<fi>` slot, the `n` fills from `text` (spans the fill rules allow, `document_fills`) closest in
        meaning to the slot's description: the model picks among them. Left to choose any span of the 3 sentences,
        the 135M model fills "how do I reset the network settings on my <fi>a device</fi>" with "app phones".
        Each fill comes with its cosine to the description, best first."""
        slots = list(SLOT.finditer(template))
        descriptions = [m.group(1) for m in slots]
        candidates = document_fills(text)
        if not descriptions or not candidates:
            return [[] for _ in descriptions]
        scores = self.embedder.embed_texts(descriptions) @ self.embedder.embed_texts(candidates).T
        out = []
        for m, row in zip(slots, scores):
            before, after = _neighbours(template, m)
            fitting = [(candidates[j], float(row[j])) for j in np.argsort(-row, kind="stable")
                       if not _repeats(candidates[j], before, after)]
            out.append(fitting[:n])
        return out

    def fits(self, template: str, window: str) -> bool:
        return self.similarity(template, window) >= self.min_similarity

    def answer(self, template: str, instruction: str, window: str) -> str:
        """The best `sentences` sentences for "template + instruction", in document order, as the window's own text:
        adjacent sentences keep the characters between them, others are joined by a space. The template counts
        as much as the instruction: a small model's fill can be off, the template's wording is not."""
        spans, vectors = self._sentences(window)
        if not spans:
            return ""
        query = self._template(template) + self.embedder.embed_texts([instruction])[0]
        best = sorted(np.argsort(-(vectors @ query), kind="stable")[: self.sentences])
        runs: list[list[int]] = []
        for i in best:  # neighbours join with the window's own text, unless a heading or stub sits between them
            if runs and runs[-1][-1] == i - 1 and not window[spans[i - 1][1]:spans[i][0]].strip():
                runs[-1].append(i)
            else:
                runs.append([i])
        return " ".join(window[spans[r[0]][0]:spans[r[-1]][1]] for r in runs)

    def excerpt_answer(self, template: str, instruction: str, window: str) -> str:
        """`answer` written as the stage's answers are written (`<excerpt>START<...>END</excerpt>`), so that it goes
        through the same expansion and checks as a generated one."""
        text = self.answer(template, instruction, window)
        return compress_excerpts(text, window) if text else ""
