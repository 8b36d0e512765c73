"""The instruction as the template says: its fixed words verbatim, each `<fi>` slot a span of the document.

Why: a small model left free copies the slot description ("a type of vegetable") instead of filling it, or drifts
from the template. With `Request.fill_template` the transformers backend decodes the instruction through this
automaton: the template's words (first letter in either case, an optional "?" at the end), each slot a document
span from a word start to a word end of at most `MAX_FILL` bytes, or `null` (the template does not fit).

A fill names a thing, so it reads as a noun phrase: it stays inside one sentence, it does not end on a function word ("a", "of", "and"), does not
start on a joining word ("and the areas", "in the far south"), and after a determiner in the template ("what is the
<fi>…</fi>") it does not start with another one. In the demo, a third of the 135M model's fills broke these rules
("should you put a in a boil", "what is the a") and the judge rightly scored every one of them low.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

from fineinstructions.llm.token_trie import WORD_BEFORE, TokenTrie

_SLOT = re.compile(rb"<fi>(?:(?!</?fi>).)*?</fi>", re.S)
_WORD = re.compile(rb"[A-Za-z0-9\x80-\xff]+")  # a run of `is_word` bytes
_LAST_WORD = re.compile(_WORD.pattern + rb"\Z")
#: a fill stays inside one sentence or line ("the end. Many cooks" names nothing): it stops before these
_BREAK = re.compile(rb"[.!?;:](?=\s)|\n|\\n")
MAX_FILL = 48  # bytes of one slot's fill: a slot names a thing ("the Sistine Chapel"), it does not quote a passage

#: words that start a noun phrase but never make one on their own
DETERMINERS = frozenset(b"a an the this that these those my your his her its our their some any each every".split())
#: words a noun phrase does not start with: it would join or govern the phrase, not be it
JOINING = frozenset(b"""and or but nor of in on at to for with by from as into onto over under about than then
    which who whom whose what when where why how is are was were be been being am do does did has have had not no
    so if because while also can could will would should may might must shall very just only""".split())
#: a fill does not end on any of these
FUNCTION_WORDS = DETERMINERS | JOINING | frozenset(b"i you he she we they it them us me".split())


class TemplateFill:
    """An automaton over the instruction's bytes: `prefix`, the template's fixed text with each slot replaced by a
    document span (from a word start to a word end), an optional "?", `suffix`; or `null`. States are
    (part, k, used): k bytes of a fixed part matched, or the bytes of the slot's fill so far; `used` holds the
    earlier slots' fills (lower-cased), which a later slot may not repeat ("a towel in a towel")."""

    DONE = (-1, b"", frozenset())

    def __init__(self, prefix: str, template: str, suffix: str, source: bytes, word_starts: list[int],
                 choices: Sequence[Sequence[str]] | None = None):
        """`choices`: per `<fi>` slot, the fills it may take (strings of `source`; empty = any span). A stage that
        knows which spans fit a slot (`answer_retrieval.py` ranks them by meaning) leaves the model to pick among
        them; choices that break the rules below are dropped, and a slot left with none may take any span."""
        raw = template.encode("utf-8")
        parts: list[tuple[str, bytes]] = [("lit", prefix.encode("utf-8"))]
        last = 0
        for m in _SLOT.finditer(raw):
            parts.append(("lit", raw[last:m.start()]))
            if parts[-1][0] != "slot":  # two slots side by side are one fill
                parts.append(("slot", b""))
            last = m.end()
        parts += [("lit", raw[last:]), ("opt", b"?"), ("lit", suffix.encode("utf-8"))]
        self.parts = [p for p in parts if p[0] == "slot" or p[1]]
        self.source = source
        # per slot, whether the template puts a determiner right before it ("the <fi>…</fi>")
        self.after_determiner = {i: _last_word(self.parts[i - 1][1].rstrip()) in DETERMINERS
                                 for i, part in enumerate(self.parts) if part[0] == "slot" and i > 0}
        # fills[d] / ends[d]: every document span a fill may be (d: it follows a determiner) / those it may end as
        self.fills, self.ends = fill_spans(source, word_starts)
        # per slot part: the fills it may take and end as (the shared sets, or its choices' share of them)
        self.slot_fills: dict[int, set[bytes]] = {}
        self.slot_ends: dict[int, set[bytes]] = {}
        slots = [i for i, part in enumerate(self.parts) if part[0] == "slot"]
        if choices is not None and len(choices) != len(slots):  # slots side by side were merged: choices don't map
            choices = None
        for k, i in enumerate(slots):
            d = self.after_determiner.get(i, False)
            ends = {c.encode("utf-8") for c in choices[k]} & self.ends[d] if choices else set()
            self.slot_ends[i] = ends or self.ends[d]
            self.slot_fills[i] = {e[:n] for e in ends for n in range(1, len(e) + 1)} or self.fills[d]
        self._alive: dict[tuple[bytes, int, frozenset], bool] = {}  # `_can_end` answers, per (fill, slot, used)
        # the template's first letter may change case ("who" → "Who"); nothing else may
        self.first = next(i for i, p in enumerate(self.parts) if i > 0 or not prefix)
        self.states = self._closure({self._start(0, frozenset())}) | {("null", 0, frozenset()), ("null", 1, frozenset())}

    def _start(self, i: int, used: frozenset):
        if i == len(self.parts):
            return self.DONE
        return (i, b"", used) if self.parts[i][0] == "slot" else (i, 0, used)

    def _closure(self, states: set) -> set:
        out, todo = set(), list(states)
        while todo:
            state = todo.pop()
            if state in out:
                continue
            out.add(state)
            i, x, used = state
            if state == self.DONE or i == "null":
                continue
            kind, text = self.parts[i]
            if kind == "slot":
                if x in self.slot_ends[i] and x.lower() not in used:
                    todo.append(self._start(i + 1, used | {x.lower()}))
            elif x == len(text) or kind == "opt" and x == 0:
                todo.append(self._start(i + 1, used))
        return out

    def step(self, states: set, byte: int) -> set:
        """The states after one more byte (empty: the byte breaks the template)."""
        nxt = set()
        for state in states:
            if state == self.DONE:
                continue
            i, x, used = state
            if i == "null":  # the literal " null" (x = bytes matched; starting at 1 skips the space)
                if b" null"[x] == byte:
                    nxt.add(self.DONE if x == 4 else ("null", x + 1, used))
                continue
            kind, text = self.parts[i]
            if kind == "slot":
                fill = x + bytes([byte])
                if fill in self.slot_fills[i] and self._can_end(fill, i, used):
                    nxt.add((i, fill, used))
            elif x < len(text) and (text[x] == byte or i == self.first and x == 0 and _same(text[x], byte)):
                nxt.add((i, x + 1, used))
        return self._closure(nxt)

    def _can_end(self, fill: bytes, i: int, used: frozenset) -> bool:
        """Whether `fill` can still end as a fill no earlier slot used: only a prefix of a used fill can be cut off
        that way, so only those are checked (against every end, once per state)."""
        low = fill.lower()
        if not any(u.startswith(low) for u in used):
            return True
        key = (fill, i, used)
        if key not in self._alive:
            self._alive[key] = any(e.startswith(fill) and e.lower() not in used for e in self.slot_ends[i])
        return self._alive[key]

    def advance(self, data: bytes) -> bool:
        """Feed generated bytes; True while the instruction is still being written."""
        for byte in data:
            if self.DONE in self.states:
                return False
            self.states = self.step(self.states, byte)
            if not self.states:
                return False
        return self.DONE not in self.states

    def allowed(self, trie: TokenTrie) -> set[int]:
        """Every token whose bytes the automaton accepts from here (tokens running past the end are not offered)."""
        allowed: set[int] = set()
        stack = [(trie.root, self.states)]
        while stack:
            node, states = stack.pop()
            for key, child in node.items():
                if key == -1:
                    continue
                nxt = self.step(states, key)
                if nxt:
                    allowed.update(child.get(-1, ()))
                    if self.DONE not in nxt:
                        stack.append((child, nxt))
        return allowed


