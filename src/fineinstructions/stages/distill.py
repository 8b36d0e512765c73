"""Command `distill`: train a small student for one LLM stage from teacher data, and keep its best dev epoch.

    fineinstructions distill --stage templatize --input data/gold/train/templatize.jsonl --output students/t

TEACHER (`--input`) is a gold file or a stage's output folder (e.g. a run with a large served model). The student
is any Hugging Face causal LM (`--base-model`; default the embedded SmolLM2-135M, de-quantised from its GGUF as the
backend does), trained with LoRA (`--method lora`, default) or fully. After each epoch `goldeval` scores it on the
gold dev split (`--dev`, default: `dev/STAGE.jsonl` next to a `train/STAGE.jsonl` input) through the stage's own
code path; the best epoch is written to DIR:

    DIR/adapter_config.json, adapter_model.safetensors   (LoRA; or a whole model folder with --method full)
    DIR/student.json     stage, prompt format, base model, settings, teacher counts, dev scores per epoch
    DIR/README.md        the model card
    DIR/train_log.jsonl  loss per step · DIR/eval/epoch-N/ goldeval outputs · DIR/checkpoint/ (resume)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fineinstructions import atomic
from fineinstructions.config import option
from fineinstructions.errors import UserError

STAGES = ("templatize", "instantiate", "judge")


@dataclass
class DistillConfig:
    stage: str | None = option(None, "the stage the student learns", STAGES)
    input: str | None = option(None, "teacher data: a gold .jsonl file or the stage's output folder")
    output: str | None = option(None, "output folder (the student)")
    dev: str | None = option(None, "gold dev file scored after each epoch (default: dev/STAGE.jsonl beside a "
                                   "train/STAGE.jsonl input; none: the last epoch is kept)")
    dev_limit: int | None = option(None, "score only the first N dev rows")
    augment: str | None = option(None, "more teacher data: a .jsonl of rejection-sampled examples "
                                       "(`fineinstructions distill-augment`)")
    base_model: str | None = option(None, "student base: hub name, model folder or .gguf (default: the embedded "
                                          "SmolLM2-135M-Instruct)")
    method: str = option("lora", "lora: a small adapter on the frozen base; full: every weight; classifier (judge "
                                 "only): a classifier on sentence-embedding features (distill/classifier.py)",
                         ("lora", "full", "classifier"))
    embedder: str | None = option(None, "--method classifier: the sentence-transformers model whose embeddings it "
                                        "reads (default: the embedded all-MiniLM-L6-v2); --base-model is unused")
    epochs: int = option(4, "passes over the teacher data")
    lr: float = option(3e-4, "peak learning rate (linear warm-up, then linear decay); ~5e-5 suits --method full")
    batch_size: int = option(8, "examples per micro-batch")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    warmup: float = option(0.06, "share of the steps spent warming up")
    max_length: int = option(1280, "longest example in tokens (prompt + target); longer ones are left out, counted")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    balance: bool = option(False, "repeat the examples of rarer targets (judge: scores) until each is as common as "
                                  "the commonest; a small judge otherwise learns the prior and rarely writes 4 or 5")
    init_adapter: str | None = option(None, "start from this LoRA adapter (a finished student: more epochs or more "
                                            "data) instead of a fresh one; its rank and targets are kept")
    documents: str | None = option(None, "instantiate from a stage folder: the documents it read (jsonl/parquet)")
    window_chars: int | None = option(None, "instantiate from a stage folder: its --max-document-chars")
    seed: int = option(0, "seed of the data order and the adapter's initial weights")
    num_threads: int | None = option(None, "torch CPU threads (default: all cores)")
    progress: bool = option(True, "progress bars")
    overwrite: bool = option(False, "start over when DIR holds a student trained with other settings")


#: one number per dev evaluation, to pick the best epoch (higher is better)
def selection_score(stage: str, m: dict[str, Any]) -> float:
    if stage == "templatize":
        return m["slot_f1"]
    if stage == "instantiate":
        return (m["null_accuracy"] + m["grounded_rate"] + m["key_span_recall"]) / 3
    return (m["keep_accuracy"] + max(0.0, m["spearman"])) / 2


def student_llm(student: str | Path, base_model: str | None = None, method: str | None = None):
    """The LLM config that runs a student greedily without the request cache: its base model plus the adapter
    (LoRA), or the student folder itself (full fine-tune). Base and method default to the student's student.json."""
    from fineinstructions.llm import LLMConfig

    meta_path = Path(student) / "student.json"
    if method is None and meta_path.is_file():
        settings = json.loads(meta_path.read_text())["settings"]
        base_model, method = settings.get("base_model"), settings.get("method", "lora")
    if (method or "lora") == "lora":
        return LLMConfig(model=base_model, adapter=str(student), cache=False)
    return LLMConfig(model=str(student), adapter="none", cache=False)


def balanced(examples: list) -> list:
    """Every distinct target repeated (whole copies first, then a seeded sample of the rest) up to the count of the
    commonest one. Meant for the judge, whose targets are a handful of scores."""
    import random

    groups: dict[str, list] = {}
    for e in examples:
        groups.setdefault(e.target, []).append(e)
    top = max(len(g) for g in groups.values())
    out = []
    for target, group in sorted(groups.items()):
        whole, rest = divmod(top, len(group))
        out += group * whole + random.Random(target).sample(group, rest)
    return out


def _same_settings(recorded: dict[str, Any], settings: dict[str, Any]) -> bool:
    """A key missing on one side counts as its default: a setting added in a later version does not make a
    finished student look like it was trained otherwise."""
    defaults = {f.name: f.default for f in dataclasses.fields(DistillConfig)
                if f.default is not dataclasses.MISSING}
    now = json.loads(json.dumps(settings, default=str))
    return all(recorded.get(k, defaults.get(k)) == now.get(k, defaults.get(k)) for k in set(recorded) | set(now))


