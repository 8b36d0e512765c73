"""Stage `scrub`: replace PII (emails, public IPs, phone numbers, card numbers) in instructions and answers.

Runs on judge's pairs (`instruction`, `answer`) before `budget`, so the instruction corpus is counted and written
from scrubbed text; it also takes any other stage's rows (`--columns`). Rows pass through in the same schema with
the PII replaced (see `fineinstructions.pii` for the detectors and the replacement values); with `--drop`, a row
holding PII is rejected instead. Counts per kind land in the summary as `distributions["pii"]`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.pii import KINDS, scrub
from fineinstructions.pipeline.passthrough import passthrough_input
from fineinstructions.pipeline.runner import StageOptions, run_stage
from fineinstructions.pipeline.step import Outcome, StageStep
from fineinstructions.pipeline.summary import StageSummary

DEFAULT_COLUMNS = (("instruction", "answer"), ("text",), ("query",))


@dataclass
class ScrubConfig(StageOptions):
    columns: str | None = option(None, "comma-separated columns to scrub (default: instruction+answer, text or "
                                       "query, whichever the input has)")
    kinds: str = option(",".join(KINDS), "PII kinds to replace: " + ", ".join(KINDS))
    region: str = option("US", "country assumed for phone numbers written without +country code")
    drop: bool = option(False, "reject rows that hold PII instead of replacing it")


class Scrubber(StageStep):
    name = "🕵️ Scrub PII"
    batch_size = 256
    rejects_prefix = "scrub"

    def __init__(self, cfg: ScrubConfig, kinds: tuple[str, ...], columns: list[str], id_column: str, reject_schema,
                 **kw):
        super().__init__(cfg.output, **kw)
        self.kinds, self.region, self.drop, self.columns = kinds, cfg.region, cfg.drop, columns
        self.id_column, self.text_column, self.reject_schema = id_column, columns[0], reject_schema

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        for row in rows:
            found: Counter = Counter()
            out = dict(row)
            for column in self.columns:
                if isinstance(row.get(column), str):
                    out[column], counts = scrub(row[column], self.kinds, self.region)
                    found += counts
            for kind, n in found.items():
                self.stat_update(f"dist/pii/{kind}", value=n)
            if found:
                self.stat_update("dist/pii_rows/scrubbed")
            yield (row, "pii") if found and self.drop else (out, None)


def run(cfg: ScrubConfig) -> StageSummary:
    if not cfg.input:
        raise UserError("stage scrub needs --input (the output folder of an earlier stage, e.g. judge)")
    kinds = tuple(k.strip() for k in cfg.kinds.split(",") if k.strip())
    if unknown := [k for k in kinds if k not in KINDS]:
        raise UserError(f"unknown PII kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    src = passthrough_input(cfg.input, cfg.columns, DEFAULT_COLUMNS)
    step = Scrubber(cfg, kinds, src.columns, src.id_column, src.reject_schema([]), input_files=src.files,
                    progress=cfg.progress)
    return run_stage("scrub", cfg, src.reader, step, src.schema)
