"""The answers to ``hello``, ``health`` and ``stats`` (docs/protocol.md).

The I/O thread answers them itself, so they never wait behind model work: from the facts the
inference loop published (``LoopState``, written by the loop thread only and read here attribute
by attribute) and the I/O thread's own admission and delivery counters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bridge
from bridge.admission import Admission
from bridge.config import BridgeConfig
from bridge.loop_state import LoopState
from bridge.protocol import SUPPORTED_VERSIONS, ErrorCode, ProtocolError
from models.model_kinds import SIMULATED_KIND


def hello_result(config: BridgeConfig, state: LoopState, served_ops: frozenset[str], auth_mode: str) -> dict[str, Any]:
    models = {
        m.info.name: {**m.description, "kind": m.info.kind, "random_weights": m.info.random_weights}
        for m in (state.policy, state.vlm)
        if m is not None
    }
    limits = config.limits
    return {
        "protocol": list(SUPPORTED_VERSIONS),
        "server": {"name": config.server.name, "version": bridge.__version__, "device": state.device},
        "ops": sorted(served_ops),
        "models": models,
        "limits": {
            "max_message_bytes": config.server.max_message_bytes,
            "max_array_bytes": limits.max_array_bytes,
            "max_image_width": limits.max_image_width,
            "max_image_height": limits.max_image_height,
            "max_image_pixels": limits.max_image_pixels,
            "max_instruction_chars": limits.max_instruction_chars,
            "max_batch": config.batching.max_batch,
            "max_inflight": config.server.max_inflight,
            "max_inflight_per_client": config.server.max_inflight_per_client,
            "max_inflight_bytes": config.server.max_inflight_bytes,
        },
        "auth": auth_mode,
    }


def health_result(
    config: BridgeConfig,
    state: LoopState,
    loop_alive: bool,
    uptime_s: float,
    queue_depth: int,
    transport: Mapping[str, int],
) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for role, spec_kind, loaded in (
        ("policy", config.policy.kind, state.policy),
        ("vlm", config.vlm.kind, state.vlm),
    ):
        if role == "vlm" and not config.vlm.enabled:
            continue
        if loaded is None:
            models[spec_kind] = {"loaded": False, "role": role}
        else:
            info = loaded.info
            models[info.name] = {
                "loaded": True,
                "role": role,
                "kind": info.kind,
                "random_weights": info.random_weights,
                "parameters": info.parameters,
                "device": info.device,
                "dtype": info.dtype,
                "source": info.source,
                "simulated": info.kind == SIMULATED_KIND,
            }
            if "memory" in loaded.description:  # bytes of weights, KV cache, largest activation, staging
                models[info.name]["memory"] = loaded.description["memory"]
            if loaded.frame_staging is not None:  # thread-safe: frames gathered vs stacked, ring rows
                models[info.name]["frame_staging"] = loaded.frame_staging()
    status = state.status
    if status == "ok" and not loop_alive:
        status = "degraded"
    result = {
        "status": status,
        "models": models,
        "device": state.device,
        "dtype": state.dtype,
        "cuda_available": state.cuda_available,
        "gpu_memory_gb": state.gpu_memory_gb,
        "queue_depth": queue_depth,
        "uptime_s": uptime_s,
        "counters": dict(state.counters),
        "transport": dict(transport),
        "generation": {"active": state.generation_active, "waiting": state.generation_waiting},
    }
    if state.detail:
        result["detail"] = state.detail
    return result


def transport_counters(admission: Admission, replies_dropped: Mapping[str, int]) -> dict[str, int]:
    """What the I/O thread refused or could not deliver (also the companion's metrics)."""
    return {
        "inflight_bytes": admission.total_bytes,
        "refused_overloaded": admission.refused,
        "replies_dropped_peer_gone": replies_dropped.get("peer_gone", 0),
        "replies_dropped_send_queue_full": replies_dropped.get("send_queue_full", 0),
    }


def stats_result(state: LoopState) -> dict[str, Any]:
    policy = state.policy
    if policy is None or policy.stats is None:
        raise ProtocolError(ErrorCode.MODEL_UNAVAILABLE, "no policy is loaded")
    return policy.stats
