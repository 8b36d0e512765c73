"""The one small interface every LLM backend implements.

Stages never talk to a model library directly: they build `Request`s and get `Completion`s back, in order, in
batches. That keeps prompts, caching, retries and fingerprints identical whether the model runs in-process on a
laptop CPU or behind a vLLM server on a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings; part of the cache key, so two runs with different settings never share answers."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    #: base seed of a sampled request; the seed actually used is `request_seed(request)` (base seed + content)
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class FillTemplate:
    """The template an instruction must follow (`template_fill.TemplateFill`): written between `prefix` and `suffix`
    (the output's own text around the instruction, e.g. `{"instruction": "` and `"`), each `<fi>` slot filled from
    the request's `copy_source` -- with one of `choices[k]` for slot k when a stage knows which spans fit it."""

    prefix: str
    template: str
    suffix: str
    choices: tuple[tuple[str, ...], ...] | None = None


@dataclass(frozen=True)
class Request:
    """Either chat `messages` or a raw `prompt` (completion mode), never both.

    `copy_source`: text that `<excerpt>` tags in the answer must copy verbatim, exactly as the answer has to write
    it (a JSON-answer format gives the JSON-escaped document). Backends that can constrain decoding (transformers:
    `copy_constraint.py`) keep every open excerpt inside it; the others ignore it. `fill_template` likewise makes
    the instruction follow a template, its slots filled from `copy_source`."""

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    copy_source: str | None = None
    fill_template: FillTemplate | None = None

    def __post_init__(self):
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a Request needs exactly one of `messages` or `prompt`")

    @classmethod
    def chat(cls, messages: Sequence[Message], params: SamplingParams | None = None) -> "Request":
        return cls(messages=tuple(dict(m) for m in messages), params=params or SamplingParams())

    @classmethod
    def completion(cls, prompt: str, params: SamplingParams | None = None) -> "Request":
        return cls(prompt=prompt, params=params or SamplingParams())

    def to_dict(self) -> dict[str, Any]:
        d = {
            "messages": [dict(m) for m in self.messages] if self.messages is not None else None,
            "prompt": self.prompt,
            "params": self.params.to_dict(),
        }
        if self.copy_source is not None:  # only then: the cache keys of unconstrained requests stay as they were
            d["copy_source"] = self.copy_source
            d["constraint_rules"] = CONSTRAINT_RULES
        if self.fill_template is not None:
            d["fill_template"] = json.loads(json.dumps(dataclasses.asdict(self.fill_template)))  # nested tuples as lists
        return d


#: version of the constrained-decoding rules (`copy_constraint.py`, `template_fill.py`), part of a constrained
#: request's cache key: the same request decodes differently once the rules change, so old answers must not be reused
CONSTRAINT_RULES = 5


@dataclass
class Completion:
    """What came back for one request. Failures are data (`error` set, `finish_reason="error"`), not exceptions,
    so one bad request never takes down a batch of thousands."""

    text: str = ""
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "cached"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Completion":
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})

    @classmethod
    def failed(cls, error: str) -> "Completion":
        return cls(text="", finish_reason="error", error=error)


def request_seed(request: Request) -> int | None:
    """The seed a sampled request is generated with: its base seed mixed with its own content.

    Why not the base seed alone: a backend seeded once per batch draws each request's tokens from a stream shared
    with its batch-mates, so a resumed run (whose batches hold only the requests not yet cached) or another batch
    size would sample differently. Seeded by content, a request samples the same tokens in any batch, on any rerun,
    and `best_of` candidates (base seeds seed+1, seed+2, ...) still differ. None for greedy requests."""
    p = request.params
    if p.temperature <= 0 or p.seed is None:
        return None
    content = {"messages": request.to_dict()["messages"], "prompt": request.prompt, "seed": p.seed}
    return int(fingerprint(content, length=8), 16) & 0x7FFFFFFF


OnResult = Callable[[int, "Completion"], None]


class LLMBackend(ABC):
    """Batched generation. Implementations return exactly one `Completion` per `Request`, in the same order."""

    #: identifies the weights (name or path + revision/file hash); used in cache keys and output fingerprints
    model_id: str = "unknown"

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[Completion]: ...

    def generate_each(self, requests: Sequence[Request], on_result: OnResult) -> list[Completion]:
        """`generate`, calling `on_result(i, completion)` as each answer comes back, so a caller can store it at
        once (the request cache does: a kill then loses only the requests in flight). Backends that finish
        requests one by one or in sub-batches override this; the default reports them when the batch is done."""
        out = self.generate(requests)
        for i, c in enumerate(out):
            on_result(i, c)
        return out

    def loglikelihood(self, texts: Sequence[str]) -> list[float]:
        """The summed log-probability of each text's tokens, read as plain text from its start: to choose among
        finished candidates (`instantiate --fill-by rank`) rather than write one token by token. Backends that
        cannot score text raise `NotImplementedError`."""
        raise NotImplementedError(f"{type(self).__name__} cannot score text")

    def close(self) -> None:
        """Release servers, sessions or GPU memory. Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fingerprint(*parts: Any, length: int = 16) -> str:
    """Stable short hash of JSON-serialisable parts (model ids, prompt formats, params)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]
