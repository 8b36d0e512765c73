"""Atomic file and directory replacement: a kill at any point leaves either the old state or the new one.

Everything a later run trusts -- settings markers (`stage.json`), summaries, the packed pre-training data, model
checkpoints, the template index -- is written under a temporary name and renamed into place. A rename is atomic on
POSIX filesystems, so readers never see half a file. A directory cannot be swapped in one rename, so
`replace_dir` moves the old one aside first (`NAME.old`), renames the new one in, then deletes the old one;
`settle_dir` (called by `replace_dir` and by readers) finishes or rolls back a swap a kill interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask can only be read by setting it


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """`with replacing(path) as tmp:` write the file `tmp` any way you like (pyarrow, faiss, numpy); on a clean
    exit it is renamed to `path` in one step, on an exception it is deleted and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it private (0600); the result gets a normal file's mode
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **kwargs) -> None:
    write_text(path, json.dumps(obj, **{"indent": 2, **kwargs}))


def _old(dest: Path) -> Path:
    return dest.with_name(dest.name + ".old")


def settle_dir(dest: str | os.PathLike, keep: Path | None = None) -> Path:
    """Finish a directory swap that a kill interrupted: if only `NAME.old` is there, it is the valid state (the
    new one never arrived) and goes back; if both are there, the swap completed and `NAME.old` is deleted. Staging
    folders a kill left behind (`.NAME.*.tmp`, except `keep`) are deleted."""
    dest = Path(dest)
    old = _old(dest)
    if old.exists():
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, dest)
    for stale in dest.parent.glob(f".{dest.name}.*.tmp") if dest.parent.is_dir() else ():
        if stale != keep:  # a staging folder a kill left behind (can be checkpoint-sized)
            shutil.rmtree(stale, ignore_errors=True)
    return dest


def replace_dir(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Make the complete directory `src` become `dest`, replacing whatever `dest` was, so that at every instant
    either the old `dest` or the new one is readable (through `settle_dir`)."""
    src, dest = Path(src), Path(dest)
    settle_dir(dest, keep=src)
    if dest.exists():
        os.replace(dest, _old(dest))
    os.replace(src, dest)
    _fsync_dir(dest.parent)
    shutil.rmtree(_old(dest), ignore_errors=True)


@contextmanager
def staged_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """`with staged_dir(dest) as tmp:` fill `tmp`; on a clean exit it replaces `dest` (see `replace_dir`), on an
    exception it is deleted and `dest` is untouched."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes it private (0700)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, dest)
