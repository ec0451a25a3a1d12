"""openpi observation dicts -> the bridge's ``act`` arguments, through a named key mapping.

The presets (``libero``, ``droid``, ``aloha``) are data, in ``mappings.toml`` beside this file;
``[openpi] mapping = "custom"`` takes the same form from ``[openpi.custom]``. Every key of an
observation must be in the mapping (``drop`` discards one explicitly), and every mapped input
must be one the served policy declares in ``hello`` — otherwise :class:`MappingError` names the
key and what the policy declares. Nothing is rescaled or silently dropped.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from bridge.codec import EncodedImage
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
_MAX_KEYS = 64
_MAX_DEPTH = 4


class MappingError(ValueError):
    """An observation that the key mapping or the served policy cannot take; the message says why."""


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
    """The named mappings shipped in mappings.toml."""
    text = resources.files("bridge.openpi").joinpath("mappings.toml").read_text(encoding="utf-8")
    tables = tomllib.loads(text)
    return {name: mapping_from_table(name, table, f"mappings.toml [{name}]") for name, table in tables.items()}


def resolve_mapping(name: str, custom: Mapping[str, Any]) -> KeyMapping:
    """``[openpi] mapping`` + ``[openpi.custom]`` -> the mapping in use (ConfigError naming the key)."""
    if name == CUSTOM:
        return mapping_from_table(CUSTOM, custom, "openpi.custom")
    if name not in presets():
        raise ConfigError(f"openpi.mapping: unknown mapping {name!r}; one of {[*presets(), CUSTOM]}")
    if custom:
        raise ConfigError(f"openpi.custom: set, but openpi.mapping is {name!r}; use mapping = \"custom\"")
    return presets()[name]


@dataclass(frozen=True)
class PolicyView:
    """What the served policy declares in ``hello``, as far as the mapping needs it."""

    name: str
    entry: Mapping[str, Any]  # the policy's hello.models entry
    cameras: tuple[str, ...]
    proprio_dim: int | None  # None: the policy takes no proprio; 0: any length
    tactile: frozenset[str]  # "image", "force_torque"

    @classmethod
    def from_hello(cls, hello: Mapping[str, Any]) -> PolicyView | None:
        """The model entry that has an action space, or None (no policy loaded yet)."""
        for name, entry in (hello.get("models") or {}).items():
            if isinstance(entry, Mapping) and isinstance(entry.get("action"), Mapping):
                proprio = entry.get("proprio")
                dim = int(proprio.get("dim") or 0) if isinstance(proprio, Mapping) else None
                tactile = entry.get("tactile")
                inputs = frozenset(str(k) for k in tactile) if isinstance(tactile, Mapping) else frozenset()
                cameras = tuple(entry.get("cameras") or ("primary",))
                return cls(str(name), entry, cameras, dim, inputs)
        return None

    def camera_for(self, target: str) -> str:
        return self.cameras[0] if target == CAMERA else target[len(CAMERA) + 1 :]

    def declared(self, what: str) -> str:
        value = self.entry.get(what)
        return f"hello.models.{self.name}.{what} = {value!r}"


def resolved(mapping: KeyMapping, policy: PolicyView) -> dict[str, str]:
    """The mapping with ``camera`` spelled as the camera it means (for the connection metadata)."""
    return {key: f"{CAMERA}:{policy.camera_for(t)}" if t.startswith(CAMERA) else t for key, t in mapping.keys}


def flatten(obs: Any) -> dict[str, Any]:
    """Nested maps -> one level, keys joined with "." (openpi's ALOHA sends {"images": {...}})."""
    if not isinstance(obs, dict):
        raise MappingError(f"an observation must be a map of key -> value, got {type(obs).__name__}")
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: dict[Any, Any], depth: int) -> None:
        for key, item in value.items():
            if not isinstance(key, str):
                raise MappingError(f"observation keys must be strings, got {key!r:.40}")
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(item, dict) and depth < _MAX_DEPTH:
                walk(path, item, depth + 1)
            else:
                flat[path] = item
            if len(flat) > _MAX_KEYS:
                raise MappingError(f"an observation may have at most {_MAX_KEYS} keys")

    walk("", obs, 1)
    return flat


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {list(value.shape)}"
    return type(value).__name__


def _image(key: str, value: Any) -> Any:
    if isinstance(value, EncodedImage):
        return value
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 3:
        return value  # (H, W, 3) or channels-first (3, H, W): the server reads both
    raise MappingError(f"{key!r}: expected a uint8 image array (H, W, 3) or (3, H, W), got {_describe(value)}")


def _numbers(key: str, value: Any) -> np.ndarray:
    arr = np.asarray(value) if isinstance(value, (np.ndarray, list, int, float)) else None
    if arr is None or arr.dtype.kind not in "biuf" or arr.ndim > 1:
        raise MappingError(f"{key!r}: expected numbers (a 1-D array, a list or a number), got {_describe(value)}")
    return arr.astype(np.float32).reshape(-1)


def to_act_args(obs: Any, mapping: KeyMapping, policy: PolicyView) -> dict[str, Any]:
    """An openpi observation -> keyword arguments of :meth:`bridge.ops.OpSurface.act`."""
    targets = mapping.as_dict()
    images: dict[str, Any] = {}
    proprio_parts: list[np.ndarray] = []
    proprio_keys: list[str] = []
    tactile: dict[str, Any] = {}
    args: dict[str, Any] = {}
    for key, value in flatten(obs).items():
        target = targets.get(key)
        if target is None:
            raise MappingError(
                f"observation key {key!r} is not in the {mapping.name!r} key mapping (its keys: {list(targets)}); "
                f"map it in [openpi.custom] with mapping = \"custom\" (\"drop\" discards it)"
            )
        if target == DROP:
            continue
        if target.startswith(CAMERA):
            camera = policy.camera_for(target)
            if camera not in policy.cameras:
                raise MappingError(
                    f"observation key {key!r} maps to camera {camera!r}, but the served policy {policy.name!r} "
                    f"has cameras {list(policy.cameras)} ({policy.declared('cameras')})"
                )
            images[camera] = _image(key, value)
        elif target == PROPRIO:
            if policy.proprio_dim is None:
                raise MappingError(
                    f"observation key {key!r} maps to proprio, but the served policy {policy.name!r} takes no "
                    f"proprio ({policy.declared('proprio')})"
                )
            proprio_parts.append(_numbers(key, value))
            proprio_keys.append(key)
        elif target == INSTRUCTION:
            if not isinstance(value, str):
                raise MappingError(f"{key!r}: expected a string (the instruction), got {_describe(value)}")
            args["instruction"] = value
        else:
            part = target.split(".", 1)[1]
            if part not in policy.tactile:
                raise MappingError(
                    f"observation key {key!r} maps to {target}, but the served policy {policy.name!r} does not "
                    f"take it ({policy.declared('tactile')})"
                )
            tactile[part] = _image(key, value) if part == "image" else _numbers(key, value)
    if not images:
        camera_keys = [k for k, t in mapping.keys if t.startswith(CAMERA)]
        raise MappingError(f"the observation has no camera image; the {mapping.name!r} mapping reads {camera_keys}")
    if proprio_parts:
        proprio = np.concatenate(proprio_parts)
        if policy.proprio_dim and proprio.shape[0] != policy.proprio_dim:
            raise MappingError(
                f"proprio from {proprio_keys} has {proprio.shape[0]} values, but the served policy {policy.name!r} "
                f"takes {policy.proprio_dim} ({policy.declared('proprio')})"
            )
        args["proprio"] = proprio
    if tactile:
        args["tactile"] = tactile
    args["images"] = images
    return args
