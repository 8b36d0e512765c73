"""`fineinstructions report RUN_DIR --output FILE.html`: one self-contained page about a run.

The page is the template `template.html` (package data: CSS and the sample browser's plain JavaScript) filled
with sections of escaped HTML and PNG figures as data URIs, and the browser's rows as JSON: nothing is fetched
when it is opened, so it can be mailed or archived with the run. A section whose data is empty says so in words
(and why, where known), because an empty stage is information, not an error.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from fineinstructions import __version__, atomic
from fineinstructions.report import metrics, plots
from fineinstructions.report.data import RunDir
from fineinstructions.report.samples import MAX_SAMPLES, sample_pairs


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    body: str


def report(run_dir: str, output: str, max_samples: int = MAX_SAMPLES) -> Path:
    """Write the report of the run in `run_dir` to `output` (an .html file); returns its path."""
    run = RunDir.open(run_dir)
    page = render(run, max_samples)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, page)
    return path


def render(run: RunDir, max_samples: int = MAX_SAMPLES) -> str:
    samples = sample_pairs(run, max_samples)
    sections = [stages_section(run), templates_section(run), quality_section(run),
                position_section(run, samples.positions, samples.documents_note), sources_section(run),
                tokens_section(run), decontamination_section(run), pii_section(run),
                samples_section(samples.rows, samples.total, samples.documents_note)]
    template = Template(resources.files("fineinstructions.report").joinpath("template.html").read_text("utf-8"))
    return template.substitute(
        title=html.escape(f"FineInstructions run report: {run.root.name}"),
        run_dir=html.escape(str(run.root.resolve())),
        stages=html.escape(" → ".join(run.stages())),
        generated=time.strftime("%Y-%m-%d %H:%M"),
        version=html.escape(__version__),
        nav="".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections),
        sections="\n".join(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>\n{s.body}</section>'
                           for s in sections),
        samples_json=script_json(samples.rows),
    )


def script_json(value) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' that could end it or open a comment."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


# ── HTML pieces ──────────────────────────────────────────────────────────────────────────────────────────────

def figure(uri: str, caption: str) -> str:
    alt = html.escape(html.unescape(re.sub(r"<[^>]+>", "", caption)), quote=True)  # the caption as plain text
    return f'<figure><img src="{uri}" alt="{alt}"><figcaption>{caption}</figcaption></figure>'


def empty(text: str) -> str:
    return f'<p class="empty">{text}</p>'


def table(headers: Iterable[str], rows: Iterable[Iterable], numeric: Iterable[int] = ()) -> str:
    numeric = set(numeric)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{html.escape(_fmt(v))}</td>'
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="numbers"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def counts(d: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "–"


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def grid(*items: str) -> str:
    return '<div class="grid">' + "".join(f"<div>{i}</div>" for i in items) + "</div>"


# ── sections ─────────────────────────────────────────────────────────────────────────────────────────────────

def stages_section(run: RunDir) -> Section:
    rows = metrics.stage_rows(run)
    numbers = table(
        ["stage", "rows in", "", "rows out", "", "kept", "rejects by reason", "skipped", "wall s"],
        [[r.stage, r.rows_in, r.units[0], r.rows_out, r.units[1],
          "–" if r.kept_share is None else f"{100 * r.kept_share:.0f} %",
          counts(r.rejects), counts(r.skips), f"{r.wall_time:.1f}"] for r in rows], numeric=(1, 3, 5, 8))
    note = ("<p>Every rejected row is kept with its reason in <code>STAGE/rejects/</code>. Wall times are those of "
            "the last (possibly resumed or cached) run of each stage.</p>")
    return Section("stages", "Stages", note + numbers + figure(plots.stage_flow(rows), "Rows kept (green) and "
                   "rejected per stage; the colours name the reject reasons."))


def templates_section(run: RunDir) -> Section:
    """Which templates were used: slot counts against the target, and how many distinct ones."""
    return Section("templates", "Templates: slots and diversity", grid(slots_figure(run), diversity_figure(run)))


def slots_figure(run: RunDir) -> str:
    d = metrics.slot_distributions(run)
    series = {"target": d.target, "drawn by match": d.drawn, "kept by judge": d.kept}
    if d.bank and d.bank != d.target:
        series = {"template bank": d.bank, **series}
    series = {k: v for k, v in series.items() if v}
    if not d.drawn:
        return empty("No templates were drawn (the match stage has no rows).")
    tv = metrics.total_variation(d.drawn, d.target)
    caption = (f"Number of <code>&lt;fi&gt;</code> slots of the templates drawn per document against the target "
               f"distribution ({html.escape(d.target_source)}). The paper draws so that slot counts follow real "
               f"queries. Total variation distance drawn vs target: "
               f"{'–' if tv is None else f'{tv:.3f}'} (0 = identical)."
               + ("" if d.kept else " No pair was kept by the judge, so there is no 'kept' series."))
    return figure(plots.grouped_shares(series, "num_slots: target vs used", "slots per template"), caption)


def diversity_figure(run: RunDir) -> str:
    g = metrics.template_growth(run)
    if not g.documents:
        return empty("No matches: no template diversity to count.")
    a, b = metrics.PAPER_POWER_LAW
    fit = (f"fit y = {g.fit[0]:,.2f}·x<sup>{g.fit[1]:.2f}</sup> (r² = {g.fit[2]:.2f})" if g.fit
           else "too few documents for a fit")
    bank = run.count("index")
    caption = (f"{g.templates[-1]:,} distinct templates over {g.documents[-1]:,} documents with matches, in the order "
               f"match wrote them; {fit}. The paper reports y = {a:,.0f}·x<sup>{b}</sup> (r² = 0.96) at "
               f"pre-training scale with a bank of ~18M templates; this run's bank holds {bank:,}, and the "
               "exponent depends on both scale and bank size. Documents without any match are not counted.")
    return figure(plots.growth(g.documents, g.templates, g.fit, metrics.PAPER_POWER_LAW), caption)


def quality_section(run: RunDir) -> Section:
    scores = metrics.judged_scores(run)
    min_score = run.settings("judge").get("min_score")
    grounding = metrics.groundings(run)
    min_grounding = run.settings("instantiate").get("min_grounding")
    if scores:
        kept = sum(v for k, v in scores.items() if isinstance(k, int) and min_score is not None and k >= min_score)
        left = figure(plots.score_bars(scores, min_score),
                      f"{sum(scores.values()):,} pairs judged, {kept:,} kept (score ≥ {min_score}); "
                      f"{_plural(scores.get('none', 0), 'judgement')} without a readable score.")
    else:
        left = empty("No judged pairs (the judge stage did not run or had no input).")
    if grounding:
        high = sum(g >= 0.9 for g in grounding)
        right = figure(plots.histogram(grounding, min_grounding, "Grounding of expanded answers",
                                       "share of the answer copied from the document"),
                       f"{len(grounding):,} answers whose excerpts all expanded; {high:,} with grounding ≥ 0.9. "
                       "Answers whose excerpts could not be located have no grounding and are not shown.")
    else:
        right = empty("No answer was expanded (the instantiate stage did not run or every excerpt failed).")
    return Section("quality", "Judge scores and grounding", grid(left, right))


def position_section(run: RunDir, positions: list[tuple[int, float]], documents_note: str | None) -> Section:
    k = int(run.settings("match").get("k", 5))
    check = metrics.position_check(positions, k)
    if not positions:
        why = html.escape(documents_note) if documents_note else "no answer has a located excerpt"
        return Section("positions", "Excerpt position vs matching chunk", empty(f"Nothing to plot: {why}."))

    def r(value: float | None) -> str:
        return "undefined (fewer than 3 points or no spread)" if value is None else f"{value:.2f}"

    window = run.settings("instantiate").get("max_document_chars")
    caveat = (f" Caution: instantiate showed the model only {window:,} characters centred on the matching chunk "
              "(<code>max_document_chars</code>), so part of this agreement is by construction."
              if window else "")
    caption = (f"{len(check.local):,} pairs matched by a local vector and {len(check.global_):,} by the global one "
               f"(of the sampled pairs). Pearson r over pairs: {r(check.r_pairs)}; over the mean excerpt position "
               f"of each chunk: {r(check.r_means)} (the paper reports r = 0.99). Positions are recovered by "
               "expanding each stored <code>answer_raw</code> excerpt again in the same document window, because "
               "instantiate does not store character offsets." + caveat)
    return Section("positions", "Excerpt position vs matching chunk",
                   figure(plots.positions(check.local, check.global_, k), caption))


def sources_section(run: RunDir) -> Section:
    mix = metrics.source_mix(run)
    if not mix:
        return Section("sources", "Source mix", empty("No queries with a source column."))
    caption = ("The query source behind every row at each step: real queries, the templates made from them, the "
               "templates drawn for documents and the pairs the judge kept.")
    rows = [[step, sum(c.values()), counts(c)] for step, c in mix.items()]
    return Section("sources", "Source mix", figure(plots.stacked_shares(mix, "Query source mix"), caption)
                   + table(["step", "rows", "by source"], rows, numeric=(1,)))


def tokens_section(run: RunDir) -> Section:
    tokens = metrics.corpus_tokens(run)
    llm = metrics.llm_tokens(run)
    parts = []
    if "standard" in tokens:
        std, ins = tokens["standard"], tokens.get("instructions", 0)
        caption = (f"Standard corpus {std:,} tokens; instruction corpus {ins:,} tokens "
                   f"({100 * ins / std if std else 0:.1f} % of the budget used"
                   + (f"; {tokens['unused_budget']:,} left unused" if "unused_budget" in tokens else "") + ").")
        parts.append(figure(plots.token_bars({"standard": std, "instructions": ins}), caption))
    else:
        parts.append(empty("The budget stage did not run: no corpora to count."))
    if llm:
        keys = ["prompt", "completion", "sent_requests", "cached_requests"]
        rows = [[s, *(c.get(k, 0) for k in keys)] for s, c in llm.items()]
        parts.append("<h3>LLM use per stage</h3><p>Tokens count requests sent in the last run of each stage; "
                     "answers served from the request cache cost none.</p>"
                     + table(["stage", "prompt tokens", "completion tokens", "requests sent", "requests from cache"],
                             rows, numeric=(1, 2, 3, 4)))
    return Section("tokens", "Tokens", "".join(parts))


def _not_run(what: str, where: str) -> str:
    return f'<p><span class="status notrun">not run</span> {what} ({where}).</p>'


def decontamination_section(run: RunDir) -> Section:
    summary = metrics.decontamination(run)
    if summary is None:
        return Section("decontamination", "Decontamination",
                       _not_run("No decontamination summary",
                                "expected <code>RUN_DIR/decontaminate/summary.json</code>"))
    rows = [[k, v] for k, v in _flatten(summary) if k not in ("stage", "output", "shards")]
    return Section("decontamination", "Decontamination", '<p><span class="status ran">ran</span> '
                   "<code>decontaminate/summary.json</code>:</p>" + table(["field", "value"], rows))


def _flatten(value: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested summary dicts as (dotted key, value) rows, e.g. distributions.contaminated_by.mmlu."""
    out: list[tuple[str, object]] = []
    for k, v in value.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def pii_section(run: RunDir) -> Section:
    found = metrics.pii_counts(run)
    if not found:
        return Section("pii", "PII", _not_run("No stage summary counts PII",
                                              "a <code>pii</code> section or <code>pii*</code> counters in a "
                                              "<code>summary.json</code>"))
    rows = [[stage, name, n] for stage, c in found.items() for name, n in sorted(c.items())]
    return Section("pii", "PII", '<p><span class="status ran">ran</span> PII counts from the stage summaries:</p>'
                   + table(["stage", "counter", "count"], rows, numeric=(2,)))


