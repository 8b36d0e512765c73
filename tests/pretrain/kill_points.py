"""Simulated kills for the atomic-write tests: `Killed` is raised at an injected point of a real save.

A BaseException, so no `except Exception` on the way up can treat it as an ordinary error; what a real kill -9
leaves on disk (half-moved folders, half-written files) is exactly what these leave, since nothing after the
injected point runs."""

from __future__ import annotations

import io
import os
import pathlib
import shutil


class Killed(BaseException):
    pass


def kill_at_move(monkeypatch, n: int, name: str = "") -> list[str]:
    """Raise Killed at the `n`-th rename, replace or tree deletion of a path whose name starts with `name` (any
    path when empty); returns the log of those operations."""
    events: list[str] = []

    def hits(*paths) -> bool:
        return any(pathlib.Path(p).name.startswith(name) for p in paths)

    def wrap(real, what):
        def move(src, *rest, **kw):
            if hits(src, *rest[:1]):
                events.append(f"{what} {pathlib.Path(src).name}")
                if len(events) == n:
                    raise Killed(f"killed at {events[-1]}")
            return real(src, *rest, **kw)
        return move

    monkeypatch.setattr(os, "replace", wrap(os.replace, "replace"))  # Path.replace and Path.rename call these
    monkeypatch.setattr(os, "rename", wrap(os.rename, "rename"))
    monkeypatch.setattr(shutil, "rmtree", wrap(shutil.rmtree, "rmtree"))
    return events


class _HalfWriter:
    """A file that writes half of the first chunk it is given, then is killed."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise Killed("killed while writing")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, attr):
        return getattr(self._f, attr)


def kill_while_writing(monkeypatch, name: str) -> None:
    """Kill the process half-way through writing any file whose name contains `name` (its temporary name too)."""
    real = io.open

    def open_(file, mode="r", *args, **kwargs):
        f = real(file, mode, *args, **kwargs)
        written = set(mode) & set("wax+")
        if written and name in os.path.basename(os.readlink(f"/proc/self/fd/{f.fileno()}")):
            return _HalfWriter(f)
        return f

    monkeypatch.setattr(io, "open", open_)
