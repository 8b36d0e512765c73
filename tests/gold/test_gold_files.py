"""The committed gold sets (data/gold/) keep every rule they were written to: the format, verbatim queries and
windows (when ../shared is here), read-back templates, unique key spans, splits that share no query and no
document, and the coverage the issue asked for."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from fineinstructions.gold.check import check_file
from fineinstructions.templates import num_slots

ROOT = Path(__file__).resolve().parents[2]
GOLD = ROOT / "data" / "gold"
SHARED = ROOT.parent / "shared" / "data"
SPLITS = ("train", "dev", "test")


def rows(split: str, stage: str) -> list[dict]:
    return [json.loads(line) for line in (GOLD / split / f"{stage}.jsonl").open(encoding="utf-8")]


def document_of(row_id: str) -> str:
    return re.match(r"^(?:inst|judge)-(.+)-m?\d+$", row_id).group(1)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("stage", ["templatize", "instantiate", "judge"])
def test_every_row_passes_the_checker(split, stage):
    problems, stats = check_file(GOLD / split / f"{stage}.jsonl", stage, SHARED if SHARED.is_dir() else None)
    assert problems == [] and stats["rows"] > 0


def test_no_query_and_no_document_is_in_two_splits():
    queries = Counter(r["id"] for s in SPLITS for r in rows(s, "templatize"))
    assert max(queries.values()) == 1
    where: dict[str, set] = {}
    for split in SPLITS:
        for stage in ("instantiate", "judge"):
            for r in rows(split, stage):
                where.setdefault(document_of(r["id"]), set()).add(split)
    assert all(len(s) == 1 for s in where.values())
    assigned = json.loads((GOLD / "document_splits.json").read_text())
    assert all(assigned[d] == next(iter(s)) for d, s in where.items())


def test_sizes_sources_and_mixes_are_as_asked():
    templatize = [r for s in SPLITS for r in rows(s, "templatize")]
    sources = Counter(r["source"].split("-")[0] for r in templatize)
    assert len(templatize) >= 800 and all(sources[s] >= 150 for s in ("nq_open", "webquestions", "stackexchange",
                                                                        "fiqa"))
    slots = Counter(num_slots(r["reference_templates"][0]) for r in templatize)
    assert slots[1] > slots[2] > slots[3] > 0  # mostly one slot, some two, a few three
    instantiate = [r for s in SPLITS for r in rows(s, "instantiate")]
    assert len(instantiate) >= 300 and sum(not r["compatible"] for r in instantiate) >= 0.25 * len(instantiate)
    assert {r["id"].split("-")[1] for r in instantiate} >= {"wikitext2", "state_union", "inaugural"}
    judge = [r for s in SPLITS for r in rows(s, "judge")]
    scores = Counter(r["score"] for r in judge)
    assert len(judge) >= 500 and all(scores[k] >= 50 for k in range(1, 6))
    assert sum(bool(re.search(r"-m\d+$", r["id"])) for r in judge) >= 150  # real outputs of the embedded model
    total = {s: sum(len(rows(s, st)) for st in ("templatize", "instantiate", "judge")) for s in SPLITS}
    assert 0.6 < total["train"] / sum(total.values()) < 0.8 and 0.15 < total["test"] / sum(total.values()) < 0.25
