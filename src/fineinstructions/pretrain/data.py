"""Pre-training data: read a corpus, tokenize it with per-token loss targets, pack it into fixed-length rows.

The two arms of the paper's comparison (standard documents vs `Instruction: …\\n\\nAnswer: …` pairs) go through the
same path, so they differ only in text and, optionally, in which tokens count towards the loss (`loss_on`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fineinstructions import atomic
from fineinstructions.llm.identity import content_digest
from fineinstructions.pipeline.inputs import path_fingerprint

LOSS_ON = ("all", "answer")
ANSWER_MARKER = "\n\nAnswer:"
IGNORE = -100  # the label Hugging Face causal LMs leave out of the loss
ENCODE_BATCH = 256  # texts per tokenizer call: the Rust tokenizer is much faster on batches than on single texts
CACHE_VERSION = 1  # bump when the packed layout changes, so old caches are rebuilt rather than misread


def read_texts(path: str | Path, text_column: str = "text", limit: int | None = None) -> Iterator[str]:
    """The non-blank texts of a parquet file, a folder of parquet shards, or a .jsonl file, in order.

    A folder means its `part-*.parquet` shards (sorted, as the pipeline writes them), or every `*.parquet` below it
    when there are none. Files and columns are checked before the first text is read, so a typo fails at once.
    """
    files = _corpus_files(Path(path))
    if files[0].suffix == ".parquet":
        for file in files:
            _check_parquet_column(file, text_column)
        texts = itertools.chain.from_iterable(_parquet_texts(f, text_column) for f in files)
    else:
        texts = _jsonl_texts(files[0], text_column)
    return itertools.islice((t for t in texts if _is_text(t)), limit)


def _corpus_files(path: Path) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(f"corpus not found: {path}")
    if path.is_dir():
        files = sorted(path.glob("part-*.parquet")) or sorted(path.rglob("*.parquet"))
        if not files:
            raise ValueError(f"no parquet files in {path} (expected part-*.parquet shards)")
        return files
    if path.suffix in (".parquet", ".jsonl"):
        return [path]
    kind = path.suffix or "(no suffix)"
    raise ValueError(f"unknown corpus file type {kind!r} for {path}: use .parquet, .jsonl or a folder")


def _check_parquet_column(file: Path, column: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(file)
    if column not in schema.names:
        raise ValueError(f"{file} has no column {column!r} (columns: {', '.join(schema.names)})")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise ValueError(f"column {column!r} of {file} holds {kind}, not text")


def _parquet_texts(file: Path, column: str) -> Iterator[str | None]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(file).iter_batches(batch_size=1024, columns=[column]):
        yield from batch.column(0).to_pylist()


def _jsonl_texts(file: Path, field: str) -> Iterator[str | None]:
    with file.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or field not in record:
                raise ValueError(f"{file}:{lineno}: no {field!r} field")
            text = record[field]
            if text is not None and not isinstance(text, str):
                raise ValueError(f"{file}:{lineno}: {field!r} is {type(text).__name__}, not text")
            yield text


def _is_text(text: str | None) -> bool:
    """Blank texts are skipped: they would add a lone EOS and nothing to learn from."""
    return text is not None and bool(text.strip())


def encode(tokenizer, text: str, loss_on: str = "all",
           answer_marker: str = ANSWER_MARKER) -> tuple[list[int], list[bool]]:
    """Token ids of `text` followed by EOS, and for each token whether it is a loss target.

    `all`: every token, EOS included (plain language modelling). `answer`: only the tokens that start at or after
    the end of the first `answer_marker`, plus the EOS, so the model learns to answer, not to ask; a text without
    the marker has no targets at all (`pack` counts such texts in `documents_without_targets`).
    """
    return encode_batch(tokenizer, [text], loss_on, answer_marker)[0]


def encode_batch(tokenizer, texts: Sequence[str], loss_on: str = "all",
                 answer_marker: str = ANSWER_MARKER) -> list[tuple[list[int], list[bool]]]:
    """`encode` for many texts in one tokenizer call (the fast path `build_dataset` uses)."""
    _check_loss_on(loss_on)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: it is needed to separate packed documents")
    answer_only = loss_on == "answer"
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=answer_only)
    examples = []
    for i, (text, ids) in enumerate(zip(texts, enc["input_ids"])):
        if answer_only:
            flags = _answer_flags(text, enc["offset_mapping"][i], answer_marker)
        else:
            flags = [True] * (len(ids) + 1)
        examples.append(([*ids, eos], flags))
    return examples


def _answer_flags(text: str, offsets: Sequence[tuple[int, int]], marker: str) -> list[bool]:
    """Targets by character offsets, so the answer is found whatever the marker's tokenization looks like."""
    at = text.find(marker)
    if at < 0:
        return [False] * (len(offsets) + 1)
    end = at + len(marker)
    return [start >= end for start, _ in offsets] + [True]


