"""The startup banner: what is served, from where, on which device — and loudly if weights are random."""

from __future__ import annotations

from bridge.config import BridgeConfig
from bridge.server import InferenceServer
from models.model_kinds import SIMULATED_KIND

_RULE = "=" * 72


def banner(config: BridgeConfig, server: InferenceServer, config_source: str | None = None) -> str:
    state = server.loop.state
    lines = [_RULE, f" vtla-bridge inference server  ·  protocol v1  ·  {server.endpoint}", _RULE]
    lines.append(f" config: {config_source or 'built-in defaults (= configs/default.toml)'}")
    lines.append(f" device: {state.device}  dtype: {state.dtype}  cuda_available: {state.cuda_available}")
    lines.append(
        f" batching: max_batch={config.batching.max_batch} max_wait_ms={config.batching.max_wait_ms:g}"
        f"  max_inflight={config.server.max_inflight}"
        f" (per client {config.server.max_inflight_per_client})"
    )
    lines.append(f" auth: {'token' if config.server.auth_tokens else 'none'}")
    random_models = []
    for loaded in (state.policy, state.vlm):
        if loaded is None:
            continue
        info = loaded.info
        tag = "  <<< RANDOM WEIGHTS >>>" if info.random_weights else ""
        if info.kind == SIMULATED_KIND:
            tag = f"  <<< SIMULATED: {info.device} timing, no model runs >>>"
        lines.append(
            f" {loaded.role:<6} {info.name} ({info.kind}) from {info.source}: {info.parameters / 1e6:.2f} M params{tag}"
        )
        if info.random_weights:
            random_models.append(info.name)
    if random_models:
        lines.append(_RULE)
        lines.append(f" WARNING: {', '.join(random_models)} use RANDOM WEIGHTS: outputs are meaningless.")
        lines.append(" Point [policy]/[vlm] path at real checkpoints for real actions and captions.")
    lines.append(_RULE)
    lines.append(" Ready for inference.")
    return "\n".join(lines)