def word_starts(source: bytes) -> list[int]:
    """Where a copy or a fill may start: every word start of `source` (also after an escaped "\\n" in JSON)."""
    return [p for p in range(len(source)) if source[p] not in WORD_BEFORE
            and (p == 0 or source[p - 1] in WORD_BEFORE or source[p - 2:p] == b"\\n")]


def fill_spans(source: bytes, starts: list[int]) -> tuple[dict[bool, set[bytes]], dict[bool, set[bytes]]]:
    """(fills, ends), each keyed by "follows a determiner": every span of `source` a fill may be while it is
    written (any prefix of a valid fill) and those it may end as (the noun-phrase rules above, at most MAX_FILL)."""
    fills: dict[bool, set[bytes]] = {False: set(), True: set()}
    ends: dict[bool, set[bytes]] = {False: set(), True: set()}
    # where each word of the source starts, by its end: found once, not per span (this runs for every request)
    word_start = {m.end(): m.start() for m in _WORD.finditer(source)}
    breaks = [m.start() for m in _BREAK.finditer(source)]
    for p in starts:  # only fills that can still end within MAX_FILL: no dead ends to decode into
        first = m.group().lower() if (m := _WORD.match(source, p)) else b""
        if first in JOINING:
            continue
        k = bisect.bisect_left(breaks, p)
        stop = breaks[k] if k < len(breaks) else len(source)
        span_ends = [q for q in range(p + 1, min(stop, p + MAX_FILL) + 1)
                     if q in word_start and source[max(word_start[q], p):q].lower() not in FUNCTION_WORDS]
        for d in (False, True) if first not in DETERMINERS else (False,):
            fills[d].update(source[p:q] for q in range(p + 1, max(span_ends, default=p) + 1))
            ends[d].update(source[p:q] for q in span_ends)
    return fills, ends


def document_fills(text: str, max_words: int = 5) -> list[str]:
    """Every fill of at most `max_words` words the rules allow from `text`, sorted: the candidates a stage ranks
    for a slot (`TemplateFill(choices=…)`)."""
    source = text.encode("utf-8")
    _, ends = fill_spans(source, word_starts(source))
    out = set()
    for span in ends[False]:
        fill = span.decode("utf-8", "ignore").strip()
        if fill and len(fill.split()) <= max_words:  # (no line break: a fill stops before one)
            out.add(fill)
    return sorted(out)


def _last_word(text: bytes) -> bytes:
    """The word `text` ends with, lower-cased (empty if it ends with something else)."""
    return m.group().lower() if (m := _LAST_WORD.search(text)) else b""


def _same(a: int, b: int) -> bool:
    """Bytes equal up to ASCII case: a template's "who" may be written "Who"."""
    return a == b or (65 <= a <= 90 or 97 <= a <= 122) and a ^ 32 == b
