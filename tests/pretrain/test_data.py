"""Corpus reading, loss-target encoding, packing and the packed-dataset cache, with real tokenizers."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.pretrain import data
from fineinstructions.pretrain.data import build_dataset, encode, encode_batch, pack, read_texts
from fineinstructions.pretrain.tokenizer import train_bpe

QA = "Instruction: who?\n\nAnswer: Paris."
CITIES = ["Paris", "Rome", "Lima", "Oslo", "Quito", "Hanoi", "Cairo", "Dakar"]


def qa_texts(n: int) -> list[str]:
    return [f"Instruction: What is capital number {i}?\n\nAnswer: It is {CITIES[i % len(CITIES)]}." for i in range(n)]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return train_bpe(qa_texts(300) + [QA] * 3, vocab_size=400, out_dir=tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def smol():
    from fineinstructions.llm.hf_local import load_tokenizer as load_model_tokenizer

    return load_model_tokenizer()


@pytest.fixture(params=["bpe", "smol"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


def write_parquet(path, texts, column="text"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: texts}), path)


# --- read_texts -------------------------------------------------------------------------------------------------

def test_read_parquet_folder_in_shard_order_skipping_blanks(tmp_path):
    write_parquet(tmp_path / "part-00001.parquet", ["c", None, "d"])
    write_parquet(tmp_path / "part-00000.parquet", ["a", "", "  \n", "b"])
    write_parquet(tmp_path / "stray.parquet", ["not a shard"])
    assert list(read_texts(tmp_path)) == ["a", "b", "c", "d"]
    assert list(read_texts(tmp_path, limit=3)) == ["a", "b", "c"]
    assert list(read_texts(tmp_path / "part-00001.parquet")) == ["c", "d"]


def test_read_folder_without_shards_reads_all_parquet_recursively(tmp_path):
    write_parquet(tmp_path / "b" / "x.parquet", ["second"])
    write_parquet(tmp_path / "a" / "y.parquet", ["first"])
    assert list(read_texts(tmp_path)) == ["first", "second"]


def test_read_jsonl_skipping_empty(tmp_path):
    rows = [{"text": "one"}, {"text": ""}, {"text": None}, {"text": "two", "id": 3}]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert list(read_texts(path)) == ["one", "two"]


def test_missing_column_is_a_clear_error(tmp_path):
    write_parquet(tmp_path / "part-00000.parquet", ["x"], column="body")
    with pytest.raises(ValueError, match="no column 'text'.*body"):
        read_texts(tmp_path)  # fails before iterating
    assert list(read_texts(tmp_path, text_column="body")) == ["x"]

    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"c\.jsonl:2: no 'text' field"):
        list(read_texts(path))


def test_bad_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown corpus file type '.txt'"):
        read_texts(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="no parquet files"):
        read_texts(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_texts(tmp_path / "missing")


# --- encode -----------------------------------------------------------------------------------------------------

def test_encode_all_targets_every_token_and_eos(tokenizer):
    ids, flags = encode(tokenizer, QA, loss_on="all")
    assert ids == tokenizer.encode(QA, add_special_tokens=False) + [tokenizer.eos_token_id]
    assert flags == [True] * len(ids)


def test_encode_answer_targets_exactly_the_answer_and_eos(tokenizer):
    ids, flags = encode(tokenizer, QA, loss_on="answer")
    n_prompt = flags.index(True)
    assert flags == [False] * n_prompt + [True] * (len(ids) - n_prompt)
    assert tokenizer.decode(ids[:n_prompt]) == "Instruction: who?\n\nAnswer:"
    assert tokenizer.decode(ids[n_prompt:]) == " Paris." + tokenizer.eos_token


def test_encode_answer_on_smollm2_exact_mask(smol):
    ids, flags = encode(smol, QA, loss_on="answer")
    assert smol.convert_ids_to_tokens(ids) == [
        "Instruction", ":", "Ġwho", "?", "Ċ", "Ċ", "Answer", ":", "ĠParis", ".", smol.eos_token]
    assert flags == [False] * 8 + [True] * 3


def test_encode_answer_uses_first_marker_only(bpe):
    text = "Instruction: say it\n\nAnswer: a\n\nAnswer: b"
    ids, flags = encode(bpe, text, loss_on="answer")
    assert bpe.decode([i for i, f in zip(ids, flags) if f]) == " a\n\nAnswer: b" + bpe.eos_token


def test_encode_without_marker_has_no_targets_and_is_counted(bpe):
    ids, flags = encode(bpe, "Just a document about Paris.", loss_on="answer")
    assert len(ids) > 1 and not any(flags)
    packed = pack([encode(bpe, QA, "answer"), (ids, flags)], seq_len=8, pad_id=bpe.pad_token_id)
    assert packed.stats["documents_without_targets"] == 1
    assert packed.stats["target_tokens"] == sum(encode(bpe, QA, "answer")[1])


def test_encode_batch_matches_encode_and_rejects_unknown_mode(bpe):
    texts = [QA, "no marker here", "Instruction: x\n\nAnswer: y"]
    assert encode_batch(bpe, texts, "answer") == [encode(bpe, t, "answer") for t in texts]
    with pytest.raises(ValueError, match="unknown loss_on"):
        encode(bpe, QA, loss_on="prompt")


# --- pack -------------------------------------------------------------------------------------------------------

def test_pack_hand_made_case_exactly():
    examples = [([1, 2, 3], [True, False, True]), ([4, 5], [False, False]), ([6, 7, 8, 9, 10], [True] * 5)]
    packed = pack(examples, seq_len=4, pad_id=0)
    np.testing.assert_array_equal(packed.input_ids, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]])
    np.testing.assert_array_equal(packed.labels, [[1, -100, 3, -100], [-100, 6, 7, 8], [9, 10, -100, -100]])
    assert packed.input_ids.dtype == np.int64 and packed.labels.dtype == np.int64
    assert packed.stats == {
        "documents": 3, "tokens": 10, "target_tokens": 7, "sequences": 3, "padding_tokens": 2,
        "waste": 2 / 12, "documents_without_targets": 1,
    }


def test_pack_keeps_every_token_in_order():
    rng = np.random.default_rng(0)
    examples = []
    for length in rng.integers(1, 40, size=50):  # many documents longer than a row
        ids = rng.integers(0, 5, size=length).tolist()  # ids collide with pad_id on purpose
        examples.append((ids, (rng.random(length) < 0.5).tolist()))
    packed = pack(examples, seq_len=16, pad_id=0)

    stream = [t for ids, _ in examples for t in ids]
    targets = [f for _, flags in examples for f in flags]
    n = len(stream)
    assert packed.stats["tokens"] == n and packed.stats["sequences"] == -(-n // 16)
    flat_ids, flat_labels = packed.input_ids.ravel(), packed.labels.ravel()
    assert flat_ids[:n].tolist() == stream and (flat_ids[n:] == 0).all()
    assert flat_labels[:n].tolist() == [t if f else -100 for t, f in zip(stream, targets)]
    assert (flat_labels[n:] == -100).all()
    assert packed.stats["padding_tokens"] == flat_ids.size - n


def test_pack_short_corpus_is_one_padded_row_and_empty_is_no_rows():
    packed = pack([([7, 8], [True, True]), ([9], [True])], seq_len=100, pad_id=1)
    assert packed.input_ids.shape == (1, 100) and packed.input_ids[0, :4].tolist() == [7, 8, 9, 1]
    assert packed.stats["waste"] == 97 / 100
    empty = pack([], seq_len=8, pad_id=0)
    assert empty.input_ids.shape == (0, 8) and empty.stats["waste"] == 0.0 and empty.stats["documents"] == 0


def test_pack_rejects_inconsistent_examples():
    with pytest.raises(ValueError, match="2 tokens but 1 target flags"):
        pack([([1, 2], [True])], seq_len=4, pad_id=0)
    with pytest.raises(ValueError, match="seq_len"):
        pack([([1], [True])], seq_len=0, pad_id=0)


# --- build_dataset ----------------------------------------------------------------------------------------------

def test_build_dataset_matches_encode_then_pack_across_batches(bpe, tmp_path):
    texts = qa_texts(300)  # more than one tokenizer batch
    write_parquet(tmp_path / "corpus" / "part-00000.parquet", texts)
    built = build_dataset(tmp_path / "corpus", bpe, seq_len=32, loss_on="answer")
    expected = pack([encode(bpe, t, "answer") for t in texts], 32, bpe.pad_token_id)
    np.testing.assert_array_equal(built.input_ids, expected.input_ids)
    np.testing.assert_array_equal(built.labels, expected.labels)
    assert built.stats == expected.stats and built.stats["documents"] == 300


def test_build_dataset_cache_reuse_and_invalidation(bpe, tmp_path, monkeypatch):
    write_parquet(tmp_path / "corpus" / "part-00000.parquet", qa_texts(20))
    out = tmp_path / "packed"
    first = build_dataset(tmp_path / "corpus", bpe, seq_len=16, out=out)
    files = [out / "input_ids.npy", out / "labels.npy", out / "stats.json"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    saved = json.loads((out / "stats.json").read_text())
    assert saved["stats"] == first.stats and saved["settings"]["seq_len"] == 16

    calls = []
    real_read_texts = data.read_texts
    monkeypatch.setattr(data, "read_texts", lambda *a, **kw: calls.append(a) or real_read_texts(*a, **kw))
    again = build_dataset(tmp_path / "corpus", bpe, seq_len=16, out=out)
    assert calls == [] and [f.stat().st_mtime_ns for f in files] == mtimes
    assert isinstance(again.input_ids, np.memmap)
    np.testing.assert_array_equal(again.input_ids, first.input_ids)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert again.stats == first.stats

    other = build_dataset(tmp_path / "corpus", bpe, seq_len=8, out=out)
    assert len(calls) == 1 and other.input_ids.shape[1] == 8
    assert json.loads((out / "stats.json").read_text())["settings"]["seq_len"] == 8
    build_dataset(tmp_path / "corpus", bpe, seq_len=8, loss_on="answer", out=out)
    assert len(calls) == 2


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_cache_save_killed_at_any_point_leaves_the_old_or_the_new_cache(bpe, tmp_path, monkeypatch, kill_at):
    """The cache holds `loss_on: all`; rebuilding it for `answer` is killed at its 1st, 2nd or 3rd file move. The
    token ids are the same in both, the labels and stats differ: saved file by file, new labels could sit next to
    the old stats, and the next `all` run would train on the answer-only labels without noticing. After the kill,
    runs with either setting must get exactly what packing from scratch gives."""
    from kill_points import Killed, kill_at_move

    write_parquet(tmp_path / "corpus" / "part-00000.parquet", qa_texts(20))
    out = tmp_path / "packed"
    build_dataset(tmp_path / "corpus", bpe, seq_len=16, loss_on="all", out=out)
    with monkeypatch.context() as m:
        kill_at_move(m, kill_at)
        try:
            build_dataset(tmp_path / "corpus", bpe, seq_len=16, loss_on="answer", out=out)
        except Killed:
            pass
    for loss_on in ("all", "answer"):
        cached = build_dataset(tmp_path / "corpus", bpe, seq_len=16, loss_on=loss_on, out=out)
        fresh = build_dataset(tmp_path / "corpus", bpe, seq_len=16, loss_on=loss_on)
        np.testing.assert_array_equal(cached.labels, fresh.labels)
        np.testing.assert_array_equal(cached.input_ids, fresh.input_ids)
        assert cached.stats == fresh.stats


def test_the_cache_refuses_a_folder_it_would_share(bpe, tmp_path):
    """The cache replaces its folder whole: pointed at a folder holding something else, it refuses to."""
    write_parquet(tmp_path / "corpus" / "part-00000.parquet", qa_texts(5))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="notes.txt"):
        build_dataset(tmp_path / "corpus", bpe, seq_len=16, out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_corpus_rewritten_in_place_is_packed_again(bpe, tmp_path):
    """Same path, same settings, other content (a budget stage rerun on new documents): the cache must not hand
    back the old tokens."""
    import os

    corpus = tmp_path / "corpus" / "part-00000.parquet"
    write_parquet(corpus, qa_texts(20))
    out = tmp_path / "packed"
    first = build_dataset(tmp_path / "corpus", bpe, seq_len=16, out=out)
    write_parquet(corpus, qa_texts(35))
    os.utime(corpus, ns=(corpus.stat().st_atime_ns, corpus.stat().st_mtime_ns + 1_000_000))
    second = build_dataset(tmp_path / "corpus", bpe, seq_len=16, out=out)
    assert second.stats["documents"] == 35 != first.stats["documents"]
