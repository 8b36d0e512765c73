"""The training loop: plain PyTorch, readable top to bottom, with an exact token budget and exact resume.

Why each piece:
* **Token budget** (`max_tokens`): the paper compares arms at equal training tokens, so the loop stops after
  exactly that many input positions (the last micro-batch is cut to fit), whatever the batch size.
* **Loss** = sum of per-token losses over the loss targets of a whole optimizer step ÷ their count, so gradient
  accumulation and loss masks weigh every target token the same (HF's per-micro-batch mean would not).
* **Data order** is a seeded permutation per epoch: the data position (epoch, row) is two integers, so a resumed
  run reads exactly the rows the uninterrupted run would have.
* **Checkpoints** are a Hugging Face model directory (`save_pretrained` + tokenizer) plus `trainer_state.pt`
  (optimizer, step, data position, RNG states, loss log); rerunning the same command resumes from it. Each is
  written whole into a temporary folder and swapped in (`atomic.replace_dir`), so a kill at any instant leaves the
  previous checkpoint or the new one, never neither.
* **Multi-GPU**: under `torchrun` (WORLD_SIZE > 1) each rank takes its share of every step's rows (the token
  budget counts all ranks) and the model is either replicated (`parallel: ddp`) or sharded with FSDP2's
  `fully_shard` per decoder layer (`parallel: fsdp`: weights, gradients and optimizer state split across ranks, for
  models whose training state does not fit one GPU). Both give the single-process run's losses, step for step.
  Every rank runs the same number of micro-batches of the same size, even on a last step cut by the budget (a
  rank short of rows runs padding rows that have no targets): DDP and FSDP need every rank in every collective.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fineinstructions import atomic
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
        # rank 0 may train the tokenizer and pack a large corpus while the others wait at a barrier: allow hours,
        # not the backends' default 10-30 minutes
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                             timeout=datetime.timedelta(hours=3))
    return (torch.distributed.get_rank() if world > 1 else 0), world


@contextmanager
def distributed() -> Iterator[tuple[int, int]]:
    """(rank, world size) for the block; under torchrun the outermost block joins the process group and, when it
    ends without an error, leaves it: a barrier (no rank exits while another is still in a collective or writing
    a checkpoint), then `destroy_process_group`, which joins gloo's worker threads while Python is still alive.
    Exiting without it lets a worker thread drop the last collective's tensors during interpreter shutdown, which
    aborts the process ("terminate called without an active exception", SIGABRT) -- rarely when idle, often under
    load. After an error the group is left alone: the other ranks may be stuck in a collective, torchrun stops them.
    """
    owner = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized()
    rank, world = init_distributed()
    yield rank, world
    if owner:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


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
    with distributed():
        return _train(model, tokenizer, input_ids, labels, opts, Path(out_dir), progress, stop_after_steps)


def training_device() -> torch.device:
    """This process's accelerator (`cuda:LOCAL_RANK` under torchrun) when there is one, else the CPU; evaluation
    uses the same rule, so a model is scored where it was trained."""
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu")


def _train(model, tokenizer, input_ids: np.ndarray, labels: np.ndarray, opts: TrainOptions, out: Path,
           progress: bool, stop_after_steps: int | None) -> dict[str, Any]:
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar (ours) per run, not one per checkpoint write
    out.mkdir(parents=True, exist_ok=True)
    rank, world = init_distributed()
    device = training_device()
    model.to(device)
    use_bf16 = _bf16(opts.precision, device)
    fsdp = world > 1 and opts.parallel == "fsdp"
    seq_len = input_ids.shape[1]
    rows_per_step = opts.batch_size * opts.grad_accum * world
    total_steps = math.ceil(opts.max_tokens / (rows_per_step * seq_len))
    stream = RowStream(len(input_ids), opts.seed)
    step, tokens, log = 0, 0, []
    state = _load_checkpoint(out / "checkpoint", rank, world)
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
        with atomic.staged_dir(where) as tmp:  # complete before it replaces the previous one
            model.save_pretrained(tmp, state_dict=weights)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            if where.name == "checkpoint":
                torch.save({"optimizer": optim_state, "step": step, "tokens": tokens, "log": log,
                            "data": stream.state(), "options": asdict(opts),
                            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}},
                           tmp / "trainer_state.pt")

    bar = tqdm(total=opts.max_tokens, initial=tokens, unit="tok", unit_scale=True, disable=not progress or rank != 0,
               desc=f"🏋️ train {opts.preset}", dynamic_ncols=True)
    start, start_tokens, start_step = time.time(), tokens, step
    model.train()
    while tokens < opts.max_tokens:
        for group in optim.param_groups:
            group["lr"] = lr_at(step, total_steps, opts)
        batch_ids, batch_labels, step_tokens = _budgeted(input_ids, labels, stream.take(rows_per_step),
                                                         opts.max_tokens - tokens)
        targets = int((batch_labels[:, 1:] != -100).sum())  # of the whole step, all ranks: the loss denominator
        mine_ids, mine_labels = _rank_share(batch_ids, batch_labels, rank, world)
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
               "options": asdict(opts), "world_size": world, "device": str(device)}
    if rank == 0:
        atomic.write_text(out / "loss.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        atomic.write_json(out / "train_summary.json", summary)
    return summary


def _load_checkpoint(where: Path, rank: int, world: int) -> dict | None:
    """The trainer state of `where`, or None. Rank 0 first settles a checkpoint swap a kill interrupted (the
    previous checkpoint comes back if the new one never arrived) while the other ranks wait, then all read it."""
    if rank == 0:
        atomic.settle_dir(where)
    if world > 1:
        torch.distributed.barrier()
    state_path = where / "trainer_state.pt"
    return torch.load(state_path, weights_only=False) if state_path.is_file() else None


def _budgeted(input_ids: np.ndarray, labels: np.ndarray, rows: np.ndarray,
              left: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(ids, labels, token count) of a step's rows cut to the `left` tokens of the budget: whole rows, then the
    first positions of one more row (see `_cut_last_row`)."""
    seq_len = input_ids.shape[1]
    n_full, rest = divmod(min(left, len(rows) * seq_len), seq_len)
    take = rows[:n_full + (rest > 0)]
    ids = torch.from_numpy(np.asarray(input_ids[take], dtype=np.int64))
    lab = torch.from_numpy(np.asarray(labels[take], dtype=np.int64))
    if rest:
        ids, lab = _cut_last_row(ids, lab, rest)
    return ids, lab, n_full * seq_len + rest


def _rank_share(ids: torch.Tensor, labels: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of a step (every `world`-th), padded to the largest rank's share.

    On a last step cut by the budget the rows may not divide by the ranks; a rank with fewer rows (or none) would
    run fewer forward/backward passes and leave the others waiting in a collective forever. A padding row (a copy
    of the step's first row, every label -100) adds exactly nothing to the loss sum, the target count or the
    gradients, so every rank runs the same passes and the result is the unpadded one."""
    share = -(-len(ids) // world)
    mine_ids, mine_labels = ids[rank::world], labels[rank::world]
    short = share - len(mine_ids)
    if short:
        mine_ids = torch.cat([mine_ids, ids[:1].expand(short, -1)])
        mine_labels = torch.cat([mine_labels, torch.full((short, labels.shape[1]), -100, dtype=labels.dtype)])
    return mine_ids, mine_labels


def _cut_last_row(ids: torch.Tensor, labels: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Count only the first `length` positions of the last row: later positions get no loss and, attention being
    causal, cannot change the losses before them, so the row keeps its shape and batching stays simple."""
    labels = labels.clone()
    labels[-1, length:] = -100
    return ids, labels
