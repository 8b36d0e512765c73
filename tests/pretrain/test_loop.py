"""The training loop on a real (tiny) Llama model: loss masking, exact token budget, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fineinstructions.pretrain.loop import RowStream, TrainOptions, lr_at, masked_loss_sum, train
from fineinstructions.pretrain.model import PRESETS, build_model, count_parameters, model_config


def data(rows=24, seq_len=16, vocab=64, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(rows, seq_len))
    labels = ids.copy()
    labels[:, :5] = -100  # a prompt part that is not a loss target
    return ids, labels


def opts(**kw):
    return TrainOptions(**{"preset": "tiny", "batch_size": 2, "grad_accum": 2, "max_tokens": 16 * 4 * 6,
                           "lr": 1e-2, "warmup_steps": 2, "log_every": 1, **kw})


def test_masked_tokens_contribute_exactly_zero_gradient():
    logits = torch.randn(2, 6, 10, requires_grad=True)
    labels = torch.randint(0, 10, (2, 6))
    labels[0, 3] = labels[1, 1] = -100
    loss, n = masked_loss_sum(logits, labels)
    loss.backward()
    assert n == 2 * 5 - 2
    # logits at t predict labels[t+1]: the masked targets' predicting positions get exactly zero gradient
    assert torch.count_nonzero(logits.grad[0, 2]) == 0 and torch.count_nonzero(logits.grad[1, 0]) == 0
    assert torch.count_nonzero(logits.grad[0, 1]) > 0
    assert torch.count_nonzero(logits.grad[:, -1]) == 0  # the last position predicts nothing
    expected = sum(torch.nn.functional.cross_entropy(logits[b, t].unsqueeze(0), labels[b, t + 1].unsqueeze(0))
                   for b in range(2) for t in range(5) if labels[b, t + 1] != -100)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


@pytest.mark.parametrize("budget", [16 * 4 * 3, 16 * 4 * 3 + 5, 37])
def test_token_budget_stops_at_exactly_n_tokens(tmp_path, budget):
    ids, labels = data()
    model = build_model("tiny", 64, 16)
    summary = train(model, None, ids, labels, opts(max_tokens=budget), tmp_path, progress=False)
    assert summary["tokens"] == budget and summary["finished"]
    log = [json.loads(line) for line in (tmp_path / "loss.jsonl").open()]
    assert log[-1]["tokens"] == budget and (tmp_path / "model" / "config.json").is_file()


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    ids, labels = data()
    full = train(build_model("tiny", 64, 16), None, ids, labels, opts(), tmp_path / "a", progress=False)
    part = train(build_model("tiny", 64, 16), None, ids, labels, opts(), tmp_path / "b", progress=False,
                 stop_after_steps=3)
    assert not part["finished"] and part["steps"] == 3 and not (tmp_path / "b" / "model").exists()
    # a fresh process would build a fresh model: the checkpoint must restore weights, optimizer and data position
    rest = train(build_model("tiny", 64, 16, seed=99), None, ids, labels, opts(), tmp_path / "b", progress=False)
    a = [json.loads(line) for line in (tmp_path / "a" / "loss.jsonl").open()]
    b = [json.loads(line) for line in (tmp_path / "b" / "loss.jsonl").open()]
    assert rest["tokens"] == full["tokens"] and len(a) == len(b) == 6
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-5)


def test_schedule_and_data_order():
    o = opts(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_at(s, 20, o) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(20, 20, o) == pytest.approx(0.1) and lr_at(12, 20, o) == pytest.approx(0.55)
    s = RowStream(5, seed=1)
    first = np.concatenate([s.take(3), s.take(3)])  # crosses into the second epoch
    assert sorted(first[:5]) == list(range(5)) and s.state() == {"epoch": 1, "index": 1}
    resumed = RowStream(5, seed=1, epoch=1, index=1)
    assert list(resumed.take(4)) == list(s.take(4))


def test_presets_have_the_intended_sizes():
    from transformers import LlamaForCausalLM

    toy = LlamaForCausalLM(model_config("toy", 8192, 512))
    assert 6e6 < count_parameters(toy) < 10e6
    with torch.device("meta"):
        big = LlamaForCausalLM(model_config("300m", 128_256, 2048))
    assert 250e6 < count_parameters(big) < 450e6
    assert set(PRESETS) >= {"tiny", "toy", "300m", "1.8b"}
    with pytest.raises(ValueError, match="preset"):
        model_config("huge", 10, 10)


def test_bf16_autocast_and_compile_train_like_fp32_eager(tmp_path):
    """`precision: bf16` really runs in bf16 on this CPU (losses differ from fp32 by round-off, not more), and
    `compile: true` gives the eager run's losses."""
    ids, labels = data()
    runs = {}
    for name, kw in {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
                     "compiled": {"precision": "fp32", "compile": True}}.items():
        train(build_model("tiny", 64, 16), None, ids, labels, opts(**kw), tmp_path / name, progress=False)
        runs[name] = [json.loads(line)["loss"] for line in (tmp_path / name / "loss.jsonl").open()]
    assert runs["bf16"] != runs["fp32"] and runs["bf16"] == pytest.approx(runs["fp32"], rel=0.05)
    assert runs["compiled"] == pytest.approx(runs["fp32"], rel=1e-3)


