"""Constrained copying: while an `<excerpt>` tag is open, the model can only write a verbatim piece of the document.

Why: a small model asked to quote drifts -- it paraphrases, merges two sentences, or loops on `<...>` -- and every
such answer is rejected afterwards because its excerpt is not in the document (on the gold dev split, most of the
135M instantiate student's failures were `excerpt_missing` or `excerpt_malformed`). Decoding can rule that out. While
an excerpt is open, the only tokens allowed are those that continue a span of the document, close the tag, or (once
per tag) elide the middle with `<...>`, after which the END words must come later in the document. The model still
chooses *which* span to quote and when to stop; it just cannot misquote. Outside excerpts only tag syntax is ruled:
no stray `</excerpt>` or `<...>`, and at most `MAX_EXCERPTS` quotes.

Everything works on bytes, so it does not matter how the tokenizer splits words: every token's bytes go into a trie,
and the allowed next tokens are the trie paths along the document bytes that follow the current fragment. The
source is matched as the model must write it: a JSON-answer format passes the JSON-escaped document.

A request may also carry the template its instruction must follow (`template_fill.py`).
"""

from __future__ import annotations

from itertools import islice

from fineinstructions.excerpts import occurrences
from fineinstructions.llm.base import FillTemplate
from fineinstructions.llm.template_fill import TemplateFill, word_starts
from fineinstructions.llm.token_trie import TokenTrie, is_word

OPEN, CLOSE, ELISION = b"<excerpt>", b"</excerpt>", b"<...>"
#: excerpts per answer; a small model otherwise loops on quote after quote (97 % of gold answers need <= 4)
MAX_EXCERPTS = 4
_MAX_POSITIONS = 64  # continuation points looked at per step; a fragment this common is not worth more


class ExcerptTrie(TokenTrie):
    """The token trie plus the token sets the excerpt rules need, computed once per tokenizer."""

    def __init__(self, tokens: list[bytes | None]):
        super().__init__(tokens)
        # tokens that copy a few bytes and then start a tag, e.g. ".</": (id, copied part, tag part)
        self.mixed = [(tid, b[:k], b[k:]) for tid, b in enumerate(tokens) if b for k in range(1, len(b))
                      if b[k] == ord("<") and (CLOSE.startswith(b[k:]) or ELISION.startswith(b[k:]))]
        self.angle = frozenset(tid for tid, b in enumerate(tokens) if b and b"<" in b)  # any tag at all
        self.after_angle = frozenset(tid for tid, b in enumerate(tokens) if b and b[:1] in (b"/", b"."))
        # tokens that would write `</` or `<.` (a closing tag or an elision), banned outside excerpts
        self.stray_tags = frozenset(tid for tid, b in enumerate(tokens)
                                    if b and (b"</" in b or b"<." in b or "<…".encode() in b))


