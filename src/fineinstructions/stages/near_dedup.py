"""Stage `near_dedup`: cluster near-duplicate templates with MinHash before indexing; keep one per cluster.

Exact dedup in `templatize` only catches templates whose normalised text is identical; queries that differ in a
word ("what's" / "what is") or only in how a slot is described ("<fi>country</fi>" / "<fi>name of a country</fi>")
give templates that would fill the bank with the same instruction twice. Slots are shingled as one token, so two
templates with the same fixed text and slots in the same places are the same template here.

Signatures and shingles are datatrove's (`MinhashDedupSignature.get_shingles/get_signature`: its text
normalisation, hashing and permutations). Clustering is done in memory instead of with its 4-step disk pipeline
(signature files → bucket sorts → `.dups` → union-find): a template bank has thousands to a few million short rows,
and one 32-bit signature per template (`num_buckets * hashes_per_bucket * 4` bytes, 320 B by default: 320 MB for a
million templates) fits in RAM, so banding with numpy sorts and a union-find over the candidate pairs is one short
task. Candidates from LSH banding are confirmed by the Jaccard similarity the full signature estimates (datatrove
keeps every band collision, which for 10-word texts would merge templates that merely share a frame like
"what is the <fi>..</fi> of <fi>..</fi>"). For a bank of tens of millions use datatrove's disk pipeline.

Defaults are tuned for short texts: word bigrams (a 5-gram of a 10-word template is half the template), 20 bands
of 4 hashes (LSH threshold about (1/20)^(1/4) = 0.47) and a confirmed similarity of 0.7.
Outputs: the kept templates in the templatize schema (same shard layout), `rejects/` with `duplicate_of` (the kept
template of the cluster) and `similarity`, and `clusters.parquet`: every template of a cluster of size > 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer

from fineinstructions import atomic, schemas
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.pipeline.runner import StageOptions, run_stage, stage_input
from fineinstructions.pipeline.step import Outcome, StageStep
from fineinstructions.pipeline.summary import StageSummary
from fineinstructions.templates import SLOT

SIGNED = pa.schema([*schemas.TEMPLATES, ("minhash", pa.list_(pa.uint32()))])
NEAR_REJECTS = pa.schema([*schemas.TEMPLATES, ("duplicate_of", pa.string()), ("similarity", pa.float32()),
                          ("reason", pa.string())])
CLUSTERS = pa.schema([("template_id", pa.string()), ("cluster_id", pa.string()), ("cluster_size", pa.int32())])
SLOT_TOKEN = " fislot "


@dataclass
class NearDedupConfig(StageOptions):
    ngram: int = option(2, "shingle size in words (slots count as one word)")
    num_buckets: int = option(20, "LSH bands")
    hashes_per_bucket: int = option(4, "hashes per band")
    threshold: float = option(0.7, "min Jaccard similarity (estimated from the signature) to call two templates "
                                   "near duplicates")
    seed: int = option(1, "seed of the MinHash permutations")


class SpaceWords(WordTokenizer):
    """Words of datatrove's simplified text (lower case, no punctuation), split on spaces. datatrove's English
    tokenizer is spaCy's, a large dependency that buys nothing on text that `simplify_text` already cleaned."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


def make_signer(cfg: NearDedupConfig) -> MinhashDedupSignature:
    config = MinhashConfig(n_grams=cfg.ngram, num_buckets=cfg.num_buckets, hashes_per_bucket=cfg.hashes_per_bucket,
                           seed=cfg.seed, hash_config=HashConfig(precision=32, hash_fc="sha1"))
    return MinhashDedupSignature(output_folder=cfg.output, config=config, language=SpaceWords())


def signature(signer, template: str) -> list[int]:
    """The MinHash signature of a template's text with every slot as one token."""
    text = SLOT.sub(SLOT_TOKEN, template)
    shingles = signer.get_shingles(text)
    if shingles.size == 0:  # shorter than one n-gram: the whole text is the only shingle
        shingles = np.array([[signer._hash_func(text.casefold().strip())]], dtype=np.uint64)
    return [h for band in signer.get_signature(shingles) for h in band]


class Signer(StageStep):
    name = "🎯 MinHash signatures"
    id_column, text_column = "template_id", "template"
    reject_schema = NEAR_REJECTS
    batch_size = 1024

    def __init__(self, cfg: NearDedupConfig, **kw):
        super().__init__(cfg.output, **kw)
        self.cfg, self.signer = cfg, None

    def setup(self, rank: int) -> None:
        self.signer = make_signer(self.cfg)

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        for row in rows:
            yield {**row, "minhash": signature(self.signer, row["template"])}, None


