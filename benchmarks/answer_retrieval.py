"""Can the sentence embedder pick an instantiate answer, and tell when a template does not fit? (gold TRAIN and DEV)

    python benchmarks/answer_retrieval.py

For every compatible gold row: the k best sentences of the window (`answer_retrieval.SentenceRetriever`, k 1-4),
ranked against the template alone or against template + the gold reference instruction, scored with the gold
`key_span_recall`. For every row: the null score (mean cosine of the best k sentences to the template), its AUC for
"the template fits" and the accuracy of the best threshold on TRAIN, applied unchanged to DEV. The test split is
never read. Writes benchmarks/results/answer_retrieval.json (~1 minute on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from fineinstructions.answer_retrieval import SentenceRetriever, template_query
from fineinstructions.embed import Embedder
from fineinstructions.gold.evaluate import document_for
from fineinstructions.gold.metrics import key_span_recall

ROOT = Path(__file__).resolve().parents[1]


def rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (ROOT / "data" / "gold" / split / "instantiate.jsonl").open()]


def recall(retriever: SentenceRetriever, split: list[dict], k: int, with_instruction: bool) -> float:
    """Mean key-span recall of the k best sentences (ranked as `SentenceRetriever.answer` ranks them)."""
    retriever.sentences = k
    scores = []
    for row in split:
        if not row["compatible"]:
            continue
        instruction = row["reference_instruction"] if with_instruction else template_query(row["template"])
        scores.append(key_span_recall(row["key_spans"],
                                      retriever.answer(row["template"], instruction, document_for(row))))
    return round(float(np.mean(scores)), 3)


def null_scores(retriever: SentenceRetriever, split: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    sims = np.array([retriever.similarity(r["template"], document_for(r)) for r in split])
    return sims, np.array([r["compatible"] for r in split])


def main() -> None:
    retriever = SentenceRetriever(Embedder(None, device="cpu"), cache=4096)  # every window once, not once per pass
    train, dev = rows("train"), rows("dev")
    out: dict = {"recall": {}, "null": {}}
    for k in (1, 2, 3, 4):
        for with_instruction in (False, True):
            key = f"k{k}/{'template+instruction' if with_instruction else 'template'}"
            out["recall"][key] = {"train": recall(retriever, train, k, with_instruction),
                                  "dev": recall(retriever, dev, k, with_instruction)}
            print(key, out["recall"][key])
    for k in (1, 3):
        retriever.sentences = k
        (st, yt), (sd, yd) = null_scores(retriever, train), null_scores(retriever, dev)
        thresholds = np.unique(st)
        accuracy = [float(((st >= t) == yt).mean()) for t in thresholds]
        best = float(thresholds[int(np.argmax(accuracy))])
        out["null"][f"k{k}"] = {"auc": {"train": round(roc_auc_score(yt, st), 3), "dev": round(roc_auc_score(yd, sd), 3)},
                                "threshold_on_train": round(best, 3),
                                "accuracy": {"train": round(max(accuracy), 3), "dev": round(float(((sd >= best) == yd).mean()), 3)},
                                "all_compatible_accuracy": {"train": round(float(yt.mean()), 3), "dev": round(float(yd.mean()), 3)}}
        print(f"null k{k}", out["null"][f"k{k}"])
    path = ROOT / "benchmarks" / "results" / "answer_retrieval.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
