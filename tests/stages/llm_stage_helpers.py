"""Helpers shared by the LLM stage tests: a real stub OpenAI server with a scripted 'model', and parquet I/O."""

from __future__ import annotations

import json
import re
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


def recipe_model(text: str) -> str:
    """A scripted model for whole runs: templatize (released format: the bare query in), instantiate (released:
    a JSON object in; answers with the document's first sentence as an excerpt), judge (rubric: always 5)."""
    if text.startswith("Instruction:"):
        return "Fine.\nScore: 5"
    if text.startswith("{"):
        job = json.loads(text)
        first = job["document"].split(".")[0] + "."
        return json.dumps({"instantiated_instruction": re.sub(r"<fi>.*?</fi>", "it", job["instruction_template"]),
                           "answer": f"<excerpt>{first}</excerpt>"})
    *head, last = text.split()
    return json.dumps({"template": " ".join(head) + " <fi>a thing</fi>",
                       "compatible_document_description": f"A document that describes a {last} in detail."})
