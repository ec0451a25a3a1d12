"""The action layout of an ``act`` result, in physical units: the one source for every policy.

``actions`` is ``(H, ACTION_DIM)`` float32: ``[dx, dy, dz]`` metres, ``[droll, dpitch, dyaw]``
radians, gripper in ``[0 (open), 1 (closed)]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

ACTION_NAMES: Final = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
ACTION_UNITS: Final = ("m", "m", "m", "rad", "rad", "rad", "closed_fraction")  # gripper: 0 open .. 1 closed
ACTION_DIM: Final = len(ACTION_NAMES)
TRANSLATION: Final = slice(0, 3)  # dx, dy, dz
ROTATION: Final = slice(3, 6)  # droll, dpitch, dyaw
GRIPPER_INDEX: Final = ACTION_NAMES.index("gripper")
GRIPPER_OPEN: Final = 0.0
GRIPPER_CLOSED: Final = 1.0
ACTION_DESCRIPTION: Final[Mapping[str, str]] = MappingProxyType(
    {
        "0-2": "translation (dx, dy, dz) in meters",
        "3-5": "rotation (droll, dpitch, dyaw) in radians",
        "6": "gripper (0=open, 1=closed)",
    }
)
