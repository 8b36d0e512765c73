"""Stage `decontaminate`: drop rows that overlap an evaluation set (paper: queries are decontaminated "using the
Tulu-3 decontamination procedure").

The procedure is open-instruct's n-gram search (`decontamination/search.py`, as used for Tulu 3): for each
evaluation instance, the tokens covered by n-grams it shares with one training text are counted, the match score
is covered tokens / instance tokens, and the instance is contaminated when the score exceeds the threshold. Tulu 3
used n = 8 and a threshold of 0.5, the defaults here. We drop the *training* row that produced such a match (and
keep the matched instance, its set and the score with the reject), and count drops per evaluation set.

Two differences, both written down: tokens are the words of `text.dedup_key` (case, accents and punctuation
ignored, so "Who won?" and "who won" are the same tokens) rather than spaCy's, and an evaluation instance shorter
than n tokens -- which has no n-gram at all, so Tulu's n-gram search can never find it -- is matched as a whole
phrase (Tulu's full-field match) when it has at least `min_eval_tokens` tokens.

The stage passes any earlier stage's rows through unchanged (same schema), so it can run on `queries` (the paper's
place: before any LLM time is spent on an evaluation query), on `templatize` (its `query` column), on `judge`'s
pairs (`instruction`, `answer`) or on `budget/instructions` (`text`). Evaluation sets are jsonl / parquet files or
folders with a text column (`query`, `question`, `prompt`, ... ).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.pipeline.passthrough import passthrough_input
from fineinstructions.pipeline.runner import StageOptions, run_stage
from fineinstructions.pipeline.step import Outcome, StageStep
from fineinstructions.pipeline.summary import StageSummary
from fineinstructions.text import dedup_key, stable_hash

#: text columns checked by default, by what the input holds (first match wins)
DEFAULT_COLUMNS = (("instruction", "answer"), ("query",), ("text",), ("template",))
#: text columns looked for in an evaluation file when `eval_column` is absent from it
EVAL_COLUMNS = ("query", "question", "prompt", "instruction", "problem", "input", "text")


@dataclass
class DecontaminateConfig(StageOptions):
    eval_sets: str | None = option(None, "evaluation sets: comma-separated jsonl/parquet files or folders")
    eval_column: str = option("query", "text column of the evaluation sets (else the first of "
                                       + ", ".join(EVAL_COLUMNS) + " found)")
    columns: str | None = option(None, "comma-separated columns of the input to check (default: instruction+answer, "
                                       "query, text or template, whichever the input has)")
    ngram: int = option(8, "n-gram size in words (Tulu 3: 8)")
    threshold: float = option(0.5, "an evaluation instance matches when more than this share of its tokens is "
                                    "covered by shared n-grams (Tulu 3: 0.5)")
    min_eval_tokens: int = option(3, "evaluation instances with fewer tokens are ignored (too generic to match)")


def tokens(text: str) -> list[str]:
    return dedup_key(text).split()


@dataclass(frozen=True)
class EvalInstance:
    eval_set: str
    eval_id: str
    text: str
    length: int


@dataclass(frozen=True)
class Match:
    instance: EvalInstance
    overlap: float


class OverlapIndex:
    """n-gram postings of every evaluation instance; `best_match(text)` scores a training text against all."""

    def __init__(self, instances: Iterable[tuple[str, str, str]], n: int = 8, min_tokens: int = 3):
        self.n = n
        self.instances: list[EvalInstance] = []
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)  # gram -> [(instance, first token)]
        self.short_lengths: set[int] = set()
        self.ignored = 0
        for eval_set, eval_id, text in instances:
            toks = tokens(text)
            if len(toks) < min_tokens:
                self.ignored += 1
                continue
            i = len(self.instances)
            self.instances.append(EvalInstance(eval_set, eval_id, text, len(toks)))
            if len(toks) < n:
                self.short_lengths.add(len(toks))
                self.postings[" ".join(toks)].append((i, 0))
            for start in range(len(toks) - n + 1):
                self.postings[" ".join(toks[start : start + n])].append((i, start))

    def __len__(self) -> int:
        return len(self.instances)

    def best_match(self, text: str) -> Match | None:
        """The evaluation instance with the highest token coverage by `text`'s n-grams (None when nothing is
        shared)."""
        toks = tokens(text)
        covered: dict[int, set[int]] = defaultdict(set)
        for k in {self.n, *self.short_lengths}:
            for start in range(len(toks) - k + 1):
                for i, first in self.postings.get(" ".join(toks[start : start + k]), ()):
                    covered[i].update(range(first, first + k))
        if not covered:
            return None
        i, best = max(((i, len(c) / self.instances[i].length) for i, c in covered.items()), key=lambda x: x[1])
        return Match(self.instances[i], best)


def _eval_files(spec: str) -> list[Path]:
    files = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        path = Path(part)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.suffix in (".jsonl", ".json", ".parquet"))
            if not found:
                raise UserError(f"no .jsonl/.parquet evaluation files in {part}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"evaluation set not found: {part}")
    return files


def _records(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


def load_eval_sets(spec: str, column: str = "query") -> list[tuple[str, str, str]]:
    """(set name, instance id, text) of every evaluation instance; the set name is the file's stem."""
    out = []
    for path in _eval_files(spec):
        records = _records(path)
        names = [column, *EVAL_COLUMNS]
        col = next((c for c in names if records and c in records[0]), None)
        if col is None:
            raise UserError(f"evaluation set {path} has no text column ({', '.join(dict.fromkeys(names))})")
        for i, rec in enumerate(records):
            if isinstance(rec.get(col), str) and rec[col].strip():
                out.append((path.stem, str(rec.get("id", i)), rec[col]))
    return out


