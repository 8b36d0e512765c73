"""How should the embedded default fill a template's slots from its fill choices? (gold TRAIN and DEV)

    python benchmarks/fill_ranking.py [--train-rows 120]

For the compatible gold instantiate rows: the slots' fill choices as the stage makes them (the 8 spans of the 3
sentences closest to the template, ranked by cosine to each slot's description:
`SentenceRetriever.ranked_fills`), then one instruction per row chosen three ways -- the top choice per slot; the
filling the embedded SmolLM2-135M finds likeliest (summed log-probability, `loglikelihood`); and that plus
`SIMILARITY_WEIGHT` × the fills' mean cosine (`fill_ranking.rank_instructions`, weights tried on TRAIN) -- scored by
word-token F1 against the reference instruction (rows without a choice for some slot count 0). The test split is
never read. Writes benchmarks/results/fill_ranking.json (~3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fineinstructions import fill_ranking
from fineinstructions.answer_retrieval import SentenceRetriever
from fineinstructions.embed import Embedder
from fineinstructions.gold.evaluate import document_for
from fineinstructions.gold.metrics import token_f1
from fineinstructions.llm.hf_local import TransformersBackend

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (0.0, 5.0, 10.0, 20.0, 40.0)


def compatible(split: str, limit: int | None) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "data" / "gold" / split / "instantiate.jsonl").open()]
    return [r for r in rows if r["compatible"]][:limit]


def evaluate(rows: list[dict], retriever: SentenceRetriever, llm: TransformersBackend) -> dict[str, float]:
    jobs = []
    for row in rows:
        window = document_for(row)
        jobs.append((row["template"], retriever.ranked_fills(row["template"], retriever.focus(row["template"], window))))
    top = [fill_ranking.filled(t, [slot[0][0] for slot in c]) if c and all(c) else None for t, c in jobs]
    out = {"rows": len(rows), "top_choice": sum(token_f1(p, r["reference_instruction"]) for p, r in zip(top, rows))}
    scores = {}  # every candidate scored once; the weights only re-rank

    def memo(texts):
        missing = [t for t in texts if t not in scores]
        scores.update(zip(missing, llm.loglikelihood(missing)))
        return [scores[t] for t in texts]

    default = fill_ranking.SIMILARITY_WEIGHT
    try:
        for w in WEIGHTS:
            fill_ranking.SIMILARITY_WEIGHT = w
            picked = fill_ranking.rank_instructions(jobs, memo)
            out[f"likelihood + {w:g} x cosine"] = sum(token_f1(p, r["reference_instruction"])
                                                     for p, r in zip(picked, rows))
    finally:
        fill_ranking.SIMILARITY_WEIGHT = default
    return {k: (v / len(rows) if k != "rows" else v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=120, help="compatible TRAIN rows to score")
    args = parser.parse_args()
    retriever, llm = SentenceRetriever(Embedder(None)), TransformersBackend()
    result = {"train": evaluate(compatible("train", args.train_rows), retriever, llm),
              "dev": evaluate(compatible("dev", None), retriever, llm), "shipped_weight": fill_ranking.SIMILARITY_WEIGHT}
    out = ROOT / "benchmarks" / "results" / "fill_ranking.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
