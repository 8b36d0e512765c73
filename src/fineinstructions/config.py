"""Configuration: typed dataclasses whose field names are the YAML keys and (with dashes) the CLI flags.

One definition serves three doors -- Python (`QueriesConfig(input=...)`), YAML (`input: ...`) and the CLI
(`--input ...`) -- so a name never drifts between them. Precedence: dataclass default < YAML < CLI flag.
Nested sections (`llm:`) become prefixed flags (`--llm-model`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from fineinstructions.errors import UserError


def load_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values")
    return data


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> Any:
    """`int | None` → int; `str` → str."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def add_arguments(parser: argparse.ArgumentParser, cls, prefix: str = "", skip: frozenset[str] = frozenset()) -> None:
    """One flag per dataclass field (except `skip`); nested dataclass fields get `--{field}-` prefixed flags."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = _base_type(hints[f.name])
        if dataclasses.is_dataclass(tp):
            add_arguments(parser, tp, prefix=f"{prefix}{f.name}.")
            continue
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        item = args[0] if origin is list and len(args) == 1 and args[0] in (str, int) else None  # a repeatable flag
        if item is None and (origin in (dict, list) or tp in (dict, list)):
            continue  # structured values are YAML-only
        flag = "--" + (prefix + f.name).replace(".", "-").replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kwargs: dict[str, Any] = dict(dest=prefix + f.name, default=argparse.SUPPRESS)
        kwargs["help"] = (_help(f) + f" (default: {default})").strip()
        if item is not None:  # a list of plain values: the flag repeats (--held-out A --held-out B)
            kwargs.update(action="append", type=item, help=kwargs["help"] + "; repeat the flag for several")
        elif tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp if tp in (int, float) else str
            if choices := f.metadata.get("choices"):
                kwargs["choices"] = choices
        parser.add_argument(flag, **kwargs)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _forbid_extra(cls) -> None:
    """Unknown keys are errors: set pydantic's `extra="forbid"` on `cls` and every dataclass nested in it."""
    if "__pydantic_config__" not in vars(cls):
        cls.__pydantic_config__ = ConfigDict(extra="forbid")
    for tp in _hints(cls).values():
        tp = _base_type(tp)
        if dataclasses.is_dataclass(tp):
            _forbid_extra(tp)


@functools.cache
def _adapter(cls) -> TypeAdapter:
    _forbid_extra(cls)
    return TypeAdapter(cls)


def _describe(error: dict, known: dict[str, list[str]]) -> str:
    """One clause per pydantic error: the dotted key, what was wrong, and what was given."""
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "unexpected_keyword_argument":
        parent = ".".join(str(p) for p in error["loc"][:-1])
        return f"unknown key {loc!r} (known keys{' of ' + parent if parent else ''}: {', '.join(known.get(parent, []))})"
    if error["type"] == "missing" or error["type"] == "missing_argument":
        return f"{loc}: required"
    return f"{loc}: {error['msg'][0].lower() + error['msg'][1:]} (got {error.get('input')!r})"


def _known_keys(cls, prefix: str = "") -> dict[str, list[str]]:
    out = {prefix: sorted(f.name for f in dataclasses.fields(cls))}
    for name, tp in _hints(cls).items():
        tp = _base_type(tp)
        if dataclasses.is_dataclass(tp):
            out.update(_known_keys(tp, f"{prefix}.{name}" if prefix else name))
    return out


def _check_choices(obj, where: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{where}.{f.name}")
        elif (choices := f.metadata.get("choices")) and value is not None and value not in choices:
            raise UserError(f"{where}: {f.name}: {value!r} is not one of {', '.join(map(str, choices))}")


def build(cls, values: dict[str, Any], where: str = "config"):
    """Instantiate `cls` from a (nested) dict, checking every key and type before any work starts.

    Validation is pydantic's (lax mode: the YAML string "0.5" for a float becomes 0.5, "3e-3" -- which YAML reads
    as a string -- becomes 0.003); a wrong type, an unknown key or a value outside a field's choices is one line
    naming the key. Why here: a typo found hours later inside a task costs the run, found now it costs a second.
    """
    try:
        obj = _adapter(cls).validate_python(values)
    except ValidationError as e:
        problems = "; ".join(_describe(err, _known_keys(cls)) for err in e.errors())
        raise UserError(f"{where}: {problems}") from None
    _check_choices(obj, where)
    return obj


def from_sources(cls, yaml_values: dict[str, Any], cli: argparse.Namespace | dict[str, Any], where: str = "config"):
    flags = _nest(vars(cli) if isinstance(cli, argparse.Namespace) else cli)
    flags = {k: v for k, v in flags.items() if k not in ("command", "config", "func")}
    return build(cls, merge(yaml_values, flags), where=where)


def option(default: Any = None, help: str = "", choices: tuple | None = None, factory=None) -> Any:
    """A dataclass field with CLI help text attached."""
    meta = {"help": help, **({"choices": choices} if choices else {})}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def to_dict(obj) -> dict[str, Any]:
    return dataclasses.asdict(obj)
