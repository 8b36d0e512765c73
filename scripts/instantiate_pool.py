"""A pool of unlabelled (template, document window) inputs for rejection sampling the instantiate student.

Windows (about 2,000 characters, cut at paragraph breaks) come from the TRAIN-split documents only
(data/gold/document_splits.json), so no dev or test document is ever sampled; each window is paired with the
templates of the gold train sets (instantiate templates and templatize references) closest to it by the default
embedder, the way `match` pairs them.

    python scripts/instantiate_pool.py ../shared/data/documents OUT.jsonl [--per-window 2] [--max-windows 200]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

from fineinstructions.embed import Embedder


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("documents", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--per-window", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=200)
    args = ap.parse_args()
    splits = json.loads(Path("data/gold/document_splits.json").read_text())
    docs = [json.loads(line) for f in sorted(args.documents.glob("*.jsonl")) for line in f.open(encoding="utf-8")]
    cut = [(d["title"], w) for d in docs if splits.get(d["id"]) == "train" for w in windows(d["text"])]
    random.Random(0).shuffle(cut)
    cut = cut[:args.max_windows]
    templates = sorted({json.loads(line)["template"] for line in open("data/gold/train/instantiate.jsonl")}
                       | {json.loads(line)["reference_templates"][0] for line in open("data/gold/train/templatize.jsonl")})
    embedder = Embedder(None)
    tv = embedder.embed_texts(templates)
    wv = embedder.embed_texts([w for _, w in cut])
    scores = np.asarray(wv) @ np.asarray(tv).T
    with args.output.open("w", encoding="utf-8") as f:
        for (title, window), row in zip(cut, scores):
            for j in np.argsort(-row)[:args.per_window]:
                f.write(json.dumps({"template": templates[j], "document_title": title, "document": window,
                                    "score": round(float(row[j]), 3)}, ensure_ascii=False) + "\n")
    print(f"{len(cut)} windows × {args.per_window} templates → {args.output}")


if __name__ == "__main__":
    main()
