"""Stage `match`: documents → the templates they can answer (paper §2).

Each document is embedded as 1 global + K Gaussian-pooled local vectors (`embed.py`); every vector searches the
template index; templates whose cosine clears the threshold are candidates (a template found by several vectors
keeps its best score and the chunk that gave it); N distinct templates are drawn per document so that the slot
counts follow a target distribution (`sampling.py`). A document with no candidate is recorded in `rejects/` with
its best score -- never dropped silently. Draws are seeded per document id, so results don't depend on sharding.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fineinstructions import schemas
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions import atomic
from fineinstructions.pipeline.documents import (DUPLICATE, DUPLICATES_FILE, DocumentColumns, UniqueIds,
                                                 find_duplicates, open_documents)
from fineinstructions.pipeline.dedup import KeepsShardLayout
from fineinstructions.pipeline.runner import run_stage
from fineinstructions.pipeline.step import Outcome, StageStep
from fineinstructions.pipeline.summary import StageSummary
from fineinstructions.sampling import Candidate, draw, parse_target

#: default cosine threshold for the default embedder (all-MiniLM-L6-v2), measured on the shared documents and
#: real-query templates (see README, "Choosing the threshold"); the paper's 0.865 is for its fine-tuned BGE-M3
DEFAULT_THRESHOLD = 0.35


@dataclass
class MatchConfig(DocumentColumns):
    index: str | None = option(None, "output folder of the index stage")
    threshold: float = option(DEFAULT_THRESHOLD, "min cosine for a template to be a candidate (paper: 0.865 for its "
                                                 "fine-tuned BGE-M3 embedder)")
    templates_per_document: int = option(6, "templates drawn per document")
    neighbours: int = option(32, "nearest templates fetched per document vector before thresholding")
    k: int = option(5, "Gaussian-pooled local vectors per document")
    sigma: float = option(0.05, "width of each local Gaussian, as a fraction of the document length")
    target_slots: str | None = option(
        None, "target num_slots distribution: a templatize output folder (templates of real queries) or "
              "'1:0.5,2:0.3,3:0.2'; default: the distribution of the indexed template bank")
    seed: int = option(0, "seed of the weighted draws (combined with each document id)")
    batch_size: int = option(8, "documents embedded per batch")


class Matcher(StageStep):
    name = "🎯 Match"
    id_column, text_column = "document_id", "text"
    reject_schema = schemas.MATCH_REJECTS

    def __init__(self, cfg: MatchConfig, meta: dict, target: dict[int, float], **kw):
        super().__init__(cfg.output, **kw)
        self.cfg, self.meta, self.target, self.batch_size = cfg, meta, target, cfg.batch_size
        self.ids = UniqueIds()  # a repeat within the task; repeats across tasks are found by `DropDuplicates`

    def setup(self, rank: int) -> None:
        from fineinstructions import faiss_index
        from fineinstructions.stages.index import load_embedder

        self.embedder = load_embedder(self.meta.get("embedder_name"), self.meta.get("embedder_revision"))
        self.embedder = self.embedder.with_pooling(k=self.cfg.k, sigma=self.cfg.sigma)
        index_dir = Path(self.cfg.index)
        self.index, ids, _ = faiss_index.load_index(index_dir, expected_fingerprint=self.embedder.weights_fingerprint)
        slots = {r["template_id"]: r["num_slots"] for r in pq.read_table(index_dir / "part-00000.parquet").to_pylist()}
        self.templates = [(tid, int(slots.get(tid, 0))) for tid in ids]

    def teardown(self) -> None:
        self.index = self.embedder = None

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        from fineinstructions import faiss_index

        vectors = self.embedder.embed_documents([r["text"] for r in rows])
        empty = set(self.embedder.last_stats.empty)
        scores, idx = faiss_index.search(self.index, vectors.reshape(-1, vectors.shape[-1]), self.cfg.neighbours)
        scores, idx = scores.reshape(len(rows), -1), idx.reshape(len(rows), -1)
        for d, row in enumerate(rows):
            doc_id = str(row["document_id"])
            if reason := self.ids.check(doc_id):
                yield {"document_id": doc_id, "reason": reason, "best_score": None}, reason
                continue
            if d in empty:
                yield {"document_id": doc_id, "reason": "empty", "best_score": None}, "empty"
                continue
            best: dict[int, Candidate] = {}
            for j, (score, t) in enumerate(zip(scores[d], idx[d])):
                if t < 0 or score < self.cfg.threshold:
                    continue
                if t not in best or score > best[t].score:
                    tid, slots = self.templates[t]
                    best[t] = Candidate(tid, slots, float(score), j // self.cfg.neighbours)
            self.stat_update("candidates", value=len(best))
            if not best:
                top = float(np.max(scores[d])) if scores[d].size else None
                yield {"document_id": doc_id, "reason": "no_candidates", "best_score": top}, "no_candidates"
                continue
            rng = random.Random(f"{self.cfg.seed}:{doc_id}")
            for rank, c in enumerate(draw(list(best.values()), self.cfg.templates_per_document, self.target, rng), 1):
                yield {"document_id": doc_id, "template_id": c.template_id, "chunk": c.chunk, "score": c.score,
                       "rank": rank}, None


class DropDuplicates(KeepsShardLayout, StageStep):
    """Match's last phase (one task over every map shard): find the ids read more than once anywhere, write them
    to `duplicate_documents.parquet` for the later stages, and reject every one of their documents -- the first
    occurrence too (which of two documents an id means cannot be known). One reject row per occurrence (a map
    shard holds rows of at most one occurrence of an id: its task rejected the repeats itself)."""

    name = "🪪 Unique document ids"
    id_column, text_column = "document_id", "template_id"
    reject_schema = schemas.MATCH_REJECTS
    rejects_prefix = "dedup"
    batch_size = 4096

    def __init__(self, output_dir: str, map_files: list[str], progress: bool = True):
        super().__init__(output_dir, map_files, progress)

    def setup(self, rank: int) -> None:
        out = Path(self.output_dir)
        found = find_duplicates(out / "_map", out / "rejects")
        self.duplicates, self.rejected = set(found), set()
        atomic.write_text(out / DUPLICATES_FILE, "".join(
            json.dumps({"document_id": d, "occurrences": found[d]}, ensure_ascii=False) + "\n" for d in sorted(found)))

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        for row in rows:
            doc_id = row["document_id"]
            if doc_id not in self.duplicates:
                yield row, None
            elif (doc_id, row["_shard"]) not in self.rejected:  # each occurrence once, not per drawn template
                self.rejected.add((doc_id, row["_shard"]))
                yield {"document_id": doc_id, "reason": DUPLICATE, "best_score": row.get("score")}, DUPLICATE


def run(cfg: MatchConfig) -> StageSummary:
    if not cfg.input:
        raise UserError("stage match needs --input (documents: jsonl/parquet/csv file or folder, or an HF dataset)")
    if not cfg.index:
        raise UserError("stage match needs --index (the output folder of the index stage)")
    meta_path = Path(cfg.index) / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"no index in {cfg.index} (meta.json missing): build it with `fineinstructions index`")
    meta = json.loads(meta_path.read_text())
    target = parse_target(cfg.target_slots, Path(cfg.index))
    reader = open_documents(cfg.input, cfg.format, cfg.text_column, cfg.id_column, cfg.limit, cfg.hf_split)
    step = Matcher(cfg, meta, target, progress=cfg.progress)
    settings = {"index_fingerprint": meta.get("embedder_fingerprint"), "index_count": meta.get("count"),
                "document_ids": "unique (every occurrence of a repeated id rejected; duplicate_documents.jsonl)"}
    return run_stage("match", cfg, reader, step, schemas.MATCHES, settings=settings,
                     dedup=lambda out, map_files: DropDuplicates(out, map_files, progress=cfg.progress))
