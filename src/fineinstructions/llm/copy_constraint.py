"""Constrained copying: while an `<excerpt>` tag is open, the model can only write a verbatim piece of the document.

Why: a small model asked to quote drifts -- it paraphrases, merges two sentences, or loops on `<...>` -- and every
such answer is rejected afterwards because its excerpt is not in the document (on the gold dev split, most of the
135M instantiate student's failures were `excerpt_missing` or `excerpt_malformed`). Decoding can rule that out. While
an excerpt is open, the only tokens allowed are those that continue a span of the document, close the tag, or (once
per tag) elide the middle with `<...>`, after which the END words must come later in the document. The model still
chooses *which* span to quote and when to stop; it just cannot misquote. Outside excerpts nothing is constrained.

Everything works on bytes, so it does not matter how the tokenizer splits words: every token's bytes go into a trie,
and the allowed next tokens are the trie paths along the document bytes that follow the current fragment. The
source is matched as the model must write it: a JSON-answer format passes the JSON-escaped document.
"""

from __future__ import annotations

from functools import lru_cache

OPEN, CLOSE, ELISION = b"<excerpt>", b"</excerpt>", b"<...>"
#: excerpts per answer; a small model otherwise loops on quote after quote (97 % of gold answers need <= 4)
MAX_EXCERPTS = 4
_MAX_POSITIONS = 64  # continuation points looked at per step; a fragment this common is not worth more
_WORD_BEFORE = frozenset(b" \t\n\r(\"'[")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-printable-character table (byte-level BPE writes every byte as one char)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_bytes(tokenizer) -> list[bytes | None]:
    """Each token id's bytes (None for special tokens): byte-level BPE (GPT-2, SmolLM, Llama 3, Qwen) or
    SentencePiece with byte fallback ("▁" is a space, "<0x0A>" a byte)."""
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    decoder = _byte_decoder()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = backend is not None and "ByteLevel" in repr(backend.decoder)
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(None)
        elif byte_level:
            try:
                out.append(bytes(decoder[c] for c in piece))
            except KeyError:  # an added token outside the byte alphabet
                out.append(piece.encode("utf-8"))
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            out.append(piece.replace("▁", " ").encode("utf-8"))
    return out


class TokenTrie:
    """Token ids by their bytes, to list every token that is a prefix of some text in one walk."""

    def __init__(self, tokens: list[bytes | None]):
        self.root: dict = {}
        self.tokens = tokens
        for tid, b in enumerate(tokens):
            if not b:
                continue
            node = self.root
            for byte in b:
                node = node.setdefault(byte, {})
            node.setdefault(-1, []).append(tid)
        # tokens that copy a few bytes and then start a tag, e.g. ".</": (id, copied part, tag part)
        self.mixed = [(tid, b[:k], b[k:]) for tid, b in enumerate(tokens) if b
                      for k in range(1, len(b)) if b[k] == ord("<") and (CLOSE.startswith(b[k:]) or ELISION.startswith(b[k:]))]

        self.angle = frozenset(tid for tid, b in enumerate(tokens) if b and b"<" in b)  # any tag at all
        self.after_angle = frozenset(tid for tid, b in enumerate(tokens) if b and b[:1] in (b"/", b"."))
        # tokens that would write `</` or `<.` (a closing tag or an elision), banned outside excerpts
        self.stray_tags = frozenset(tid for tid, b in enumerate(tokens)
                                    if b and (b"</" in b or b"<." in b or "<…".encode() in b))

    def prefixes(self, text: bytes, start: int = 0) -> list[int]:
        """Ids of every token whose bytes equal text[start:start+n] for some n >= 1."""
        found: list[int] = []
        node = self.root
        for byte in text[start:start + 64]:
            node = node.get(byte)
            if node is None:
                break
            found.extend(node.get(-1, ()))
        return found

    @lru_cache(maxsize=64)
    def extensions(self, text: bytes) -> tuple[int, ...]:
        """Ids of every token whose bytes start with `text` (a tag's rest, then whatever the token carries on)."""
        node = self.root
        for byte in text:
            node = node.get(byte)
            if node is None:
                return ()
        found, stack = [], [node]
        while stack:
            n = stack.pop()
            for key, child in n.items():
                if key == -1:
                    found.extend(child)
                else:
                    stack.append(child)
        return tuple(found)