SAMPLE_COLUMNS = [("outcome", "outcome", "10.5%"), ("score", "judge score", "4.5%"),
                  ("grounding", "ground\u00ading", "5.5%"), ("match", "match cosine", "5%"), ("chunk", "chunk", "4%"),
                  ("position", "excerpt position", "5.5%"), ("snippet", "document (excerpt marked)", "22%"),
                  ("template", "template", "12%"), ("instruction", "instruction", "12%"),
                  ("answer", "answer (excerpts marked)", "19%")]


def samples_section(rows: list[dict], total: int, documents_note: str | None) -> Section:
    if not rows:
        return Section("samples", "Sample browser", empty("No instantiated pairs in this run."))
    head = "".join(f'<th data-key="{key}" style="width:{w}">{html.escape(label)}</th>'
                   for key, label, w in SAMPLE_COLUMNS)
    shown = f"all {total:,}" if len(rows) >= total else (
        f"{len(rows):,} of {total:,}: an even share of pairs kept, rejected by the judge and rejected by instantiate")
    note = f" Documents: {html.escape(documents_note)}." if documents_note else ""
    intro = (f"<p>Pairs from instantiate and judge, kept or not ({shown}). Click a column to "
             "sort; type to filter (every word must appear anywhere in the row; a link ending in "
             f"<code>#q=words</code> opens filtered). Hover a judge score for the judge's raw output.{note}</p>"
             '<p class="legend"><mark>excerpt copied from the document</mark> · <span class="slot">template slot'
             '</span> · <span class="unresolved">excerpt that could not be located</span></p>')
    toolbar = ('<div class="toolbar"><input id="filter" type="search" placeholder="filter: words in any column" '
               'aria-label="filter"><select id="outcome-filter" aria-label="outcome"><option value="">all outcomes'
               '</option></select><span class="count" id="shown"></span></div>')
    return Section("samples", "Sample browser", intro + toolbar +
                   f'<table class="samples" id="samples"><thead><tr>{head}</tr></thead><tbody></tbody></table>')
