"""Teacher data → training examples in a student's compact contract.

A student learns the I/O of the released FineInstructions models, so it needs no few-shot prefix and is a drop-in
for them: templatize = the bare query in, one JSON object out; instantiate = `{"instruction_template", "document"}`
in, a JSON object with `<excerpt>` shorthand (or `null`) out; judge = `{"instruction", "answer"}` in, `{"score"}`
out. The prompt is rendered by the stage's own prompt format (`STUDENT_FORMATS`), so training and inference see
the same text. Teacher data is a gold file (`data/gold/*/STAGE.jsonl`) or a stage's output folder (its kept rows,
and for instantiate its `null` rejects as negatives); every row that cannot become an example is counted by reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from fineinstructions.errors import UserError
from fineinstructions.excerpts import compress_excerpts, expand_excerpts
from fineinstructions.gold.evaluate import document_for
from fineinstructions.gold.rows import read_gold
from fineinstructions.llm.base import Message
from fineinstructions.prompts import PromptFormat, load_format

#: the prompt format each stage's student is trained and run with
STUDENT_FORMATS = {"templatize": "compact", "instantiate": "compact", "judge": "compact"}


@dataclass(frozen=True)
class Example:
    messages: tuple[Message, ...]  # the prompt, as the stage renders it
    target: str  # what the student must write
    source: str  # gold | stage | augmented


@dataclass
class TeacherData:
    examples: list[Example] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def student_format(stage: str) -> PromptFormat:
    return load_format(stage, STUDENT_FORMATS[stage])


def _json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def example(stage: str, fmt: PromptFormat, inputs: dict, outputs: dict | None, source: str) -> Example:
    """One example: `inputs` rendered by the format, `outputs` as the JSON the format parses (None → `null`)."""
    request = fmt.render(inputs)
    if outputs is None:
        target = "null"
    else:
        target = _json({fmt.fields[k].split("|")[0]: v for k, v in outputs.items()})
    return Example(tuple(request.messages or ()), target, source)


def from_gold(stage: str, path: str | Path, fmt: PromptFormat) -> TeacherData:
    gold = read_gold(path, stage)
    data = TeacherData(skipped=Counter(gold.skip_counts))
    for row in gold.rows:
        if stage == "templatize":
            desc = row.get("compatible_document_description")
            if not isinstance(desc, str) or not desc.strip():
                data.skipped["no_description"] += 1
                continue
            data.examples.append(example(stage, fmt, {"query": row["query"]}, {
                "template": row["reference_templates"][0], "compatible_document_description": desc}, "gold"))
        elif stage == "instantiate":
            document = document_for(row)
            if not row["compatible"]:
                data.examples.append(example(stage, fmt, {"template": row["template"], "document": document}, None,
                                             "gold"))
                continue
            answer = row.get("reference_answer")
            compact = compress_excerpts(answer, document) if isinstance(answer, str) else None
            expansion = expand_excerpts(compact, document) if compact else None
            if expansion is None or expansion.text is None or expansion.grounding < 0.8:
                data.skipped["answer_not_grounded"] += 1
                continue
            data.examples.append(example(stage, fmt, {"template": row["template"], "document": document}, {
                "instruction": row["reference_instruction"], "answer": compact}, "gold"))
        else:
            data.examples.append(example(stage, fmt, {"instruction": row["instruction"], "answer": row["answer"],
                                                      "rubric": ""}, {"score": row["score"]}, "gold"))
    return data


def _stage_rows(folder: Path, sub: str = "") -> list[dict]:
    files = sorted((folder / sub).glob("*.parquet")) if sub else sorted(folder.glob("part-*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def require_shards(folder: Path, stage: str) -> None:
    if not sorted(folder.glob("part-*.parquet")):
        raise UserError(f"no part-*.parquet shards in {folder}: give a {stage} stage output folder or a gold file")


def scored_pairs(folder: Path) -> tuple[list[dict], Counter]:
    """A judge stage's pairs with a score, kept and rejected alike, and the count of those without one."""
    rows, skipped = [], Counter()
    for r in _stage_rows(folder) + _stage_rows(folder, "rejects"):
        if r.get("score") is None:
            skipped["no_score"] += 1
        else:
            rows.append(r)
    return rows, skipped


def from_stage(stage: str, folder: str | Path, fmt: PromptFormat, documents: dict[str, str] | None = None,
               window_chars: int | None = None) -> TeacherData:
    """A stage's output as teacher data: templatize → its kept templates; judge → every scored pair; instantiate →
    its kept pairs (the teacher's own excerpt shorthand) and its `null` rejects, with the document window rebuilt
    from `documents` (id → text) as the stage showed it."""
    from fineinstructions.windows import document_window

    folder = Path(folder)
    require_shards(folder, stage)
    data = TeacherData()
    if stage == "templatize":
        for r in _stage_rows(folder):
            data.examples.append(example(stage, fmt, {"query": r["query"]}, {
                "template": r["template"], "compatible_document_description": r["compatible_document_description"]},
                "stage"))
    elif stage == "judge":
        pairs, data.skipped = scored_pairs(folder)
        for r in pairs:
            data.examples.append(example(stage, fmt, {"instruction": r["instruction"], "answer": r["answer"],
                                                      "rubric": ""}, {"score": int(r["score"])}, "stage"))
    else:
        if documents is None:
            raise UserError("distilling instantiate from a stage folder needs the documents it read (--documents)")
        k = 5
        for r in _stage_rows(folder) + [r for r in _stage_rows(folder, "rejects") if r.get("reason") == "null"]:
            text = documents.get(str(r["document_id"]))
            if text is None:
                data.skipped["document_not_found"] += 1
                continue
            window = document_window(text, r.get("chunk") or 0, k, window_chars)
            outputs = None if (r.get("status") or r.get("reason")) == "null" else {
                "instruction": r["instruction"], "answer": r["answer_raw"]}
            data.examples.append(example(stage, fmt, {"template": r["template"], "document": window}, outputs,
                                         "stage"))
    return data


def load_teacher(stage: str, path: str | Path, fmt: PromptFormat, documents: dict[str, str] | None = None,
                 window_chars: int | None = None) -> TeacherData:
    path = Path(path)
    if path.is_file():
        return from_gold(stage, path, fmt)
    if path.is_dir():
        return from_stage(stage, path, fmt, documents, window_chars)
    raise UserError(f"teacher data not found: {path} (a gold .jsonl file or a {stage} stage output folder)")


def write_examples(path: str | Path, examples: list[Example]) -> None:
    from fineinstructions import atomic

    atomic.write_text(path, "".join(json.dumps({"messages": list(e.messages), "target": e.target,
                                                "source": e.source}, ensure_ascii=False) + "\n" for e in examples))


def read_examples(path: str | Path) -> list[Example]:
    """Examples written by `write_examples` (e.g. rejection-sampled teacher data)."""
    return [Example(tuple(r["messages"]), r["target"], r.get("source", "augmented"))
            for r in map(json.loads, Path(path).open(encoding="utf-8")) if r]


def compress_check(ex: Example) -> bool:
    """An instantiate example's target expands against its own document into an answer >= 80 % grounded."""
    target = json.loads(ex.target)
    if target is None:
        return True
    document = json.loads(ex.messages[-1]["content"])["document"]
    expansion = expand_excerpts(target["answer"], document)
    return expansion.text is not None and expansion.grounding >= 0.8
