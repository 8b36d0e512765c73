"""Pools of unlabelled inputs for rejection sampling (`distill-augment`), built from raw data with the held-out
gold inputs removed.

* queries: a seeded sample of `per_source` queries from each `.jsonl` of a folder (e.g. the shared NQ,
  WebQuestions, Stack Exchange and FiQA files), minus every query of the gold files;
* windows: ~2,000-character windows (cut at paragraph breaks) of the TRAIN-split documents only (a document split
  file, like `data/gold/document_splits.json`), each paired with the gold train templates closest to it by the
  default embedder -- the way `match` pairs them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from fineinstructions.text import dedup_key


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def query_pool(folder: str | Path, gold_files: list[Path], per_source: int, seed: int = 7) -> list[dict]:
    gold = {dedup_key(r["query"]) for f in gold_files if f.is_file() for r in _jsonl(f) if "query" in r}
    rng, out = random.Random(seed), []
    for f in sorted(Path(folder).glob("*.jsonl")):
        rows = [r for r in _jsonl(f) if isinstance(r.get("query"), str) and dedup_key(r["query"]) not in gold]
        out += rng.sample(rows, min(per_source, len(rows)))
    rng.shuffle(out)
    return [{"id": r.get("id"), "source": r.get("source"), "query": r["query"]} for r in out]


def windows(text: str, size: int = 2000) -> list[str]:
    out, current = [], ""
    for para in text.split("\n\n"):
        if current and len(current) + len(para) + 2 > size:
            out.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if len(current) > size // 3:
        out.append(current)
    return [w for w in out if 600 <= len(w) <= 2500]


def window_pool(documents: str | Path, splits: str | Path, template_files: list[Path], max_windows: int,
                per_window: int = 2, seed: int = 0) -> list[dict]:
    import numpy as np

    from fineinstructions.embed import Embedder

    split = json.loads(Path(splits).read_text())
    docs = [r for f in sorted(Path(documents).glob("*.jsonl")) for r in _jsonl(f)]
    cut = [(d["title"], w) for d in docs if split.get(d["id"]) == "train" for w in windows(d["text"])]
    random.Random(seed).shuffle(cut)
    cut = cut[:max_windows]
    templates = sorted({r["template"] if "template" in r else r["reference_templates"][0]
                        for f in template_files for r in _jsonl(f)})
    embedder = Embedder(None)
    scores = np.asarray(embedder.embed_texts([w for _, w in cut])) @ np.asarray(embedder.embed_texts(templates)).T
    return [{"template": templates[j], "document_title": title, "document": window}
            for (title, window), row in zip(cut, scores) for j in np.argsort(-row)[:per_window]]
