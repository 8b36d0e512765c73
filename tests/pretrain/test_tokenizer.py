"""Byte-level BPE training and tokenizer loading, with real (small) tokenizers trained in the test."""

from __future__ import annotations

import itertools

import pytest
from transformers import PreTrainedTokenizerFast

from fineinstructions.pretrain.tokenizer import EOS, PAD, load_tokenizer, train_bpe

SUBJECTS = ["The cat", "A small dog", "My neighbour", "The café owner", "Zoë", "The old sailor"]
VERBS = ["eats", "watches", "paints", "remembers", "carries"]
OBJECTS = ["an apple", "the river 🌊", "a crème brûlée", "the red door", "twelve stones", "the moon 🌙"]


def sentences() -> list[str]:
    """180 varied sentences: enough repeats for merges, with accents and emoji so multi-byte symbols are merged."""
    return [f"{s} {v} {o} on day {i}." for i, (s, v, o) in enumerate(itertools.product(SUBJECTS, VERBS, OBJECTS))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe")
    return out, train_bpe(sentences(), vocab_size=400, out_dir=out)


@pytest.mark.parametrize("text", [
    "The cat eats an apple.",
    "  leading spaces, trailing tab\t and\nnew lines\n\n",
    "Zoë mange une crème brûlée à Paris — déjà vu?",
    "emoji 🌊🌙👍🏽 and CJK 你好 and Ω≈ç√",
    "Instruction: who?\n\nAnswer: Paris.",
])
def test_round_trip_after_reload(trained, text):
    out, tokenizer = trained
    reloaded = load_tokenizer(str(out))
    ids = reloaded.encode(text, add_special_tokens=False)
    assert reloaded.decode(ids) == text
    assert ids == tokenizer.encode(text, add_special_tokens=False)


def test_trained_vocab_and_special_tokens(trained):
    out, tokenizer = trained
    reloaded = load_tokenizer(str(out))
    assert (out / "tokenizer.json").is_file()
    assert 256 + 2 < len(reloaded) <= 400
    assert reloaded.eos_token == EOS and reloaded.pad_token == PAD
    assert reloaded.eos_token_id is not None and reloaded.pad_token_id is not None
    assert reloaded.eos_token_id != reloaded.pad_token_id
    assert reloaded.bos_token is None
    # merges were learned: a frequent word is one token, not one per byte
    assert len(reloaded.encode(" apple", add_special_tokens=False)) < len(" apple")
    assert tokenizer.name_or_path == str(out)


def test_small_vocab_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="at least 300"):
        train_bpe(sentences(), vocab_size=299, out_dir=tmp_path)


def _save_variant(trained, tmp_path, **special) -> str:
    """The trained vocabulary saved with other special tokens, to test what load_tokenizer guarantees."""
    _, tokenizer = trained
    variant = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, **special)
    variant.save_pretrained(str(tmp_path))
    return str(tmp_path)


def test_pad_falls_back_to_eos(trained, tmp_path):
    tokenizer = load_tokenizer(_save_variant(trained, tmp_path, eos_token=EOS))
    assert tokenizer.pad_token == EOS and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_missing_eos_is_an_error(trained, tmp_path):
    with pytest.raises(ValueError, match="no EOS token"):
        load_tokenizer(_save_variant(trained, tmp_path, pad_token=PAD))


@pytest.mark.parametrize("name", ["./no/such/dir", "no-such-org-xyz/no-such-tokenizer"])
def test_unloadable_tokenizer_is_file_not_found(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such|not found") as err:
        load_tokenizer(name)
    assert "\n" not in str(err.value)
