"""openpi observation key mappings: the vocabulary of bridge inputs, and the named presets.

The presets (``libero``, ``droid``, ``aloha``) are data, in ``openpi_mappings.toml`` beside this
module; ``[openpi] mapping = "custom"`` takes the same form from ``[openpi.custom]``. This module
only defines and validates mappings (the config validates them on load); translating an
observation through one is ``bridge.openpi.mapping``'s job. Torch-free.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from vtla_contracts.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CUSTOM = "custom"
CAMERA = "camera"  # the policy's first camera; "camera:NAME" names one
PROPRIO = "proprio"
INSTRUCTION = "instruction"
TACTILE_IMAGE = "tactile.image"
TACTILE_FORCE_TORQUE = "tactile.force_torque"
DROP = "drop"
_PLAIN_TARGETS = (CAMERA, PROPRIO, INSTRUCTION, TACTILE_IMAGE, TACTILE_FORCE_TORQUE, DROP)


@dataclass(frozen=True)
class KeyMapping:
    """openpi observation key -> bridge input, in order (the order proprio parts are concatenated)."""

    name: str
    keys: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, str]:
        return dict(self.keys)


def _check_target(where: str, target: Any) -> str:
    if not isinstance(target, str):
        raise ConfigError(f"{where}: expected a string target, got {target!r}")
    if target in _PLAIN_TARGETS or (target.startswith(CAMERA + ":") and len(target) > len(CAMERA) + 1):
        return target
    raise ConfigError(f"{where}: unknown target {target!r}; one of {[*_PLAIN_TARGETS, 'camera:NAME']}")


def mapping_from_table(name: str, table: Mapping[str, Any], where: str) -> KeyMapping:
    if not table:
        raise ConfigError(f"{where}: the key mapping is empty")
    keys = tuple((str(key), _check_target(f"{where}.{key!r}", target)) for key, target in table.items())
    return KeyMapping(name, keys)


@functools.lru_cache(maxsize=1)
def presets() -> Mapping[str, KeyMapping]:
    """The named mappings shipped in openpi_mappings.toml."""
    text = resources.files("vtla_contracts").joinpath("openpi_mappings.toml").read_text(encoding="utf-8")
    tables = tomllib.loads(text)
    return {name: mapping_from_table(name, table, f"openpi_mappings.toml [{name}]") for name, table in tables.items()}


def resolve_mapping(name: str, custom: Mapping[str, Any]) -> KeyMapping:
    """``[openpi] mapping`` + ``[openpi.custom]`` -> the mapping in use (ConfigError naming the key)."""
    if name == CUSTOM:
        return mapping_from_table(CUSTOM, custom, "openpi.custom")
    if name not in presets():
        raise ConfigError(f"openpi.mapping: unknown mapping {name!r}; one of {[*presets(), CUSTOM]}")
    if custom:
        raise ConfigError(f"openpi.custom: set, but openpi.mapping is {name!r}; use mapping = \"custom\"")
    return presets()[name]
