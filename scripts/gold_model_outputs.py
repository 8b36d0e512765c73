"""Real outputs of the embedded default model, to be labelled by hand as judge gold rows.

Runs `goldeval instantiate` (the stage's own code path, default settings: the embedded SmolLM2-135M, `auto`
prompt format, best-of 1) over the first instantiate gold inputs of every split (`LIMITS`), and turns each output that has an
instruction and an answer into an unlabelled judge row for the same document window: the expanded answer when the
stage kept the pair, otherwise the answer as the model wrote it (excerpt tags unwrapped, `<...>` shown as "...").
Rows keep the split of their document (their id names it).

    python scripts/gold_model_outputs.py OUT_DIR   →  data/gold/drafts/judge-model-unlabelled.jsonl
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from fineinstructions.gold.evaluate import goldeval
from fineinstructions.stages.instantiate import InstantiateConfig

#: gold rows run per split (about 45 % of each): more than the 150 outputs asked for, spread like the documents
LIMITS = {"train": 135, "dev": 20, "test": 45}


def as_written(answer: str) -> str:
    text = re.sub(r"<\s*(?:\.{2,}|…)\s*>", " ... ", answer)
    return re.sub(r"\s+", " ", re.sub(r"</?\s*excerpt\s*>", "", text, flags=re.I)).strip()


def main(out: Path) -> None:
    rows = []
    for split, limit in LIMITS.items():
        cfg = InstantiateConfig(output=str(out / split), progress=True)
        goldeval("instantiate", cfg, f"data/gold/{split}/instantiate.jsonl", str(out / split), limit=limit)
        for p in map(json.loads, (out / split / "predictions.jsonl").open()):
            pred, gold = p["prediction"] or {}, p["gold"]
            answer = pred.get("answer") if p["status"] == "ok" else as_written(pred.get("answer_raw") or "")
            if not pred.get("instruction") or not answer:
                continue
            rid = re.sub(r"^inst-(.+)-(\d+)$", r"judge-\1-m\2", gold["id"])
            rows.append({"id": rid, "document_title": gold["document_title"], "document": gold["document"],
                         "instruction": pred["instruction"], "answer": answer, "score": None, "why": None,
                         "stage_status": p["status"], "template": gold["template"]})
    dest = Path("data/gold/drafts/judge-model-unlabelled.jsonl")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} unlabelled rows → {dest}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/gold-model-outputs"))