class Decontaminator(StageStep):
    name = "🦠 Decontaminate"
    batch_size = 1024
    rejects_prefix = "decont"

    def __init__(self, cfg: DecontaminateConfig, index: OverlapIndex, columns: list[str], id_column: str,
                 reject_schema: pa.Schema, **kw):
        super().__init__(cfg.output, **kw)
        self.index, self.columns, self.threshold = index, columns, cfg.threshold
        self.id_column, self.text_column, self.reject_schema = id_column, columns[0], reject_schema

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        for row in rows:
            match, column = self.worst(row)
            if match is None:
                yield row, None
                continue
            self.stat_update(f"dist/contaminated_by/{match.instance.eval_set}")
            yield {**row, "matched_column": column, "eval_set": match.instance.eval_set,
                   "eval_id": match.instance.eval_id, "eval_text": match.instance.text,
                   "overlap": match.overlap}, "contaminated"

    def worst(self, row: dict) -> tuple[Match | None, str | None]:
        """The strongest match above the threshold over the checked columns."""
        best: tuple[Match | None, str | None] = (None, None)
        for column in self.columns:
            if isinstance(text := row.get(column), str) and (m := self.index.best_match(text)):
                if m.overlap > self.threshold and (best[0] is None or m.overlap > best[0].overlap):
                    best = (m, column)
        return best


REJECT_EXTRA = [("matched_column", pa.string()), ("eval_set", pa.string()), ("eval_id", pa.string()),
                ("eval_text", pa.string()), ("overlap", pa.float32())]


def run(cfg: DecontaminateConfig) -> StageSummary:
    if not cfg.input:
        raise UserError("stage decontaminate needs --input (the output folder of an earlier stage)")
    if not cfg.eval_sets:
        raise UserError("stage decontaminate needs --eval-sets (jsonl/parquet files or folders of evaluation data)")
    if cfg.ngram < 1 or not 0 <= cfg.threshold < 1:
        raise UserError("--ngram must be at least 1 and --threshold in [0, 1)")
    instances = load_eval_sets(cfg.eval_sets, cfg.eval_column)
    index = OverlapIndex(instances, cfg.ngram, cfg.min_eval_tokens)
    if not len(index):
        raise UserError(f"no evaluation instance of at least {cfg.min_eval_tokens} tokens in {cfg.eval_sets}")
    src = passthrough_input(cfg.input, cfg.columns, DEFAULT_COLUMNS)
    step = Decontaminator(cfg, index, src.columns, src.id_column, src.reject_schema(REJECT_EXTRA),
                          input_files=src.files, progress=cfg.progress)
    fingerprint = stable_hash("\n".join(f"{s}\t{i}\t{t}" for s, i, t in instances))
    return run_stage("decontaminate", cfg, src.reader, step, src.schema, settings={"eval_fingerprint": fingerprint})
