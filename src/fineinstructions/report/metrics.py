"""The numbers behind each figure of the report, computed from a run directory as plain Python values.

Kept apart from the plotting so that every number a figure shows is tested directly, and so that an empty stage
gives an empty value (the page then says why) rather than a figure with nothing in it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fineinstructions.report.data import RunDir

#: the paper's fit of distinct templates used against documents processed (FineInstructions, §5)
PAPER_POWER_LAW = (16_891.0, 0.24)


#: what a row is on the way in and out of each stage (they differ where a stage changes the unit)
UNITS = {"queries": ("queries", "queries"), "templatize": ("queries", "templates"),
         "index": ("templates", "templates"), "match": ("documents", "matches"),
         "instantiate": ("matches", "pairs"), "judge": ("pairs", "pairs"), "budget": ("pairs", "pairs")}


@dataclass(frozen=True)
class StageRow:
    stage: str
    rows_in: int
    rows_out: int
    rejects: dict[str, int]
    skips: dict[str, int]
    wall_time: float

    @property
    def units(self) -> tuple[str, str]:
        return UNITS.get(self.stage, ("rows", "rows"))

    @property
    def kept_share(self) -> float | None:
        """rows out / rows in, only where both count the same thing"""
        same = self.units[0] == self.units[1]
        return self.rows_out / self.rows_in if same and self.rows_in else None


def stage_rows(run: RunDir) -> list[StageRow]:
    """Rows in/out and rejects by reason per stage, from each stage's summary.json (counted from the shards when a
    summary is missing, e.g. a stage still running)."""
    out = []
    for stage in run.stages():
        s = run.summary(stage)
        if not s:
            rejects = Counter(r.get("reason") or "unknown" for r in run.rejects(stage, ["reason"]))
            s = {"rows_out": run.count(stage), "rejects": dict(rejects)}
        out.append(StageRow(stage, int(s.get("rows_in", 0)), int(s.get("rows_out", 0)), dict(s.get("rejects", {})),
                            dict(s.get("skips", {})), float(s.get("wall_time", 0.0))))
    return out


def share(counts: Counter | dict) -> dict:
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())} if total else {}


@dataclass(frozen=True)
class SlotDistributions:
    target: dict[int, float]
    target_source: str  # where the target came from, in words
    drawn: dict[int, float]  # templates drawn by match (one per match row)
    kept: dict[int, float]  # templates of the pairs the judge kept
    bank: dict[int, float]  # the indexed template bank


def slot_distributions(run: RunDir) -> SlotDistributions:
    """The match stage's target num_slots distribution next to what was drawn and what survived the judge."""
    slots = {r["template_id"]: r["num_slots"] for r in run.rows("templatize", ["template_id", "num_slots"])}
    bank = Counter(r["num_slots"] for r in run.rows("index", ["num_slots"]))
    target, source = _target(run, bank)
    drawn = Counter(slots.get(r["template_id"]) for r in run.rows("match", ["template_id"]))
    kept = Counter(slots.get(r["template_id"]) for r in run.rows("judge", ["template_id"]))
    drawn.pop(None, None), kept.pop(None, None)
    return SlotDistributions(target, source, share(drawn), share(kept), share(bank))


def _target(run: RunDir, bank: Counter) -> tuple[dict[int, float], str]:
    """Resolve `--target-slots` exactly as match did (`sampling.parse_target`); default: the index's bank."""
    from fineinstructions.errors import UserError
    from fineinstructions.sampling import parse_target

    spec = run.settings("match").get("target_slots")
    if not spec:
        return share(bank), "the indexed template bank (match's default, no --target-slots)"
    try:
        return parse_target(spec, run.root / "index"), f"--target-slots {spec}"
    except UserError as e:
        return {}, f"--target-slots {spec} (not readable now: {e})"


@dataclass(frozen=True)
class Growth:
    documents: list[int]  # documents processed (with at least one match), 1..n
    templates: list[int]  # distinct templates drawn so far
    fit: tuple[float, float, float] | None  # (a, b, r²) of y = a·x^b, least squares in log-log space


def template_growth(run: RunDir) -> Growth:
    """Distinct templates used as documents are processed, in the order match wrote them."""
    seen_docs: set[str] = set()
    seen_templates: set[str] = set()
    xs, ys = [], []
    for r in run.rows("match", ["document_id", "template_id"]):
        if r["document_id"] not in seen_docs:
            if seen_docs:
                xs.append(len(seen_docs)), ys.append(len(seen_templates))
            seen_docs.add(r["document_id"])
        seen_templates.add(r["template_id"])
    if seen_docs:
        xs.append(len(seen_docs)), ys.append(len(seen_templates))
    return Growth(xs, ys, power_law_fit(xs, ys))


