"""Stage `templatize`: query → instruction template + compatible document description (paper §1, stage 2).

Each query is sent to the LLM in the chosen prompt format; every answer is validated (parseable, well-formed
`<fi>` slots, a description, fixed text aligned with the query -- see `templates.py`). With `best_of > 1` the stage
draws extra sampled candidates and keeps the first valid one (greedy first): the validators are the filter, which
is the cheapest way to lift the yield of a small model. Templates are deduplicated on their normalised text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fineinstructions import schemas
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.llm import LLMConfig, fingerprint, preflight
from fineinstructions.llm.base import Completion
from fineinstructions.pipeline.dedup import DedupStep
from fineinstructions.pipeline.runner import StageOptions, run_stage, stage_input
from fineinstructions.pipeline.llm_step import LLMStep, candidate_params, first_passing, llm_settings, resolve_format
from fineinstructions.pipeline.step import Outcome
from fineinstructions.pipeline.summary import StageSummary
from fineinstructions.templates import ANY_TAG, alignment, num_slots, validate
from fineinstructions.text import dedup_key, normalize_whitespace, stable_hash


@dataclass
class TemplatizeConfig(StageOptions):
    prompt_format: str = option(
        "auto",
        "fewshot | fewshot-completion | released | path to a YAML format; auto = fewshot-completion for the "
        "embedded default model, fewshot otherwise",
    )
    best_of: int = option(3, "candidates per query (1 greedy + n-1 sampled, drawn only while none is valid); the "
                                 "first valid one is kept")
    temperature: float = option(0.8, "sampling temperature of the extra candidates")
    max_tokens: int | None = option(None, "max new tokens per answer (default: the prompt format's)")
    min_alignment: float = option(0.7, "min share of the template's fixed words that follow the query in order")
    batch_size: int = option(32, "queries per generate call")
    seed: int = option(0, "seed of the sampled candidates")
    llm: LLMConfig = option(factory=LLMConfig)


class Templatizer(LLMStep):
    name = "🧩 Templatize"
    stage = "templatize"
    id_column, text_column = "query_id", "query"
    reject_schema = schemas.TEMPLATES_REJECTS

    def __init__(self, cfg: TemplatizeConfig, **kw):
        super().__init__(cfg, **kw)
        self.cfg = cfg
        self.batch_size = cfg.batch_size
        self.format = resolve_format("templatize", cfg.prompt_format, self.llm, "fewshot", "fewshot-completion")
        self.params = candidate_params(self.format, cfg.max_tokens, cfg.best_of, cfg.temperature, cfg.seed)
        self.prompt_fingerprint = fingerprint(self.format.fingerprint, [p.to_dict() for p in self.params])

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        def generate(todo: list[tuple[int, int]]) -> list[Completion]:
            return self.generate([self.format.render({"query": rows[i]["query"]}, self.params[k]) for i, k in todo])

        outcomes = first_passing(len(rows), len(self.params), generate, lambda i, c: self.judge_candidate(rows[i], c))
        for row, outcome in zip(rows, outcomes):
            yield self.output_row(row, outcome)

    def judge_candidate(self, row: dict, c: Completion) -> tuple[dict, str | None]:
        """Parse and validate one answer: (fields, reject reason or None)."""
        base = {"query_id": row["query_id"], "source": row.get("source"), "query": row["query"],
                "raw_output": c.text, "model_id": self.model_id, "prompt_fingerprint": self.prompt_fingerprint}
        if not c.ok:
            return {**base, "raw_output": c.error}, "llm_error"
        parsed = self.format.parse(c.text)
        if parsed is None:
            return base, "truncated" if c.finish_reason == "length" else "unparseable"
        template, description = parsed.get("template"), parsed.get("compatible_document_description")
        if not isinstance(template, str) or not template.strip():
            return base, "missing_template"
        template = normalize_whitespace(template)
        fields = {**base, "template": template}
        if reason := validate(template, row["query"], self.cfg.min_alignment):
            return fields, reason
        if not isinstance(description, str) or not description.strip():
            return fields, "missing_description"
        if ANY_TAG.search(description):
            return {**fields, "compatible_document_description": description}, "tag_in_description"
        return {**fields, "compatible_document_description": normalize_whitespace(description)}, None

    def output_row(self, row: dict, outcome: Outcome) -> Outcome:
        """The chosen candidate as an output row: ids, slot count and alignment added (rejects pass through)."""
        fields, reason = outcome
        if reason is not None:
            return fields, reason
        fields.pop("raw_output")
        template = fields["template"]
        return {
            **fields,
            "template_id": stable_hash(dedup_key(template)),
            "num_slots": num_slots(template),
            "alignment": alignment(template, row["query"]).precision,
        }, None


def _template_key(row: dict) -> str:
    return dedup_key(row["template"])


def run(cfg: TemplatizeConfig) -> StageSummary:
    if not cfg.input:
        raise UserError("stage templatize needs --input (the output folder of the queries stage)")
    if cfg.best_of < 1:
        raise UserError("--best-of must be at least 1")
    files, reader = stage_input(cfg.input, "query", "query_id", "queries")
    preflight(cfg.llm)
    step = Templatizer(cfg, input_files=files, progress=cfg.progress)
    settings = llm_settings(step.llm, step.prompt_fingerprint)

    def dedup(out: str, map_files: list[str]) -> DedupStep:
        return DedupStep(out, map_files, [("duplicate_template", _template_key)], "template_id", "template",
                         schemas.TEMPLATES_REJECTS, progress=cfg.progress)

    return run_stage("templatize", cfg, reader, step, schemas.TEMPLATES, dedup=dedup, settings=settings)
