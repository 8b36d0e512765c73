"""Tokenizers for pre-training from scratch: train a byte-level BPE on a corpus, or load an existing one.

Byte-level BPE never needs an unknown token (every string is bytes), so any text round-trips exactly. A tokenizer
is returned and saved in the Hugging Face format, so the trained models and their tokenizer load anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers takes seconds to import: only the functions that need it load it
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
MIN_VOCAB = 300  # 256 byte symbols + the specials + at least a few merges


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of at most `vocab_size` entries on `texts`, save it to `out_dir` and return it.

    No prefix space is added, so decode(encode(x)) == x; `min_frequency=2` keeps one-off strings out of the vocab.
    There is no BOS: documents are separated by EOS alone, as in GPT-2-style packing.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB} (256 bytes + special tokens), got {vocab_size}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS,
        pad_token=PAD,
        bos_token=None,
        clean_up_tokenization_spaces=False,  # the "cleanup" rewrites " ." to "." and breaks exact round trips
        name_or_path=str(out_dir),  # so caches keyed on the tokenizer name tell two trained vocabularies apart
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """A hub name or tokenizer directory, guaranteed to have an EOS (the document separator) and a pad token.

    The pad token falls back to EOS: padding positions are masked out of the loss anyway, so any id will do.
    """
    from huggingface_hub.errors import HFValidationError
    from transformers import AutoTokenizer

    path = Path(name_or_path).expanduser()
    if not path.is_dir() and (path.exists() or name_or_path.startswith((".", "/", "~"))):
        raise FileNotFoundError(f"tokenizer directory not found: {name_or_path} (give a hub name or a directory)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path) if path.is_dir() else name_or_path)
    except (OSError, HFValidationError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(f"could not load tokenizer {name_or_path!r}: {first}") from e
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"tokenizer {name_or_path!r} has no EOS token: pre-training needs one to separate packed documents"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
