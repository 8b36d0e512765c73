"""Stage `released_bank`: import the released FineTemplates bank instead of running `templatize`.

`fineinstructions/finetemplates` (about 18M templates, paper notes §7) has the columns `template_id` (int64),
`source_name`, `template`, `compatible_document_description`, ... (plus topic and difficulty labels we do not
use). This stage maps them onto the `templatize` output schema, so `index`, `match` and `instantiate` run on the
paper's own bank: `--input fineinstructions/finetemplates` (online) or a local parquet file / folder in that
schema. The released ids are kept (as strings) so rows can be joined back to the dataset; templates are checked
with the same `<fi>` validator `templatize` uses (`templates.tag_problem`), rows without a usable description are
rejected, and repeated templates (normalised text) are dropped keep-first.
There is no query behind a released template here: `query`, `query_id` and `alignment` are null.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from fineinstructions import schemas
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.pipeline.dedup import DedupStep
from fineinstructions.pipeline.readers import check_columns, detect_format, make_reader, peek_columns
from fineinstructions.pipeline.runner import StageOptions, run_stage
from fineinstructions.pipeline.step import Outcome, StageStep
from fineinstructions.pipeline.summary import StageSummary
from fineinstructions.templates import ANY_TAG, num_slots, tag_problem
from fineinstructions.text import dedup_key, normalize_whitespace, stable_hash

RELEASED = "fineinstructions/finetemplates"

#: rejected released rows, with the released id so they can be looked up
BANK_REJECTS = pa.schema([("template_id", pa.string()), ("source", pa.string()), ("template", pa.string()),
                          ("compatible_document_description", pa.string()), ("reason", pa.string())])


@dataclass
class ReleasedBankConfig(StageOptions):
    input: str | None = option(RELEASED, "the released bank: a Hugging Face dataset name, or local parquet "
                                         "file(s) in its schema")
    format: str | None = option(None, "input format (default: from the file extension; hf for a dataset name)",
                                ("parquet", "jsonl", "hf"))
    source: str = option("finetemplates", "source name for rows without a source_name column")
    limit: int = option(-1, "read at most this many templates per task (-1: all)")
    hf_split: str = option("train", "split to read when the input is a Hugging Face dataset")


class BankImporter(StageStep):
    name = "📥 Released templates"
    id_column, text_column = "template_id", "template"
    reject_schema = BANK_REJECTS
    batch_size = 4096

    def __init__(self, cfg: ReleasedBankConfig, has_ids: bool, **kw):
        super().__init__(cfg.output, **kw)
        self.has_ids, self.source, self.model_id = has_ids, cfg.source, cfg.input

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        for row in rows:
            template = normalize_whitespace(str(row["template"]))
            description = row.get("compatible_document_description")
            description = normalize_whitespace(description) if isinstance(description, str) else ""
            out = {
                "template_id": str(row["template_id"]) if self.has_ids else stable_hash(dedup_key(template)),
                "query_id": None, "source": str(row.get("source_name") or self.source), "query": None,
                "template": template, "compatible_document_description": description,
                "num_slots": num_slots(template), "alignment": None, "model_id": self.model_id,
                "prompt_fingerprint": None,
            }
            if problem := tag_problem(template):
                yield out, problem
            elif not description:
                yield out, "missing_description"
            elif ANY_TAG.search(description):
                yield out, "tag_in_description"
            else:
                yield out, None


def _template_key(row: dict) -> str:
    return dedup_key(row["template"])


def run(cfg: ReleasedBankConfig) -> StageSummary:
    if not cfg.input:
        raise UserError(f"stage released_bank needs --input ({RELEASED} or local parquet files in its schema)")
    fmt = detect_format(cfg.input, cfg.format)
    check_columns(cfg.input, {"input": "template"}, fmt)
    check_columns(cfg.input, {"input": "compatible_document_description"}, fmt)
    has_ids = fmt == "hf" or "template_id" in peek_columns(cfg.input, fmt)
    reader = make_reader(cfg.input, "template", "template_id" if has_ids else None, fmt, cfg.limit, cfg.hf_split)
    step = BankImporter(cfg, has_ids, progress=cfg.progress)

    def dedup(out: str, files: list[str]) -> DedupStep:
        return DedupStep(out, files, [("duplicate_template", _template_key)], "template_id", "template",
                         BANK_REJECTS, progress=cfg.progress)

    return run_stage("released_bank", cfg, reader, step, schemas.TEMPLATES, dedup=dedup)
