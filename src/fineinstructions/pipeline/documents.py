"""The document source, shared by every stage that reads documents (match, instantiate, budget).

Stages after `match` read the documents again rather than carrying their text through every stage (a document is
matched to 6 templates: copying it 6 times into parquet would multiply the corpus). They read the same source with
the same task count, so datatrove gives task r the same documents it gave match's task r, and task r only needs
match's shard r (`rank_shards`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from datatrove.pipeline.readers.base import BaseReader

from fineinstructions.config import option
from fineinstructions.pipeline.readers import check_columns, detect_format, make_reader
from fineinstructions.pipeline.runner import StageOptions


@dataclass
class DocumentColumns(StageOptions):
    """How to read documents: every stage that reads them (match, rephrase, instantiate, budget) has these flags."""

    format: str | None = option(None, "document input format (default: from the file extension)",
                                ("jsonl", "parquet", "csv", "hf"))
    text_column: str = option("text", "column holding the document text")
    id_column: str = option("id", "column holding the document id")
    hf_split: str = option("train", "split to read when the input is a Hugging Face dataset")
    limit: int = option(-1, "read at most this many documents per task (-1: all); stages after match need "
                            "match's value (a run passes it on)")


@dataclass
class DocumentOptions(DocumentColumns):
    """Where the documents are, for stages whose --input is an earlier stage's output; in a run these default to
    the `match` stage's input and columns."""

    documents: str | None = option(None, "the documents (jsonl/parquet/csv file or folder, or an HF dataset): "
                                         "the match stage's input")


def open_documents(path: str, fmt: str | None, text_column: str, id_column: str, limit: int = -1,
                   hf_split: str = "train") -> BaseReader:
    """A strict reader over the documents, after checking that the columns exist (one-line error otherwise)."""
    fmt = detect_format(path, fmt)
    check_columns(path, {"text-column": text_column, "id-column": id_column}, fmt)
    return make_reader(path, text_column, id_column, fmt, limit, hf_split)


def rank_shards(folder: str | Path, rank: int, world_size: int) -> list[Path]:
    """The shards of an earlier stage that can hold rows for this task's documents.

    When the earlier stage ran with the same number of tasks, its shard `rank` holds exactly the rows of this
    task's documents; otherwise every shard could, and all are read.
    """
    folder = Path(folder)
    files = sorted(folder.glob("part-*.parquet"))
    meta = folder / "stage.json"
    tasks = json.loads(meta.read_text()).get("tasks") if meta.is_file() else None
    mine = folder / f"part-{rank:05d}.parquet"
    if tasks == world_size and mine in files:
        return [mine]
    return files


def group_by(files: Iterable[Path], key: str, columns: list[str] | None = None,
             keep: set[str] | None = None) -> dict[str, list[dict]]:
    """Rows of parquet files grouped by `key` (optionally only keys in `keep`), in file order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for f in files:
        for row in pq.read_table(f, columns=columns).to_pylist():
            if keep is None or row[key] in keep:
                groups[str(row[key])].append(row)
    return dict(groups)


#: the list of duplicated document ids `match` writes into its output folder, read by the later stages (JSON
#: lines, not parquet: a reader of the folder's parquet files must find only match rows)
DUPLICATES_FILE = "duplicate_documents.jsonl"
DUPLICATE = "duplicate_document_id"


def _digest(doc_id: str) -> bytes:
    return hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()


class UniqueIds:
    """The rule for document ids, in one place: an id names one document.

    Later stages find a document's matches, pairs and budget by its id, so two documents with one id would swap
    or merge their pairs. Every document whose id occurs more than once in the input -- in one task or across
    tasks -- is rejected as `duplicate_document_id` by every stage that reads documents: `match` rejects all its
    occurrences and lists the ids in `match/duplicate_documents.jsonl`; `instantiate` and `budget` reject the
    listed ids (and, as a safeguard when no list exists, any id seen twice in their task)."""

    def __init__(self, known: set[str] | frozenset[str] = frozenset()):
        self.known = known
        self.seen: set[bytes] = set()

    def check(self, doc_id: str) -> str | None:
        if doc_id in self.known:
            return DUPLICATE
        digest = _digest(doc_id)
        if digest in self.seen:
            return DUPLICATE
        self.seen.add(digest)
        return None


def duplicate_ids(match_folder: str | Path | None) -> set[str]:
    """The ids `match` found duplicated (empty when there is no list)."""
    path = Path(match_folder) / DUPLICATES_FILE if match_folder else None
    if path is None or not path.is_file():
        return set()
    return {json.loads(line)["document_id"] for line in path.open(encoding="utf-8") if line.strip()}


def upstream(folder: str | Path, stage: str, max_hops: int = 10) -> Path | None:
    """The output folder of `stage` that `folder` was made from, following each stage's recorded input."""
    here = Path(folder)
    for _ in range(max_hops):
        marker = here / "stage.json"
        if not marker.is_file():
            return None
        settings = json.loads(marker.read_text())
        if settings.get("stage") == stage:
            return here
        source = (settings.get("inputs") or {}).get("input", {}).get("path")
        if not source:
            return None
        here = Path(source)
    return None


def find_duplicates(map_dir: Path, rejects_dir: Path) -> dict[str, int]:
    """{document id: occurrences} for every id read more than once across all of match's tasks.

    Every document read by a map task leaves at least one row with its id: matches, or one reject (no
    candidates, empty, a repeat within the task). An id in the rows of two tasks, or rejected as a repeat, is a
    duplicate. Ids are held as 8-byte digests (one array per task), then resolved to text for the few duplicates."""
    import numpy as np

    per_task: dict[str, list[Path]] = defaultdict(list)
    for f in sorted(map_dir.glob("part-*.parquet")) + sorted(rejects_dir.glob("part-*.parquet")):
        per_task[f.name].append(f)
    arrays, repeats = [], Counter()
    for files in per_task.values():
        ids: set[bytes] = set()
        for f in files:
            table = pq.read_table(f, columns=[c for c in ("document_id", "reason") if c in pq.read_schema(f).names])
            reasons = table.column("reason").to_pylist() if "reason" in table.column_names else None
            for i, doc_id in enumerate(table.column("document_id").to_pylist()):
                ids.add(_digest(doc_id))
                if reasons is not None and reasons[i] == DUPLICATE:
                    repeats[_digest(doc_id)] += 1
        arrays.append(np.frombuffer(b"".join(sorted(ids)), dtype="S8"))
    digests, counts = (np.unique(np.concatenate(arrays), return_counts=True) if arrays
                       else (np.empty(0, "S8"), np.empty(0, int)))
    tasks_with = {bytes(d): int(c) for d, c in zip(digests, counts) if c > 1}
    wanted = set(tasks_with) | set(repeats)
    found: dict[str, int] = {}
    for files in per_task.values():
        for f in files:
            for doc_id in pq.read_table(f, columns=["document_id"]).column(0).to_pylist():
                d = _digest(doc_id)
                if d in wanted:
                    found[doc_id] = tasks_with.get(d, 1) + repeats.get(d, 0)
    return found
