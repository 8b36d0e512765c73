"""Helpers shared by the LLM stage tests: a real stub OpenAI server with a scripted 'model', and parquet I/O."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "llm"))
from openai_stub_server import StubServer  # noqa: E402,F401

from fineinstructions.llm import LLMConfig  # noqa: E402


@contextmanager
def serving(responder: Callable[[str], str]) -> Iterator[StubServer]:
    """A real stub OpenAI server on 127.0.0.1 whose 'model' answers with `responder(last user text)`."""
    server = StubServer().start()
    server.responder = responder
    try:
        yield server
    finally:
        server.stop()


def stub_llm(stub) -> LLMConfig:
    return LLMConfig(backend="openai", base_url=stub.url, model="stub", max_retries=1, timeout=10)


def table(folder, sub="") -> list[dict]:
    return [r for p in sorted((Path(folder) / sub).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def write_shard(folder: Path, schema: pa.Schema, rows: list[dict], name: str = "part-00000.parquet",
                stage: dict | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema),
                   folder / name)
    if stage is not None:
        (folder / "stage.json").write_text(json.dumps(stage))
    return str(folder)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)
