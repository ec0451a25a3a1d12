"""Simulator names -> adapter classes, imported only when used (so no simulator is imported early)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from sim_adapters.interface import AdapterSettings, SimAdapter

ADAPTERS: Mapping[str, str] = MappingProxyType(
    {
        "robosuite": "sim_adapters.robosuite_adapter:RobosuiteAdapter",
        "touch": "sim_adapters.mujoco_touch:TouchAdapter",
        "fetch": "sim_adapters.fetch_adapter:FetchAdapter",
        "metaworld": "sim_adapters.metaworld_adapter:MetaWorldAdapter",
        "maniskill": "sim_adapters.maniskill_adapter:ManiSkillAdapter",
        "libero": "sim_adapters.libero_adapter:LiberoAdapter",
    }
)


def make_adapter(sim: str, settings: AdapterSettings) -> SimAdapter:
    """Build the adapter for ``sim`` (a name above or ``"package.module:Class"``)."""
    target = ADAPTERS.get(sim, sim if ":" in sim else None)
    if target is None:
        raise ValueError(f"unknown simulator {sim!r}; known: {', '.join(sorted(ADAPTERS))}, or 'module:Class'")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    adapter: SimAdapter = cls(settings)
    return adapter
