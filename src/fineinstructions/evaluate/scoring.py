"""Scoring a causal LM on held-out human question→answer pairs.

Every model, FineInstructions-trained or a standard pre-training baseline, is asked in the same template, `PROMPT`,
the one FineInstructions pre-trains on, so a difference in scores is a difference in the models, not in prompts.

Two signals, because small models from scratch rarely produce the exact reference string:

* `answer_nll`: how likely the reference answer is after the prompt. Reported per token and per byte; bits per
  byte compares models whose tokenizers differ (a model with a coarser tokenizer has fewer, harder tokens).
* `generate_answers`: greedy answers, scored with SQuAD exact match / token F1 (`metrics.py`).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fineinstructions.evaluate.metrics import exact_match, token_f1

PROMPT = "Instruction: {query}\n\nAnswer:"


def _qa_item(row: Any, where: str) -> dict | None:
    """The row with a stripped query and its non-empty answers, or None when it has nothing to score."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object with 'query' and 'answers', got {type(row).__name__}")
    query, answers = row.get("query"), row.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(query, str) or not query.strip() or not isinstance(answers, list):
        return None
    answers = [a.strip() for a in answers if isinstance(a, str) and a.strip()]
    return {**row, "query": query.strip(), "answers": answers} if answers else None


def load_qa(path: str | Path, limit: int | None = None, seed: int = 0) -> list[dict]:
    """QA rows (`{"id", "query", "answers": [...]}` jsonl) that have a query and at least one non-empty answer.

    With `limit` below the number of usable rows, a seeded sample of `limit` rows is returned (in file order), so
    every model of a comparison is scored on the same questions. Raises ValueError for invalid JSON, non-object rows
    or a file with nothing usable: an evaluation on zero questions would report meaningless numbers."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows or None, got {limit}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            item = _qa_item(row, f"{path}:{lineno}")
            if item is not None:
                rows.append(item)
    if not rows:
        raise ValueError(f"{path}: no rows with a non-empty 'query' and at least one non-empty answer in 'answers'")
    if limit is not None and limit < len(rows):
        keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
        rows = [rows[i] for i in keep]
    return rows


def _encode(tokenizer, text: str) -> list[int]:
    """Token ids without the tokenizer's own special-token template, but with a BOS first when the tokenizer
    defines one: models pre-trained on documents that start with BOS expect it, and prompt and prompt+answer must
    be encoded the same way for the answer split in `_answer_ids` to line up."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    return [bos, *ids] if bos is not None else ids


def _answer_ids(tokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    """(ids of prompt + " " + answer tokenized together, index of the first answer token).

    Tokenizing jointly gives the tokens a model would really see. The split is the length of the prompt tokenized
    alone, applied to the joint ids: if BPE merges across the boundary (a prompt ending in "\n" or a space joins
    the answer's leading space), the merged token falls on the prompt side and is conditioned on, not scored, so
    the answer's token count stays `len(joint) - len(prompt)`. When the merge swallows the whole continuation,
    the last token is scored so that no answer gets a free zero. `PROMPT` ends in ":", which does not merge."""
    ids = _encode(tokenizer, prompt + " " + answer)
    start = min(len(_encode(tokenizer, prompt)), len(ids) - 1)
    return ids, max(start, 1)  # the first token has no context to be predicted from


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar length, so little compute goes to padding; callers restore input order."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@contextmanager
def _padding(tokenizer, side: str) -> Iterator[int]:
    """Pad on `side` (with EOS when the tokenizer has no pad token) and put the tokenizer back afterwards: the
    caller's tokenizer may be shared, and left padding (for generation) is wrong for scoring and vice versa."""
    saved_side, saved_pad = tokenizer.padding_side, tokenizer.pad_token
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = side
    try:
        yield tokenizer.pad_token_id
    finally:
        tokenizer.padding_side = saved_side
        if saved_pad is None:
            tokenizer.pad_token = None


def _pad_batch(tokenizer, seqs: list[list[int]], device) -> dict:
    """input_ids + attention_mask tensors on `device`, padded on the tokenizer's current side."""
    batch = tokenizer.pad({"input_ids": seqs}, return_tensors="pt")
    return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}


