"""Stage `budget`: the instruction corpus, token for token as large as the documents it came from (paper stage 6).

Documents are read in order; each adds its own token count to a running budget. Its accepted pairs, formatted as
they will be trained on (`text_format`), are added in a seeded random order until the next one would exceed the
budget; that pair and the rest of the document's pairs are recorded as `over_budget` rejects. What is left of the
budget rolls over to the next document. Every token is counted with one named tokenizer, formatting included.

Two corpora come out, so they can be compared at equal size:

    budget/instructions/part-*.parquet   text, document_id, pair_id, num_tokens
    budget/standard/part-*.parquet       text, document_id, num_tokens   (the documents themselves)

Per task, the instruction tokens never exceed the standard tokens; the budget rolls over within a task (tasks run
independently), so with many tasks a little budget can be left unused at the end of each.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fineinstructions import schemas
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.pipeline.documents import (DocumentOptions, UniqueIds, duplicate_ids, group_by, open_documents,
                                                 rank_shards, upstream)
from fineinstructions.pipeline.runner import run_stage
from fineinstructions.pipeline.step import Outcome, StageStep
from fineinstructions.pipeline.summary import StageSummary
from fineinstructions.pipeline.writer import ShardWriter, row_document

TEXT_FORMAT = "Instruction: {instruction}\n\nAnswer: {answer}"


@dataclass
class BudgetConfig(DocumentOptions):
    tokenizer: str | None = option(
        None, "tokenizer that counts the budget: hub name, model dir or .gguf (default: the embedded SmolLM2's)")
    text_format: str = option(TEXT_FORMAT, "how a pair is written into the corpus ({instruction}, {answer})")
    seed: int = option(0, "seed of the order in which a document's pairs are added (combined with its id)")
    batch_size: int = option(64, "documents tokenized at once")


def format_pair(text_format: str, instruction: str, answer: str) -> str:
    return text_format.format(instruction=instruction, answer=answer)


def take_within_budget(pairs: list[tuple[str, int]], budget: int) -> tuple[list[str], list[str], int]:
    """Add `(pair_id, tokens)` in order until the next would exceed `budget`.

    Returns (kept ids, dropped ids, budget left). Pure, so the arithmetic is tested on hand-made counts.
    """
    kept, dropped = [], []
    for i, (pid, n) in enumerate(pairs):
        if n > budget:
            dropped = [p for p, _ in pairs[i:]]
            break
        kept.append(pid)
        budget -= n
    return kept, dropped, budget


class Budgeter(StageStep):
    name = "🧮 Budget"
    id_column, text_column = "document_id", "text"
    reject_schema = schemas.BUDGET_REJECTS

    def __init__(self, cfg: BudgetConfig, **kw):
        super().__init__(cfg.output, **kw)
        self.cfg, self.batch_size = cfg, cfg.batch_size
        self.carry = 0  # budget rolled over from earlier documents of this task

    def setup(self, rank: int) -> None:
        from fineinstructions.llm.hf_local import load_tokenizer

        self.tokenizer = load_tokenizer(self.cfg.tokenizer)
        self.pairs = group_by(rank_shards(self.cfg.input, rank, self.cfg.tasks), "document_id",
                              columns=["pair_id", "document_id", "instruction", "answer"])
        self.standard = ShardWriter(str(Path(self.cfg.output) / "standard"), schemas.STANDARD_CORPUS)
        self.carry = 0
        # the ids match rejected as duplicated (found through the stages the pairs came from)
        self.ids = UniqueIds(duplicate_ids(upstream(self.cfg.input, "match")))

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def count_in(self, rows: list[dict]) -> int:
        return sum(len(self.pairs.get(str(r["document_id"]), ())) for r in rows)

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        for row, n_doc in zip(rows, self.count([r["text"] for r in rows])):
            doc_id = str(row["document_id"])
            if duplicate := self.ids.check(doc_id):  # in neither corpus: which document the id means is unknown
                self.stat_update(f"skip/{duplicate}")
                for p in self.pairs.get(doc_id, ()):
                    yield {"document_id": doc_id, "pair_id": p["pair_id"], "num_tokens": None}, duplicate
                continue
            self.standard.write(row_document({"text": row["text"], "document_id": doc_id, "num_tokens": n_doc},
                                             "document_id"), self.rank)
            self.stat_update("tokens/standard", value=n_doc)
            pairs = sorted(self.pairs.get(doc_id, ()), key=lambda p: p["pair_id"])
            random.Random(f"{self.cfg.seed}:{doc_id}").shuffle(pairs)
            texts = [format_pair(self.cfg.text_format, p["instruction"], p["answer"]) for p in pairs]
            counts = self.count(texts)
            kept, _, self.carry = take_within_budget([(p["pair_id"], n) for p, n in zip(pairs, counts)],
                                                     self.carry + n_doc)
            kept = set(kept)
            for p, text, n in zip(pairs, texts, counts):
                if p["pair_id"] in kept:
                    self.stat_update("tokens/instructions", value=n)
                    yield {"text": text, "document_id": doc_id, "pair_id": p["pair_id"], "num_tokens": n}, None
                else:
                    yield {"document_id": doc_id, "pair_id": p["pair_id"], "num_tokens": n}, "over_budget"

    def run(self, data, rank: int = 0, world_size: int = 1):
        self.rank = rank
        yield from super().run(data, rank, world_size)

    def finish(self, rank: int) -> None:
        self.stat_update("tokens/unused_budget", value=self.carry)
        self.standard.commit(rank, always=f"part-{rank:05d}.parquet")


def run(cfg: BudgetConfig) -> StageSummary:
    if not cfg.input:
        raise UserError("stage budget needs --input (the output folder of the judge stage)")
    if not cfg.documents:
        raise UserError("stage budget needs --documents (the documents given to match as --input)")
    if not sorted(Path(cfg.input).glob("part-*.parquet")):
        raise UserError(f"no part-*.parquet shards in {cfg.input}: run the judge stage first")
    try:
        format_pair(cfg.text_format, "i", "a")
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"--text-format {cfg.text_format!r}: use only {{instruction}} and {{answer}} ({e})") from e
    from fineinstructions.llm.hf_local import load_tokenizer

    try:
        load_tokenizer(cfg.tokenizer)  # fail before any task starts
    except FileNotFoundError as e:
        raise UserError(str(e)) from e
    reader = open_documents(cfg.documents, cfg.format, cfg.text_column, cfg.id_column, cfg.limit, cfg.hf_split)
    step = Budgeter(cfg, progress=cfg.progress)
    settings = {"tokenizer_name": cfg.tokenizer or "embedded default"}
    return run_stage("budget", cfg, reader, step, schemas.INSTRUCTION_CORPUS, settings=settings,
                     shards_dir="instructions")
