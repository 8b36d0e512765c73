"""near_dedup: MinHash (datatrove's signatures) clusters near-duplicate templates; one per cluster is kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions import schemas
from fineinstructions.errors import UserError
from fineinstructions.stages.near_dedup import NearDedupConfig, clusters, make_signer, run, signature

TEMPLATES = [  # (id, template); a, b, c and d, e are near duplicates; f, g are different templates
    ("a", "what is the capital city of <fi>country</fi> and what is its population"),
    ("b", "What is the capital city of <fi>name of a country</fi>, and what is its population?"),
    ("c", "what's the capital city of <fi>country</fi> and what is its population"),
    ("d", "how do i bake a <fi>type of cake</fi> without an oven at home"),
    ("e", "how do i bake a <fi>cake</fi> without an oven at home quickly"),
    ("f", "what is the population of <fi>city</fi>"),
    ("g", "who wrote the novel <fi>book title</fi> and when was it published"),
]


def write(folder: Path, shards: int = 2) -> str:
    folder.mkdir(parents=True)
    rows = [{"template_id": i, "query_id": f"q{i}", "source": "test", "query": "", "template": t,
             "compatible_document_description": "d", "num_slots": 1, "alignment": 1.0, "model_id": "hand",
             "prompt_fingerprint": "hand"} for i, t in TEMPLATES]
    for s in range(shards):  # contiguous shards: shard order is templatize's order, and the first row is kept
        chunk = rows[s * len(rows) // shards : (s + 1) * len(rows) // shards]
        pq.write_table(pa.Table.from_pylist(chunk, schema=schemas.TEMPLATES), folder / f"part-{s:05d}.parquet")
    return str(folder)


def test_signature_ignores_slot_wording_and_punctuation(tmp_path):
    signer = make_signer(NearDedupConfig(output=str(tmp_path)))
    assert signature(signer, TEMPLATES[0][1]) == signature(signer, TEMPLATES[1][1])
    assert signature(signer, TEMPLATES[0][1]) != signature(signer, TEMPLATES[5][1])
    assert len(signature(signer, "<fi>x</fi>")) == 80  # shorter than one n-gram still gets a signature


def test_clusters_keep_the_first_row():
    sigs = np.array([[1, 2, 3, 4], [1, 2, 3, 9], [5, 6, 7, 8], [1, 2, 0, 0]], dtype="uint32")
    roots, sim = clusters(sigs, num_buckets=2, threshold=0.7)
    assert roots.tolist() == [0, 0, 2, 3]  # row 3 shares a band with 0 but only half its signature
    assert sim.tolist() == [1.0, 0.75, 1.0, 1.0]


def test_near_duplicates_are_clustered_counted_and_dropped(tmp_path):
    summary = run(NearDedupConfig(input=write(tmp_path / "templatize"), output=str(tmp_path / "out"), tasks=2,
                                  progress=False))
    out = tmp_path / "out"
    kept = sorted(r["template_id"] for p in out.glob("part-*.parquet") for r in pq.read_table(p).to_pylist())
    assert kept == ["a", "d", "f", "g"]
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.read_schema(out / "part-00000.parquet") == schemas.TEMPLATES
    rejected = {r["template_id"]: r for r in pq.read_table(out / "rejects" / "near-00000.parquet").to_pylist()}
    assert {k: r["duplicate_of"] for k, r in rejected.items()} == {"b": "a", "c": "a", "e": "d"}
    assert all(r["reason"] == "near_duplicate" and r["similarity"] >= 0.7 for r in rejected.values())
    members = {r["template_id"]: (r["cluster_id"], r["cluster_size"])
               for r in pq.read_table(out / "clusters.parquet").to_pylist()}
    assert members == {"a": ("a", 3), "b": ("a", 3), "c": ("a", 3), "d": ("d", 2), "e": ("d", 2)}
    assert summary.rows_in == 7 and summary.rows_out == 4 and summary.rejects == {"near_duplicate": 3}
    saved = json.loads((out / "summary.json").read_text())
    assert saved["distributions"] == {"cluster_size": {"2": 1, "3": 1}}
    again = run(NearDedupConfig(input=str(tmp_path / "templatize"), output=str(out), tasks=2, progress=False))
    assert again.rows_out == 4 and again.rejects == {"near_duplicate": 3}  # a rerun is a no-op


def test_bad_settings(tmp_path):
    with pytest.raises(UserError, match="threshold"):
        run(NearDedupConfig(input=str(tmp_path), output=str(tmp_path / "o"), threshold=0))
