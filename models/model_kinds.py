"""Model kinds the server can load, by name; each model module is imported only when used.

A kind is either a registered name (``vtla``, ``moondream``, the scripted experts) or an
import path ``"package.module:callable"`` for a user's own model. Every factory has the
signature ``factory(spec: ModelSpec, device: str, dtype: str) -> ActPolicy | Generator``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from vtla_contracts.model_spec import ModelSpec

logger = logging.getLogger(__name__)


SIMULATED_KIND = "simulated"  # models/simulated: timing of a named device, no model runs

# kind -> "module:callable"; the module is imported lazily so that the client stays light.
POLICY_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "vtla": "models.vtla.serving:load_policy",
        "expert-lift": "models.experts:load_expert",
        "expert-stack": "models.experts:load_expert",
        "expert-pickplace": "models.experts:load_expert",
        "expert-touch": "models.experts:load_expert",
        "expert-fetch": "models.experts:load_expert",
        "expert-metaworld": "models.experts:load_expert",
        "expert-maniskill": "models.experts:load_expert",
        "expert-libero": "models.experts:load_expert",
        SIMULATED_KIND: "models.simulated.policy:load_policy",
    }
)
GENERATOR_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "moondream": "models.moondream.serving:load_generator",
        SIMULATED_KIND: "models.simulated.generator:load_generator",
    }
)


class UnknownModelKind(ValueError):
    pass


def resolve_factory(kind: str, table: Mapping[str, str]) -> Callable[..., Any]:
    target = table.get(kind, kind if ":" in kind else None)
    if target is None:
        known = ", ".join(sorted(table))
        raise UnknownModelKind(f"unknown model kind {kind!r}; known: {known}, or 'module:callable'")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        factory: Callable[..., Any] = getattr(module, attr)
    except AttributeError as exc:
        raise UnknownModelKind(f"model kind {kind!r}: {module_name} has no {attr!r}") from exc
    return factory


def load_policy(spec: ModelSpec, device: str, dtype: str) -> Any:
    logger.info("loading policy kind=%s preset=%s path=%s", spec.kind, spec.preset, spec.path or "-")
    return resolve_factory(spec.kind, POLICY_KINDS)(spec, device, dtype)


def load_generator(spec: ModelSpec, device: str, dtype: str) -> Any:
    logger.info("loading generator kind=%s preset=%s path=%s", spec.kind, spec.preset, spec.path or "-")
    return resolve_factory(spec.kind, GENERATOR_KINDS)(spec, device, dtype)
