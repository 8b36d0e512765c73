"""Keep-first exact dedup over a stage's map shards (one task, shard layout preserved).

Keys are hashed to 8 bytes, so ~18M queries or templates fit in a couple of GB. Several keys can be checked in
order (e.g. exact text, then normalised text), each with its own reject reason.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable

import pyarrow as pa

from fineinstructions.pipeline.step import Outcome, StageStep

KeyFn = Callable[[dict], str]


class KeepsShardLayout:
    """For a one-task phase over a stage's map shards: each row goes back to the shard it came from (the
    writer's `${_shard}` file name), so the output keeps one shard per map task (later stages rely on it)."""

    def to_row(self, doc):
        row = super().to_row(doc)
        row["_shard"] = os.path.basename(doc.metadata.get("file_path", "part-00000.parquet"))
        return row


class DedupStep(KeepsShardLayout, StageStep):
    name = "🫂 Dedup"
    rejects_prefix = "dedup"
    batch_size = 1024

    def __init__(
        self,
        output_dir: str,
        input_files: list[str],
        keys: list[tuple[str, KeyFn]],
        id_column: str,
        text_column: str,
        reject_schema: pa.Schema,
        progress: bool = True,
    ):
        super().__init__(output_dir, input_files, progress)
        self.keys, self.id_column, self.text_column, self.reject_schema = keys, id_column, text_column, reject_schema
        self.seen: list[set[bytes]] = [set() for _ in keys]

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        for row in rows:
            digests = [hashlib.blake2b(fn(row).encode("utf-8"), digest_size=8).digest() for _, fn in self.keys]
            reason = next((name for (name, _), d, seen in zip(self.keys, digests, self.seen) if d in seen), None)
            if reason is None:
                for d, seen in zip(digests, self.seen):
                    seen.add(d)
            yield row, reason