class _Row:
    """One row's copy source and the bytes it generated so far (starting with the tag the prompt left open)."""

    def __init__(self, trie: ExcerptTrie, source: bytes, opened: bytes | None,
                 template: FillTemplate | None = None):
        self.trie, self.source = trie, source
        self.generated = bytearray(OPEN + opened if opened is not None else b"")
        self.word_starts = word_starts(source)
        self.template = (TemplateFill(template.prefix, template.template, template.suffix, source, self.word_starts,
                                      choices=template.choices) if template else None)

    def add(self, data: bytes) -> None:
        """One more generated token's bytes."""
        self.generated += data
        if self.template is not None and not self.template.advance(data):
            self.template = None  # the instruction is written (or left the rules): the excerpt rules take over

    def next_tokens(self) -> tuple[set[int] | None, frozenset[int]]:
        """`allowed()`, or the template's tokens while the instruction is being written."""
        if self.template is not None:
            return self.template.allowed(self.trie) or None, frozenset()
        return self.allowed()

    def allowed(self) -> tuple[set[int] | None, frozenset[int]]:
        """(the only tokens allowed next or None, tokens banned next): inside an open excerpt only copying and the
        tag rules; outside, once the answer has opened one, no stray `</excerpt>` or `<...>`."""
        gen = bytes(self.generated)
        opened = gen.rfind(OPEN)
        closed = gen.rfind(CLOSE)
        if opened == -1 or closed > opened:
            return self._outside(gen, gen[closed + len(CLOSE):] if closed != -1 else gen)
        parts = gen[opened + len(OPEN):].split(ELISION)
        if len(parts) > 2:
            return None, frozenset()
        frag, lo = parts[-1], 0
        if len(parts) == 2:  # END words: after the START words
            first = self.source.find(parts[0])
            if first == -1:
                return None, frozenset()
            lo = first + len(parts[0])
        tags = (CLOSE,) if len(parts) == 2 else (CLOSE, ELISION)
        allowed: set[int] = set()
        ends = self._continuations(frag, lo)
        for pos in ends:
            allowed.update(self.trie.prefixes(self.source, pos))
        if frag and self._may_end(frag, ends, elided=len(parts) == 2):  # a tag may start, alone or after more bytes
            for tag in tags:
                allowed.update(self._tag_tokens(tag, b""))
        for tid, copied, tag_part in self.trie.mixed:
            if any(t.startswith(tag_part) for t in tags):
                more = [p + len(copied) for p in ends if self.source.startswith(copied, p)]
                if more and self._may_end(frag + copied, more, elided=len(parts) == 2):
                    allowed.add(tid)
        cut = frag.rfind(b"<")
        if cut > 0 and self.source.find(frag[:cut], lo) != -1:  # a tag is being written: only its rest
            for tag in tags:
                if tag.startswith(frag[cut:]) and len(frag) - cut < len(tag):
                    allowed.update(self._tag_tokens(tag, frag[cut:]))
        return allowed or None, frozenset()

    def _may_end(self, frag: bytes, ends: list[int], elided: bool) -> bool:
        """A fragment may be closed when it ends on a word boundary and points to one place: START (or a whole
        quote) occurs once in the document; END, which expands to its nearest occurrence, has two words or more."""
        if not frag.strip() or not all(p >= len(self.source) or not is_word(self.source[p]) for p in ends):
            return False
        return b" " in frag.strip() if elided and len(ends) > 1 else len(ends) == 1

    def _outside(self, gen: bytes, text: bytes) -> tuple[set[int] | None, frozenset[int]]:
        """Outside excerpts (the instruction, text between quotes): free text or a new `<excerpt>`, never `<...>`
        or `</excerpt>`; a half-written `<exc` must be finished. A bare `<` may go on as text (`x < 5`, `<unk>`).
        `gen`: everything generated; `text`: its part after the last closed excerpt."""
        cut = text.rfind(b"<")
        tail = text[cut:] if cut != -1 else b""
        if tail == b"<":
            return None, self.trie.stray_tags | self.trie.after_angle
        if len(tail) > 1 and OPEN.startswith(tail) and len(tail) < len(OPEN):
            rest = OPEN[len(tail):]
            return set(self.trie.prefixes(rest)) | set(self.trie.extensions(rest)), frozenset()
        if gen.count(OPEN) >= MAX_EXCERPTS:  # enough quotes: no new one (stops quote loops)
            return None, self.trie.angle
        return None, self.trie.stray_tags

    def _continuations(self, frag: bytes, lo: int) -> list[int]:
        """Source offsets right after an occurrence of `frag` at or after `lo` (word starts when it is empty)."""
        if not frag:
            return [p for p in self.word_starts if p >= lo][:_MAX_POSITIONS * 8]
        return [p + len(frag) for p in islice(occurrences(self.source, frag, lo), _MAX_POSITIONS)]

    def _tag_tokens(self, tag: bytes, written: bytes) -> list[int]:
        """Tokens that continue `tag` after its first `written` bytes; a closing tag may run on into the JSON."""
        rest = tag[len(written):]
        ids = self.trie.prefixes(rest)
        if tag == CLOSE:
            ids = ids + list(self.trie.extensions(rest))
        return ids


def opened_excerpt(prompt: str) -> bytes | None:
    """The text after an `<excerpt>` the prompt leaves open (a follow-up pass that starts the answer's quote)."""
    data = prompt.encode("utf-8")
    opened = data.rfind(OPEN)
    if opened == -1 or data.rfind(CLOSE) > opened:
        return None
    return data[opened + len(OPEN):]


class ExcerptCopier:
    """A `transformers` logits processor: rows with a copy source may only copy it inside `<excerpt>` tags.

    Must run before any sampler, so that sampled candidates obey the same rule as greedy ones."""

    def __init__(self, trie: ExcerptTrie, sources: list[str | None], prompts: list[str],
                 templates: list[FillTemplate | None]):
        self.trie = trie
        self.rows = [_Row(trie, s.encode("utf-8"), opened_excerpt(p), t) if s else None
                     for s, p, t in zip(sources, prompts, templates)]
        self.start: int | None = None

    def __call__(self, input_ids, scores):
        import torch

        if self.start is None:
            self.start = input_ids.shape[1]
        for i, row in enumerate(self.rows):
            if row is None:
                continue
            if input_ids.shape[1] > self.start:
                row.add(self.trie.tokens[int(input_ids[i, -1])] or b"")
            allowed, banned = row.next_tokens()
            if allowed:
                keep = torch.tensor(sorted(a for a in allowed if a < scores.shape[-1]), device=scores.device)
                masked = torch.full_like(scores[i], float("-inf"))
                masked[keep] = scores[i, keep]
                scores[i] = masked
            elif banned:
                ban = torch.tensor(sorted(b for b in banned if b < scores.shape[-1]), device=scores.device)
                scores[i, ban] = float("-inf")
        return scores
