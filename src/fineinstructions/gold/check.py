"""Checks for hand-written gold rows: the rules of the gold format, verified by script rather than by eye.

`python -m fineinstructions.gold.check FILE.jsonl --stage templatize|instantiate|judge [--shared ../shared/data]`
prints every problem with its row id and a summary (rows, slot counts, scores, sources). With `--shared`, queries
and document windows are also checked to be verbatim from the shared data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from fineinstructions.gold.metrics import span_quoted, word_tokens
from fineinstructions.gold.readback import filled_values, fold, read_back, slot_words
from fineinstructions.templates import ANY_TAG, num_slots, slots, tag_problem
from fineinstructions.text import normalize_whitespace

MAX_WINDOW = 2500
#: words a slot description may share with the words it replaced (function words, generic nouns)
_COMMON = set("a an the of in on at to for and or by with from is are was were be it its this that what which who "
              "whom how when where why do does did can you your my i me we our their his her".split())


def same_word(a: str, b: str) -> bool:
    """The same word or another form of it ("loan"/"loans", "organisation"/"organization"): equal, one a prefix
    of the other (4+ letters), or a shared first 6 letters."""
    if a == b:
        return True
    short = min(len(a), len(b))
    return (short >= 4 and (a.startswith(b) or b.startswith(a))) or (short >= 6 and a[:6] == b[:6])


def copied_share(answer: str, document: str, min_words: int = 4) -> float:
    """Share of the answer's characters inside verbatim runs of ≥ `min_words` words from the document (whitespace
    folded; a shorter answer counts when it is all verbatim)."""
    doc = normalize_whitespace(document)
    tokens = normalize_whitespace(answer).split(" ")
    if not tokens or tokens == [""]:
        return 0.0
    covered = [False] * len(tokens)
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and " ".join(tokens[i:j + 1]) in doc:
            j += 1
        if j - i >= min(min_words, len(tokens)):
            covered[i:j] = [True] * (j - i)
            i = j
        else:
            i += 1
    total = sum(len(t) + 1 for t in tokens)
    return sum(len(t) + 1 for t, c in zip(tokens, covered) if c) / total


def check_templatize(row: dict) -> list[str]:
    problems = []
    query, refs = row.get("query"), row.get("reference_templates")
    if not isinstance(query, str) or not query.strip():
        return ["query missing"]
    if not isinstance(refs, list) or not 1 <= len(refs) <= 3:
        return ["reference_templates must be a list of 1-3 templates"]
    for t in refs:
        if not isinstance(t, str) or (why := tag_problem(t)):
            problems.append(f"template {t!r}: {why or 'not a string'}")
            continue
        if not 1 <= num_slots(t) <= 3:
            problems.append(f"template {t!r}: {num_slots(t)} slots (1-3 allowed)")
        spans = read_back(t, query)
        if spans is None:
            problems.append(f"template {t!r} does not read back onto the query")
            continue
        folded = fold(query)
        for desc, (s, e) in zip(slots(t), spans):
            replaced = set(word_tokens(folded[s:e])) - _COMMON
            if repeats := sorted(w for w in replaced if any(same_word(w, d) for d in word_tokens(desc))):
                problems.append(f"template {t!r}: slot description {desc!r} repeats replaced word(s) {repeats}")
        if slot_words(t, query) == set(range(len(word_tokens(query)))):
            problems.append(f"template {t!r}: slots cover the whole query")
    if len({json.dumps(sorted(slot_words(t, query) or [])) for t in refs if isinstance(t, str)}) < len(refs):
        problems.append("two reference templates slot the same words")
    desc = row.get("compatible_document_description")
    if not isinstance(desc, str) or len(desc.split()) < 5:
        problems.append("compatible_document_description missing or shorter than 5 words")
    elif ANY_TAG.search(desc):
        problems.append("compatible_document_description contains <fi> tags")
    return problems


def _window_problems(row: dict) -> list[str]:
    doc = row.get("document")
    if not isinstance(doc, str) or not doc.strip():
        return ["document missing"]
    if len(doc) > MAX_WINDOW:
        return [f"document window is {len(doc)} characters (max {MAX_WINDOW})"]
    if not isinstance(row.get("document_title"), str) or not row["document_title"].strip():
        return ["document_title missing"]
    return []


def check_instantiate(row: dict) -> list[str]:
    problems = _window_problems(row)
    if problems:
        return problems
    doc, template = row["document"], row.get("template")
    if not isinstance(template, str) or tag_problem(template):
        return [f"template {template!r}: {tag_problem(template) if isinstance(template, str) else 'missing'}"]
    if not isinstance(row.get("compatible"), bool):
        return ["compatible must be true or false"]
    if not row["compatible"]:
        if row.get("reference_instruction") is not None or row.get("reference_answer") is not None:
            problems.append("an incompatible row has reference_instruction/answer null")
        if row.get("key_spans") != []:
            problems.append("an incompatible row has key_spans []")
        return problems
    instruction, answer, spans = row.get("reference_instruction"), row.get("reference_answer"), row.get("key_spans")
    if not isinstance(instruction, str) or ANY_TAG.search(instruction):
        problems.append("reference_instruction missing or still has <fi> tags")
    elif filled_values(template, instruction) is None:
        problems.append("reference_instruction is not the template with its slots filled")
    if not isinstance(answer, str) or not answer.strip():
        return problems + ["reference_answer missing"]
    if "<excerpt" in answer.lower():
        problems.append("reference_answer holds <excerpt> tags (write the expanded text)")
    if (share := copied_share(answer, doc)) < 0.8:
        problems.append(f"reference_answer is {share:.0%} copied from the document (needs >= 80 %)")
    if not isinstance(spans, list) or not spans:
        return problems + ["a compatible row needs key_spans"]
    for span in spans:
        if not isinstance(span, str) or len(span.split()) < 2:
            problems.append(f"key span {span!r}: needs at least two words")
        elif (n := doc.count(span)) != 1:
            problems.append(f"key span {span[:60]!r} occurs {n} times in the window (must be exactly once)")
        elif not span_quoted(span, answer):
            problems.append(f"key span {span[:60]!r} is not in the reference answer")
    return problems


def check_judge(row: dict) -> list[str]:
    problems = _window_problems(row)
    for key in ("instruction", "answer", "why"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            if not (key == "answer" and isinstance(row.get(key), str)):  # an empty answer is a valid case (score 1)
                problems.append(f"{key} missing")
    score = row.get("score")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        problems.append(f"score {score!r} is not an integer 1-5")
    return problems


CHECKS = {"templatize": check_templatize, "instantiate": check_instantiate, "judge": check_judge}
KEYS = {
    "templatize": ("id", "source", "query", "reference_templates", "compatible_document_description"),
    "instantiate": ("id", "template", "document_title", "document", "compatible", "reference_instruction",
                    "reference_answer", "key_spans"),
    "judge": ("id", "document_title", "document", "instruction", "answer", "score", "why"),
}


def shared_texts(shared: Path) -> tuple[dict[str, dict], list[dict]]:
    queries = {}
    for f in sorted((shared / "queries").glob("*.jsonl")):
        for line in f.open(encoding="utf-8"):
            r = json.loads(line)
            queries[r["id"]] = r
    docs = [json.loads(line) for f in sorted((shared / "documents").glob("*.jsonl")) for line in f.open(encoding="utf-8")]
    return queries, docs


def check_file(path: Path, stage: str, shared: Path | None = None) -> tuple[list[str], Counter]:
    problems, stats, seen = [], Counter(), set()
    queries, docs = shared_texts(shared) if shared else ({}, [])
    for n, line in enumerate(path.open(encoding="utf-8"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {n}: not JSON ({e})")
            continue
        rid = row.get("id", f"line {n}")
        if missing := [k for k in KEYS[stage] if k not in row]:
            problems.append(f"{rid}: missing key(s) {missing}")
            continue
        if extra := sorted(set(row) - set(KEYS[stage])):
            problems.append(f"{rid}: keys outside the format {extra}")
        if rid in seen:
            problems.append(f"{rid}: duplicate id")
        seen.add(rid)
        problems += [f"{rid}: {p}" for p in CHECKS[stage](row)]
        stats["rows"] += 1
        if stage == "templatize":
            stats[f"source={row['source']}"] += 1
            stats[f"slots={num_slots(row['reference_templates'][0])}"] += 1
            if queries and queries.get(rid, {}).get("query") != row["query"]:
                problems.append(f"{rid}: query is not verbatim the shared query with this id")
        elif stage == "instantiate":
            stats[f"compatible={row['compatible']}"] += 1
        else:
            stats[f"score={row['score']}"] += 1
        if docs and stage != "templatize":
            if not any(row["document"] in d["text"] and d["title"] == row["document_title"] for d in docs):
                problems.append(f"{rid}: document is not a verbatim window of a shared document with this title")
    return problems, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--stage", required=True, choices=sorted(CHECKS))
    ap.add_argument("--shared", type=Path, help="the shared data folder, to check verbatim queries/windows")
    args = ap.parse_args(argv)
    problems, stats = check_file(args.file, args.stage, args.shared)
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s); " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
