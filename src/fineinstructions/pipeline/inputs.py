"""Input fingerprints: a stage remembers what it read, so a rerun on changed input is never a silent no-op.

Completion markers say "task r finished", not "task r finished *on this input*". Each stage therefore records, in
`stage.json` next to its settings, a fingerprint of every path it reads: for an earlier stage's output folder, that
stage's own `stage.json` (its settings and, recursively, its inputs) plus the names, sizes and modification times
of its output files; for raw input (query or document files, a tokenizer folder) the same file list. A rerun whose
inputs changed refuses with one line naming the stage that wrote them, or -- with `--overwrite` -- starts over.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from fineinstructions.llm.base import fingerprint

#: parts of a stage folder that are not its output: logs and markers, side outputs no later stage reads, caches
_SKIP_DIRS = {"logs", "rejects", "_map", "llm_cache"}
_SKIP_FILES = {"stage.json", "summary.json"}
#: config fields that name paths but are not inputs (the prompt format's content is fingerprinted on its own)
_NOT_INPUTS = {"output", "prompt_format"}


def _files(root: Path) -> list[tuple[str, int, int]]:
    if root.is_file():
        st = root.stat()
        return [(root.name, st.st_size, st.st_mtime_ns)]
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(names):
            if name in _SKIP_FILES or name.startswith(".") or name.endswith(".tmp"):
                continue
            path = Path(folder) / name
            st = path.stat()
            found.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return found


def _local(value: str) -> Path | None:
    """The existing local path `value` names, or None (a hub name, free text such as a rubric, a missing file)."""
    if "\n" in value or len(value) > 4096:
        return None
    try:
        p = Path(value).expanduser()
        return p if p.exists() else None
    except OSError:  # e.g. a name longer than the filesystem allows: not a path
        return None


def path_fingerprint(path: str) -> dict[str, Any] | None:
    """{stage, digest} of a local path (None when it is not one, e.g. a Hugging Face dataset name)."""
    p = _local(path)
    if p is None:
        return None
    marker = p / "stage.json" if p.is_dir() else None
    stage = json.loads(marker.read_text()) if marker is not None and marker.is_file() else None
    return {"stage": stage.get("stage") if isinstance(stage, dict) else None,
            "digest": fingerprint(stage, _files(p), length=20)}


def input_fingerprints(opts) -> dict[str, dict[str, Any]]:
    """Fingerprints of every top-level config field whose value is an existing local path, except the output."""
    out = {}
    for f in fields(opts):
        value = getattr(opts, f.name)
        if f.name in _NOT_INPUTS or not isinstance(value, str) or not value:
            continue
        if (fp := path_fingerprint(value)) is not None:
            out[f.name] = {"path": value, **fp}
    return out


def unfinished_input(opts) -> tuple[str, str, str] | None:
    """(field, path, stage) of an input that is an earlier stage's output which never finished (a stage folder
    with its logs but no summary: killed, or still running), else None."""
    for f in fields(opts):
        value = getattr(opts, f.name)
        if f.name in _NOT_INPUTS or not isinstance(value, str) or not value:
            continue
        p = _local(value)
        marker = p / "stage.json" if p is not None else None
        if p is not None and p.is_dir() and marker.is_file() and (p / "logs").is_dir() and not (p / "summary.json").is_file():
            return f.name, value, json.loads(marker.read_text()).get("stage", "an earlier")
    return None


def changed_inputs(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One phrase per input whose fingerprint differs: 'input (match output runs/x/match)'."""
    phrases = []
    for name in sorted(set(previous) | set(current)):
        before, now = previous.get(name), current.get(name)
        if (before or {}).get("digest") != (now or {}).get("digest"):
            where = (now or before or {})
            what = f"{where['stage']} output" if where.get("stage") else "file"
            phrases.append(f"--{name.replace('_', '-')} ({what} {where.get('path')})")
    return phrases
