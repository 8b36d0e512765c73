"""Which judge student: a LoRA on the embedded LLM writing {"score": N}, or a classifier on a small encoder (the
FineWeb-Edu pattern: frozen sentence embeddings → a head)? All are trained on the gold judge TRAIN split and scored
on DEV with the gold metrics (keep_accuracy, spearman, mae); the test split is never read.

    python benchmarks/judge_student_choice.py [--lora-student DIR] [--classifier-student DIR]

Candidates (encoder: all-MiniLM-L6-v2, the embedded embedder):
- ridge on raw embeddings: the instruction's and the answer's vectors, their product and cosine, the answer's length
  and whether the instruction still has a <fi> slot; clipped and rounded to 1-5 (the first try; it lost).
- the shipped classifier (`judge_classifier.py`): 14 features an annotator's reasons name, a multinomial logistic
  regression and a keep cut from cross-validation on train, C chosen on dev by `distill --method classifier`
  (its student.json; default `src/fineinstructions/students/judge`).
- the LoRA student's best dev epoch, from its student.json (`--lora-student`) or, once the classifier replaced it,
  from students.json (`lora_before`).
Writes benchmarks/results/judge_student_choice.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fineinstructions.embed import Embedder
from fineinstructions.gold.metrics import judge_metrics

ROOT = Path(__file__).resolve().parents[1]


def rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (ROOT / "data" / "gold" / split / "judge.jsonl").open()]


def features(embedder: Embedder, data: list[dict]) -> np.ndarray:
    ins = np.asarray(embedder.embed_texts([r["instruction"] for r in data]))
    ans = np.asarray(embedder.embed_texts([r["answer"] or "(empty)" for r in data]))
    extra = np.asarray([[np.log1p(len(r["answer"])), float("<fi>" in r["instruction"])] for r in data])
    return np.hstack([ins, ans, ins * ans, (ins * ans).sum(1, keepdims=True), extra])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lora-student", type=Path)
    ap.add_argument("--classifier-student", type=Path, default=ROOT / "src" / "fineinstructions" / "students" / "judge")
    args = ap.parse_args()
    from sklearn.linear_model import RidgeCV

    train, dev = rows("train"), rows("dev")
    embedder = Embedder(None)
    head = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(features(embedder, train), [r["score"] for r in train])
    predicted = np.clip(np.rint(head.predict(features(embedder, dev))), 1, 5).astype(int)
    classifier = judge_metrics([{"score": r["score"], "predicted": int(p)} for r, p in zip(dev, predicted)])
    result = {"dev_rows": len(dev), "classifier (MiniLM + ridge)": classifier}
    meta = json.loads((args.classifier_student / "student.json").read_text())
    result["classifier (features + logistic regression, shipped)"] = {**meta["best"]["metrics"],
                                                                      "C": meta["best"].get("c")}
    if args.lora_student:
        meta = json.loads((args.lora_student / "student.json").read_text())
        result["LoRA student (SmolLM2-135M)"] = meta["best"]["metrics"]
    else:
        chosen = json.loads((args.classifier_student.parent / "students.json").read_text())["judge"]
        if "lora_before" in chosen:
            result["LoRA student (SmolLM2-135M)"] = chosen["lora_before"]["dev_metrics"]
    (ROOT / "benchmarks" / "results" / "judge_student_choice.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
