"""The report's figures: matplotlib (Agg) rendered to PNG and embedded as data URIs, so the page opens offline.

Each function takes the values `metrics.py` computed and returns one data URI. Callers decide whether there is
anything to plot; a figure here is never drawn from empty data.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402

from fineinstructions.report.metrics import StageRow  # noqa: E402

KEPT = "#2f855a"
BLUE, ORANGE, GREY = "#3b6ea8", "#dd8452", "#8a8f98"
DPI = 100

plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                     "axes.titlesize": 10, "axes.titleweight": "bold", "legend.frameon": False})


def to_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def stage_flow(rows: list[StageRow]) -> str:
    """One horizontal bar per stage: rows kept, then each reject reason stacked after it."""
    reasons = list(dict.fromkeys(r for row in rows for r in row.rejects))  # in stage order, for the legend
    colours = dict(zip(reasons, plt.get_cmap("tab20")(np.linspace(0, 1, max(len(reasons), 2)))))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
    labels = [row.stage for row in rows][::-1]
    for y, row in enumerate(rows[::-1]):
        ax.barh(y, row.rows_out, color=KEPT)
        left = row.rows_out
        for reason, n in sorted(row.rejects.items(), key=lambda kv: -kv[1]):
            ax.barh(y, n, left=left, color=colours[reason])
            left += n
        (unit_in, unit_out) = row.units
        ax.text(left, y, f"  {row.rows_out:,} {unit_out} from {row.rows_in:,} {unit_in}", va="center", fontsize=8)
    handles = [Patch(color=KEPT, label="kept")] + [Patch(color=colours[r], label=r) for r in reasons]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.15, 1), fontsize=8, title="rows, by outcome")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("rows")
    ax.margins(x=0.25)
    ax.set_title("Rows kept and rejected per stage (by reason)")
    return to_uri(fig)


def grouped_shares(series: Mapping[str, Mapping], title: str, xlabel: str) -> str:
    """Side-by-side bars of several distributions over the same keys (e.g. num_slots)."""
    keys = sorted({k for dist in series.values() for k in dist})
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    width = 0.8 / len(series)
    colours = [GREY, BLUE, ORANGE, KEPT]
    for i, (name, dist) in enumerate(series.items()):
        x = np.arange(len(keys)) + (i - (len(series) - 1) / 2) * width
        ax.bar(x, [dist.get(k, 0.0) for k in keys], width, label=name, color=colours[i % len(colours)])
    ax.set_xticks(range(len(keys)), [str(k) for k in keys])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_uri(fig)


def growth(xs: list[int], ys: list[int], fit: tuple[float, float, float] | None, paper: tuple[float, float]) -> str:
    """Distinct templates used vs documents processed, log-log, with the fitted power law."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.plot(xs, ys, "o", ms=3, color=BLUE, label="this run")
    if fit:
        a, b, _ = fit
        grid = np.geomspace(min(xs), max(xs), 50)
        ax.plot(grid, a * grid ** b, color=ORANGE, label=f"fit y = {a:,.2f}·x^{b:.2f}")
        ax.plot(grid, ys[-1] * (grid / xs[-1]) ** paper[1], "--", color=GREY,
                label=f"paper's exponent {paper[1]} (through the last point)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers; minor ticks labelled only when a decade has no major one
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain if max(xs + ys) < 100 else NullFormatter())
    ax.set_xlabel("documents processed (with ≥1 match)")
    ax.set_ylabel("distinct templates used")
    ax.set_title("Template diversity")
    ax.legend(fontsize=8)
    return to_uri(fig)


def score_bars(counts: Mapping, min_score: int | None) -> str:
    """Judge scores 1-5 (+ unreadable), the kept ones in green."""
    keys = [1, 2, 3, 4, 5] + (["none"] if "none" in counts else [])
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    colours = [KEPT if isinstance(k, int) and min_score is not None and k >= min_score else GREY for k in keys]
    bars = ax.bar([str(k) for k in keys], [counts.get(k, 0) for k in keys], color=colours)
    ax.bar_label(bars, fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("judge score" + (f" (kept: ≥ {min_score}, green)" if min_score is not None else ""))
    ax.set_ylabel("pairs")
    ax.set_title("Judge scores of every judged pair")
    return to_uri(fig)


def histogram(values: list[float], threshold: float | None, title: str, xlabel: str) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    ax.hist(values, bins=np.linspace(0, 1, 21), color=BLUE, edgecolor="white")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if threshold is not None:
        ax.axvline(threshold, color=ORANGE, ls="--", label=f"threshold {threshold}")
        ax.legend(fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.set_title(title)
    return to_uri(fig)


def positions(points: list[tuple[float, float]], global_points: list[float], k: int) -> str:
    """Where excerpts sit in the document against the centre of the chunk that matched (global vector apart)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    rng = np.random.default_rng(0)
    if points:
        x = np.array([p[0] for p in points])
        ax.plot(x + rng.uniform(-0.015, 0.015, len(x)), [p[1] for p in points], "o", ms=4, alpha=0.6, color=BLUE,
                label="local chunk k: centre k/(K+1)")
    if global_points:
        ax.plot(np.full(len(global_points), -0.08) + rng.uniform(-0.015, 0.015, len(global_points)), global_points,
                "s", ms=4, alpha=0.6, color=GREY, label="global vector")
    ax.plot([0, 1], [0, 1], ":", color=ORANGE, label="excerpt at the chunk centre")
    ticks = [-0.08] + [i / (k + 1) for i in range(1, k + 1)]
    ax.set_xticks(ticks, ["global"] + [f"{i}\n{i / (k + 1):.2f}" for i in range(1, k + 1)])
    ax.set_xlim(-0.15, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("chunk that matched (index, centre as a share of the document)")
    ax.set_ylabel("excerpt centre (share of doc)")
    ax.set_title("Excerpt position vs matching chunk")
    ax.legend(fontsize=8, loc="upper left")
    return to_uri(fig)


def stacked_shares(mix: Mapping[str, Mapping[str, int]], title: str) -> str:
    """One 100 % bar per step, split by category (e.g. query source)."""
    cats = sorted({c for counts in mix.values() for c in counts})
    colours = dict(zip(cats, plt.get_cmap("tab10")(np.arange(len(cats)) % 10)))
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(mix) + 1.4))
    steps = list(mix)[::-1]
    for y, step in enumerate(steps):
        total = sum(mix[step].values())
        left = 0.0
        for c in cats:
            w = mix[step].get(c, 0) / total
            ax.barh(y, w, left=left, color=colours[c], label=c if y == 0 else None)
            if w > 0.08:
                ax.text(left + w / 2, y, f"{100 * w:.0f}%", ha="center", va="center", fontsize=7, color="white")
            left += w
    ax.set_yticks(range(len(steps)), [f"{s} ({sum(mix[s].values()):,})" for s in steps])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return to_uri(fig)


def token_bars(tokens: Mapping[str, int]) -> str:
    names = [n for n in ("standard", "instructions") if n in tokens]
    fig, ax = plt.subplots(figsize=(6.4, 1.8))
    colours = {"standard": GREY, "instructions": KEPT}
    bars = ax.barh(names[::-1], [tokens[n] for n in names[::-1]], color=[colours[n] for n in names[::-1]])
    ax.bar_label(bars, labels=[f" {tokens[n]:,}" for n in names[::-1]], fontsize=8)
    ax.margins(x=0.2)
    ax.set_xlabel("tokens")
    ax.set_title("Tokens in the two corpora")
    return to_uri(fig)
