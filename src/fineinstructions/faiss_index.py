"""FAISS index over template-description embeddings, for the matching stage.

Every document contributes 6 query vectors (1 global + 5 local chunks) that look for template descriptions above a
cosine threshold. Vectors are L2-normalised, so inner product = cosine and every index here uses inner product.

Why these index types (measured with ``benchmarks/match_bench.py``, 2 threads, 384-d, results in
``benchmarks/results/match_bench.json``):

* Banks under ``EXACT_MAX_VECTORS`` (50k) use an exact ``Flat`` index: no training, recall 1, and a scan of 50k
  vectors still runs ~3k queries/s. Exact search does not scale: ~150 queries/s on 1M vectors.
* Larger banks use ``IVF{nlist}_HNSW32,PQ{dim/4}x4fs,Refine(SQ8)``:
  - IVF with nlist ≈ 4·sqrt(n) lists (a power of two), so a query scans only ``nprobe`` lists;
  - an HNSW coarse quantizer: picking the nprobe nearest of 4k–16k centroids costs a few hundred distance
    computations instead of nlist (IVF4096,SQ8 at nprobe 4: 12.6k q/s with a flat coarse quantizer, 15.1k with HNSW);
  - 4-bit fast-scan PQ codes, 1 bit per dimension (48 B at 384-d, 128 B at 1024-d), scanned with SIMD lookups;
  - a re-rank of the ``k · k_factor`` best candidates with 8-bit scalar-quantised vectors (the "re-rank store").
    PQ alone tops out at ~0.5 recall@10 and its scores are off by ~0.2, useless against a cosine threshold; after
    the re-rank, scores are within ~0.0005 of the true cosine.
  On 1M clustered vectors with a quiet machine: recall@10 0.958 at 22k queries/s (nprobe 8, k_factor 10), versus
  0.964 at 12.6k q/s for ``IVF4096,SQ8`` (nprobe 4). Build: ~1 min. k_factor trades speed for recall (5: 0.907 at
  29k q/s; 20: 0.972 at 15k q/s); 2 bits a dimension (``PQ{dim/2}x4fs``) needs only k_factor 5 but is no faster.
* Size at the paper's scale (18M × 1024-d BGE-M3): the IVF-PQ part is 128 B of codes + 8 B of id a vector ≈ 2.5 GB;
  the SQ8 re-rank store adds 1 B per dimension (~18 GB) and is memory-mapped by ``load_index``, so only the rows
  that get re-ranked are paged in. ``IVF…,SQ8`` alone would be ~18.6 GB, hence not the default.

``nprobe`` is calibrated at build time on the bank itself (see ``build_index``); it is stored in the index file and
in ``meta.json``. On real MiniLM embeddings (less clustered than the synthetic benchmark data) the calibration
picks a larger nprobe; ``calibration_threshold`` counts only neighbours the matching stage would keep.

A saved index is a directory: ``index.faiss``, ``ids.parquet`` (row i of the index ↔ ids[i]) and ``meta.json``
(factory, dim, count, embedder fingerprint, nprobe, recall report), so a matching run can refuse an index built with
another embedder instead of returning plausible-looking garbage.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import faiss

from fineinstructions import atomic
import numpy as np

from fineinstructions.errors import UserError

log = logging.getLogger(__name__)

#: below this many vectors an exact scan is fast enough and needs no training
EXACT_MAX_VECTORS = 50_000
#: re-rank k · K_FACTOR fast-scan candidates with the SQ8 store (10 → 100 candidates for k = 10)
DEFAULT_K_FACTOR = 10
#: nprobe is calibrated at build time as the smallest power of two reaching this recall@10
DEFAULT_TARGET_RECALL = 0.95
#: used when calibration is impossible (no sample) or asked off
DEFAULT_NPROBE = 16
#: training sample when the bank size is unknown; FAISS wants >= 39 points a list (k-means) and uses <= 256
DEFAULT_TRAIN_SAMPLE = 262_144
DEFAULT_BATCH_SIZE = 65_536
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
META_FILE = "meta.json"
BUILD_HINT = "fineinstructions index ... --output {dir}"


class IndexMismatchError(ValueError, UserError):
    """The index and the query vectors come from different embedders (or dimensions): results would be garbage."""


class IndexNotFoundError(FileNotFoundError, UserError):
    """No index where one was expected; the message says how to build it."""


# ----------------------------------------------------------------------------------------------------------- factory


def nlist_for(n_vectors: int) -> int:
    """Number of IVF lists: the power of two nearest 4·sqrt(n) (1M → 4096, 18M → 16384).

    Fewer lists make each probed list longer (more codes scanned per probe); more lists make the coarse search and
    k-means training slower and need more probes for the same recall. 4·sqrt(n) is FAISS's usual middle ground.
    """
    target = 4 * math.sqrt(max(n_vectors, 1))
    return int(min(max(2 ** round(math.log2(target)), 16), 1 << 18))


def pq_m_for(dim: int) -> int:
    """Sub-quantizers for 4-bit fast-scan PQ: one per 4 dimensions (1 bit per dimension: 48 B at 384-d)."""
    m = dim // 4
    while m > 1 and dim % m:
        m -= 1
    return m


def choose_factory(n_vectors: int, dim: int) -> str:
    """FAISS factory string for a bank of ``n_vectors`` ``dim``-d unit vectors (see the module docstring for why)."""
    if n_vectors < EXACT_MAX_VECTORS:
        return "Flat"
    return f"IVF{nlist_for(n_vectors)}_HNSW32,PQ{pq_m_for(dim)}x4fs,Refine(SQ8)"


# ------------------------------------------------------------------------------------------------------------ build


def _as_f32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _batches(vectors: np.ndarray | Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    if isinstance(vectors, np.ndarray):
        for i in range(0, len(vectors), batch_size):
            yield _as_f32(vectors[i:i + batch_size])  # a memmap is read one batch at a time
    else:
        for b in vectors:
            yield _as_f32(b)


def _reiterable(vectors: Any) -> bool:
    """True when iterating twice gives the data twice (array, list, or an object whose __iter__ restarts)."""
    return isinstance(vectors, np.ndarray) or iter(vectors) is not vectors


def _sample(vectors: np.ndarray | Iterable[np.ndarray], size: int, batch_size: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """A uniform random sample of rows (vectors, their row numbers) and the row count, in one pass.

    Every row gets a random priority and the ``size`` lowest priorities seen so far are kept (reservoir sampling in
    batches): only the sample and one batch are ever in memory, and later batches copy only the few rows that enter.
    """
    if isinstance(vectors, np.ndarray):
        n = len(vectors)
        rows = np.sort(rng.choice(n, min(size, n), replace=False))
        return _as_f32(vectors[rows]), rows, n
    xs: np.ndarray | None = None
    pri, rows = np.empty(0), np.empty(0, np.int64)
    n = 0
    for b in _batches(vectors, batch_size):
        p, r = rng.random(len(b)), np.arange(n, n + len(b))
        n += len(b)
        if xs is None:
            xs = np.empty((size, b.shape[1]), np.float32)
        fill = min(size - len(pri), len(b))  # until the sample is full, every row goes in
        xs[len(pri):len(pri) + fill] = b[:fill]
        pri, rows = np.concatenate([pri, p[:fill]]), np.concatenate([rows, r[:fill]])
        cand = np.flatnonzero(p[fill:] < pri.max()) + fill  # then only rows that beat the worst kept priority
        if len(cand):
            best = np.argpartition(np.concatenate([pri, p[cand]]), size - 1)[:size]
            incoming = cand[best[best >= size] - size]
            evicted = np.setdiff1d(np.arange(size), best[best < size])
            xs[evicted], pri[evicted], rows[evicted] = b[incoming], p[incoming], r[incoming]
    if xs is None:
        raise ValueError("no vectors to index")
    order = np.argsort(rows)
    return xs[:len(rows)][order], rows[order], n


def exact_knn(vectors: np.ndarray | Iterable[np.ndarray], queries: np.ndarray, k: int,
              batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product over a bank given whole or in batches (row numbers are global)."""
    queries = _as_f32(queries)
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    offset = 0
    for b in _batches(vectors, batch_size):
        d, i = faiss.knn(queries, b, min(k, len(b)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(d, np.where(i >= 0, i + offset, -1))
        offset += len(b)
    heap.finalize()
    return heap.D, heap.I


def _drop_ids(idx: np.ndarray, drop: np.ndarray | None, k: int) -> np.ndarray:
    """First k ids of each row after removing that row's own id (used when the queries are bank vectors)."""
    if drop is None:
        return idx[:, :k]
    out = np.full((len(idx), k), -1, np.int64)
    for r, (row, own) in enumerate(zip(idx, drop)):
        kept = row[row != own][:k]
        out[r, :len(kept)] = kept
    return out


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true neighbours (ids >= 0 in ``truth``) present in ``found``; 1.0 when there are none."""
    hits = sum(len(np.intersect1d(f[f >= 0], t[t >= 0])) for f, t in zip(found, truth))
    total = int((truth >= 0).sum())
    return hits / total if total else 1.0


def _above(scores: np.ndarray, ids: np.ndarray, threshold: float | None) -> np.ndarray:
    """Exact neighbours below the cosine threshold do not count: the matching stage would drop them anyway."""
    return ids if threshold is None else np.where(scores >= threshold, ids, -1)


def is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def _set_search_defaults(index: faiss.Index, nprobe: int | None = None, k_factor: int | None = None) -> None:
    """Store search-time knobs on the index itself (FAISS saves them in the index file)."""
    if nprobe is not None and is_ivf(index):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = int(nprobe)
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            # the coarse HNSW must return nprobe good centroids; ef below ~2·nprobe starts to miss lists
            quantizer.hnsw.efSearch = max(2 * int(nprobe), 32)
    if k_factor is not None and isinstance(faiss.downcast_index(index), faiss.IndexRefine):
        faiss.downcast_index(index).k_factor = float(k_factor)


def search_defaults(index: faiss.Index) -> dict[str, Any]:
    """The nprobe / k_factor the index searches with when not told otherwise."""
    out: dict[str, Any] = {"nprobe": faiss.extract_index_ivf(index).nprobe if is_ivf(index) else None}
    top = faiss.downcast_index(index)
    out["k_factor"] = top.k_factor if isinstance(top, faiss.IndexRefine) else None
    return out


def _calibrate_nprobe(index: faiss.Index, queries: np.ndarray, rows: np.ndarray, truth: np.ndarray,
                      target: float, table: dict[str, float]) -> int:
    """Smallest power of two reaching ``target`` recall@10; else where recall stops improving.

    Recall can plateau below the target (or even drop: with more lists probed, more PQ-scored candidates compete
    for the ``k · k_factor`` re-rank slots), so the sweep stops after two doublings that gained nothing.
    """
    best = 1
    for p in (2 ** j for j in range(int(math.log2(min(faiss.extract_index_ivf(index).nlist, 256))) + 1)):
        _set_search_defaults(index, nprobe=p)
        k = truth.shape[1]
        table[str(p)] = r = _recall(_drop_ids(index.search(queries, k + 1)[1], rows, k), truth)
        if r >= target:
            return p
        if r > table[str(best)] + 0.002:
            best = p
        elif p >= 4 * best:
            break
    log.warning("recall@10 reaches only %.3f (< %.2f) at nprobe %d: the codes or the re-rank depth (k_factor) "
                "limit it", table[str(best)], target, best)
    return best


def build_index(vectors: np.ndarray | Iterable[np.ndarray], factory: str | None = None,
                metric: int = faiss.METRIC_INNER_PRODUCT, train_sample: int | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, *, n_vectors: int | None = None,
                nprobe: int | None = None, k_factor: int = DEFAULT_K_FACTOR,
                target_recall: float = DEFAULT_TARGET_RECALL, calibration_queries: int = 256,
                calibration_threshold: float | None = None, report: dict | None = None) -> faiss.Index:
    """Train (IVF/PQ) on a random sample, add every vector in batches, and calibrate ``nprobe``.

    ``vectors``: one array (a ``np.memmap`` works: it is read one batch at a time), or batches. A re-iterable
    (list, or an object whose ``__iter__`` restarts) gets a first pass for a uniform training sample, so the bank never
    has to be in RAM as float32. A one-shot iterator is read once: training then uses the *first* ``train_sample``
    vectors (shuffle upstream), and ``factory`` or ``n_vectors`` must be given since the count is unknown up front.

    ``train_sample``: vectors for k-means/PQ training; None = 40 per IVF list when the bank size is known (k-means
    time grows with sample × nlist: ~1 min for 1M vectors on 2 cores, hours for 18M → use more cores there), else
    ``DEFAULT_TRAIN_SAMPLE``.

    ``nprobe``: None calibrates it: the smallest power of two whose recall@10 (vs exact search, on
    ``calibration_queries`` bank vectors, each ignoring itself) reaches ``target_recall``. With
    ``calibration_threshold`` only exact neighbours at or above that cosine count (those the matching stage keeps),
    which on real embeddings needs far fewer probes. Pass a ``report`` dict to receive the timings and the
    recall-by-nprobe table (``save_index(extra_meta=report)`` stores them).
    """
    rng = np.random.default_rng(seed)
    report = {} if report is None else report
    t0 = time.perf_counter()
    n_hint = len(vectors) if isinstance(vectors, np.ndarray) else n_vectors
    if train_sample is None:
        train_sample = min(n_hint, max(50_000, 40 * nlist_for(n_hint))) if n_hint else DEFAULT_TRAIN_SAMPLE
    if _reiterable(vectors):
        sample, sample_rows, n = _sample(vectors, train_sample, batch_size, rng)
        stream: Iterable[np.ndarray] = _batches(vectors, batch_size)
    else:  # one pass: train on the head of the stream, then add that head and the rest
        it = _batches(vectors, batch_size)
        head: list[np.ndarray] = []
        while sum(len(b) for b in head) < train_sample and (b := next(it, None)) is not None:
            head.append(b)
        if not head:
            raise ValueError("no vectors to index")
        sample = np.concatenate(head)[:train_sample]
        sample_rows, n = np.arange(len(sample)), n_vectors
        stream = (b for part in (head, it) for b in part)
    dim = sample.shape[1]
    if factory is None:
        if n is None:
            raise ValueError("a one-shot iterator of batches needs factory= or n_vectors= (the count is unknown)")
        factory = choose_factory(n, dim)
    norms = np.linalg.norm(sample[:1000], axis=1)
    if metric == faiss.METRIC_INNER_PRODUCT and np.abs(norms - 1).max() > 1e-3:
        log.warning("vectors are not L2-normalised (norms %.3f–%.3f): inner product is not cosine",
                    norms.min(), norms.max())

    index = faiss.index_factory(dim, factory, metric)
    if is_ivf(index):
        faiss.extract_index_ivf(index).cp.seed = seed
    if not index.is_trained:
        index.train(sample)
    t_train = time.perf_counter() - t0

    # exact neighbours of a few sampled bank vectors, accumulated while adding (the bank is read only once more)
    calib = rng.choice(len(sample), min(calibration_queries, len(sample)), replace=False)
    calib_q, calib_rows = sample[calib], sample_rows[calib]
    k = 10
    heap = faiss.ResultHeap(len(calib_q), k + 1, keep_max=True)
    added = 0
    for b in stream:
        index.add(b)
        d, i = faiss.knn(calib_q, b, min(k + 1, len(b)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(d, np.where(i >= 0, i + added, -1))
        added += len(b)
    heap.finalize()
    t_add = time.perf_counter() - t0 - t_train
    truth = _drop_ids(_above(heap.D, heap.I, calibration_threshold), calib_rows, k)

    table: dict[str, float] = {}
    if is_ivf(index):
        _set_search_defaults(index, k_factor=k_factor)
        if nprobe is None and not len(calib_q):
            nprobe = DEFAULT_NPROBE
        elif nprobe is None:
            nprobe = _calibrate_nprobe(index, calib_q, calib_rows, truth, target_recall, table)
        _set_search_defaults(index, nprobe=nprobe)
    recall = _recall(_drop_ids(index.search(calib_q, k + 1)[1], calib_rows, k), truth)
    report.update({
        "factory": factory, "dim": dim, "count": int(index.ntotal), "metric": "inner_product"
        if metric == faiss.METRIC_INNER_PRODUCT else int(metric), "train_vectors": len(sample),
        "train_seconds": round(t_train, 2), "add_seconds": round(t_add, 2), **search_defaults(index),
        "recall@10": round(recall, 4), "recall@10_by_nprobe": {p: round(r, 4) for p, r in table.items()},
        "recall_queries": f"{len(calib_q)} bank vectors, each ignoring itself",
        "recall_threshold": calibration_threshold,
    })
    log.info("built %s over %d vectors: train %.1fs, add %.1fs, nprobe %s, recall@10 %.3f",
             factory, index.ntotal, t_train, t_add, report["nprobe"], recall)
    return index


# ----------------------------------------------------------------------------------------------------------- search


def _search_params(index: faiss.Index, nprobe: int | None) -> list[faiss.SearchParameters]:
    """Per-call search parameters (outermost first; the caller keeps the list alive during the search).

    Parameters objects instead of setting ``index.nprobe``: concurrent searches with different nprobe stay
    independent, and the index (possibly a read-only mmap) is never modified.
    """
    if nprobe is None or not is_ivf(index):
        return []  # an exact index has no nprobe: nothing to override
    top = faiss.downcast_index(index)
    base = faiss.downcast_index(top.base_index) if isinstance(top, faiss.IndexRefine) else top
    if not isinstance(base, faiss.IndexIVF):
        raise ValueError(f"nprobe= is supported for IVF indexes, optionally re-ranked, not {type(base).__name__}")
    chain: list[faiss.SearchParameters] = [faiss.SearchParametersIVF(nprobe=int(nprobe))]
    if isinstance(faiss.downcast_index(base.quantizer), faiss.IndexHNSW):
        chain.append(faiss.SearchParametersHNSW(efSearch=max(2 * int(nprobe), 32)))
        chain[0].quantizer_params = chain[-1]
    if top is not base:
        chain.insert(0, faiss.IndexRefineSearchParameters(k_factor=top.k_factor, base_index_params=chain[0]))
    return chain


def search(index: faiss.Index, queries: np.ndarray, k: int, nprobe: int | None = None,
           batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (cosine scores, row numbers) for each query; row -1 where fewer than k were found.

    ``nprobe`` overrides the index's default (``search_defaults``) for this call only; it is ignored by an exact
    index. Queries go to FAISS in large batches: FAISS parallelises over the queries of one call.
    """
    queries = _as_f32(queries)
    if queries.shape[1] != index.d:
        raise IndexMismatchError(
            f"query vectors have dimension {queries.shape[1]} but the index has dimension {index.d}: the index was "
            "built with another embedder; rebuild the index or embed the queries with the same embedder")
    params = _search_params(index, nprobe)
    scores = np.empty((len(queries), k), np.float32)
    idx = np.empty((len(queries), k), np.int64)
    for i in range(0, len(queries), batch_size):
        scores[i:i + batch_size], idx[i:i + batch_size] = index.search(
            queries[i:i + batch_size], k, params=params[0] if params else None)
    return scores, idx


def recall_at_k(index: faiss.Index, vectors_or_sample: np.ndarray | Iterable[np.ndarray], queries: np.ndarray,
                k: int = 10, nprobe: int | None = None, query_ids: np.ndarray | None = None,
                threshold: float | None = None) -> float:
    """Fraction of the exact top-k (flat search over ``vectors_or_sample``) that ``index`` returns.

    ``vectors_or_sample`` must be the indexed vectors in row order (whole, memmapped or re-iterable batches) so row
    numbers agree. When the queries are themselves bank vectors, pass their rows as ``query_ids``: each query then
    ignores itself in both result lists (otherwise finding itself would inflate recall by up to 1/k). With
    ``threshold``, only exact neighbours with cosine >= threshold count (1.0 when a query has none).
    """
    queries = _as_f32(queries)
    extra = 0 if query_ids is None else 1
    truth = _drop_ids(_above(*exact_knn(vectors_or_sample, queries, k + extra), threshold), query_ids, k)
    found = _drop_ids(search(index, queries, k + extra, nprobe=nprobe)[1], query_ids, k)
    return _recall(found, truth)


# -------------------------------------------------------------------------------------------------------- save/load


def _fingerprint_error(built: str, searching: str) -> IndexMismatchError:
    return IndexMismatchError(f"index built with {built!r}, searching with {searching!r}: rebuild the index or use "
                              "the same embedder")


def save_index(index: faiss.Index, dir: str | os.PathLike, ids: list[str], embedder_fingerprint: str,
               extra_meta: dict | None = None) -> Path:
    """Write ``index.faiss``, ``ids.parquet`` (row i ↔ ids[i]) and ``meta.json`` into ``dir``; meta.json last.

    meta.json is written last, so a directory with meta.json holds a complete index (load_index checks for it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(ids) != index.ntotal:
        raise ValueError(f"{len(ids)} ids for an index of {index.ntotal} vectors: they must correspond row by row")
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)
    with atomic.replacing(out / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    with atomic.replacing(out / IDS_FILE) as tmp:
        pq.write_table(pa.table({"id": pa.array(list(ids), pa.string())}), tmp)
    meta = dict(extra_meta or {})
    meta.update({
        "format": 1, "factory": meta.get("factory") or type(faiss.downcast_index(index)).__name__,
        "dim": int(index.d), "count": int(index.ntotal), "embedder_fingerprint": embedder_fingerprint,
        "metric": "inner_product" if index.metric_type == faiss.METRIC_INNER_PRODUCT else int(index.metric_type),
        **search_defaults(index), "faiss_version": faiss.__version__,
        "index_bytes": (out / INDEX_FILE).stat().st_size,
    })
    atomic.write_json(out / META_FILE, meta, default=str)
    return out


def read_index(path: Path, mmap: bool) -> faiss.Index:
    """Read with memory mapping where FAISS supports it, else a normal read.

    ``IO_FLAG_MMAP_IFC`` maps flat code arrays in place (Flat, the SQ8/Flat re-rank store, IVF array lists);
    ``IO_FLAG_MMAP`` maps IVF array lists only. Neither maps the fast-scan (4-bit PQ) lists, which FAISS always reads
    into RAM — they are the small part (48 B a vector at 384-d). A mapped index is read-only and needs the file to
    stay in place.
    """
    if mmap:
        for name, flag in (("MMAP_IFC", faiss.IO_FLAG_MMAP_IFC), ("MMAP", faiss.IO_FLAG_MMAP)):
            try:
                return faiss.read_index(str(path), flag | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError as e:
                log.info("IO_FLAG_%s unsupported for %s (%s)", name, path, str(e).splitlines()[0])
        log.warning("memory mapping unsupported for %s: reading the whole index into RAM", path)
    return faiss.read_index(str(path))


def load_index(dir: str | os.PathLike, mmap: bool = True, expected_fingerprint: str | None = None,
               ) -> tuple[faiss.Index, np.ndarray, dict]:
    """Load (index, ids, meta) saved by ``save_index``; ``ids[idx]`` maps search results back to template ids.

    The embedder fingerprint is checked before the (possibly large) index file is opened.
    """
    import pyarrow.parquet as pq

    d = Path(dir)
    if not (d / META_FILE).is_file() or not (d / INDEX_FILE).is_file():
        missing = d if not d.is_dir() else d / (META_FILE if not (d / META_FILE).is_file() else INDEX_FILE)
        raise IndexNotFoundError(f"no FAISS index at {missing}: build it with `{BUILD_HINT.format(dir=d)}`")
    meta = json.loads((d / META_FILE).read_text())
    built = meta.get("embedder_fingerprint")
    if expected_fingerprint is not None and built != expected_fingerprint:
        raise _fingerprint_error(built, expected_fingerprint)
    index = read_index(d / INDEX_FILE, mmap)
    if index.d != meta.get("dim", index.d) or index.ntotal != meta.get("count", index.ntotal):
        raise ValueError(f"{d / META_FILE} says {meta.get('count')} × {meta.get('dim')}-d but the index holds "
                         f"{index.ntotal} × {index.d}-d: the directory was partly overwritten; rebuild it")
    ids = pq.read_table(d / IDS_FILE, columns=["id"]).column("id").to_numpy(zero_copy_only=False)
    if len(ids) != index.ntotal:
        raise ValueError(f"{d / IDS_FILE} has {len(ids)} ids for {index.ntotal} vectors: rebuild the index")
    return index, ids, meta
