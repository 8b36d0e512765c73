"""Fault tests reuse the stage helpers (stub LLM server, parquet I/O): make them importable from here."""

from __future__ import annotations

import sys
from pathlib import Path

for folder in ("stages", "llm"):
    path = str(Path(__file__).resolve().parents[1] / folder)
    if path not in sys.path:
        sys.path.insert(0, path)
