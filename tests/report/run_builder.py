"""A tiny but complete run directory, written through the real stage schemas, for the report tests.

Three documents, four templates' worth of matches, pairs that end in each place a pair can end (in the corpus,
rejected by the judge, unreadable score, excerpt not found), so every section of the report has something real to
show. Excerpts are real sentences of the documents, so the report's excerpt offsets can be checked exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
from llm_stage_helpers import write_jsonl, write_shard  # noqa: E402

from fineinstructions import schemas  # noqa: E402
from fineinstructions.pipeline.summary import StageSummary  # noqa: E402

FILLER = "Nothing in this sentence matters for the answer at all. "
EARLY = "Boil the potatoes for fifteen minutes in salted water."
LATE = "Restart the router after you change the network name."
MIDDLE = "The Sistine Chapel ceiling was painted between 1508 and 1512."
DOCUMENTS = {
    "d1": EARLY + " " + FILLER * 12 + LATE,
    "d2": FILLER * 6 + MIDDLE + " " + FILLER * 6,
    "d3": FILLER * 10,
}
TEMPLATES = [  # template_id, source, template, num_slots
    ("t1", "search", "how long to boil <fi>food</fi>", 1),
    ("t2", "forum", "how do I reset <fi>device</fi> after changing <fi>setting</fi>", 2),
    ("t3", "search", "who painted the <fi>ceiling</fi>", 1),
    ("t4", "forum", "what is <fi>thing</fi>", 1),
]


def _pair(pair_id: str, doc: str, template: str, chunk: int, answer_raw: str, **extra) -> dict:
    text = next(t for tid, _, t, _ in TEMPLATES if tid == template)
    return {"pair_id": pair_id, "document_id": doc, "template_id": template, "chunk": chunk, "match_score": 0.5,
            "template": text, "instruction": f"instruction of {pair_id}", "answer_raw": answer_raw,
            "excerpts": answer_raw.count("<excerpt>"), "status": "ok", "model_id": "stub", **extra}


def _summary(folder: Path, stage: str, rows_in: int, rows_out: int, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    summary = StageSummary(stage=stage, output=str(folder), rows_in=rows_in, rows_out=rows_out, wall_time=1.5, **fields)
    (folder / "summary.json").write_text(json.dumps(summary.to_dict()))


def build_run(root: Path) -> Path:
    """Write the run under `root/run` (documents beside it) and return the run directory."""
    run = root / "run"
    documents = write_jsonl(root / "documents.jsonl", [{"id": k, "text": v} for k, v in DOCUMENTS.items()])

    queries = [{"query_id": f"q{i}", "source": s, "query": f"query {i}"} for i, (_, s, _, _) in enumerate(TEMPLATES)]
    write_shard(run / "queries", schemas.QUERIES, queries + [{"query_id": "q9", "source": "forum", "query": "x"}])
    write_shard(run / "queries" / "rejects", schemas.QUERIES_REJECTS,
                [{"query_id": "q8", "source": "forum", "query": "query 0", "reason": "duplicate_exact"}])
    _summary(run / "queries", "queries", 6, 5, rejects={"duplicate_exact": 1})

    templates = [{"template_id": tid, "query_id": f"q{i}", "source": s, "query": f"query {i}", "template": t,
                  "num_slots": n, "compatible_document_description": "a page"}
                 for i, (tid, s, t, n) in enumerate(TEMPLATES)]
    write_shard(run / "templatize", schemas.TEMPLATES, templates)
    _summary(run / "templatize", "templatize", 5, 4, rejects={"no_slot": 1})
    write_shard(run / "index", schemas.INDEX_BANK, templates)
    _summary(run / "index", "index", 4, 4)

    matches = [("d1", "t1", 1), ("d1", "t2", 5), ("d2", "t3", 0), ("d3", "t4", 3)]
    write_shard(run / "match", schemas.MATCHES,
                [{"document_id": d, "template_id": t, "chunk": c, "score": 0.5, "rank": 1} for d, t, c in matches],
                stage={"k": 5, "target_slots": "1:0.75,2:0.25"})
    _summary(run / "match", "match", 3, 4)

    early, late, middle = (_pair("p1", "d1", "t1", 1, f"<excerpt>{EARLY}</excerpt>", grounding=1.0),
                           _pair("p2", "d1", "t2", 5, "Do this: <excerpt>Restart the router<...>network name."
                                                      "</excerpt>", grounding=0.9),
                           _pair("p3", "d2", "t3", 0, f"<excerpt>{MIDDLE}</excerpt>", grounding=1.0))
    missing = _pair("p4", "d3", "t4", 3, "<excerpt>words that are not in the document</excerpt>",
                    status="excerpt_missing", reason="excerpt_missing", raw_output="Answer: <excerpt>words ...")
    write_shard(run / "instantiate", schemas.PAIRS, [early, late, middle],
                stage={"documents": documents, "text_column": "text", "id_column": "id", "min_grounding": 0.8,
                       "max_document_chars": None})
    write_shard(run / "instantiate" / "rejects", schemas.PAIRS_REJECTS, [missing])
    _summary(run / "instantiate", "instantiate", 4, 3, rejects={"excerpt_missing": 1},
             distributions={"grounding": {"0.9-1.0": 3}})

    write_shard(run / "judge", schemas.JUDGED, [{**early, "score": 5, "judgement": "5"}], stage={"min_score": 4})
    write_shard(run / "judge" / "rejects", schemas.JUDGED_REJECTS,
                [{**late, "score": 2, "judgement": "2", "reason": "low_score"},
                 {**middle, "score": None, "judgement": "fine", "reason": "unparseable_score"}])
    _summary(run / "judge", "judge", 3, 1, rejects={"low_score": 1, "unparseable_score": 1})

    write_shard(run / "budget" / "instructions", schemas.INSTRUCTION_CORPUS,
                [{"text": "Instruction: ...", "document_id": "d1", "pair_id": "p1", "num_tokens": 20}])
    write_shard(run / "budget" / "standard", schemas.STANDARD_CORPUS,
                [{"text": t, "document_id": d, "num_tokens": 100} for d, t in DOCUMENTS.items()])
    _summary(run / "budget", "budget", 1, 1, tokens={"standard": 300, "instructions": 20, "unused_budget": 280})
    return run
