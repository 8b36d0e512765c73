"""Prompt formats are data: YAML files under `prompts/<stage>/`, rendered and parsed by `PromptFormat`.

A format says how to ask (chat turns or a raw completion prompt, few-shot examples, sampling defaults) and how to
read the answer (a JSON object, or labelled lines such as `Template: ...`). Users plug in a released model's I/O
contract or their own prompt by pointing `--prompt-format` at a YAML file; the format's content hash goes into
every output row, so results from different prompts never mix unnoticed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fineinstructions.errors import UserError
from fineinstructions.llm.base import Request, SamplingParams, fingerprint
from fineinstructions.parsing import extract_json_object


@dataclass(frozen=True)
class PromptFormat:
    name: str
    mode: str  # "chat" | "completion"
    parser: str  # "json" | "fields" | "text" (the whole answer is the single field)
    fields: dict[str, str]  # output field -> JSON key ("json"; "a|b" = first key present) or line label ("fields")
    user: str = ""  # str.format template over the input (and over each example)
    #: instead of `user`: the user turn is this JSON object, {key: input field} (the released models' contract)
    user_json: dict[str, str] | None = None
    assistant: str = "json"  # str.format template over an example's outputs, or "json"
    system: str | None = None
    header: str = ""  # completion mode: text before the examples
    separator: str = "\n"  # completion mode: between blocks
    answer_prefix: str = ""  # completion mode: appended after the final user block; the model continues it
    #: completion mode: a second pass. The first answer is cut at its first line, this text is appended and the
    #: model continues; small models then cannot skip a field or start it wrongly (e.g. "\nAnswer: <excerpt>")
    followup: str | None = None
    examples: list[dict[str, str]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(asdict(self))

    def sampling(self, **overrides: Any) -> SamplingParams:
        p = {**self.params, **{k: v for k, v in overrides.items() if v is not None}}
        p["stop"] = tuple(p.get("stop", ()))
        return SamplingParams(**p)

    def _assistant(self, example: dict[str, str]) -> str:
        if self.assistant == "json":
            if example.get("incompatible"):  # a negative example: the model should answer null
                return "null"
            return json.dumps({self.fields[k].split("|")[0]: example[k] for k in self.fields}, ensure_ascii=False)
        return self.assistant.format(**example)

    def _user(self, inputs: dict[str, Any]) -> str:
        if self.user_json is not None:
            return json.dumps({key: inputs[name] for key, name in self.user_json.items()}, ensure_ascii=False)
        return self.user.format(**inputs)

    def render(self, inputs: dict[str, Any], params: SamplingParams | None = None) -> Request:
        params = params or self.sampling()
        if self.mode == "chat":
            messages = [{"role": "system", "content": _fill(self.system, inputs)}] if self.system else []
            for ex in self.examples:
                messages += [
                    {"role": "user", "content": self._user(ex)},
                    {"role": "assistant", "content": self._assistant(ex)},
                ]
            messages.append({"role": "user", "content": self._user(inputs)})
            return Request.chat(messages, params)
        blocks = [self._user(ex) + self._assistant(ex) for ex in self.examples]
        blocks.append(self._user(inputs) + self.answer_prefix)
        return Request.completion(_fill(self.header, inputs) + self.separator.join(blocks), params)

    def parse(self, text: str) -> dict[str, Any] | None:
        """The answer's fields (None when they can't be found)."""
        if self.parser == "text":  # the whole answer is the one field (e.g. a rephrased document)
            full = (self.answer_prefix + " " if self.answer_prefix else "") + text.strip()
            return {next(iter(self.fields)): full.strip()} if text.strip() else None
        if self.parser == "json":
            obj = extract_json_object(text)
            if obj is None:
                return None
            return {k: next((obj[a] for a in key.split("|") if a in obj), None) for k, key in self.fields.items()}
        full = self.answer_prefix + text
        found = {}
        for k, label in self.fields.items():
            m = re.search(rf"^[ \t]*{re.escape(label)}[ \t]*(.*)$", full, re.M)
            found[k] = m.group(1).strip() if m else None
        return found if any(v for v in found.values()) else None


def _fill(text: str, inputs: dict[str, Any]) -> str:
    """Put input values into `{name}` placeholders of a system prompt or header; every other brace (JSON shown
    to the model, say) stays as written, unlike str.format."""
    return re.sub(r"\{(\w+)\}", lambda m: str(inputs[m.group(1)]) if m.group(1) in inputs else m.group(0), text)


def available(stage: str) -> list[str]:
    folder = resources.files("fineinstructions.prompts") / stage
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_format(stage: str, name_or_path: str) -> PromptFormat:
    """A bundled format by name (`prompts/<stage>/<name>.yaml`) or any YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"prompt format file not found: {name_or_path}")
        text = path.read_text(encoding="utf-8")
    else:
        res = resources.files("fineinstructions.prompts") / stage / f"{name_or_path}.yaml"
        if not res.is_file():
            raise UserError(
                f"unknown {stage} prompt format {name_or_path!r}: choose one of {', '.join(available(stage))} "
                "or give a path to a YAML file"
            )
        text = res.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    try:
        fmt = PromptFormat(**data)
    except TypeError as e:
        raise UserError(f"prompt format {name_or_path!r} is malformed: {e}") from e
    if fmt.user_json is None and not fmt.user:
        raise UserError(f"prompt format {name_or_path!r}: give `user` (a text template) or `user_json`")
    if fmt.mode not in ("chat", "completion") or fmt.parser not in ("json", "fields", "text"):
        raise UserError(f"prompt format {name_or_path!r}: mode must be chat|completion and parser json|fields|text")
    return fmt