def _check_loss_on(loss_on: str) -> None:
    if loss_on not in LOSS_ON:
        raise ValueError(f"unknown loss_on {loss_on!r}: choose one of {', '.join(LOSS_ON)}")


@dataclass
class Packed:
    """Fixed-length training rows. `labels` hold the token itself where it is a loss target and -100 elsewhere
    (non-targets and padding); they are not shifted, because Hugging Face causal LMs shift them internally."""

    input_ids: np.ndarray  # [n_seq, seq_len] int64
    labels: np.ndarray  # [n_seq, seq_len] int64
    stats: dict


def pack(examples: Iterable[tuple[list[int], list[bool]]], seq_len: int, pad_id: int) -> Packed:
    """Concatenate the examples (each ending in EOS) into one stream and cut it into rows of `seq_len` tokens.

    Every token is kept: a document longer than a row continues in the next one, and only the last row is padded.
    This is standard packing: within a row, a document can attend to the documents before it (EOS marks the
    boundary), which wastes no compute on padding and is what the paper's Lingua setup does too.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    id_parts, flag_parts = [], []
    for ids, flags in examples:
        if len(ids) != len(flags):
            raise ValueError(f"an example has {len(ids)} tokens but {len(flags)} target flags")
        id_parts.append(np.asarray(ids, dtype=np.int64))  # arrays, not lists: 8 bytes a token instead of ~36
        flag_parts.append(np.asarray(flags, dtype=bool))
    stream = np.concatenate(id_parts) if id_parts else np.empty(0, np.int64)
    targets = np.concatenate(flag_parts) if flag_parts else np.empty(0, bool)

    n_tokens = stream.size
    n_seq = -(-n_tokens // seq_len)
    input_ids = np.full(n_seq * seq_len, pad_id, dtype=np.int64)
    labels = np.full(n_seq * seq_len, IGNORE, dtype=np.int64)
    input_ids[:n_tokens] = stream
    labels[:n_tokens] = np.where(targets, stream, IGNORE)

    padding = n_seq * seq_len - n_tokens
    stats = {
        "documents": len(id_parts),
        "tokens": int(n_tokens),
        "target_tokens": int(targets.sum()),
        "sequences": int(n_seq),
        "padding_tokens": int(padding),
        "waste": padding / (n_seq * seq_len) if n_seq else 0.0,
        "documents_without_targets": _count_without_targets(flag_parts, targets),
    }
    return Packed(input_ids.reshape(n_seq, seq_len), labels.reshape(n_seq, seq_len), stats)


def _count_without_targets(flag_parts: list[np.ndarray], targets: np.ndarray) -> int:
    """Per-document target counts from one cumulative sum, instead of a pass over each document's flags."""
    lengths = np.array([part.size for part in flag_parts], dtype=np.int64)
    ends = np.cumsum(lengths)
    running = np.concatenate([[0], np.cumsum(targets, dtype=np.int64)])
    per_doc = running[ends] - running[ends - lengths]
    return int((per_doc == 0).sum())


