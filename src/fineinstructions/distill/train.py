"""The student's training loop: supervised fine-tuning on (prompt, target) pairs, loss on the target tokens only.

Why each piece:
* **Prompt rendering**: the tokenizer's chat template with the generation prompt, exactly as the transformers
  backend renders a chat request; the target follows with the end-of-turn token, so generation stops where the
  teacher stopped.
* **LoRA** (`peft`, default) or **full** fine-tuning. LoRA adapters are small (saved in fp16) and are loaded by
  every backend on top of the unchanged base model; full fine-tuning writes a whole model folder.
* **Batches** group examples of similar length (less padding) in a seeded order per epoch; the loss is the mean
  over the target tokens of an optimizer step, so long and short examples weigh by their tokens.
* **Model selection**: after each epoch the student is saved and scored by `goldeval` on the dev split through the
  stage's real code path; the best epoch (by `selection_score`) becomes the output. Scores per epoch are kept.
* **Resume**: the state after each epoch (weights, optimizer, data order, history) is written atomically to
  `DIR/checkpoint/`; rerunning the same command continues after the last finished epoch.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineinstructions import atomic
from fineinstructions.distill.examples import Example

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode(examples: list[Example], tokenizer, max_length: int) -> tuple[list[Encoded], int]:
    """Token ids with labels on the target (and its end-of-turn token) only; examples longer than `max_length`
    are left out (returned count), never cut: a cut document or answer would teach the wrong output."""
    out, too_long = [], 0
    eos = tokenizer.eos_token_id
    for ex in examples:
        prompt = tokenizer.apply_chat_template(list(ex.messages), tokenize=False, add_generation_prompt=True)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t_ids = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [eos]
        if len(p_ids) + len(t_ids) > max_length:
            too_long += 1
            continue
        out.append(Encoded(p_ids + t_ids, [IGNORE] * len(p_ids) + t_ids))
    return out, too_long


def batches(data: list[Encoded], batch_size: int, seed: int, epoch: int) -> list[list[Encoded]]:
    """Length-grouped batches in a seeded order: shuffle, sort within windows of 16 batches, shuffle batches."""
    rng = random.Random(f"{seed}:{epoch}")
    order = data[:]
    rng.shuffle(order)
    window = batch_size * 16
    grouped = []
    for i in range(0, len(order), window):
        chunk = sorted(order[i:i + window], key=lambda e: len(e.input_ids))
        grouped += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(grouped)
    return grouped


def collate(batch: list[Encoded], pad_id: int):
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):  # right padding: positions stay 0..n-1, as in generation without padding
        ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, :len(e.labels)] = torch.tensor(e.labels)
        mask[i, :len(e.input_ids)] = 1
    return ids, labels, mask


def target_loss(model, ids, labels, mask):
    """(sum of next-token losses over the target tokens, their count).

    Logits are computed only from the first position that predicts a target token on (`logits_to_keep`): the
    prompt is most of every example and a 49k-vocabulary logit row per prompt token would be most of the memory
    (a judge batch took 11 GB with full logits)."""
    import torch.nn.functional as F

    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    targets = (shifted != IGNORE).any(0).nonzero()
    first = int(targets[0]) if len(targets) else shifted.size(1) - 1
    keep = shifted.size(1) - first
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits[:, -keep:]
    shifted = shifted[:, first:].reshape(-1)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), shifted, ignore_index=IGNORE, reduction="sum")
    return loss, int((shifted != IGNORE).sum())


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def with_lora(model, r: int, alpha: int, dropout: float, targets: list[str] | None):
    from peft import LoraConfig, get_peft_model

    modules = targets or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules,
                                            task_type="CAUSAL_LM"))


def from_adapter(model, adapter: str | Path):
    """Continue training a finished student: its LoRA weights (and rank, targets) on the base, trainable."""
    import torch
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    for name, param in model.named_parameters():  # the adapter was saved in fp16; train in the base's precision
        if "lora_" in name:
            param.data = param.data.to(torch.float32)
    return model


def save_student(model, tokenizer, where: Path, method: str) -> None:
    """An adapter folder (LoRA, fp16 weights) or a whole model folder (full), written atomically."""
    import torch

    with atomic.staged_dir(where) as tmp:
        if method == "lora":
            state = {k: v.to(torch.float16) for k, v in model.state_dict().items() if "lora_" in k}
            model.save_pretrained(tmp, state_dict=state)
        else:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)


def save_state(path: Path, model, optimizer, epoch: int, step: int, history: list[dict], method: str,
               tokenizer) -> None:
    import torch

    with atomic.staged_dir(path) as tmp:
        if method == "lora":
            model.save_pretrained(tmp)
        else:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "epoch": epoch, "step": step, "history": history,
                    "rng": torch.get_rng_state()}, tmp / "trainer_state.pt")


def load_state(path: Path, model, optimizer, method: str) -> dict[str, Any] | None:
    import torch

    atomic.settle_dir(path)
    state_file = path / "trainer_state.pt"
    if not state_file.is_file():
        return None
    state = torch.load(state_file, weights_only=False)
    if method == "lora":
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    else:
        from transformers import AutoModelForCausalLM

        model.load_state_dict(AutoModelForCausalLM.from_pretrained(path).state_dict())
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return state


def fit(model, tokenizer, data: list[Encoded], *, out: Path, method: str, epochs: int, lr: float, batch_size: int,
        grad_accum: int, warmup: float, seed: int, evaluate, progress: bool = True,
        stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Train for `epochs`, calling `evaluate(epoch, student_dir) -> (score, metrics)` after each; the best epoch's
    student ends up in `out/best/`. Returns {history, best_epoch, best_score, seconds}."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(math.ceil(len(data) / batch_size) / grad_accum)
    total = steps_per_epoch * epochs
    warm = max(1, int(warmup * total))
    state = load_state(out / "checkpoint", model, optimizer, method)
    start_epoch, step, history = (state["epoch"] + 1, state["step"], state["history"]) if state else (0, 0, [])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("a", encoding="utf-8")
    began = time.time()
    prior = history[-1].get("seconds", 0.0) if history else 0.0  # a resumed run adds to the time already spent
    for epoch in range(start_epoch, epochs):
        model.train()
        groups = batches(data, batch_size, seed, epoch)
        bar = tqdm(total=len(groups), desc=f"🎓 epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress,
                   dynamic_ncols=True)
        for first in range(0, len(groups), grad_accum):
            chunk = groups[first:first + grad_accum]
            encoded = [collate(b, pad) for b in chunk]
            targets = sum(int((lab[:, 1:] != IGNORE).sum()) for _, lab, _ in encoded)
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, total, lr, warm)
            total_loss = 0.0
            for ids, labels, mask in encoded:
                loss, _ = target_loss(model, ids, labels, mask)
                (loss / max(1, targets)).backward()
                total_loss += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            mean = total_loss / max(1, targets)
            log.write(json.dumps({"epoch": epoch + 1, "step": step, "loss": round(mean, 5),
                                  "lr": optimizer.param_groups[0]["lr"]}) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{mean:.3f}")
            bar.update(len(chunk))
        bar.close()
        model.eval()
        student = out / "epochs" / f"epoch-{epoch + 1}"
        save_student(model, tokenizer, student, method)
        score, metrics = evaluate(epoch + 1, student)
        history.append({"epoch": epoch + 1, "score": score, "metrics": metrics, "step": step,
                        "seconds": round(prior + time.time() - began, 1)})  # training time over every session
        best = max(history, key=lambda h: h["score"])
        if best["epoch"] == epoch + 1:
            if (out / "best").exists():
                shutil.rmtree(out / "best")
            shutil.copytree(student, out / "best")
        for old in (out / "epochs").iterdir():  # keep the best and the last only
            if old.name not in (f"epoch-{best['epoch']}", student.name):
                shutil.rmtree(old, ignore_errors=True)
        save_state(out / "checkpoint", model, optimizer, epoch, step, history, method, tokenizer)
        if stop_after_epochs is not None and epoch + 1 - start_epoch >= stop_after_epochs:
            break
    log.close()
    best = max(history, key=lambda h: h["score"]) if history else None
    return {"history": history, "best_epoch": best["epoch"] if best else None,
            "best_score": best["score"] if best else None,
            "seconds": history[-1].get("seconds", 0.0) if history else 0.0}
