"""Stage `queries`: real user queries in, clean unique queries out.

Reads jsonl / parquet / csv files (or folders of them) or a Hugging Face dataset; the query column is chosen by
flag. Whitespace is normalised; empty and over-long queries are dropped; exact and normalised duplicates are
dropped keep-first. Every drop is counted by reason and kept in `rejects/`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fineinstructions import schemas
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.pipeline.dedup import DedupStep
from fineinstructions.pipeline.readers import check_columns, detect_format, make_reader, peek_columns
from fineinstructions.pipeline.runner import StageOptions, run_stage
from fineinstructions.pipeline.step import Outcome, StageStep
from fineinstructions.pipeline.summary import StageSummary
from fineinstructions.text import dedup_key, normalize_whitespace, stable_hash


@dataclass
class QueriesConfig(StageOptions):
    format: str | None = option(None, "input format (default: from the file extension)", ("jsonl", "parquet", "csv", "hf"))
    column: str = option("query", "column holding the query text")
    id_column: str | None = option("id", "column holding a query id (a content hash is used when absent)")
    source_column: str | None = option("source", "column naming the query's source (used when present)")
    source: str | None = option(None, "source name for rows without a source column (default: input file name)")
    max_chars: int = option(1000, "drop queries longer than this many characters")
    limit: int = option(-1, "read at most this many records per task (-1: all)")
    hf_split: str = option("train", "split to read when the input is a Hugging Face dataset")


class QueryCleaner(StageStep):
    name = "🧹 Queries"
    id_column, text_column = "query_id", "query"
    reject_schema = schemas.QUERIES_REJECTS
    batch_size = 1024

    def __init__(self, cfg: QueriesConfig, has_ids: bool, has_sources: bool, default_source: str, **kw):
        super().__init__(cfg.output, **kw)
        self.max_chars, self.has_ids, self.default_source = cfg.max_chars, has_ids, default_source
        self.source_column = cfg.source_column if has_sources else None

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        for row in rows:
            query = normalize_whitespace(str(row["query"]))
            source = str(row.get(self.source_column) or self.default_source) if self.source_column else self.default_source
            query_id = str(row["query_id"]) if self.has_ids else f"{source}-{stable_hash(query)}"
            out = {"query_id": query_id, "source": source, "query": query}
            if not query:
                yield out, "empty"
            elif len(query) > self.max_chars:
                yield out, "too_long"
            else:
                yield out, None


def _exact(row: dict) -> str:
    return row["query"]


def _normalised(row: dict) -> str:
    return dedup_key(row["query"])


def _id(row: dict) -> str:
    return row["query_id"]


def run(cfg: QueriesConfig) -> StageSummary:
    if not cfg.input:
        raise UserError("stage queries needs --input (a jsonl/parquet/csv file or folder, or a Hugging Face dataset)")
    fmt = detect_format(cfg.input, cfg.format)
    check_columns(cfg.input, {"column": cfg.column}, fmt)
    columns = peek_columns(cfg.input, fmt)
    has_ids = bool(cfg.id_column) and cfg.id_column in columns
    has_sources = bool(cfg.source_column) and cfg.source_column in columns
    default_source = cfg.source or Path(cfg.input.rstrip("/")).name.split(".")[0]
    reader = make_reader(cfg.input, cfg.column, cfg.id_column if has_ids else None, fmt, cfg.limit, cfg.hf_split)
    step = QueryCleaner(cfg, has_ids, has_sources, default_source, progress=cfg.progress)

    def dedup(out: str, files: list[str]) -> DedupStep:
        # the same id on different queries would make later stages' provenance ambiguous: keep the first
        keys = [("duplicate_exact", _exact), ("duplicate_normalized", _normalised), ("duplicate_id", _id)]
        return DedupStep(out, files, keys, "query_id", "query", schemas.QUERIES_REJECTS, progress=cfg.progress)

    return run_stage("queries", cfg, reader, step, schemas.QUERIES, dedup=dedup)
