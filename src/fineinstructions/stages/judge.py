"""Stage `judge`: an LLM scores every instruction → answer pair 1–5; pairs scoring `min_score` or more are kept
(paper §4: Flow Judge, keep ≥ 4).

The judge sees the pair as a training example will look (instruction and answer, no document) and the rubric
below. A judge student may instead be a classifier (`judge_classifier.py`, a folder with `classifier.json` given as
`--llm-adapter`; the embedded default's shipped judge is one): then no text is generated, the pair's features go
through the classifier, and `judgement` records its expected score. Scores are read robustly from free text (`parsing.parse_score`); a judgement with no readable score is a
reject with reason `unparseable_score`, not a guess. Every row, kept or not, keeps its score and the raw judgement,
so the threshold can be changed later without judging again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fineinstructions import schemas
from fineinstructions.config import option
from fineinstructions.errors import UserError
from fineinstructions.judge_classifier import FILE as CLASSIFIER_FILE
from fineinstructions.judge_classifier import JudgeClassifier, is_classifier, pair_features
from fineinstructions.llm import LLMConfig, adapter_folder, fingerprint, preflight
from fineinstructions.llm.identity import content_digest
from fineinstructions.parsing import parse_score
from fineinstructions.pipeline.llm_step import LLMStep, llm_settings, resolve_format
from fineinstructions.pipeline.runner import StageOptions, run_stage, stage_input
from fineinstructions.pipeline.step import Outcome
from fineinstructions.pipeline.summary import StageSummary

#: levels 1 and 5 are the paper's; 2-4 are ours (the paper's text for them was not recovered)
RUBRIC = """\
1 = the answer is irrelevant to the instruction or off-topic.
2 = the answer is on the topic but does not address what the instruction asks.
3 = the answer partly addresses the instruction, or much of it is extraneous, vague or repetitive.
4 = the answer addresses the instruction, with at most a little extraneous or vague content.
5 = the answer fully addresses the instruction with no extraneous, vague or repetitive content."""


@dataclass
class JudgeConfig(StageOptions):
    prompt_format: str = option(
        "auto", "rubric | rubric-completion | flow-judge | path to a YAML format; auto = rubric-completion for the "
                "embedded default model, rubric otherwise")
    rubric: str = option(RUBRIC, "the 1-5 scoring rubric shown to the judge")
    min_score: int = option(4, "keep pairs scoring at least this (1-5)")
    max_tokens: int | None = option(None, "max new tokens per judgement (default: the prompt format's)")
    batch_size: int = option(32, "pairs per generate call")
    llm: LLMConfig = option(factory=LLMConfig)


class Judge(LLMStep):
    name = "⚖️ Judge"
    stage = "judge"
    id_column, text_column = "pair_id", "answer"
    reject_schema = schemas.JUDGED_REJECTS

    def __init__(self, cfg: JudgeConfig, **kw):
        super().__init__(cfg, **kw)
        self.cfg, self.batch_size = cfg, cfg.batch_size
        folder = adapter_folder(self.llm)
        self.classifier = None
        if is_classifier(folder):
            self.classifier = JudgeClassifier.load(folder)
            self.prompt_fingerprint = fingerprint("classifier", content_digest(Path(folder) / CLASSIFIER_FILE))
            return
        self.format = resolve_format("judge", cfg.prompt_format, self.llm, "rubric", "rubric-completion")
        self.params = self.format.sampling(max_tokens=cfg.max_tokens)
        self.prompt_fingerprint = fingerprint(self.format.fingerprint, self.params.to_dict(), cfg.rubric)

    def setup_model(self, rank: int) -> None:
        if self.classifier is None:
            return super().setup_model(rank)
        from fineinstructions.stages.index import load_embedder

        self.embedder = load_embedder(self.classifier.embedder)

    @property
    def model_id(self) -> str:
        if self.classifier is None:
            return super().model_id
        return f"judge-classifier:{self.prompt_fingerprint}+{self.embedder.weights_fingerprint}"

    def process(self, rows: list[dict]) -> Iterable[Outcome]:
        if self.classifier is not None:
            yield from self._classify(rows)
            return
        requests = [self.format.render({"instruction": r["instruction"], "answer": r["answer"],
                                        "rubric": self.cfg.rubric}, self.params) for r in rows]
        for row, c in zip(rows, self.generate(requests)):
            out = {**row, "judge_model_id": self.model_id, "judge_prompt_fingerprint": self.prompt_fingerprint}
            if not c.ok:
                yield {**out, "judgement": c.error, "score": None}, "llm_error"
                continue
            parsed = self.format.parse(c.text) or {}
            # the labelled field first ("Score: 4"), then the whole judgement ("I'd give it **4**")
            score = parse_score(parsed.get("score")) or parse_score(c.text)
            out.update(judgement=c.text, score=score)
            if score is None:
                yield out, "unparseable_score"
            else:
                yield self._scored(out, score)

    def _classify(self, rows: list[dict]) -> Iterable[Outcome]:
        features = pair_features(self.embedder, [r["instruction"] or "" for r in rows], [r["answer"] for r in rows])
        for row, expected in zip(rows, self.classifier.expected(features)):
            out = {**row, "judge_model_id": self.model_id, "judge_prompt_fingerprint": self.prompt_fingerprint,
                   "judgement": f"expected score {expected:.3f}"}
            yield self._scored(out, self.classifier.score(float(expected)))

    def _scored(self, out: dict, score: int) -> Outcome:
        self.stat_update(f"dist/score/{score}")
        return {**out, "score": score}, None if score >= self.cfg.min_score else "low_score"


def run(cfg: JudgeConfig) -> StageSummary:
    if not cfg.input:
        raise UserError("stage judge needs --input (the output folder of the instantiate stage)")
    if not 1 <= cfg.min_score <= 5:
        raise UserError("--min-score must be between 1 and 5")
    files, reader = stage_input(cfg.input, "answer", "pair_id", "instantiate")
    step = Judge(cfg, input_files=files, progress=cfg.progress)
    if step.classifier is None:  # a classifier needs no LLM
        preflight(cfg.llm)
    return run_stage("judge", cfg, reader, step, schemas.JUDGED, settings=llm_settings(step.llm, step.prompt_fingerprint))
