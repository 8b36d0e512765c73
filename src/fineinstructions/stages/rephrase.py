"""Stage `rephrase`: documents → WRAP-style question-answer rewrites (Maini et al., 2024), the baseline synthetic
recipe of the pre-training comparison, run through the same LLM engine as the FineInstructions stages.

WRAP rephrases chunks of at most a few hundred tokens; documents are cut into `chunk_chars` pieces at sentence
or word boundaries and each piece is one request. Output rows: `text, document_id, chunk, model_id,
prompt_fingerprint`, one per chunk; a chunk whose answer is empty or failed is a counted reject.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fineinstructions import schemas
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.llm import LLMConfig, fingerprint, preflight
from fineinstructions.pipeline.documents import DocumentColumns, open_documents
from fineinstructions.pipeline.llm_step import LLMStep, llm_settings, resolve_format
from fineinstructions.pipeline.runner import run_stage
from fineinstructions.pipeline.step import Outcome
from fineinstructions.pipeline.summary import StageSummary

@dataclass
class RephraseConfig(DocumentColumns):
    prompt_format: str = option("auto", "qa | qa-completion | path to a YAML format; auto = qa-completion for the "
                                        "embedded default model, qa otherwise")
    chunk_chars: int = option(1200, "characters per rephrased chunk (WRAP rephrases ~300-token pieces)")
    max_tokens: int | None = option(None, "max new tokens per chunk (default: the prompt format's)")
    batch_size: int = option(4, "documents per generate call")
    llm: LLMConfig = option(factory=LLMConfig)


def chunks(text: str, size: int) -> list[str]:
    """Pieces of at most ~`size` characters, cut after a sentence end when one is near, else at a space."""
    text = text.strip()
    out = []
    while len(text) > size:
        window = text[:size]
        ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]?\s", window)]
        cut = ends[-1] if ends and ends[-1] > size // 2 else (window.rfind(" ") if " " in window else size)
        out.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        out.append(text)
    return out


class Rephraser(LLMStep):
    name = "🔁 Rephrase"
    stage = "rephrase"
    id_column, text_column = "document_id", "text"
    reject_schema = schemas.REPHRASE_REJECTS

    def __init__(self, cfg: RephraseConfig, **kw):
        super().__init__(cfg, **kw)
        self.cfg, self.batch_size = cfg, cfg.batch_size
        self.format = resolve_format("rephrase", cfg.prompt_format, self.llm, "qa", "qa-completion")
        self.params = self.format.sampling(max_tokens=cfg.max_tokens)
        self.prompt_fingerprint = fingerprint(self.format.fingerprint, self.params.to_dict(), cfg.chunk_chars)

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        jobs = [(str(r["document_id"]), i, piece) for r in rows for i, piece in enumerate(chunks(r["text"], self.cfg.chunk_chars))]
        requests = [self.format.render({"document": piece}, self.params) for _, _, piece in jobs]
        for (doc_id, i, _), c in zip(jobs, self.generate(requests)):
            base = {"document_id": doc_id, "chunk": i, "model_id": self.model_id,
                    "prompt_fingerprint": self.prompt_fingerprint}
            if not c.ok:
                yield {**base, "text": c.error}, "llm_error"
                continue
            parsed = self.format.parse(c.text)
            if not parsed:
                yield {**base, "text": c.text}, "empty"
                continue
            yield {**base, "text": next(iter(parsed.values()))}, None


def run(cfg: RephraseConfig) -> StageSummary:
    if not cfg.input:
        raise UserError("stage rephrase needs --input (documents: jsonl/parquet/csv file or folder, or an HF dataset)")
    if cfg.chunk_chars < 100:
        raise UserError("--chunk-chars must be at least 100")
    reader = open_documents(cfg.input, cfg.format, cfg.text_column, cfg.id_column, cfg.limit, cfg.hf_split)
    preflight(cfg.llm)
    step = Rephraser(cfg, progress=cfg.progress)
    return run_stage("rephrase", cfg, reader, step, schemas.REPHRASED, settings=llm_settings(step.llm, step.prompt_fingerprint))
