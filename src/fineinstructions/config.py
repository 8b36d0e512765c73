"""Configuration: typed dataclasses whose field names are the YAML keys and (with dashes) the CLI flags.

One definition serves three doors -- Python (`QueriesConfig(input=...)`), YAML (`input: ...`) and the CLI
(`--input ...`) -- so a name never drifts between them. Precedence: dataclass default < YAML < CLI flag.
Nested sections (`llm:`) become prefixed flags (`--llm-model`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

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


def add_arguments(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """One flag per dataclass field; nested dataclass fields get `--{field}-` prefixed flags."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        if dataclasses.is_dataclass(tp):
            add_arguments(parser, tp, prefix=f"{prefix}{f.name}.")
            continue
        if typing.get_origin(tp) in (dict, list) or tp in (dict, list):
            continue  # structured values are YAML-only
        flag = "--" + (prefix + f.name).replace(".", "-").replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kwargs: dict[str, Any] = dict(dest=prefix + f.name, default=argparse.SUPPRESS)
        kwargs["help"] = (_help(f) + f" (default: {default})").strip()
        if tp is bool:
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


def build(cls, values: dict[str, Any], where: str = "config"):
    """Instantiate `cls` from a (nested) dict, refusing unknown keys with the list of known ones."""
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown key(s) in {where}: {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        tp = _base_type(hints[name])
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = build(tp, value, where=f"{where}.{name}")
        kwargs[name] = value
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise UserError(f"incomplete {where}: {e}") from e
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