def default_dev(stage: str, teacher: Path) -> Path | None:
    candidate = teacher.parent.parent / "dev" / f"{stage}.jsonl"
    return candidate if teacher.is_file() and teacher.parent.name == "train" and candidate.is_file() else None


def _documents(path: str | None) -> dict[str, str] | None:
    if not path:
        return None
    from fineinstructions.pipeline.readers import make_reader

    reader = make_reader(path, "text", "id")
    return {doc.id: doc.text for doc in reader.run(None, 0, 1)}


def stage_config(stage: str, output: str, llm, progress: bool = False):
    """The stage's own config for scoring a student: its compact prompt, greedy, no cache."""
    from fineinstructions.distill.examples import STUDENT_FORMATS
    from fineinstructions.recipe import BY_NAME

    return BY_NAME[stage].config(output=output, prompt_format=STUDENT_FORMATS[stage], llm=llm, progress=progress)


def run(cfg: DistillConfig) -> dict[str, Any]:
    import torch

    from fineinstructions.distill.card import model_card
    from fineinstructions.distill.examples import STUDENT_FORMATS, load_teacher, read_examples, student_format
    from fineinstructions.distill.train import encode, fit, from_adapter, with_lora
    from fineinstructions.gold.evaluate import goldeval
    from fineinstructions.llm.hf_local import load_model
    from fineinstructions.pipeline.inputs import path_fingerprint

    if cfg.stage not in STAGES or not cfg.input or not cfg.output:
        raise UserError("distill needs --stage templatize|instantiate|judge, --input TEACHER and --output DIR")
    if cfg.method == "classifier" and cfg.stage != "judge":
        raise UserError("--method classifier trains a judge student only (--stage judge)")
    out, teacher_path = Path(cfg.output), Path(cfg.input)
    dev = Path(cfg.dev) if cfg.dev else default_dev(cfg.stage, teacher_path)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("output", "progress", "overwrite", "num_threads")}
    settings["teacher_fingerprint"] = (path_fingerprint(cfg.input) or {}).get("digest")
    marker = out / "distill.json"
    if marker.is_file() and not _same_settings(json.loads(marker.read_text()), settings):
        if not cfg.overwrite:
            raise UserError(f"{out} holds a student trained with other settings or teacher data; use another "
                            "--output or pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(marker, settings, default=str)
    threads = cfg.num_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)  # the stage's scoring uses the same count (more would oversubscribe the cores)
    if cfg.method == "classifier":
        from fineinstructions.distill.classifier import distill_classifier

        return distill_classifier(cfg, out, dev, settings)

    fmt = student_format(cfg.stage)
    teacher = load_teacher(cfg.stage, teacher_path, fmt, _documents(cfg.documents), cfg.window_chars)
    examples = list(teacher.examples)
    if cfg.augment:
        examples += read_examples(cfg.augment)
    if cfg.balance:
        examples = balanced(examples)
    if not examples:
        raise UserError(f"no training examples in {cfg.input} (skipped: {dict(teacher.skipped)})")
    model, tokenizer, base_id = load_model(cfg.base_model)
    if cfg.method == "lora" and cfg.init_adapter:
        model = from_adapter(model, cfg.init_adapter)
    elif cfg.method == "lora":
        torch.manual_seed(cfg.seed)
        model = with_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, None)
    data, too_long = encode(examples, tokenizer, cfg.max_length)

    def evaluate(epoch: int, student: Path) -> tuple[float, dict]:
        if dev is None:
            return float(epoch), {}
        llm = dataclasses.replace(student_llm(student, cfg.base_model, cfg.method), num_threads=threads)
        where = str(out / "eval" / f"epoch-{epoch}")
        metrics = goldeval(cfg.stage, stage_config(cfg.stage, where, llm), str(dev), where, limit=cfg.dev_limit,
                           progress=cfg.progress)
        keep = {k: metrics[k] for k in ("n", *metrics["definitions"])}
        return selection_score(cfg.stage, metrics), keep

    previous = json.loads((out / "student.json").read_text()).get("seconds") if (out / "student.json").is_file() else None
    result = fit(model, tokenizer, data, out=out, method=cfg.method, epochs=cfg.epochs, lr=cfg.lr,
                 batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, warmup=cfg.warmup, seed=cfg.seed,
                 evaluate=evaluate, progress=cfg.progress)
    for f in (out / "best").iterdir():  # the student itself sits at the top of DIR
        shutil.copy2(f, out / f.name)
    best = next(h for h in result["history"] if h["epoch"] == result["best_epoch"])
    meta = {"stage": cfg.stage, "prompt_format": STUDENT_FORMATS[cfg.stage], "method": cfg.method,
            "base_model": cfg.base_model or "HuggingFaceTB/SmolLM2-135M-Instruct (embedded GGUF, de-quantised)",
            "base_model_id": base_id, "input": cfg.input, "augment": cfg.augment, "dev": str(dev) if dev else None,
            "teacher": {"examples": len(examples), "trained_on": len(data), "too_long": too_long,
                        **{f"skipped_{k}": v for k, v in teacher.skipped.items()}},
            "settings": settings, "history": result["history"], "best": best,
            "seconds": max(result["seconds"] or 0.0, previous or 0.0),  # a finished student rerun keeps its time
            "machine": f"{os.cpu_count()} CPU cores" + (" + CUDA" if torch.cuda.is_available() else "")}
    atomic.write_json(out / "student.json", meta, default=str)
    atomic.write_text(out / "README.md", model_card(meta))
    return meta
