"""Request-level cache: a rerun re-sends only what is missing.

Keyed by a hash of (the model's identity -- weights by content or commit, adapter, engine options; see
`identity.py` -- and the full request with its sampling params), stored in SQLite. Errors are never cached: a
failed request is retried on the next run. Every answer is stored the moment it comes back (not when its batch is
done), so a killed stage loses at most the requests that were in flight and resumes at request granularity.

Journal mode: WAL on local disks (several local worker processes share one file); SQLite's WAL needs shared
memory that network filesystems (NFS, Lustre, GPFS, CIFS, BeeGFS, CephFS) do not provide and can corrupt there, so
on those the classic rollback journal is used. On a Slurm/Ray cluster each task keeps its own cache file under
its stage's output folder (`DIR/llm_cache/rank-NNNNN.sqlite`, see `LLMStep`), so no two nodes ever write one file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fineinstructions.llm.base import Completion, LLMBackend, Request, fingerprint

#: filesystem types on which SQLite's WAL mode is unsafe (no shared memory across clients)
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph", "fuse.ceph",
                       "glusterfs", "fuse.glusterfs", "9p", "afs", "panfs", "wekafs")


def cache_home() -> Path:
    """Root of everything we cache on disk ($FINEINSTRUCTIONS_HOME, default ~/.cache/fineinstructions)."""
    return Path(os.environ.get("FINEINSTRUCTIONS_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fineinstructions"))


def default_cache_path() -> Path:
    """The request cache: a folder given by $FINEINSTRUCTIONS_CACHE, else under `cache_home()`."""
    root = os.environ.get("FINEINSTRUCTIONS_CACHE")
    return (Path(root) if root else cache_home()) / "llm_cache.sqlite"


def filesystem_type(path: str | os.PathLike) -> str | None:
    """The type of the filesystem holding `path` (longest matching mount point in /proc/mounts), or None."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            point = parts[1].replace("\\040", " ")
            if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best, kind = point, parts[2]
    return kind


def cache_key(identity: Any, request: Request) -> str:
    return fingerprint(identity, request.to_dict(), length=40)


class RequestCache:
    """A persistent dict from cache key to Completion."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fs = filesystem_type(self.path.parent) or ""
        self.journal_mode = "DELETE" if fs.lower() in NETWORK_FILESYSTEMS else "WAL"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self._db.execute(f"PRAGMA journal_mode={self.journal_mode}")
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
    """Wraps any backend; only cache misses reach the model, and each answer is stored as soon as it arrives.
    Hits come back with `cached=True`. `identity` (default: the backend's model id) is what the keys are made of."""

    def __init__(self, backend: LLMBackend, cache: RequestCache, identity: Any = None):
        self.backend, self.cache = backend, cache
        self.model_id = backend.model_id
        self.identity = identity if identity is not None else {"weights": backend.model_id}
        self.hits = self.misses = 0

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        keys = [cache_key(self.identity, r) for r in requests]
        found = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)

        def store(j: int, completion: Completion) -> None:
            self.cache.put_many({keys[missing[j]]: completion})

        fresh = self.backend.generate_each([requests[i] for i in missing], store) if missing else []
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

    def loglikelihood(self, texts: Sequence[str]) -> list[float]:
        return self.backend.loglikelihood(texts)  # not cached: a forward pass, cheaper than a cache round trip

    def close(self) -> None:
        self.backend.close()
        self.cache.close()
