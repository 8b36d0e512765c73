"""The document source, shared by every stage that reads documents (match, instantiate, budget).

Stages after `match` read the documents again rather than carrying their text through every stage (a document is
matched to 6 templates: copying it 6 times into parquet would multiply the corpus). They read the same source with
the same task count, so datatrove gives task r the same documents it gave match's task r, and task r only needs
match's shard r (`rank_shards`).
"""

from __future__ import annotations

import json
from collections import defaultdict
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
