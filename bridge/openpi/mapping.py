"""openpi observation dicts -> the bridge's ``act`` arguments, through a key mapping.

Mappings (the presets and the custom form) are defined in :mod:`vtla_contracts.openpi_keys`.
Every key of an observation must be in the mapping (``drop`` discards one explicitly), and every
mapped input must be one the served policy declares in ``hello`` — otherwise
:class:`MappingError` names the key and what the policy declares. Nothing is rescaled or
silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.codec import EncodedImage
from vtla_contracts.openpi_keys import (
    CAMERA,
    DROP,
    INSTRUCTION,
    PROPRIO,
    KeyMapping,
)

_MAX_KEYS = 64
_MAX_DEPTH = 4


class MappingError(ValueError):
    """An observation that the key mapping or the served policy cannot take; the message says why."""


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
