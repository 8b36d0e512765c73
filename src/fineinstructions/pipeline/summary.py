"""The one-screen summary at the end of a stage, built from datatrove's per-task stats files.

Reading the per-task files (not the executor's in-memory merge) means a resumed run still reports the whole
stage, including tasks finished by an earlier, killed run.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path


def _total(value) -> float:
    return value.get("total", 0) if isinstance(value, dict) else float(value or 0)


@dataclass
class StageSummary:
    stage: str
    output: str
    rows_in: int = 0
    rows_out: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    skips: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    llm: dict[str, int] = field(default_factory=dict)
    #: histograms a stage records as `dist/<name>/<bucket>` stats (judge scores, grounding)
    distributions: dict[str, dict[str, int]] = field(default_factory=dict)
    #: seconds of task time by what it was spent on (`time/<what>_ms` stats: e.g. llm_load, llm_generate)
    timings: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0
    process_time: float = 0.0
    shards: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        rate = self.rows_in / self.wall_time if self.wall_time > 0 else 0.0
        share = f" ({100 * self.rows_out / self.rows_in:.1f} %)" if self.rows_in else ""
        lines = [
            f"── {self.stage} " + "─" * max(0, 60 - len(self.stage)),
            f"  rows in      {self.rows_in:,}",
            f"  rows out     {self.rows_out:,}{share}",
        ]
        for title, counts in (("rejects", self.rejects), ("skipped", self.skips)):
            if counts:
                detail = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
                lines.append(f"  {title:<12} {sum(counts.values()):,}: {detail}")
        if self.llm:
            lines.append("  llm requests " + " · ".join(f"{k} {v:,}" for k, v in sorted(self.llm.items())))
        if self.tokens:
            lines.append("  tokens       " + " · ".join(f"{k} {v:,}" for k, v in sorted(self.tokens.items())))
        for name, hist in sorted(self.distributions.items()):
            lines.append(f"  {name:<12} " + " · ".join(f"{k}: {v:,}" for k, v in sorted(hist.items())))
        lines.append(
            f"  wall time    {self.wall_time:,.1f} s this run · {self.process_time:,.1f} s of task time · {rate:,.2f} rows/s"
        )
        if self.timings:
            lines.append("  task time    " + " · ".join(f"{k} {v:,.1f} s" for k, v in sorted(self.timings.items())))
        lines.append(f"  output       {self.output} ({self.shards} shard{'s' if self.shards != 1 else ''}; rejects in rejects/)")
        return "\n".join(lines)


def collect_summary(stage: str, out: Path, wall_time: float, shards_dir: Path | None = None) -> StageSummary:
    """Totals of every task's stats files under `out/logs/`; output rows counted in `shards_dir` (default `out`)."""
    shards_dir = shards_dir or out
    counts: Counter = Counter()
    process_time = 0.0
    phases = sorted((out / "logs").glob("*/stats/*.json"))
    map_files = [p for p in phases if p.parts[-3] == "map"]
    for path in phases:
        for block in json.loads(path.read_text()):
            for label, value in block.get("stats", {}).items():
                if label.startswith(("reject/", "skip/", "tokens/", "llm/", "dist/", "time/")) or (path in map_files and label == "rows_in"):
                    counts[label] += int(_total(value))
            process_time += block.get("time_stats", {}).get("total", 0.0) if isinstance(block.get("time_stats"), dict) else 0.0
    summary = StageSummary(
        stage=stage,
        output=str(shards_dir),
        rows_in=counts.pop("rows_in", 0),
        wall_time=wall_time,
        process_time=process_time,
        shards=len(list(shards_dir.glob("part-*.parquet"))),
    )
    for label, value in counts.items():
        kind, _, reason = label.partition("/")
        if kind == "time":
            summary.timings[reason.removesuffix("_ms")] = value / 1000
            continue
        if kind == "dist":
            name, _, bucket = reason.partition("/")
            summary.distributions.setdefault(name, {})[bucket] = value
            continue
        {"reject": summary.rejects, "skip": summary.skips, "tokens": summary.tokens, "llm": summary.llm}[kind][reason] = value
    summary.rows_out = _count_rows(shards_dir)
    return summary


def _count_rows(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("part-*.parquet"))


def render_run(summaries: list[StageSummary], wall_time: float) -> str:
    """The end-of-run recap: one line per stage (rows, top reject reasons, wall time), the distributions and the
    two corpora's token totals, and where everything is."""
    lines = ["", "══ run summary " + "═" * 62,
             f"  {'stage':<12} {'in':>8} {'out':>8} {'time s':>8}  rejects (top reasons)"]
    for s in summaries:
        top = ", ".join(f"{k} {v:,}" for k, v in sorted(s.rejects.items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"  {s.stage:<12} {s.rows_in:>8,} {s.rows_out:>8,} {s.wall_time:>8.1f}  {top}")
    for s in summaries:
        for name, hist in sorted(s.distributions.items()):
            lines.append(f"  {name + ' (' + s.stage + ')':<22} " + " · ".join(f"{k}: {v}" for k, v in sorted(hist.items())))
    for s in summaries:
        if "standard" in s.tokens:
            std, ins = s.tokens["standard"], s.tokens.get("instructions", 0)
            lines.append(f"  tokens       standard corpus {std:,} · instruction corpus {ins:,}"
                         f" ({100 * ins / std if std else 0:.1f} % of the budget used)")
    lines.append(f"  wall time    {wall_time:,.1f} s")
    lines += [f"  {s.stage:<12} {s.output}" for s in summaries]
    return "\n".join(lines)
