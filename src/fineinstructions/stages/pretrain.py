"""Command `pretrain`: train a model from scratch on one corpus (the budget stage's instruction or standard corpus,
or any parquet/jsonl with `text`), with an exact token budget.

    DIR/tokenizer/   the BPE trained on the corpus (unless --tokenizer names one)
    DIR/data/        packed sequences + labels + stats.json (reused when the settings match)
    DIR/loss.jsonl, DIR/checkpoint/ (resumable), DIR/model/ (final, Hugging Face format), DIR/train_summary.json

Default loss: every token (`--loss-on all`). The paper does not say whether its instruction arm masks the
instruction; training on every token is what "pre-training on the pairs" means literally, keeps the two arms'
objectives identical (next-token prediction on every token of their corpus) and uses every budgeted token.
`--loss-on answer` trains on answer tokens only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.pretrain.loop import TrainOptions


@dataclass
class PretrainConfig(TrainOptions):
    input: str | None = option(None, "corpus: parquet file/folder or jsonl with a text column")
    output: str | None = option(None, "output directory")
    text_column: str = option("text", "column holding the training text")
    limit: int | None = option(None, "read at most this many texts")
    tokenizer: str | None = option(None, "HF tokenizer name or directory; default: train a byte-level BPE on the corpus")
    vocab_size: int = option(8192, "vocabulary of the BPE trained when --tokenizer is not given")
    loss_on: str = option("all", "loss targets: every token, or only answer tokens after 'Answer:'", ("all", "answer"))
    data_dir: str | None = option(None, "where the packed data is cached (default: OUTPUT/data); runs that share "
                                        "a corpus and settings can share it")
    progress: bool = option(True, "show a progress bar")


def tokenizer_for(cfg: PretrainConfig, texts_from: list[str], out: Path):
    """The named tokenizer, or a BPE trained once on `texts_from` and kept in `out` (reused on rerun)."""
    from fineinstructions.pretrain.data import read_texts
    from fineinstructions.pretrain.tokenizer import load_tokenizer, train_bpe

    try:
        if cfg.tokenizer:
            return load_tokenizer(cfg.tokenizer)
        if (out / "tokenizer_config.json").is_file():
            return load_tokenizer(str(out))
        return train_bpe((t for path in texts_from for t in read_texts(path, cfg.text_column)), cfg.vocab_size, out)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from e


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first while the other ranks wait, then they run it (finding rank 0's cached files)."""
    import torch

    from fineinstructions.pretrain.loop import init_distributed

    rank, world = init_distributed()
    if world > 1 and rank != 0:
        torch.distributed.barrier()
    yield
    if world > 1 and rank == 0:
        torch.distributed.barrier()


def run(cfg: PretrainConfig, tokenizer=None) -> dict[str, Any]:
    """Pack the corpus and train; `tokenizer` lets an experiment share one tokenizer between its arms."""
    from fineinstructions.pretrain.data import build_dataset
    from fineinstructions.pretrain.loop import train
    from fineinstructions.pretrain.model import build_model, count_parameters

    if not cfg.input or not cfg.output:
        raise UserError("pretrain needs --input (a corpus) and --output DIR")
    out = Path(cfg.output)
    with rank_zero_first():  # under torchrun one process trains the tokenizer and packs; the others reuse them
        tok = tokenizer or tokenizer_for(cfg, [cfg.input], out / "tokenizer")
        try:
            data = build_dataset(cfg.input, tok, cfg.seq_len, cfg.loss_on, cfg.text_column, cfg.limit,
                                 out=Path(cfg.data_dir) if cfg.data_dir else out / "data")
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from e
    if len(data.input_ids) == 0:
        raise UserError(f"no text to train on in {cfg.input}")
    model = build_model(cfg.preset, len(tok), cfg.seq_len, seed=cfg.seed, eos_id=tok.eos_token_id,
                        pad_id=tok.pad_token_id)
    options = TrainOptions(**{k: getattr(cfg, k) for k in TrainOptions.__dataclass_fields__})
    summary = train(model, tok, data.input_ids, data.labels, options, out, progress=cfg.progress)
    summary.update(parameters=count_parameters(model), data=data.stats, corpus=cfg.input)
    if int(os.environ.get("RANK", "0")) == 0:
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