# --- kills while saving: the next run sees the complete old state or the complete new one ---------------------

def _state(where) -> dict:
    from fineinstructions import atomic

    atomic.settle_dir(where)  # what the next run does before reading
    return torch.load(where / "trainer_state.pt", weights_only=False)


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_checkpoint_save_killed_at_any_point_loses_no_progress(tmp_path, monkeypatch, kill_at):
    """Checkpoints every 2 steps; the run is killed at the 1st, 2nd or 3rd folder operation of the step-4
    checkpoint's save (the old one moved aside, the new one moved in, the old one deleted). The next run must find
    the step-2 or the step-4 checkpoint -- not none, which would silently restart from scratch -- and resume to the
    uninterrupted run's losses, from a model built with other initial weights."""
    from kill_points import Killed, kill_at_move

    ids, labels = data()
    train(build_model("tiny", 64, 16), None, ids, labels, opts(), tmp_path / "a", progress=False)
    b = tmp_path / "b"
    train(build_model("tiny", 64, 16), None, ids, labels, opts(save_every=2), b, progress=False, stop_after_steps=2)
    with monkeypatch.context() as m:
        events = kill_at_move(m, kill_at, name="checkpoint")
        with pytest.raises(Killed):
            train(build_model("tiny", 64, 16), None, ids, labels, opts(save_every=2), b, progress=False)
    assert len(events) == kill_at
    assert _state(b / "checkpoint")["step"] in (2, 4)
    train(build_model("tiny", 64, 16, seed=99), None, ids, labels, opts(save_every=2), b, progress=False)
    assert _losses(b) == pytest.approx(_losses(tmp_path / "a"), abs=1e-5)
    assert not (b / "checkpoint.old").exists()  # settled: a half-swap is finished or rolled back


@pytest.mark.parametrize("name", ["loss.jsonl", "train_summary.json"])
def test_a_kill_while_the_log_or_summary_is_written_leaves_the_previous_file(tmp_path, monkeypatch, name):
    from kill_points import Killed, kill_while_writing

    ids, labels = data()
    train(build_model("tiny", 64, 16), None, ids, labels, opts(), tmp_path, progress=False, stop_after_steps=3)
    before = (tmp_path / name).read_text()
    with monkeypatch.context() as m:
        kill_while_writing(m, name)
        with pytest.raises(Killed):
            train(build_model("tiny", 64, 16), None, ids, labels, opts(), tmp_path, progress=False)
    assert (tmp_path / name).read_text() == before  # the complete previous version, not half of the new one
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}")] == []
    summary = train(build_model("tiny", 64, 16), None, ids, labels, opts(), tmp_path, progress=False)
    assert summary["finished"] and len(_losses(tmp_path)) == 6


def _losses(folder) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "loss.jsonl").open()]