def clusters(sigs: np.ndarray, num_buckets: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(representative index, estimated Jaccard similarity to it) per row: rows whose signatures share a band are candidates,
    confirmed when the share of equal signature values is at least `threshold`; confirmed pairs are joined
    (union-find) and each cluster is represented by its first row."""
    n = len(sigs)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for band in np.split(sigs, num_buckets, axis=1):
        keys = np.ascontiguousarray(band).view(np.dtype((np.void, band.dtype.itemsize * band.shape[1]))).ravel()
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, n])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            members = order[start : start + size]
            first = members.min()
            sims = (sigs[members] == sigs[first]).mean(axis=1)
            for m, s in zip(members, sims):
                if m != first and s >= threshold:
                    a, b = find(first), find(m)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    return roots, (sigs == sigs[roots]).mean(axis=1).astype(np.float32)


class Clusterer(PipelineStep):
    """The one-task phase: reads every signature shard, clusters, writes kept shards, rejects and clusters."""

    name = "🎯 MinHash clusters"
    type = "🧪 - STAGE"

    def __init__(self, cfg: NearDedupConfig, map_files: list[str]):
        super().__init__()
        self.cfg, self.map_files = cfg, map_files

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        out = Path(self.cfg.output)
        tables = [pq.read_table(f) for f in self.map_files]
        sizes = [t.num_rows for t in tables]
        ids = [i for t in tables for i in t.column("template_id").to_pylist()]
        h = self.cfg.num_buckets * self.cfg.hashes_per_bucket
        sigs = np.concatenate([np.asarray(t.column("minhash").to_pylist(), dtype=np.uint32).reshape(-1, h)
                               for t in tables]) if ids else np.zeros((0, h), dtype=np.uint32)
        with self.track_time():
            roots, similarity = clusters(sigs, self.cfg.num_buckets, self.cfg.threshold)
        keep = roots == np.arange(len(roots))
        cluster_size = Counter(roots.tolist())
        rejects, offset = [], 0
        for f, table, size in zip(self.map_files, tables, sizes):
            mask = keep[offset : offset + size]
            _write(table.filter(pa.array(mask)).select(schemas.TEMPLATES.names).cast(schemas.TEMPLATES),
                   out / Path(f).name)
            dropped = table.filter(pa.array(~mask)).select(schemas.TEMPLATES.names).to_pylist()
            for row, i in zip(dropped, np.flatnonzero(~mask) + offset):
                rejects.append({**row, "duplicate_of": ids[roots[i]], "similarity": float(similarity[i]),
                                "reason": "near_duplicate"})
            offset += size
        (out / "rejects").mkdir(exist_ok=True)
        _write(pa.Table.from_pylist(rejects, schema=NEAR_REJECTS), out / "rejects" / "near-00000.parquet")
        members = [{"template_id": ids[i], "cluster_id": ids[r], "cluster_size": cluster_size[r]}
                   for i, r in enumerate(roots.tolist()) if cluster_size[r] > 1]
        _write(pa.Table.from_pylist(members, schema=CLUSTERS), out / "clusters.parquet")
        if rejects:
            self.stat_update("reject/near_duplicate", value=len(rejects))
        for size, count in Counter(s for s in cluster_size.values() if s > 1).items():
            self.stat_update(f"dist/cluster_size/{size if size < 10 else '10+'}", value=count)


def _write(table: pa.Table, path: Path) -> None:
    with atomic.replacing(path) as tmp:
        pq.write_table(table, tmp)


def run(cfg: NearDedupConfig) -> StageSummary:
    if not cfg.input:
        raise UserError("stage near_dedup needs --input (the output folder of the templatize stage)")
    if not 0 < cfg.threshold <= 1 or cfg.ngram < 1 or cfg.num_buckets < 1 or cfg.hashes_per_bucket < 1:
        raise UserError("--threshold must be in (0, 1]; --ngram, --num-buckets, --hashes-per-bucket at least 1")
    files, reader = stage_input(cfg.input, "template", "template_id", "templatize")
    step = Signer(cfg, input_files=files, progress=cfg.progress)
    return run_stage("near_dedup", cfg, reader, step, SIGNED,
                     finalize=("cluster", lambda map_dir, map_files: [Clusterer(cfg, map_files)]))
