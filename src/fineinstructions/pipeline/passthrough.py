"""Input of a stage that filters or edits *any* earlier stage's rows and passes them on in the same schema
(decontamination, PII scrubbing): the shards, their schema, the id column and a reader keyed on a text column."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fineinstructions.errors import UserError
from fineinstructions.pipeline.readers import StrictParquetReader
from fineinstructions.pipeline.runner import stage_input

#: id column of each stage's rows, most specific first
ID_COLUMNS = ("pair_id", "template_id", "query_id", "document_id")


@dataclass
class PassthroughInput:
    files: list[str]
    reader: StrictParquetReader
    schema: pa.Schema
    id_column: str
    columns: list[str]  # the text columns the stage works on, the first one is the reader's text

    def reject_schema(self, extra: list[tuple[str, pa.DataType]]) -> pa.Schema:
        """The input schema plus the stage's own reject columns (and `reason`)."""
        return pa.schema([*self.schema, *(f for f in [*extra, ("reason", pa.string())] if f[0] not in self.schema.names)])


def passthrough_input(folder: str, columns: str | None, defaults: tuple[tuple[str, ...], ...]) -> PassthroughInput:
    """`columns` (comma-separated) or the first group of `defaults` the input has all of."""
    shards = sorted(Path(folder).glob("part-*.parquet"))
    if not shards:
        raise UserError(f"no part-*.parquet shards in {folder}: run the stage that makes it first")
    schema = pq.read_schema(shards[0])
    names = schema.names
    if columns:
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
        if missing := [c for c in wanted if c not in names]:
            raise UserError(f"column(s) {', '.join(missing)} not in {folder} (columns: {', '.join(names)})")
    else:
        wanted = next((list(g) for g in defaults if all(c in names for c in g)), [])
        if not wanted:
            raise UserError(f"no text column to work on in {folder} (columns: {', '.join(names)}); pass --columns")
    id_column = next((c for c in ID_COLUMNS if c in names), wanted[0])
    files, reader = stage_input(folder, wanted[0], id_column, "earlier")
    return PassthroughInput(files, reader, schema, id_column, wanted)
