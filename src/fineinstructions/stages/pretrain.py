"""Command `pretrain`: train a model from scratch on one corpus (the budget stage's instruction or standard corpus,
or any parquet/jsonl with `text`), with an exact token budget.

    DIR/tokenizer/   the BPE trained on the corpus (unless --tokenizer names one)
    DIR/data/        packed sequences + labels + stats.json (reused when the settings match)
    DIR/loss.jsonl, DIR/checkpoint/ (resumable), DIR/model/ (final, Hugging Face format), DIR/train_summary.json

Default loss: every token (`--loss-on all`). The paper does not say whether its instruction arm masks the
instruction; training on every token is what "pre-training on the pairs" means literally, keeps the two arms'
objectives identical (next-token prediction on every token of their corpus) and uses every budgeted token.
`--loss-on answer` trains on answer tokens only; a corpus without any `\n\nAnswer:` marker (standard documents,
most WRAP text) has nothing to train on under it and is refused, and documents without the marker are warned about.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineinstructions import atomic
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.pretrain.loop import TrainOptions

log = logging.getLogger(__name__)
_warned: set[str] = set()  # an experiment trains each corpus once per seed: one warning per corpus, not per seed


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


def packed_data(cfg: PretrainConfig, tokenizer):
    """The corpus packed for training (cached in `data_dir`), refused when it has nothing to train on: a corpus
    with zero loss targets would "train" on nothing and report a loss of 0."""
    from fineinstructions.pretrain.data import ANSWER_MARKER, build_dataset

    try:
        data = build_dataset(cfg.input, tokenizer, cfg.seq_len, cfg.loss_on, cfg.text_column, cfg.limit,
                             out=Path(cfg.data_dir) if cfg.data_dir else Path(cfg.output) / "data")
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from e
    stats = data.stats
    if not stats["tokens"]:
        raise UserError(f"no text to train on in {cfg.input}")
    if not stats["target_tokens"]:
        raise UserError(f"{cfg.input}: no token to train on under --loss-on {cfg.loss_on}: none of its "
                        f"{stats['documents']:,} documents contains the answer marker {ANSWER_MARKER!r}; "
                        f"train on every token with --loss-on all")
    if stats["documents_without_targets"]:
        _warn_once(f"{stats['documents_without_targets']:,} of {stats['documents']:,} documents in {cfg.input} "
                   f"have no {ANSWER_MARKER!r} marker: under --loss-on {cfg.loss_on} they use up budget "
                   f"tokens but train nothing")
    return data


def _warn_once(message: str) -> None:
    if message not in _warned and int(os.environ.get("RANK", "0")) == 0:
        _warned.add(message)
        log.warning("warning: %s", message)


def run(cfg: PretrainConfig, tokenizer=None) -> dict[str, Any]:
    """Pack the corpus and train; `tokenizer` lets an experiment share one tokenizer between its arms."""
    from fineinstructions.pretrain.loop import distributed, train
    from fineinstructions.pretrain.model import build_model, count_parameters

    if not cfg.input or not cfg.output:
        raise UserError("pretrain needs --input (a corpus) and --output DIR")
    out = Path(cfg.output)
    with distributed() as (rank, _):  # under torchrun: one process group for the whole command, left cleanly
        with rank_zero_first():  # one process trains the tokenizer and packs; the others reuse its files
            tok = tokenizer or tokenizer_for(cfg, [cfg.input], out / "tokenizer")
            data = packed_data(cfg, tok)
        model = build_model(cfg.preset, len(tok), cfg.seq_len, seed=cfg.seed, eos_id=tok.eos_token_id,
                            pad_id=tok.pad_token_id)
        options = TrainOptions(**{k: getattr(cfg, k) for k in TrainOptions.__dataclass_fields__})
        summary = train(model, tok, data.input_ids, data.labels, options, out, progress=cfg.progress)
        summary.update(parameters=count_parameters(model), data=data.stats, corpus=cfg.input)
        if rank == 0:
            atomic.write_json(out / "train_summary.json", summary, default=str)
    return summary
