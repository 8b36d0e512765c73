"""Our checkpoints in the field's harness: lm-evaluation-harness (EleutherAI) on a `pretrain` model folder.

Two uses: `experiment`'s `lm_eval_tasks:` puts standard benchmarks (HellaSwag, ARC, ...) in the same results table
(needs the tasks' datasets, i.e. a network or a filled HF cache), and `qa_task` writes our held-out QA file as a
harness task, so the harness's answer log-likelihoods can be checked against `evaluate`'s answer NLL: same prompt
(`Instruction: {query}\\n\\nAnswer:`), same continuation (" " + the first answer), same rows (`load_qa`'s
sample). The space is part of the target, not the task's `target_delimiter`: lm-eval 0.4.13 no longer applies the
delimiter to `loglikelihood` tasks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fineinstructions.evaluate.scoring import load_qa

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "Instruction: {{{{query}}}}\\n\\nAnswer:"
doc_to_target: " {{{{answers[0]}}}}"
target_delimiter: ""
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def qa_task(qa_path: str | Path, folder: str | Path, name: str = "fineinstructions_qa", limit: int | None = None,
            seed: int = 0) -> Path:
    """Write a harness task over the QA rows `evaluate` would score (same filter, same seeded sample)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = load_qa(qa_path, limit=limit, seed=seed)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"query": r["query"], "answers": r["answers"]}, ensure_ascii=False) + "\n"
                            for r in rows), encoding="utf-8")
    (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data.resolve()), encoding="utf-8")
    return folder


def run_tasks(model_dir: str | Path, tasks: list[str], include: str | Path | None = None, limit: int | None = None,
              device: str = "auto", batch_size: int = 8, log_samples: bool = False) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` with the `hf` model on a checkpoint folder; BOS is added exactly when the
    checkpoint's tokenizer has one (as `evaluate` does)."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    from fineinstructions.evaluate.scoring import resolve_device

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    args = {"pretrained": str(model_dir), "add_bos_token": tokenizer.bos_token_id is not None, "dtype": "float32"}
    manager = TaskManager(include_path=str(include) if include else None)
    return lm_eval.simple_evaluate(model="hf", model_args=args, tasks=list(tasks), task_manager=manager,
                                   limit=limit, device=resolve_device(device), batch_size=batch_size,
                                   log_samples=log_samples, bootstrap_iters=0, verbosity="ERROR")


def main_metrics(results: dict[str, Any]) -> dict[str, float]:
    """One number per task: its first reported metric (acc_norm, acc, ...), e.g. {"hellaswag/acc_norm": 0.27}."""
    out = {}
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():  # metrics are "name,filter"; bookkeeping like sample_len has no comma
            name = key.split(",")[0]
            if "," in key and isinstance(value, (int, float)) and not name.endswith("_stderr"):
                out[f"{task}/{name}"] = float(value)
                break
    return out
