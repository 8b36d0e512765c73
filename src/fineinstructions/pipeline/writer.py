"""Parquet shards that appear atomically.

datatrove's ParquetWriter writes straight to the final name, so a killed task leaves a truncated file that looks
finished. We write `NAME.tmp` through it and rename on success: a reader of the output folder only ever sees
complete shards, and a rerun simply overwrites the leftover `.tmp`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document
from datatrove.pipeline.writers import ParquetWriter


def row_document(row: dict, id_column: str) -> Document:
    """Rows travel through datatrove as Documents whose metadata *is* the row."""
    return Document(text="", id=str(row.get(id_column, "")), metadata=row)


def _row_adapter(self, document: Document) -> dict:
    return document.metadata


class ShardWriter(ParquetWriter):
    """Writes `part-${rank}.parquet` (or any `${tag}` template) with a fixed schema; commits on close."""

    name = "📒 Shards"

    def __init__(self, output_folder: str, schema: pa.Schema, output_filename: str = "part-${rank}.parquet"):
        super().__init__(
            output_folder,
            output_filename=output_filename + ".tmp",
            adapter=_row_adapter,
            schema=schema,
            max_file_size=-1,
            use_content_defined_chunking=False,
        )
        self._opened: set[str] = set()

    def _get_output_filename(self, document: Document, rank: int | str = 0, **kwargs) -> str:
        # datatrove lets row fields override ${rank}; a row with a `rank` column (match) must not pick the file
        return self.output_filename.substitute({**document.metadata, **kwargs, "rank": str(rank).zfill(5)})

    def _write(self, document: dict, file_handler, filename: str):
        self._opened.add(filename)
        super()._write({name: document.get(name) for name in self.schema.names}, file_handler, filename)

    def commit(self, rank: int, always: str | None = None) -> None:
        """Close every open file and rename `.tmp` → final. `always` names a shard to create even when empty,
        so every task leaves a visible result (an empty shard is an answer, a missing one is a question)."""
        self.close()
        if always and always + ".tmp" not in self._opened:
            with self.output_folder.open(always + ".tmp", "wb") as f:
                pq.write_table(self.schema.empty_table(), f)
            self._opened.add(always + ".tmp")
        for tmp in sorted(self._opened):
            self.output_folder.mv(tmp, tmp[: -len(".tmp")])
        self._opened.clear()

    def run(self, data, rank: int = 0, world_size: int = 1):
        yield from super().run(data, rank, world_size)
        per_rank = self.output_filename.safe_substitute(rank=str(rank).zfill(5))[: -len(".tmp")]
        self.commit(rank, always=None if "$" in per_rank else per_rank)
