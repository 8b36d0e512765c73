"""Fixtures for LLM backend tests: a real local OpenAI-compatible stub server per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ has no __init__.py; make the stub importable under any pytest import mode (prepend, append, importlib).
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from openai_stub_server import StubServer  # noqa: E402


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    try:
        yield server
    finally:
        server.stop()
