"""Every token's bytes, in a trie: what the decoding constraints (`copy_constraint.py`, `template_fill.py`) walk.

Working on bytes makes the constraints independent of how a tokenizer splits words: the allowed next tokens are the
trie paths along the text that may come next.
"""

from __future__ import annotations

from functools import lru_cache

#: bytes after which a word starts
WORD_BEFORE = frozenset(b" \t\n\r(\"'[")


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
        self._extensions: dict[bytes, tuple[int, ...]] = {}
        for tid, b in enumerate(tokens):
            if not b:
                continue
            node = self.root
            for byte in b:
                node = node.setdefault(byte, {})
            node.setdefault(-1, []).append(tid)

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

    def extensions(self, text: bytes) -> tuple[int, ...]:
        """Ids of every token whose bytes start with `text` (a tag's rest, then whatever the token carries on);
        memoised, as the same few tag rests are asked for at every step."""
        if text not in self._extensions:
            self._extensions[text] = self._subtree(text)
        return self._extensions[text]

    def _subtree(self, text: bytes) -> tuple[int, ...]:
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


def is_word(byte: int) -> bool:
    """A byte of a word: ASCII letters and digits, and every byte of a non-ASCII character."""
    return chr(byte).isalnum() or byte >= 0x80
