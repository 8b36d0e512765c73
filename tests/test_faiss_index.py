"""The FAISS index of the matching stage: real FAISS builds, save → mmap load → search round trips, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from fineinstructions import faiss_index as fi  # noqa: E402

DIM = 128
FP = "minilm-l6-v2:abc123"


def clustered(n: int, seed: int, dim: int = DIM, centres: int = 64) -> np.ndarray:
    """Unit vectors around fixed cluster centres (the same for every seed); nearest-neighbour cosines ~0.5, as with
    sentence embeddings, so that an IVF index needs several probes for a good recall."""
    c = np.random.default_rng(0).standard_normal((centres, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    rng = np.random.default_rng(seed + 1)
    x = c[rng.integers(0, centres, n)] + 1.5 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One FAISS thread: on a busy machine OpenMP's spin-waits make small parallel loops (PQ training) 10× slower."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def bank() -> np.ndarray:
    return clustered(20_000, seed=0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(300, seed=1)  # fresh points, not copies of bank vectors


def test_choose_factory_exact_for_small_banks_ivf_for_large():
    assert fi.choose_factory(20_000, 384) == "Flat"
    big = fi.choose_factory(1_000_000, 384)
    assert big.startswith("IVF4096_HNSW32,") and "PQ96x4fs" in big and "Refine(" in big
    paper = fi.choose_factory(18_000_000, 1024)
    assert paper.startswith("IVF16384_HNSW32,") and "PQ256x4fs" in paper
    assert fi.nlist_for(100_000) == 1024


@pytest.mark.parametrize("factory", ["Flat", "IVF128_HNSW32,PQ32x4fs,Refine(SQ8)", "IVF128,SQ8"])
def test_round_trip_build_save_mmap_load_search(tmp_path, bank, queries, factory):
    report: dict = {}
    index = fi.build_index(bank, factory, train_sample=10_000, report=report)
    assert index.ntotal == len(bank) and report["factory"] == factory
    ids = [f"tpl-{i}" for i in range(len(bank))]
    fi.save_index(index, tmp_path / "idx", ids, FP, extra_meta=report)

    loaded, loaded_ids, meta = fi.load_index(tmp_path / "idx", mmap=True, expected_fingerprint=FP)
    assert (meta["factory"], meta["dim"], meta["count"], meta["embedder_fingerprint"]) == (factory, DIM, len(bank), FP)
    assert json.loads((tmp_path / "idx" / "meta.json").read_text())["recall@10"] == report["recall@10"]

    # a bank vector finds itself, and the row number maps back to its id
    rows = np.array([0, 7, 12_345, 19_999])
    scores, idx = fi.search(loaded, bank[rows], k=5)
    assert list(loaded_ids[idx[:, 0]]) == [ids[r] for r in rows]
    assert np.allclose(scores[:, 0], 1.0, atol=0.02)

    # fresh queries: scores are cosines, recall vs exact is high at the calibrated nprobe
    truth_scores, truth = fi.exact_knn(bank, queries, 10)
    scores, idx = fi.search(loaded, queries, k=10)
    r = fi.recall_at_k(loaded, bank, queries, k=10)
    if factory == "Flat":
        assert r == 1.0 and meta["nprobe"] is None
        np.testing.assert_array_equal(idx, truth)
    else:
        assert meta["nprobe"] == report["nprobe"] and r >= 0.9, (meta["nprobe"], r)
        assert fi.recall_at_k(loaded, bank, queries, k=10, nprobe=1) < r  # per-call override, then restored
        assert fi.search_defaults(loaded)["nprobe"] == meta["nprobe"]
    found = idx[:, 0] == truth[:, 0]
    np.testing.assert_allclose(scores[found, 0], truth_scores[found, 0], atol=0.01)


def test_batches_reiterable_and_one_shot_give_the_same_rows(bank):
    batches = [bank[i:i + 3000] for i in range(0, len(bank), 3000)]
    a = fi.build_index(batches, "IVF64,SQ8", train_sample=5000)          # re-iterable: random training sample
    b = fi.build_index(iter(batches), "IVF64,SQ8", train_sample=5000)    # one pass: trains on the head
    for index in (a, b):
        assert index.ntotal == len(bank)
        assert list(fi.search(index, bank[[5, 9_001, 19_000]], 1)[1][:, 0]) == [5, 9_001, 19_000]
    with pytest.raises(ValueError, match="n_vectors"):
        fi.build_index(iter(batches), None)


def test_recall_at_k_ignores_the_query_itself(bank):
    index = fi.build_index(bank[:5000], "Flat")
    assert fi.recall_at_k(index, bank[:5000], bank[:50], k=10, query_ids=np.arange(50)) == 1.0


def test_fingerprint_mismatch_is_refused(tmp_path, bank):
    fi.save_index(fi.build_index(bank[:1000], "Flat"), tmp_path / "idx", [str(i) for i in range(1000)], FP)
    with pytest.raises(ValueError) as e:
        fi.load_index(tmp_path / "idx", expected_fingerprint="bge-m3:def456")
    msg = str(e.value)
    assert FP in msg and "bge-m3:def456" in msg and "rebuild the index" in msg


def test_dimension_mismatch_is_refused(bank):
    index = fi.build_index(bank[:1000], "Flat")
    with pytest.raises(ValueError, match="dimension 64 but the index has dimension 128"):
        fi.search(index, np.ones((3, 64), np.float32), k=5)


def test_missing_index_names_the_path_and_the_build_command(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        fi.load_index(tmp_path / "no-such-index")
    assert str(tmp_path / "no-such-index") in str(e.value) and "fineinstructions index" in str(e.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "index.faiss").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        fi.load_index(tmp_path / "half")


def test_ids_must_match_the_index_rows(tmp_path, bank):
    with pytest.raises(ValueError, match="row by row"):
        fi.save_index(fi.build_index(bank[:100], "Flat"), tmp_path / "idx", ["a", "b"], FP)
