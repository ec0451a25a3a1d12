"""Settings of the openpi endpoint, derived once from the bridge config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.config import BridgeConfig
from bridge.http.settings import connect_endpoint
from vtla_contracts.openpi_keys import KeyMapping, presets, resolve_mapping

OPENPI_API_KEY_ENV = "OPENPI_API_KEY"  # adds an "Authorization: Api-Key" key (compose, k8s secrets)


@dataclass(frozen=True)
class OpenpiSettings:
    server_endpoint: str  # the inference server, as a client connects to it
    host: str = "127.0.0.1"
    port: int = 8001
    api_keys: tuple[str, ...] = ()  # "Authorization: Api-Key <key>"; empty -> no auth
    server_token: str | None = None  # sent to the inference server when it requires tokens
    mapping: KeyMapping = presets()["libero"]
    request_timeout_s: float = 60.0
    max_array_bytes: int = 64 * 1024 * 1024  # per array in an observation (the server's own limit)
    max_message_bytes: int = 0  # largest websocket frame; 0: no limit (openpi's default)
    policy_poll_s: float = 0.25  # on connect, while the server loads: how often to ask for the policy

    def __post_init__(self) -> None:
        if self.request_timeout_s <= 0 or self.policy_poll_s <= 0:
            raise ValueError("timeouts and intervals must be > 0")


def settings_from_config(
    config: BridgeConfig,
    *,
    server: str | None = None,
    host: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> OpenpiSettings:
    """``[openpi]`` (+ the server's token and array limit) -> settings; arguments override;
    ``OPENPI_API_KEY`` in ``env`` adds an API key."""
    openpi = config.openpi
    env_key = (env or {}).get(OPENPI_API_KEY_ENV, "").strip()
    api_keys = tuple(dict.fromkeys((*openpi.api_keys, env_key))) if env_key else openpi.api_keys
    endpoint = server or openpi.server or connect_endpoint(config.server.bind)
    if endpoint.endswith(":*") or endpoint.endswith(":0"):
        raise ValueError(f"cannot connect to a wildcard port: {endpoint!r}; pass --server with the real port")
    return OpenpiSettings(
        server_endpoint=endpoint,
        host=host if host is not None else openpi.host,
        port=port if port is not None else openpi.port,
        api_keys=api_keys,
        server_token=config.server.auth_tokens[0] if config.server.auth_tokens else None,
        mapping=resolve_mapping(openpi.mapping, openpi.custom),
        request_timeout_s=openpi.request_timeout_s,
        max_array_bytes=config.limits.max_array_bytes,
        max_message_bytes=openpi.max_message_bytes,
    )
