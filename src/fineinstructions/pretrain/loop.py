"""The training loop: plain PyTorch, readable top to bottom, with an exact token budget and exact resume.

Why each piece:
* **Token budget** (`max_tokens`): the paper compares arms at equal training tokens, so the loop stops after
  exactly that many input positions (the last micro-batch is cut to fit), whatever the batch size.
* **Loss** = sum of per-token losses over the loss targets of a whole optimizer step ÷ their count, so gradient
  accumulation and loss masks weigh every target token the same (HF's per-micro-batch mean would not).
* **Data order** is a seeded permutation per epoch: the data position (epoch, row) is two integers, so a resumed
  run reads exactly the rows the uninterrupted run would have.
* **Checkpoints** are a Hugging Face model directory (`save_pretrained` + tokenizer) plus `trainer_state.pt`
  (optimizer, step, data position, RNG states, loss log); rerunning the same command resumes from it.
* **Multi-GPU**: under `torchrun` (WORLD_SIZE > 1) each rank takes its share of every step's rows (the token
  budget counts all ranks) and the model is either replicated (`parallel: ddp`) or sharded with FSDP2's
  `fully_shard` per decoder layer (`parallel: fsdp`: weights, gradients and optimizer state split across ranks, for
  models whose training state does not fit one GPU). Both give the single-process run's losses, step for step.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fineinstructions.config import option


@dataclass
class TrainOptions:
    preset: str = option("toy", "model size: tiny | toy (~9M, CPU) | 300m | 1.8b")
    seq_len: int = option(512, "tokens per packed sequence")
    batch_size: int = option(8, "sequences per micro-batch (per GPU)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    max_tokens: int = option(500_000, "training tokens (input positions, all ranks): the budget every arm shares")
    lr: float = option(3e-3, "peak learning rate (AdamW)")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of the peak (cosine decay)")
    warmup_steps: int = option(20, "linear warm-up steps")
    weight_decay: float = option(0.1, "AdamW weight decay")
    clip: float = option(1.0, "gradient-norm clipping (0: off)")
    seed: int = option(0, "seed of the initial weights and of the data order")
    precision: str = option("auto", "auto: bf16 autocast on GPUs that support it, fp32 elsewhere | bf16: bf16 "
                                    "autocast on any device | fp32", ("auto", "bf16", "fp32"))
    parallel: str = option("ddp", "several processes (torchrun): ddp replicates the model, fsdp shards weights, "
                                  "gradients and optimizer state", ("ddp", "fsdp"))
    compile: bool = option(False, "torch.compile the model")
    log_every: int = option(10, "optimizer steps between loss-log lines")
    save_every: int = option(0, "optimizer steps between checkpoints (0: only at the end)")


def masked_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum of next-token losses over targets, number of targets); positions labelled -100 contribute nothing."""
    # shift the labels, not the logits: slicing the logits would copy the largest tensor of the step
    shift_labels = F.pad(labels[:, 1:], (0, 1), value=-100).reshape(-1)
    flat = logits.reshape(-1, logits.size(-1))
    loss = F.cross_entropy(flat if flat.dtype == torch.float32 else flat.float(), shift_labels, ignore_index=-100,
                           reduction="sum")
    return loss, int((shift_labels != -100).sum())


