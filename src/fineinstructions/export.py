"""`fineinstructions export RUN_DIR --output DIR`: a finished run as a Hugging Face dataset folder, ready to push.

Three configs, each a set of parquet files that `datasets.load_dataset(DIR, name)` reads:

    instructions   the instruction corpus, token for token as large as the documents (`text, document_id, pair_id,
                   num_tokens`), the recipe's product
    standard       the documents themselves at the same token count (`text, document_id, num_tokens`), for the
                   paper's comparison
    pairs          every kept pair with its full provenance: document, chunk, template, the query it came from,
                   grounding, judge score, models and prompt fingerprints of each LLM stage

and a dataset card (`README.md`) whose YAML declares the configs and the licence, with counts, models and prompts
per stage, the run's key figures and the command that publishes it. The licence is the input documents' (from a
dataset card next to them, or of the HF dataset they were read from when it is cached) or the one given with
`--license`; with neither, export refuses: publishing needs a licence someone chose.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fineinstructions import atomic
from fineinstructions.errors import UserError
from fineinstructions.report.data import RunDir

CONFIGS = ("instructions", "standard", "pairs")
LLM_STAGES = ("templatize", "instantiate", "judge")


def _documents_path(run: RunDir) -> str | None:
    return (run.settings("match") or {}).get("input") or (run.settings("budget") or {}).get("documents")


def input_license(run: RunDir) -> str | None:
    """The licence declared by the documents' dataset card (`license:` in a README.md's YAML beside or above the
    documents), or None."""
    docs = _documents_path(run)
    if not docs:
        return None
    path = Path(docs)
    for folder in ([path] if path.is_dir() else []) + list(path.parents)[:3]:
        card = folder / "README.md"
        if card.is_file():
            match = re.search(r"^---\n(.*?)\n---", card.read_text(encoding="utf-8"), re.S)
            found = re.search(r"^license:\s*(\S+)", match.group(1), re.M) if match else None
            if found:
                return found.group(1).strip("'\"")
    return None


def _copy_shards(files: list[Path], dest: Path, columns: list[str] | None = None) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    rows = 0
    for i, f in enumerate(files):
        table = pq.read_table(f, columns=columns)
        rows += table.num_rows
        if table.num_rows:
            pq.write_table(table, dest / f"{i:05d}.parquet")
    return rows


def _pairs(run: RunDir) -> pa.Table:
    """The kept pairs (scrub's if it ran, else judge's) joined with the query each template came from."""
    stage = "scrub" if run.rows("scrub", ["pair_id"], limit=1) else "judge"
    rows = run.rows(stage)
    queries = {r["template_id"]: r for r in run.rows("templatize", ["template_id", "query_id", "source", "query"])}
    out = []
    for r in rows:
        q = queries.get(r.get("template_id"), {})
        out.append({**{k: v for k, v in r.items() if k != "excerpts"}, "query_id": q.get("query_id"),
                    "query_source": q.get("source"), "query": q.get("query")})
    return pa.Table.from_pylist(out) if out else pa.table({"pair_id": pa.array([], pa.string())})


def _models(run: RunDir) -> dict[str, dict[str, Any]]:
    """Per LLM stage: model ids and prompt fingerprints found in its rows, and its settings' prompt format."""
    out = {}
    for stage, (model_col, prompt_col) in {"templatize": ("model_id", "prompt_fingerprint"),
                                           "instantiate": ("model_id", "prompt_fingerprint"),
                                           "judge": ("judge_model_id", "judge_prompt_fingerprint")}.items():
        rows = run.rows(stage, [model_col, prompt_col], limit=10_000)
        if rows:
            settings = run.settings(stage)
            out[stage] = {"models": sorted({r[model_col] for r in rows if r.get(model_col)}),
                          "prompt_fingerprints": sorted({r[prompt_col] for r in rows if r.get(prompt_col)}),
                          "prompt_format": settings.get("prompt_format"),
                          "llm": {k: (settings.get("llm") or {}).get(k) for k in ("backend", "model", "adapter")}}
    return out


