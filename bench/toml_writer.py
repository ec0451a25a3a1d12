"""Write the small TOML configs the benchmarks hand to ``vtla-bridge serve`` (no extra dependency)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    raise TypeError(f"{where}: cannot write {type(value).__name__} to TOML")


def _table(name: str, table: Mapping[str, Any], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if name:
        lines.append(f"[{name}]")
    for key, value in scalars.items():
        lines.append(f"{key} = {_value(value, f'{name}.{key}')}")
    lines.append("")
    for key, sub in tables.items():
        _table(f"{name}.{key}" if name else key, sub, lines)


def to_toml(table: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _table("", table, lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def write_toml(path: Path, table: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(table))
    return path