def answer_nll(model, tokenizer, items: list[tuple[str, str]], batch_size: int = 16) -> list[tuple[float, int, int]]:
    """For each (prompt, answer): (total NLL in nats of the answer tokens given the prompt, number of answer
    tokens, number of UTF-8 bytes of the continuation " " + answer).

    Batches are right-padded with an attention mask, so in a causal model padding never changes the scores of the
    real tokens. Sum nats / tokens for per-token NLL; nats / ln 2 / bytes for bits per byte."""
    import torch
    import torch.nn.functional as F

    encoded = [_answer_ids(tokenizer, prompt, answer) for prompt, answer in items]
    nats = [0.0] * len(items)
    with _padding(tokenizer, "right"), torch.no_grad():
        for idx in _length_batches([len(ids) for ids, _ in encoded], batch_size):
            batch = _pad_batch(tokenizer, [encoded[i][0] for i in idx], model.device)
            logits = model(**batch).logits.float()
            # token t is predicted from position t-1: score targets 1.. against logits ..-1
            token_nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
            for row, i in enumerate(idx):
                ids, start = encoded[i]
                nats[i] = token_nll[row, start - 1 : len(ids) - 1].sum().item()
    return [
        (nll, len(ids) - start, len((" " + answer).encode("utf-8")))
        for nll, (ids, start), (_, answer) in zip(nats, encoded, items)
    ]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the earliest stop string, stripped: a pre-trained model does not stop by itself after the
    answer, it goes on to the next line or invents the next "Instruction:"."""
    cuts = [pos for pos in (text.find(s) for s in stop if s) if pos >= 0]
    return (text[: min(cuts)] if cuts else text).strip()


def generate_answers(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 32,
    stop: tuple[str, ...] = ("\n", "Instruction:"),
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers (deterministic, so reruns and models compare exactly), cut at the first stop string.

    Batches are left-padded so every row's new tokens start at the same column; the tokenizer's padding side is
    restored afterwards."""
    import torch

    encoded = [_encode(tokenizer, prompt) for prompt in prompts]
    answers = [""] * len(prompts)
    with _padding(tokenizer, "left") as pad_id, torch.no_grad():
        for idx in _length_batches([len(ids) for ids in encoded], batch_size):
            batch = _pad_batch(tokenizer, [encoded[i] for i in idx], model.device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            for row, i in zip(new_tokens, idx):
                answers[i] = cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stop)
    return answers


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def resolve_device(name: str = "auto") -> str:
    """`auto`: the device training uses (`pretrain.loop.training_device`: the GPU when there is one, else the CPU),
    so a model is evaluated where it was trained, not on the CPU beside an idle GPU; other names are used as given."""
    from fineinstructions.pretrain.loop import training_device

    return str(training_device()) if name == "auto" else name


def evaluate_model(
    model_dir: str | Path,
    qa_path: str | Path,
    limit: int | None = 200,
    seed: int = 0,
    max_new_tokens: int = 32,
    device: str = "auto",
) -> dict:
    """Score a saved checkpoint (a `save_pretrained` directory with its tokenizer) on a QA jsonl file, on
    `device` (see `resolve_device`; the result says which).

    Likelihood uses each item's first reference answer (datasets list the canonical one first); EM and F1 take
    the best match over all references. NLL per token and bits per byte are totals over all answers divided by
    total tokens / bytes, so long answers weigh in proportion to their length."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fineinstructions import atomic

    rows = load_qa(qa_path, limit=limit, seed=seed)
    atomic.settle_dir(model_dir)  # a model swap a kill interrupted (`pretrain` replaces model/ whole)
    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).to(device).eval()
    prompts = [PROMPT.format(query=row["query"]) for row in rows]
    with torch.no_grad():
        scored = answer_nll(model, tokenizer, [(p, row["answers"][0]) for p, row in zip(prompts, rows)])
        predictions = generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    nats, tokens, n_bytes = (sum(column) for column in zip(*scored))
    return {
        "model": str(model_dir),
        "device": device,
        "n": len(rows),
        "nll_per_token": nats / tokens,
        "bits_per_byte": nats / math.log(2) / n_bytes,
        "exact_match": _mean([exact_match(p, row["answers"]) for p, row in zip(predictions, rows)]),
        "f1": _mean([token_f1(p, row["answers"]) for p, row in zip(predictions, rows)]),
        "examples": [
            {"query": row["query"], "answers": row["answers"], "prediction": p} for p, row in zip(predictions[:5], rows)
        ],
        "predictions": predictions,
        "rows": rows,
    }
