"""A finished (or partly finished) run directory, read as plain rows and dicts for the report.

The report is a reader of the run layout `pipeline/runner.py` documents (`DIR/<stage>/part-*.parquet`,
`rejects/`, `summary.json`, `stage.json`); it never recomputes a stage. Every accessor tolerates a stage that did
not run or left no rows (an empty list or dict), because a report is most wanted exactly when a run went wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from fineinstructions import recipe
from fineinstructions.errors import UserError

#: the recipe's stages, in paper order (the report's row order): the one list, `recipe.STAGES`
STAGES = tuple(spec.name for spec in recipe.STAGES)
#: where a stage's kept rows are, when not in the stage folder itself
SHARDS = {"budget": "instructions"}


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        root = Path(path)
        if not root.is_dir():
            raise UserError(f"no run directory at {path}")
        run = cls(root)
        if not run.stages():
            raise UserError(f"{path} holds no stage output (expected sub-folders such as {', '.join(STAGES[:3])}, "
                            "each with a summary.json): run `fineinstructions run` or `demo` first")
        return run

    def stages(self) -> list[str]:
        """Stages that left a summary or shards: the recipe's in paper order, then any other stage folder with a
        summary.json (decontaminate, scrub, ...) by name."""
        known = [s for s in STAGES if (self.root / s / "summary.json").is_file() or self._shards(s)]
        others = sorted(p.parent.name for p in self.root.glob("*/summary.json") if p.parent.name not in STAGES)
        return known + others

    def summary(self, stage: str) -> dict:
        return _json(self.root / stage / "summary.json")

    def settings(self, stage: str) -> dict:
        return _json(self.root / stage / "stage.json")

    def json(self, relative: str) -> dict:
        """Any other JSON file of the run (e.g. a later stage's summary), {} when absent."""
        return _json(self.root / relative)

    def rows(self, stage: str, columns: list[str] | None = None, sub: str | None = None,
             limit: int | None = None) -> list[dict]:
        """Kept rows of a stage (`sub` overrides the shard folder, e.g. budget's "standard"), the first `limit`."""
        return _read(self._shards(stage, sub), columns, limit)

    def count(self, stage: str) -> int:
        """Kept rows of a stage, from the shards' metadata (no data read)."""
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self._shards(stage))

    def rejects(self, stage: str, columns: list[str] | None = None, limit: int | None = None) -> list[dict]:
        return _read(sorted((self.root / stage / "rejects").glob("*.parquet")), columns, limit)

    def _shards(self, stage: str, sub: str | None = None) -> list[Path]:
        folder = self.root / stage / (sub if sub is not None else SHARDS.get(stage, ""))
        return sorted(folder.glob("part-*.parquet"))


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); was the run killed while writing it?") from e
    return value if isinstance(value, dict) else {"items": value}


def _read(files: list[Path], columns: list[str] | None, limit: int | None = None) -> list[dict]:
    """Rows of parquet files, keeping only the requested columns each file has (a rejects file of an old run may
    lack some), so missing columns read as absent keys instead of an error. With `limit`, files after the one that
    reaches it are not opened: a report samples a large run instead of loading it."""
    rows: list[dict] = []
    for f in files:
        if limit is not None and len(rows) >= limit:
            break
        names = pq.read_schema(f).names
        wanted = [c for c in columns if c in names] if columns else None
        rows += pq.read_table(f, columns=wanted).to_pylist()
    return rows if limit is None else rows[:limit]