def card(name: str, license: str, counts: dict[str, int], run: RunDir, output: str) -> str:
    from fineinstructions.report.metrics import corpus_tokens, judged_scores, stage_rows

    configs = "\n".join(f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/*.parquet"
                        for c in CONFIGS)
    stages = "\n".join(f"| {s.stage} | {s.rows_in:,} | {s.rows_out:,} | "
                       + ", ".join(f"{k} {v:,}" for k, v in sorted(s.rejects.items(), key=lambda kv: -kv[1]))
                       + " |" for s in stage_rows(run))
    models = "\n".join(f"- **{stage}**: {', '.join(m['models'])} · prompt format `{m['prompt_format']}` · prompt "
                       f"fingerprint(s) {', '.join(m['prompt_fingerprints'])}" for stage, m in _models(run).items())
    tokens = corpus_tokens(run)
    scores = judged_scores(run)
    return f"""---
license: {license}
language:
- en
tags:
- fineinstructions
- synthetic
- instruction-pretraining
configs:
{configs}
---

# {name}

Instruction → answer pairs made from a document corpus with the FineInstructions recipe (Patel, Raffel,
Callison-Burch, 2026) by the `fineinstructions` toolkit: real user queries became templates, templates were matched
to the documents, an LLM filled them and answered with excerpts copied from the documents, a judge kept pairs
scoring at least {run.settings("judge").get("min_score", 4)}, and the kept pairs were budgeted to the documents' own
token count.

| config | rows | what |
|---|---:|---|
| `instructions` | {counts['instructions']:,} | the instruction corpus (`Instruction: …\\n\\nAnswer: …`), {tokens.get('instructions', 0):,} tokens |
| `standard` | {counts['standard']:,} | the documents, {tokens.get('standard', 0):,} tokens: the corpus of the same size to compare with |
| `pairs` | {counts['pairs']:,} | every kept pair with provenance: document and chunk, template and its query, grounding, judge score, models and prompt fingerprints |

```python
from datasets import load_dataset
pairs = load_dataset("{output}", "pairs", split="train")
```

## The run

| stage | rows in | rows out | rejects |
|---|---:|---:|---|
{stages}

Judge scores of all judged pairs: {", ".join(f"{k}: {v:,}" for k, v in sorted(scores.items(), key=lambda kv: str(kv[0])))}.

## Models and prompts

{models or "(no LLM stage output found)"}

## Licence

`{license}`: the licence of the input documents, which the answers copy from. Check the licences of the query
sources too (the templates are derived from them).

## Publish

```bash
hf upload YOUR_NAME/{name} {output} --repo-type dataset
```
"""


def export(run_dir: str, output: str, license: str | None = None, name: str | None = None) -> dict[str, Any]:
    run = RunDir.open(run_dir)
    if not run.rows("budget", ["document_id"], sub="standard", limit=1):
        raise UserError(f"{run_dir} has no budget output: export needs a finished run (budget/standard, "
                        "budget/instructions)")
    license = license or input_license(run)
    if not license:
        raise UserError("no licence found for the input documents (no dataset card with `license:` beside them): "
                        "pass --license (e.g. cc-by-sa-4.0, odc-by, other)")
    out = Path(output)
    with atomic.staged_dir(out) as tmp:
        counts = {
            "instructions": _copy_shards(run._shards("budget", "instructions"), tmp / "instructions"),
            "standard": _copy_shards(run._shards("budget", "standard"), tmp / "standard"),
        }
        pairs = _pairs(run)
        (tmp / "pairs").mkdir()
        pq.write_table(pairs, tmp / "pairs" / "00000.parquet")
        counts["pairs"] = pairs.num_rows
        name = name or Path(run_dir).resolve().name
        (tmp / "README.md").write_text(card(name, license, counts, run, str(out)), encoding="utf-8")
        (tmp / "export.json").write_text(json.dumps({"run": str(Path(run_dir).resolve()), "license": license,
                                                     "counts": counts, "models": _models(run)}, indent=2))
    return {"output": str(out), "license": license, "counts": counts}


__all__ = ["export", "input_license", "CONFIGS"]
