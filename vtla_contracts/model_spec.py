"""Which model to load and from where: one ``[policy]`` or ``[vlm]`` table of the config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """A model kind (a registered name or ``package.module:callable``) and its source."""

    kind: str
    preset: str = "tiny"
    path: str = ""  # local checkpoint directory; empty -> the preset with random weights
    hub_download: bool = False  # opt-in: fetch official weights from the Hugging Face Hub
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