def build_dataset(path: str | Path, tokenizer, seq_len: int, loss_on: str = "all", text_column: str = "text",
                  limit: int | None = None, out: Path | None = None) -> Packed:
    """Read, encode and pack a corpus; with `out`, save the result there and reuse it on the next identical call.

    The cache is keyed on every setting that changes the packed tokens (corpus path, seq_len, loss_on, column,
    limit, tokenizer name and vocabulary size) and on fingerprints of the corpus files (names, sizes, mtimes) and
    of a local tokenizer's files (content), so a corpus rewritten in place or a retrained tokenizer rebuilds it.
    A cache hit is memory-mapped, so it costs no RAM up front.
    """
    _check_loss_on(loss_on)
    settings = _settings(path, tokenizer, seq_len, loss_on, text_column, limit)
    if out is not None:
        cached = _load_cached(Path(out), settings)
        if cached is not None:
            return cached
    texts = read_texts(path, text_column, limit)
    batches = iter(lambda: list(itertools.islice(texts, ENCODE_BATCH)), [])
    examples = itertools.chain.from_iterable(encode_batch(tokenizer, batch, loss_on) for batch in batches)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    packed = pack(examples, seq_len, pad_id)
    if out is not None:
        _save(Path(out), packed, settings)
    return packed


def _settings(path, tokenizer, seq_len: int, loss_on: str, text_column: str, limit: int | None) -> dict:
    return {
        "version": CACHE_VERSION,
        "path": str(Path(path).resolve()),
        "seq_len": seq_len,
        "loss_on": loss_on,
        "answer_marker": ANSWER_MARKER,
        "text_column": text_column,
        "limit": limit,
        "tokenizer": tokenizer.name_or_path,
        "vocab_size": len(tokenizer),
        # what the files hold, not only their names: a corpus rewritten in place (a rerun budget stage) or a
        # tokenizer retrained into the same folder must not reuse the old packed tokens
        "corpus_fingerprint": (path_fingerprint(str(path)) or {}).get("digest"),
        "tokenizer_fingerprint": content_digest(tokenizer.name_or_path) if Path(tokenizer.name_or_path).is_dir()
        else None,
    }


def _load_cached(out: Path, settings: dict) -> Packed | None:
    atomic.settle_dir(out)  # a save a kill interrupted: back to the previous cache, or on to the new one
    try:
        saved = json.loads((out / "stats.json").read_text(encoding="utf-8"))
        if saved.get("settings") != settings:
            return None
        input_ids = np.load(out / "input_ids.npy", mmap_mode="r")
        labels = np.load(out / "labels.npy", mmap_mode="r")
    except (OSError, ValueError):  # missing, truncated or foreign files: rebuild
        return None
    if input_ids.shape != labels.shape or input_ids.shape[0] != saved["stats"]["sequences"]:
        return None
    return Packed(input_ids, labels, saved["stats"])


CACHE_FILES = ("input_ids.npy", "labels.npy", "stats.json")


def _check_own_folder(out: Path) -> None:
    """The cache replaces its folder whole, so it must not share it with anything else (a mistyped `data_dir`);
    temporary files an interrupted save left (`.NAME.tmp`) are its own."""
    if not out.is_dir():
        return
    others = sorted(p.name for p in out.iterdir()
                    if p.name not in CACHE_FILES and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if others:
        raise ValueError(f"the packed-data folder {out} holds other files ({', '.join(others[:3])}): "
                         f"give the cache a folder of its own")


def _save(out: Path, packed: Packed, settings: dict) -> None:
    """The arrays and their stats are written together into a fresh folder that then replaces `out` whole
    (`atomic.staged_dir`): saved file by file, a kill could leave new token arrays next to old stats, a cache that
    looks valid for the old settings but holds the new data."""
    _check_own_folder(out)
    with atomic.staged_dir(out) as tmp:
        np.save(tmp / "input_ids.npy", packed.input_ids)
        np.save(tmp / "labels.npy", packed.labels)
        (tmp / "stats.json").write_text(json.dumps({"settings": settings, "stats": packed.stats}, indent=2),
                                        encoding="utf-8")
