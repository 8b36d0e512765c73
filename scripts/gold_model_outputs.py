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
from fineinstructions.llm import LLMConfig
from fineinstructions.stages.instantiate import InstantiateConfig

#: gold rows run per split and document kind. First pass: the first rows of each split (the speeches, by id order);
#: second pass (`--wikitext`): WikiText rows, so the model's outputs cover both document types
LIMITS = {"train": 135, "dev": 20, "test": 45}
WIKITEXT_LIMITS = {"train": 45, "dev": 8, "test": 15}


def as_written(answer: str) -> str:
    text = re.sub(r"<\s*(?:\.{2,}|…)\s*>", " ... ", answer)
    return re.sub(r"\s+", " ", re.sub(r"</?\s*excerpt\s*>", "", text, flags=re.I)).strip()


def main(out: Path, wikitext: bool = False) -> None:
    rows = []
    for split, limit in (WIKITEXT_LIMITS if wikitext else LIMITS).items():
        cfg = InstantiateConfig(output=str(out / split), progress=True, llm=LLMConfig(adapter="none"))
        source = f"data/gold/{split}/instantiate.jsonl"
        if wikitext:  # every other WikiText row, so the outputs spread over the articles
            picked = [line for line in open(source, encoding="utf-8") if '"id": "inst-wikitext2' in line][::2][:limit]
            source = str(out / f"{split}-wikitext.jsonl")
            Path(source).parent.mkdir(parents=True, exist_ok=True)
            Path(source).write_text("".join(picked), encoding="utf-8")
        goldeval("instantiate", cfg, source, str(out / split), limit=limit)
        for p in map(json.loads, (out / split / "predictions.jsonl").open()):
            pred, gold = p["prediction"] or {}, p["gold"]
            answer = pred.get("answer") if p["status"] == "ok" else as_written(pred.get("answer_raw") or "")
            if not pred.get("instruction") or not answer:
                continue
            rid = re.sub(r"^inst-(.+)-(\d+)$", r"judge-\1-m\2", gold["id"])
            rows.append({"id": rid, "document_title": gold["document_title"], "document": gold["document"],
                         "instruction": pred["instruction"], "answer": answer, "score": None, "why": None,
                         "stage_status": p["status"], "template": gold["template"]})
    dest = Path(f"data/gold/drafts/judge-model{'-wikitext' if wikitext else ''}-unlabelled.jsonl")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} unlabelled rows → {dest}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--wikitext"]
    main(Path(args[0] if args else "out/gold-model-outputs"), wikitext="--wikitext" in sys.argv)
