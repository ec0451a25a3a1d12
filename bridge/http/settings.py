"""Settings of the HTTP companion, derived once from the bridge config (and the environment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.config import BridgeConfig
from bridge.curve_keys import CurveClientKeys

VLM_API_KEY_ENV = "VLM_API_KEY"


@dataclass(frozen=True)
class HttpSettings:
    server_endpoint: str  # the inference server, as a client connects to it
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()  # X-Moondream-Auth keys for every model route; empty -> no auth
    open_predict: bool = False  # True: /predict needs no key even when keys are set (predecessor scripts)
    max_inflight_per_caller: int = 32  # per API key, else per remote address (429 beyond)
    body_read_timeout_s: float = 30.0  # a request body must arrive within this (408 beyond)
    server_token: str | None = None  # sent to the inference server when it requires tokens
    curve: CurveClientKeys | None = None  # CURVE keys for the inference server, when it encrypts
    max_body_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 60.0
    probe_interval_s: float = 0.5  # health probe period of the inference server
    probe_timeout_s: float = 3.0  # generous: a busy CPU-only server must not look dead
    down_after_failures: int = 3  # consecutive failed probes before an up server counts as down
    max_image_pixels: int = 16_777_216
    max_image_width: int = 4096
    max_image_height: int = 4096
    max_instruction_chars: int = 2000
    latency_window: int = 200  # recent requests per op kept for the status strip's percentiles

    def __post_init__(self) -> None:
        if self.request_timeout_s <= 0 or self.probe_interval_s <= 0 or self.probe_timeout_s <= 0:
            raise ValueError("timeouts and intervals must be > 0")
        if self.max_inflight_per_caller < 1 or self.body_read_timeout_s <= 0:
            raise ValueError("max_inflight_per_caller must be >= 1 and body_read_timeout_s > 0")
        if self.down_after_failures < 1:
            raise ValueError("down_after_failures must be >= 1")


def _curve_keys(config: BridgeConfig) -> CurveClientKeys | None:
    http = config.http
    if not http.curve_client_secret_key_file:
        return None
    return CurveClientKeys.from_files(http.curve_server_key_file, http.curve_client_secret_key_file)


def connect_endpoint(bind: str) -> str:
    """A bind address -> the address a local client connects to (``*``/``0.0.0.0`` -> loopback)."""
    if not bind.startswith("tcp://"):
        return bind
    host, sep, port = bind[len("tcp://") :].rpartition(":")
    if not sep:
        return bind
    if host in ("*", "0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    return f"tcp://{host}:{port}"


def settings_from_config(
    config: BridgeConfig,
    env: Mapping[str, str] | None = None,
    *,
    server: str | None = None,
    host: str | None = None,
    port: int | None = None,
) -> HttpSettings:
    """``[http]`` + ``[limits]`` of the config; ``VLM_API_KEY`` in ``env`` adds an API key."""
    http = config.http
    keys = list(http.api_keys)
    env_key = (env or {}).get(VLM_API_KEY_ENV, "").strip()
    if env_key and env_key not in keys:
        keys.append(env_key)
    endpoint = server or http.server or connect_endpoint(config.server.bind)
    if endpoint.endswith(":*") or endpoint.endswith(":0"):
        raise ValueError(f"cannot connect to a wildcard port: {endpoint!r}; pass --server with the real port")
    return HttpSettings(
        server_endpoint=endpoint,
        host=host if host is not None else http.host,
        port=port if port is not None else http.port,
        api_keys=tuple(keys),
        open_predict=http.open_predict,
        max_inflight_per_caller=http.max_inflight_per_caller,
        body_read_timeout_s=http.body_read_timeout_s,
        server_token=config.server.auth_tokens[0] if config.server.auth_tokens else None,
        curve=_curve_keys(config),
        max_body_bytes=http.max_body_bytes,
        request_timeout_s=http.request_timeout_s,
        max_image_pixels=config.limits.max_image_pixels,
        max_image_width=config.limits.max_image_width,
        max_image_height=config.limits.max_image_height,
        max_instruction_chars=config.limits.max_instruction_chars,
    )
