"""Input readers: datatrove's readers, made strict about losing data.

datatrove shards input files across tasks and streams them, which is what we want. Two of its behaviours are
not: a document without text is dropped with a single warning, and a non-UTF-8 byte ends the whole file (JSONL)
or the task (CSV). Here every dropped record is counted by reason in the stage statistics, and a bad line costs
only that line. Column names are checked before any task starts, so a typo is a one-line error, not a traceback.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from datatrove.pipeline.readers import HuggingFaceDatasetReader, JsonlReader, ParquetReader
from datatrove.pipeline.readers.csv import CsvReader
from datatrove.pipeline.readers.base import BaseReader

from fineinstructions.errors import UserError

FORMATS = ("jsonl", "parquet", "csv", "hf")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}


class _CountingMixin:
    """Count records the base reader would drop silently."""

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file):
        if self.text_key not in data:
            self.stat_update("skip/missing_column")
            return None
        text = data.get(self.text_key)
        if text is None or (isinstance(text, str) and not text.strip()):
            self.stat_update("skip/empty")
            return None
        if not isinstance(text, str):
            data[self.text_key] = str(text)
        return super().get_document_from_dict(data, source_file, id_in_file)


def _decoded_lines(stream, step):
    """Yield (line number, text) for each line; undecodable lines are counted and skipped."""
    for li, raw in enumerate(stream):
        try:
            yield li, raw.decode("utf-8")
        except UnicodeDecodeError:
            step.stat_update("skip/bad_utf8")


class StrictJsonlReader(_CountingMixin, JsonlReader):
    def read_file(self, filepath: str):
        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            for li, line in _decoded_lines(f, self):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    self.stat_update("skip/bad_json")
                    continue
                if not isinstance(data, dict):
                    self.stat_update("skip/bad_json")
                    continue
                with self.track_time():
                    doc = self.get_document_from_dict(data, filepath, li)
                if doc:
                    yield doc


class StrictCsvReader(_CountingMixin, CsvReader):
    def read_file(self, filepath: str):
        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            lines = (text for _, text in _decoded_lines(f, self))
            for di, row in enumerate(csv.DictReader(lines)):
                with self.track_time():
                    doc = self.get_document_from_dict(row, filepath, di)
                if doc:
                    yield doc


class StrictParquetReader(_CountingMixin, ParquetReader):
    pass


class StrictHFReader(_CountingMixin, HuggingFaceDatasetReader):
    pass


def detect_format(path: str, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise UserError(f"unknown input format {fmt!r}: choose one of {', '.join(FORMATS)}")
        return fmt
    p = Path(path)
    if p.is_file():
        suffixes = [s for s in p.suffixes if s not in (".gz", ".zst")]
        if suffixes and suffixes[-1] in _SUFFIXES:
            return _SUFFIXES[suffixes[-1]]
        raise UserError(f"cannot tell the format of {path}: pass --format {'|'.join(FORMATS)}")
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.suffix in _SUFFIXES:
                return _SUFFIXES[f.suffix]
        raise UserError(f"no .jsonl/.parquet/.csv files in directory {path}")
    if "/" in path and not path.startswith((".", "/", "~")) and not p.parent.exists():
        return "hf"  # looks like owner/name: a Hugging Face dataset
    raise UserError(f"input not found: {path} (give a file, a directory of shards, or a Hugging Face dataset name)")


def make_reader(
    path: str,
    text_column: str,
    id_column: str | None = "id",
    fmt: str | None = None,
    limit: int = -1,
    hf_split: str = "train",
) -> BaseReader:
    """A datatrove reader for a file, a folder of shards or an HF dataset; `text_column` becomes `doc.text`."""
    fmt = detect_format(path, fmt)
    kwargs = dict(text_key=text_column, id_key=id_column or "id", limit=limit)
    if fmt == "hf":
        return StrictHFReader(path, dataset_options={"split": hf_split}, **kwargs)
    p = Path(path)
    folder, glob = (str(p.parent), p.name) if p.is_file() else (str(p), f"**/*.{ 'jsonl' if fmt == 'jsonl' else fmt}*")
    cls = {"jsonl": StrictJsonlReader, "csv": StrictCsvReader, "parquet": StrictParquetReader}[fmt]
    return cls(folder, glob_pattern=glob, recursive=p.is_dir(), **kwargs)


def peek_columns(path: str, fmt: str | None = None) -> list[str]:
    """Column names of the first record of a local input (empty list when unknown, e.g. HF datasets)."""
    fmt = detect_format(path, fmt)
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob(f"*.{fmt}*") if f.is_file()) if p.is_dir() else []
    for f in files:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_schema(f).names
        with f.open("rb") as fh:
            for raw in fh:
                text = raw.decode("utf-8", errors="replace")
                if not text.strip():
                    continue
                if fmt == "csv":
                    return next(csv.reader(io.StringIO(text)))
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    return list(obj)
    return []


def check_columns(path: str, columns: dict[str, str | None], fmt: str | None = None) -> None:
    """Fail fast with the available column names when a requested column does not exist."""
    available = peek_columns(path, fmt)
    if not available:
        if detect_format(path, fmt) != "hf":
            raise UserError(f"input {path} is empty: no records to read")
        return
    for flag, col in columns.items():
        if col and col not in available:
            raise UserError(f"column {col!r} (--{flag}) not found in {path}; available columns: {', '.join(available)}")