class _Row:
    """One row's copy source and the bytes it generated so far (starting with the tag the prompt left open)."""

    def __init__(self, trie: TokenTrie, source: bytes, opened: bytes | None):
        self.trie, self.source = trie, source
        self.generated = bytearray(OPEN + opened if opened is not None else b"")
        self.word_starts = [p for p in range(len(source)) if source[p] not in _WORD_BEFORE
                            and (p == 0 or source[p - 1] in _WORD_BEFORE or source[p - 2:p] == b"\\n")]

    def allowed(self) -> tuple[set[int] | None, frozenset[int]]:
        """(the only tokens allowed next or None, tokens banned next): inside an open excerpt only copying and the
        tag rules; outside, once the answer has opened one, no stray `</excerpt>` or `<...>`."""
        gen = bytes(self.generated)
        opened = gen.rfind(OPEN)
        closed = gen.rfind(CLOSE)
        if opened == -1 or closed > opened:
            return self._outside(gen[closed + len(CLOSE):] if closed != -1 else gen)
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
        if not frag.strip() or not all(p >= len(self.source) or not _is_word(self.source[p]) for p in ends):
            return False
        return b" " in frag.strip() if elided and len(ends) > 1 else len(ends) == 1

    def _outside(self, text: bytes) -> tuple[set[int] | None, frozenset[int]]:
        """Outside excerpts (the instruction, text between quotes): free text or a new `<excerpt>`, never `<...>`
        or `</excerpt>`; a half-written `<exc` must be finished. A bare `<` may go on as text (`x < 5`, `<unk>`)."""
        cut = text.rfind(b"<")
        tail = text[cut:] if cut != -1 else b""
        if tail == b"<":
            return None, self.trie.stray_tags | self.trie.after_angle
        if len(tail) > 1 and OPEN.startswith(tail) and len(tail) < len(OPEN):
            rest = OPEN[len(tail):]
            return set(self.trie.prefixes(rest)) | set(self.trie.extensions(rest)), frozenset()
        if bytes(self.generated).count(OPEN) >= MAX_EXCERPTS:  # enough quotes: no new one (stops quote loops)
            return None, self.trie.angle
        return None, self.trie.stray_tags

    def _continuations(self, frag: bytes, lo: int) -> list[int]:
        """Source offsets right after an occurrence of `frag` at or after `lo` (word starts when it is empty)."""
        if not frag:
            return [p for p in self.word_starts if p >= lo][:_MAX_POSITIONS * 8]
        out, pos = [], self.source.find(frag, lo)
        while pos != -1 and len(out) < _MAX_POSITIONS:
            out.append(pos + len(frag))
            pos = self.source.find(frag, pos + 1)
        return out

    def _tag_tokens(self, tag: bytes, written: bytes) -> list[int]:
        """Tokens that continue `tag` after its first `written` bytes; a closing tag may run on into the JSON."""
        rest = tag[len(written):]
        ids = self.trie.prefixes(rest)
        if tag == CLOSE:
            ids = ids + list(self.trie.extensions(rest))
        return ids


def _is_word(byte: int) -> bool:
    return chr(byte).isalnum() or byte >= 0x80


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

    def __init__(self, trie: TokenTrie, sources: list[str | None], prompts: list[str]):
        self.trie = trie
        self.rows = [_Row(trie, s.encode("utf-8"), opened_excerpt(p)) if s else None for s, p in zip(sources, prompts)]
        self.start: int | None = None

    def __call__(self, input_ids, scores):
        import torch

        if self.start is None:
            self.start = input_ids.shape[1]
        for i, row in enumerate(self.rows):
            if row is None:
                continue
            if input_ids.shape[1] > self.start:
                row.generated += self.trie.tokens[int(input_ids[i, -1])] or b""
            allowed, banned = row.allowed()
            if allowed:
                keep = torch.tensor(sorted(a for a in allowed if a < scores.shape[-1]), device=scores.device)
                masked = torch.full_like(scores[i], float("-inf"))
                masked[keep] = scores[i, keep]
                scores[i] = masked
            elif banned:
                scores[i, torch.tensor(sorted(b for b in banned if b < scores.shape[-1]), device=scores.device)] = float("-inf")
        return scores