def power_law_fit(xs: list[int], ys: list[int]) -> tuple[float, float, float] | None:
    """(a, b, r²) of y = a·x^b fitted in log-log space, as the paper reports it; None below 2 distinct x."""
    if len(set(xs)) < 2:
        return None
    lx, ly = np.log(xs), np.log(ys)
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (slope * lx + intercept)
    spread = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / spread if spread > 0 else 1.0
    return float(math.exp(intercept)), float(slope), r2


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r, None with fewer than 3 points or no spread (undefined)."""
    if len(xs) < 3 or np.std(xs) == 0 or np.std(ys) == 0:
        return None
    return float(np.corrcoef(xs, ys)[0, 1])


@dataclass(frozen=True)
class PositionCheck:
    local: list[tuple[float, float]]  # (chunk centre k/(K+1), excerpt centre) for pairs matched by a local vector
    global_: list[float]  # excerpt centres of pairs matched by the global vector
    r_pairs: float | None  # Pearson r over the local pairs
    r_means: float | None  # Pearson r of each chunk's mean excerpt centre against its centre (the paper's view)


def position_check(positions: list[tuple[int, float]], k: int) -> PositionCheck:
    """The paper's check that the chunk which retrieved a template is where the answer's excerpts are."""
    local = [(chunk / (k + 1), pos) for chunk, pos in positions if chunk >= 1]
    by_chunk: dict[float, list[float]] = {}
    for centre, pos in local:
        by_chunk.setdefault(centre, []).append(pos)
    centres = sorted(by_chunk)
    return PositionCheck(local, [pos for chunk, pos in positions if chunk < 1],
                         pearson([c for c, _ in local], [p for _, p in local]),
                         pearson(centres, [float(np.mean(by_chunk[c])) for c in centres]))


def total_variation(p: dict, q: dict) -> float | None:
    """Half the L1 distance between two distributions (0 = identical, 1 = disjoint)."""
    if not p or not q:
        return None
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def judged_scores(run: RunDir) -> Counter:
    """Judge scores of every judged pair, kept or not ("none" when the judgement had no readable score)."""
    rows = run.rows("judge", ["score"]) + run.rejects("judge", ["score"])
    return Counter("none" if r.get("score") is None else int(r["score"]) for r in rows)


def groundings(run: RunDir) -> list[float]:
    """Grounding of every answer whose excerpts all expanded (kept, or rejected later, e.g. low_grounding)."""
    rows = run.rows("instantiate", ["grounding"]) + run.rejects("instantiate", ["grounding"])
    return [float(r["grounding"]) for r in rows if r.get("grounding") is not None]


def source_mix(run: RunDir) -> dict[str, Counter]:
    """Query sources at each step: real queries, their templates, the templates drawn, the pairs kept."""
    source = {r["template_id"]: r["source"] for r in run.rows("templatize", ["template_id", "source"])}
    mix = {
        "queries": Counter(r["source"] for r in run.rows("queries", ["source"])),
        "templates": Counter(source.values()),
        "drawn (match)": Counter(source.get(r["template_id"], "?") for r in run.rows("match", ["template_id"])),
        "kept (judge)": Counter(source.get(r["template_id"], "?") for r in run.rows("judge", ["template_id"])),
    }
    return {k: v for k, v in mix.items() if v}


def corpus_tokens(run: RunDir) -> dict[str, int]:
    """Token totals of the standard and the instruction corpus (budget's counts, else the shards' num_tokens)."""
    tokens = dict(run.summary("budget").get("tokens", {}))
    for corpus, sub in (("standard", "standard"), ("instructions", "instructions")):
        if corpus not in tokens:
            rows = run.rows("budget", ["num_tokens"], sub=sub)
            if rows:
                tokens[corpus] = sum(int(r["num_tokens"] or 0) for r in rows)
    return {k: int(v) for k, v in tokens.items()}


def llm_tokens(run: RunDir) -> dict[str, dict[str, int]]:
    """Prompt/completion tokens and requests of each LLM stage."""
    out = {}
    for stage in run.stages():
        s = run.summary(stage)
        counts = {k: int(v) for k, v in {**s.get("llm", {}), **s.get("tokens", {})}.items()
                  if k in ("prompt", "completion", "sent_requests", "cached_requests")}
        if counts:
            out[stage] = counts
    return out


def decontamination(run: RunDir) -> dict | None:
    """Hook for the decontamination stage: RUN_DIR/decontaminate/summary.json, None when it did not run."""
    path = Path("decontaminate") / "summary.json"
    return run.json(str(path)) or None


def pii_counts(run: RunDir) -> dict[str, dict[str, int]]:
    """PII counts grouped by stage: the `scrub` stage's summary (always listed when it ran, with the rows it
    checked, so "ran, found nothing" differs from "not run"), plus any other stage summary with a `pii` section or
    counters whose name starts with `pii` (e.g. `rejects: {pii_email: 3}`); empty when no stage looked for PII."""
    out: dict[str, dict[str, int]] = {}
    for stage in run.stages():
        s = run.summary(stage)
        counts = {k: v for k, v in (s.get("pii") or {}).items() if isinstance(v, (int, float))}
        for section in ("rejects", "skips", "tokens", "llm"):
            found = (s.get(section) or {}).items()
            counts.update({f"{section}/{k}": v for k, v in found if k.lower().startswith("pii")})
        for name, hist in (s.get("distributions") or {}).items():
            if name.lower().startswith("pii"):
                counts.update({f"{name}/{k}": v for k, v in hist.items()})
        if s.get("stage") == "scrub":
            counts = {"rows checked": s.get("rows_in", 0), **counts}
        if counts:
            out[stage] = {k: int(v) for k, v in counts.items()}
    return out
