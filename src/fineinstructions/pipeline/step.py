"""`StageStep`: the base every stage's work block derives from (datatrove's filter pattern, for rows).

A subclass turns a batch of input rows into outcomes -- `(row, None)` to keep, `(row, "reason")` to reject -- and
the base does the rest: batching, a progress bar with rate and ETA, counting rows in/out and every reject by
reason in datatrove's stats, and writing rejected rows with their reason to `rejects/` so nothing is lost
silently.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from tqdm.auto import tqdm

from fineinstructions.pipeline.writer import ShardWriter, row_document

Outcome = tuple[dict, str | None]


def shard_rows(files: list[str], rank: int, world_size: int) -> int | None:
    """Rows this task will read, using datatrove's sharding rule (files[rank::world_size]); parquet only."""
    mine = files[rank::world_size]
    if not mine or not all(f.endswith(".parquet") for f in mine):
        return None
    return sum(pq.ParquetFile(f).metadata.num_rows for f in mine)


class StageStep(PipelineStep):
    type = "🧪 - STAGE"
    #: rows handed to `process` at once (an LLM stage turns them into one batched generate call)
    batch_size: int = 64
    #: column that identifies a row (for rejects and logs)
    id_column: str = "id"
    #: column that datatrove's reader put into `Document.text`
    text_column: str = "text"
    reject_schema: pa.Schema
    #: file name prefix of this step's reject shards (`rejects/{prefix}-NNNNN.parquet`)
    rejects_prefix: str = "part"

    def __init__(self, output_dir: str, input_files: list[str] | None = None, progress: bool = True):
        super().__init__()
        self.output_dir = str(output_dir)
        self.input_files = input_files or []
        self.progress = progress

    # -- to implement -----------------------------------------------------------------------------------------
    def setup(self, rank: int) -> None:
        """Load models etc. Runs inside the task process, so skipped (finished) tasks never pay for it."""

    def teardown(self) -> None:
        """Release what `setup` loaded."""

    @abstractmethod
    def process(self, rows: list[dict]) -> Iterable[Outcome]: ...

    def finish(self, rank: int) -> None:
        """Runs after the last batch of a task that succeeded (commit extra outputs here, not in `teardown`)."""

    def count_in(self, rows: list[dict]) -> int:
        """How many units of work `rows` are (the summary's "rows in"); a stage that reads documents but works
        on (document, template) pairs counts the pairs."""
        return len(rows)

    # -- shared machinery ---------------------------------------------------------------------------------------
    def to_row(self, doc: Document) -> dict:
        row = {k: v for k, v in doc.metadata.items() if k != "file_path"}
        row[self.id_column] = doc.id
        row[self.text_column] = doc.text
        return row

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        rejects = ShardWriter(
            str(Path(self.output_dir) / "rejects"), self.reject_schema, f"{self.rejects_prefix}-${{rank}}.parquet"
        )
        bar = tqdm(
            total=shard_rows(self.input_files, rank, world_size),
            desc=f"{self.name} [task {rank}]",
            unit="row",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        self.setup(rank)
        try:
            it = iter(data or [])
            while batch := list(itertools.islice(it, self.batch_size)):
                rows = [self.to_row(doc) for doc in batch]
                self.stat_update("rows_in", value=self.count_in(rows))
                with self.track_time(unit="batch"):
                    outcomes = list(self.process(rows))
                for row, reason in outcomes:
                    if reason is None:
                        self.stat_update("rows_out")
                        yield row_document(row, self.id_column)
                    else:
                        self.stat_update(f"reject/{reason}")
                        rejects.write(row_document({**row, "reason": reason}, self.id_column), rank)
                bar.update(len(rows))
            self.finish(rank)
        finally:
            bar.close()
            self.teardown()
        rejects.commit(rank, always=f"{self.rejects_prefix}-{rank:05d}.parquet")
