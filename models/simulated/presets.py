"""Simulated presets: TOML files under ``presets/`` (one per imitated model + device), with overrides.

A preset names what it imitates (a real architecture preset), a device file
(``presets/devices/<name>.toml``) and its cost-counting constants; ``[policy.options]`` /
``[vlm.options]`` may override any of them, e.g. ``options = {device = {compute_efficiency = 0.5}}``
or ``options = {device = "my-gpu"}`` for ``presets/devices/my-gpu.toml`` (docs/simulated.md).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from models.simulated.costs import KernelCounts
from models.simulated.device import DeviceModel
from vtla_contracts.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).with_name("presets")
POLICY_PRESETS = ("nano-2b-h200",)
GENERATOR_PRESETS = ("moondream2-h200",)


@dataclass(frozen=True)
class CostConstants:
    activation_rw_per_layer: float
    kernels_per_vision_layer: int
    kernels_per_text_layer: int
    kernels_per_phase_other: int

    @property
    def kernels(self) -> KernelCounts:
        return KernelCounts(self.kernels_per_vision_layer, self.kernels_per_text_layer, self.kernels_per_phase_other)


@dataclass(frozen=True)
class PolicyWorkload:
    text_tokens: int


@dataclass(frozen=True)
class GeneratorWorkload:
    max_sequences: int
    encode_chunk_crops: int
    prefill_chunk_tokens: int  # 0: one prefill unit
    prompt_tokens: int
    caption_short_tokens: int
    caption_normal_tokens: int
    caption_long_tokens: int
    answer_tokens: int
    objects: int


@dataclass(frozen=True)
class SimulatedPreset:
    name: str
    imitates: str
    device: DeviceModel
    costs: CostConstants
    workload: Mapping[str, Any]


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"simulated preset file not found: {path}") from None


def _build(cls: type[Any], table: Mapping[str, Any], where: str) -> Any:
    names = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(table) - set(names))
    missing = sorted(set(names) - set(table))
    if unknown or missing:
        raise ConfigError(f"{where}: unknown keys {unknown}, missing keys {missing}")
    values = {}
    for key, value in table.items():
        kind = names[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}.{key}: expected a number or string, got {value!r}")
        if kind == "int":
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{where}.{key}: expected an integer >= 0, got {value!r}")
        elif kind == "float":
            if isinstance(value, str):
                raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
            value = float(value)
        values[key] = value
    return cls(**values)


def load_preset(name: str, known: tuple[str, ...], options: Mapping[str, Any]) -> SimulatedPreset:
    if name not in known:
        raise ConfigError(f"unknown simulated preset {name!r}; known: {list(known)}")
    table = _read(PRESET_DIR / f"{name}.toml")
    unknown = sorted(set(options) - {"device", "costs", "workload"})
    if unknown:
        raise ConfigError(f"simulated options: unknown keys {unknown}; known: device, costs, workload")
    device_option = options.get("device", table["device"])
    device_name = device_option if isinstance(device_option, str) else table["device"]
    device_table = _read(PRESET_DIR / "devices" / f"{device_name}.toml")
    if isinstance(device_option, Mapping):
        device_table = {**device_table, **device_option}
    costs = {**table["costs"], **dict(options.get("costs", {}))}
    workload = {**table["workload"], **dict(options.get("workload", {}))}
    return SimulatedPreset(
        name=name,
        imitates=table["imitates"],
        device=_build(DeviceModel, device_table, f"simulated device {device_name}"),
        costs=_build(CostConstants, costs, f"simulated preset {name} [costs]"),
        workload=workload,
    )


def policy_workload(preset: SimulatedPreset) -> PolicyWorkload:
    workload: PolicyWorkload = _build(PolicyWorkload, preset.workload, f"simulated preset {preset.name} [workload]")
    return workload


def generator_workload(preset: SimulatedPreset) -> GeneratorWorkload:
    workload: GeneratorWorkload = _build(
        GeneratorWorkload, preset.workload, f"simulated preset {preset.name} [workload]"
    )
    if workload.max_sequences < 1 or workload.encode_chunk_crops < 1:
        raise ConfigError(f"simulated preset {preset.name}: max_sequences and encode_chunk_crops must be >= 1")
    return workload


def describe_preset(preset: SimulatedPreset) -> dict[str, Any]:
    """The ``simulated`` entry of hello/health: what is imitated, on which device, with which constants."""
    d = preset.device
    return {
        "preset": preset.name,
        "imitates": preset.imitates,
        "device": d.name,
        "peak_flops": d.peak_flops,
        "hbm_bytes_per_s": d.hbm_bytes_per_s,
        "compute_efficiency": d.compute_efficiency,
        "memory_efficiency": d.memory_efficiency,
        "kernel_launch_us": d.kernel_launch_us,
    }
