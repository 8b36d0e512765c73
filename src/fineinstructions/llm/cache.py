"""Request-level cache: a rerun re-sends only what is missing.

Keyed by a hash of (model id + revision, the full request, sampling params), stored in SQLite (WAL mode, so
several local worker processes can share one file). Errors are never cached: a failed request is retried on the
next run. A killed stage therefore resumes at request granularity, not shard granularity.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from fineinstructions.llm.base import Completion, LLMBackend, Request, fingerprint


def cache_home() -> Path:
    """Root of everything we cache on disk ($FINEINSTRUCTIONS_HOME, default ~/.cache/fineinstructions)."""
    return Path(os.environ.get("FINEINSTRUCTIONS_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fineinstructions"))


def default_cache_path() -> Path:
    """The request cache: a folder given by $FINEINSTRUCTIONS_CACHE, else under `cache_home()`."""
    root = os.environ.get("FINEINSTRUCTIONS_CACHE")
    return (Path(root) if root else cache_home()) / "llm_cache.sqlite"


def cache_key(model_id: str, request: Request) -> str:
    return fingerprint(model_id, request.to_dict(), length=40)


class RequestCache:
    """A persistent dict from cache key to Completion."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(f"SELECT key, value FROM completions WHERE key IN ({marks})", chunk):
                    found[key] = Completion.from_dict(json.loads(value))
        return found

    def put_many(self, items: dict[str, Completion]) -> None:
        rows = [(k, json.dumps(c.to_dict(), ensure_ascii=False)) for k, c in items.items() if c.ok]
        if not rows:
            return
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO completions (key, value) VALUES (?, ?)", rows)
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedBackend(LLMBackend):
    """Wraps any backend; only cache misses reach the model. Hits come back with `cached=True`."""

    def __init__(self, backend: LLMBackend, cache: RequestCache):
        self.backend, self.cache = backend, cache
        self.model_id = backend.model_id
        self.hits = self.misses = 0

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        keys = [cache_key(self.model_id, r) for r in requests]
        found = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)
        fresh = self.backend.generate([requests[i] for i in missing]) if missing else []
        self.cache.put_many({keys[i]: c for i, c in zip(missing, fresh)})
        out: list[Completion] = []
        fresh_iter = iter(fresh)
        for k in keys:
            if k in found:
                c = found[k]
                c.cached = True
                out.append(c)
            else:
                out.append(next(fresh_iter))
        return out

    def close(self) -> None:
        self.backend.close()
        self.cache.close()
