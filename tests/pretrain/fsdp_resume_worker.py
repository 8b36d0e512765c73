"""torchrun worker for test_distributed: train the tiny model with FSDP on fixed data, optionally stopping early."""

import sys

import torch

from fineinstructions.pretrain.loop import TrainOptions, train
from fineinstructions.pretrain.model import build_model

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_loop import data  # noqa: E402

out, stop, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ids, labels = data()
opts = TrainOptions(preset="tiny", batch_size=1, grad_accum=2, max_tokens=16 * 4 * 6, lr=1e-2, warmup_steps=2,
                    log_every=1, precision="fp32", parallel="fsdp")
train(build_model("tiny", 64, 16, seed=seed), None, ids, labels, opts, out, progress=False,
      stop_after_steps=stop or None)
# the process group is left before the process exits: a gloo worker thread still holding the last collective's
# tensors at interpreter shutdown aborts the process ("terminate called without an active exception")
assert not torch.distributed.is_initialized(), "train() returned with the process group still up"
