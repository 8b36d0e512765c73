"""`LLMStep`: a `StageStep` that talks to an LLM backend (templatize, instantiate, judge).

One place for what every LLM stage needs: loading the backend inside the task (so finished tasks never load a
model), splitting CPU threads between local workers, counting sent/cached requests and tokens, and the settings
that decide whether an existing output folder may be resumed.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fineinstructions.llm import LLMConfig, adapter_folder, make_backend, resolve_adapter
from fineinstructions.llm.base import Completion, Request, SamplingParams
from fineinstructions.prompts import PromptFormat
from fineinstructions.pipeline.step import StageStep

#: LLM options that change how requests are sent, not what comes back: a resumed run may change them
_TRANSPORT = ("concurrency", "timeout", "cache_path", "num_threads", "server_timeout", "server_log_dir", "batch_size",
              "max_retries", "cache")


def llm_settings(llm: LLMConfig, prompt_fingerprint: str) -> dict[str, Any]:
    """What goes into `stage.json` for an LLM stage: the model settings that change answers, the model's identity
    (weights by content: a new fine-tune saved under the same folder name is another model), and the prompt."""
    from fineinstructions.llm.identity import model_identity

    return {"llm": {k: v for k, v in vars(llm).items() if k not in _TRANSPORT},
            "model_identity": model_identity(llm), "prompt_fingerprint": prompt_fingerprint}


class LLMStep(StageStep):
    #: the recipe stage this step runs (which shipped student `adapter: auto` means)
    stage: str = ""

    def __init__(self, cfg, **kw):
        """`cfg`: the stage's config (its output, llm, tasks, workers and executor)."""
        super().__init__(cfg.output, **kw)
        self.llm = resolve_adapter(cfg.llm, self.stage)
        self.tasks, self.workers, self.executor = cfg.tasks, cfg.workers, cfg.executor
        self.backend = None

    def setup(self, rank: int) -> None:
        self.setup_model(rank)

    def setup_model(self, rank: int) -> None:
        """Load what the step judges or writes with (the LLM backend): `setup` without the stage's own inputs, as
        `goldeval` needs it."""
        llm = self.llm
        cpus = int(os.environ.get("DATATROVE_CPUS_PER_TASK", "-1"))  # set by the slurm/ray executors: our share
        if llm.backend == "transformers" and not llm.num_threads and cpus > 0:
            llm = dataclasses.replace(llm, num_threads=cpus)
        elif llm.backend == "transformers" and not llm.num_threads:
            # split the cores between local workers: oversubscribed OpenMP threads spin and run ~10x slower
            # (OMP_NUM_THREADS, when set, is the user's budget for this process, not the machine's core count)
            workers = self.tasks if self.workers == -1 else max(1, min(self.workers, self.tasks))
            budget = int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
            llm = dataclasses.replace(llm, num_threads=max(1, budget // workers))
        if llm.backend == "serve" and not llm.server_log_dir:  # a managed server's log stays with the stage
            llm = dataclasses.replace(llm, server_log_dir=str(Path(self.output_dir) / "logs" / "servers"))
        if llm.cache and not llm.cache_path and self.executor != "local":
            # on a cluster: one SQLite file per task, under the stage's folder; never one file shared by nodes
            # (see llm/cache.py: SQLite over a network filesystem corrupts under concurrent writers)
            llm = dataclasses.replace(llm, cache_path=str(Path(self.output_dir) / "llm_cache" / f"rank-{rank:05d}.sqlite"))
        start = time.perf_counter()
        self.backend = make_backend(llm)
        self.stat_update("time/llm_load_ms", value=round(1000 * (time.perf_counter() - start)))

    def teardown(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        """Batched generation with request/token accounting in the stage statistics."""
        if not requests:
            return []
        start = time.perf_counter()
        completions = self.backend.generate(list(requests))
        # time spent waiting for the model: the rest of a stage's wall time is the pipeline's own overhead
        self.stat_update("time/llm_generate_ms", value=round(1000 * (time.perf_counter() - start)))
        for c in completions:
            if c.cached:
                self.stat_update("llm/cached_requests")
            else:
                self.stat_update("llm/sent_requests")
                self.stat_update("tokens/prompt", value=c.prompt_tokens)
                self.stat_update("tokens/completion", value=c.completion_tokens)
        return completions

    def generate_format(self, fmt: PromptFormat, requests: Sequence[Request],
                        seeds: Sequence[Callable[[str], str]] | None = None) -> list[Completion]:
        """`generate`, plus the format's follow-up pass: the text of each completion is what the format parses.

        `seeds[i](first line)` fills `{seed}` in the follow-up of request i (e.g. the opening words of the
        document sentence that best fits the instruction just written)."""
        first = self.generate(requests)
        if not fmt.followup or fmt.mode != "completion":
            return first
        heads = [c.text.split("\n", 1)[0] for c in first]
        todo = [i for i, c in enumerate(first) if c.ok]
        followups = {i: fmt.followup.replace("{seed}", seeds[i](heads[i]) if seeds else "") for i in todo}
        second = self.generate([dataclasses.replace(requests[i], prompt=requests[i].prompt + heads[i] + followups[i],
                                                    fill_template=None)  # the instruction is written by now
                                for i in todo])
        out = list(first)
        for i, c in zip(todo, second):
            text = heads[i] + followups[i] + c.text
            out[i] = dataclasses.replace(c, text=text, error=c.error,
                                         prompt_tokens=first[i].prompt_tokens + c.prompt_tokens,
                                         completion_tokens=first[i].completion_tokens + c.completion_tokens)
        return out


def candidate_params(fmt: PromptFormat, max_tokens: int | None, best_of: int, temperature: float,
                     seed: int) -> list[SamplingParams]:
    """Sampling settings of the `best_of` candidates per input: the format's greedy default, then seeded samples.

    Small models fail validation often; drawing a few candidates and keeping the first that passes every check
    (`first_passing`, which samples only where the greedy one failed) is the cheapest way to lift their yield."""
    return [fmt.sampling(max_tokens=max_tokens)] + [
        fmt.sampling(max_tokens=max_tokens, temperature=temperature, seed=seed + k) for k in range(1, best_of)
    ]


def first_passing(inputs: int, candidates: int, generate: Callable[[list[tuple[int, int]]], list[Completion]],
                  judge: Callable[[int, Completion], tuple[dict, str | None]]) -> list[tuple[dict, str | None]]:
    """Per input, the first candidate with no reject reason; if none passes, the greedy (first) one speaks for it.

    Candidates are drawn lazily: `generate([(input, k), ...])` is asked for candidate k only of the inputs whose
    candidates 0..k-1 all failed `judge(input, completion)`. The choice is the one generating all of them would
    give, at a fraction of the cost when most greedy answers pass (best-of 3 used to triple every stage's time)."""
    chosen: list[tuple[dict, str | None] | None] = [None] * inputs
    pending = list(range(inputs))
    for k in range(candidates):
        if not pending:
            break
        failed = []
        for i, completion in zip(pending, generate([(i, k) for i in pending])):
            outcome = judge(i, completion)
            if chosen[i] is None or outcome[1] is None:  # the greedy one, replaced by the first that passes
                chosen[i] = outcome
            if outcome[1] is not None:
                failed.append(i)
        pending = failed
    return chosen  # type: ignore[return-value]


def resolve_format(stage: str, name: str, llm: LLMConfig, chat: str, completion: str):
    """A stage's prompt format. `auto`: a distilled student's own contract when `llm.adapter` is one (its
    `student.json` names it); else the raw-completion few-shot format for the embedded small default model (it
    follows labelled few-shot lines far better than chat turns); else the chat format."""
    import json

    from fineinstructions.prompts import load_format

    if name == "auto":
        card = Path(llm.adapter) / "student.json" if adapter_folder(llm) else None
        if card is not None and card.is_file():
            name = json.loads(card.read_text())["prompt_format"]
        else:
            name = completion if is_embedded_default(llm) else chat
    return load_format(stage, name)


def is_embedded_default(llm: LLMConfig) -> bool:
    """The small model shipped with the package runs this stage (no --llm-model): the small-model defaults apply."""
    return llm.backend in ("transformers", "llamacpp") and not llm.model