def lr_at(step: int, total_steps: int, opts: TrainOptions) -> float:
    """Linear warm-up to `lr`, then cosine decay to `lr * min_lr_ratio` at the last step."""
    if step < opts.warmup_steps:
        return opts.lr * (step + 1) / opts.warmup_steps
    progress = (step - opts.warmup_steps) / max(1, total_steps - opts.warmup_steps)
    return opts.lr * (opts.min_lr_ratio + (1 - opts.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class RowStream:
    """Rows of the packed dataset in a seeded order, epoch after epoch; its position is (epoch, index)."""

    def __init__(self, n_rows: int, seed: int, epoch: int = 0, index: int = 0):
        self.n_rows, self.seed, self.epoch, self.index = n_rows, seed, epoch, index
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n_rows)

    def take(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self.index == self.n_rows:
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._permutation()
            n = min(k, self.n_rows - self.index)
            out.append(self._order[self.index:self.index + n])
            self.index, k = self.index + n, k - n
        return np.concatenate(out)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank() if world > 1 else 0), world


def _bf16(precision: str, device: torch.device) -> bool:
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _parallelize(model, device: torch.device, world: int, fsdp: bool):
    """The module the forward pass runs through: the model itself, a DDP replica, or the model sharded in place."""
    if world == 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:  # one all-gather per layer keeps peak memory at one layer's full weights
            fully_shard(layer)
        fully_shard(model)
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _optimizer(model, opts: TrainOptions) -> torch.optim.Optimizer:
    """AdamW without weight decay on norms and biases (the 1-d parameters)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": opts.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=opts.lr, betas=(0.9, 0.95))


def _full_state(model, optim, fsdp: bool) -> tuple[dict | None, dict]:
    """(model weights or None for "the model's own", optimizer state), unsharded: a run can resume on another
    number of ranks (with the same `parallel` mode: FSDP keys optimizer state by parameter name, not position)."""
    if not fsdp:
        return None, optim.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optim, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _load_optimizer(model, optim, state: dict, fsdp: bool) -> None:
    if not fsdp:
        optim.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optim, state, options=StateDictOptions(full_state_dict=True))


def train(model, tokenizer, input_ids: np.ndarray, labels: np.ndarray, opts: TrainOptions, out_dir: str | Path,
          progress: bool = True, stop_after_steps: int | None = None) -> dict[str, Any]:
    """Train `model` on packed rows until `opts.max_tokens` input positions; resume from `out_dir` if possible.

    Writes `out_dir/loss.jsonl`, `out_dir/checkpoint/` (resumable) and `out_dir/model/` (final, HF format).
    `stop_after_steps` ends this invocation early with a checkpoint (a job with a time limit); running again
    continues exactly where it stopped. Returns the run summary (also in `out_dir/train_summary.json`).
    """
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar (ours) per run, not one per checkpoint write
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = init_distributed()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    model.to(device)
    use_bf16 = _bf16(opts.precision, device)
    fsdp = world > 1 and opts.parallel == "fsdp"
    seq_len = input_ids.shape[1]
    rows_per_step = opts.batch_size * opts.grad_accum * world
    total_steps = math.ceil(opts.max_tokens / (rows_per_step * seq_len))
    stream = RowStream(len(input_ids), opts.seed)
    step, tokens, log = 0, 0, []
    state_path = out / "checkpoint" / "trainer_state.pt"
    state = torch.load(state_path, weights_only=False) if state_path.is_file() else None
    if state:  # weights go in before wrapping: every rank loads the full checkpoint, then shards or replicates it
        from transformers import AutoModelForCausalLM

        model.load_state_dict(AutoModelForCausalLM.from_pretrained(out / "checkpoint").state_dict())
        step, tokens, log = state["step"], state["tokens"], state["log"]
        stream = RowStream(len(input_ids), opts.seed, **state["data"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
    net = _parallelize(model, device, world, fsdp)
    optim = _optimizer(model, opts)  # after sharding: FSDP replaces the parameters
    if state:
        _load_optimizer(model, optim, state["optimizer"], fsdp)
    if opts.compile:
        net = torch.compile(net)

    def save(where: Path) -> None:
        weights, optim_state = _full_state(model, optim, fsdp)  # a collective under FSDP: every rank calls it
        if rank != 0:
            return
        tmp = where.with_name(where.name + ".tmp")
        model.save_pretrained(tmp, state_dict=weights)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if where.name == "checkpoint":
            torch.save({"optimizer": optim_state, "step": step, "tokens": tokens, "log": log,
                        "data": stream.state(), "options": asdict(opts),
                        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}}, tmp / "trainer_state.pt")
        if where.exists():
            import shutil

            shutil.rmtree(where)
        tmp.rename(where)

    bar = tqdm(total=opts.max_tokens, initial=tokens, unit="tok", unit_scale=True, disable=not progress or rank != 0,
               desc=f"🏋️ train {opts.preset}", dynamic_ncols=True)
    start, start_tokens, start_step = time.time(), tokens, step
    model.train()
    while tokens < opts.max_tokens:
        for group in optim.param_groups:
            group["lr"] = lr_at(step, total_steps, opts)
        rows = stream.take(rows_per_step)
        # the exact budget: cut the step's rows (and the last row's length) to what is left
        left = opts.max_tokens - tokens
        n_full, rest = divmod(min(left, len(rows) * seq_len), seq_len)
        batch_ids = torch.from_numpy(np.asarray(input_ids[rows[:n_full + (rest > 0)]], dtype=np.int64))
        batch_labels = torch.from_numpy(np.asarray(labels[rows[:n_full + (rest > 0)]], dtype=np.int64))
        if rest:
            batch_ids, batch_labels = _cut_last_row(batch_ids, batch_labels, rest)
        mine_ids, mine_labels = batch_ids[rank::world], batch_labels[rank::world]
        targets = int((batch_labels[:, 1:] != -100).sum())  # of the whole step, all ranks: the loss denominator
        loss_sum = 0.0
        micro = max(1, math.ceil(len(mine_ids) / opts.grad_accum))
        for i in range(0, len(mine_ids), micro):
            ids = mine_ids[i:i + micro].to(device)
            lab = mine_labels[i:i + micro].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = net(input_ids=ids).logits
            s, _ = masked_loss_sum(logits, lab)
            (s * world / max(1, targets)).backward()  # DDP averages over ranks; undo it so the sum is global
            loss_sum += float(s.detach())
        if opts.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), opts.clip)
        optim.step()
        optim.zero_grad(set_to_none=True)
        step_tokens = int(batch_ids.numel()) if not rest else (n_full * seq_len + rest)
        tokens += step_tokens
        step += 1
        bar.update(step_tokens)
        if world > 1:
            t = torch.tensor([loss_sum], device=device)
            torch.distributed.all_reduce(t)
            loss_sum = float(t)
        loss = loss_sum / max(1, targets)
        if step % opts.log_every == 0 or tokens >= opts.max_tokens or step == 1:
            rate = (tokens - start_tokens) / max(1e-9, time.time() - start)
            log.append({"step": step, "tokens": tokens, "loss": round(loss, 5), "lr": optim.param_groups[0]["lr"],
                        "tokens_per_s": round(rate, 1)})
            bar.set_postfix(loss=f"{loss:.3f}")
        if opts.save_every and step % opts.save_every == 0 and tokens < opts.max_tokens:
            save(out / "checkpoint")
        if stop_after_steps is not None and step - start_step >= stop_after_steps:
            break
    bar.close()
    elapsed = time.time() - start
    save(out / "checkpoint")
    if tokens >= opts.max_tokens:
        save(out / "model")
    summary = {"steps": step, "tokens": tokens, "finished": tokens >= opts.max_tokens, "final_loss": log[-1]["loss"] if log else None,
               "tokens_per_s": round((tokens - start_tokens) / max(1e-9, elapsed), 1), "seconds": round(elapsed, 1),
               "options": asdict(opts), "world_size": world}
    if rank == 0:
        (out / "loss.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _cut_last_row(ids: torch.Tensor, labels: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Count only the first `length` positions of the last row: later positions get no loss and, attention being
    causal, cannot change the losses before them, so the row keeps its shape and batching stays simple."""
    labels = labels.clone()
    labels[-1, length:] = -100
    return ids, labels
