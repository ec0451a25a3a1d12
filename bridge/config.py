"""Configuration: frozen dataclasses loaded from TOML, validated on load.

Every error names the offending key (``server.max_batch: expected int, got 'x'``). Defaults
live here and nowhere else; ``configs/default.toml`` spells them out for users.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vtla_contracts.errors import ConfigError
from vtla_contracts.model_spec import ModelSpec
from vtla_contracts.openpi_keys import resolve_mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ServerConfig:
    bind: str = "tcp://127.0.0.1:5555"
    name: str = "vtla-bridge"
    auth_tokens: tuple[str, ...] = ()  # empty -> no auth
    max_inflight: int = 512  # requests admitted and not yet answered, all clients together
    max_inflight_per_client: int = 64  # per connection identity: no client can starve the others
    max_inflight_bytes: int = 512 * 1024 * 1024  # bytes of admitted, unanswered requests, all clients
    # routing ids (as their DEALER sets ZMQ_ROUTING_ID) of proxies whose next envelope frame
    # names the real client; behind any other proxy, per-client limits apply to the proxy as a whole
    trusted_proxies: tuple[str, ...] = ()
    # routing id -> its own max_inflight_per_client (e.g. the HTTP companion, which carries many callers)
    # ("x" also matches routing ids "x/..."; the companion's are "vtla-http/<random>")
    inflight_allowances: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({"vtla-http": 512}))
    max_message_bytes: int = 64 * 1024 * 1024  # whole request; larger -> payload_too_large
    decode_workers: int = 2  # threads that decode JPEG/PNG before the inference loop
    decode_workers_per_client: int = 1  # one client's images occupy at most this many of them
    frame_threshold_bytes: int = 1024  # reply arrays this large travel as separate frames
    shutdown_grace_s: float = 5.0  # on SIGINT/SIGTERM: time to finish in-flight work
    # CURVE (docs/security.md): the server's .key_secret file; empty -> no CURVE
    curve_secret_key_file: str = ""
    curve_clients_dir: str = ""  # allowed client public .key files; empty -> any client key (tokens required)


@dataclass(frozen=True)
class LimitsConfig:
    max_image_width: int = 4096
    max_image_height: int = 4096
    max_image_pixels: int = 16_777_216
    max_decoded_bytes_per_byte: int = 256  # JPEG/PNG decode work per byte sent (bombs: ~1000)
    max_array_bytes: int = 64 * 1024 * 1024
    max_instruction_chars: int = 2000
    max_deadline_ms: float = 3_600_000.0


@dataclass(frozen=True)
class BatchingConfig:
    max_batch: int = 64
    max_wait_ms: float = 0.0  # 0: never wait for stragglers (lowest latency)


@dataclass(frozen=True)
class SchedulerConfig:
    """The loop's scheduling policy (bridge/scheduling_policy.py)."""

    # model time (forwards, units, steps) guaranteed to generation while acts also wait; 0.35 so that
    # generation keeps >= 30 % of its unloaded tokens/s (its units run ~10 % slower under load)
    vlm_min_share: float = 0.35
    admission_share: float = 0.5  # of generation time: admission units vs decode steps, when both wait
    pad_batches: bool = True  # pad act batches to 1, 2, 4, ... max_batch (one shape per bucket)
    max_batch_ms: float = 0.0  # >0: act batches no longer than this (learnt), one row per waiting client at least
    overlap: bool = True  # run act batches beside a launched decode step (generators that can split one)
    # at most this share of the time acts hold for a periodic client's act due (0: no anticipation)
    anticipation_share: float = 0.1


@dataclass(frozen=True)
class DeviceConfig:
    device: str = "auto"  # auto -> cuda if available, else cpu
    dtype: str = "auto"  # auto -> bfloat16 on cuda, float32 on cpu
    cpu_threads: int = 0  # torch intra-op threads on CPU; 0 -> torch's default


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load: a registered kind or "module:callable", a preset, a checkpoint path."""

    kind: str = "vtla"
    preset: str = "tiny"
    path: str = ""  # empty -> the preset with RANDOM weights
    hub_download: bool = False  # opt-in download of official weights (Moondream)
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def spec(self) -> ModelSpec:
        return ModelSpec(self.kind, self.preset, self.path, self.hub_download, self.options)


@dataclass(frozen=True)
class PolicyConfig(ModelConfig):
    """The ``act`` model."""


@dataclass(frozen=True)
class VlmConfig(ModelConfig):
    """The model behind caption/query/detect/point."""

    kind: str = "moondream"
    enabled: bool = True


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    server: str = ""  # inference server endpoint; empty -> server.bind
    api_keys: tuple[str, ...] = ()  # X-Moondream-Auth keys; VLM_API_KEY adds one
    open_predict: bool = False  # with keys set, /predict still needs one unless this is true
    max_inflight_per_caller: int = 32  # per API key, else per remote address
    body_read_timeout_s: float = 30.0  # request bodies that stall longer: 408
    curve_server_key_file: str = ""  # the server's public .key, when it uses CURVE
    curve_client_secret_key_file: str = ""  # the companion's own .key_secret (its public .key: allowed)
    max_body_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 60.0


@dataclass(frozen=True)
class OpenpiConfig:
    """openpi's websocket policy protocol (bridge/openpi/, docs/openpi.md), a client of the server."""

    enabled: bool = True  # `vtla-bridge up` starts it
    host: str = "127.0.0.1"
    port: int = 8001
    server: str = ""  # inference server endpoint; empty -> server.bind
    api_keys: tuple[str, ...] = ()  # "Authorization: Api-Key <key>"; empty -> no auth
    mapping: str = "libero"  # observation key mapping: libero | droid | aloha | custom
    custom: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # mapping = "custom"
    request_timeout_s: float = 60.0  # one observation -> actions, and the wait for a policy on connect
    max_message_bytes: int = 0  # largest websocket frame accepted; 0: no limit (as openpi's server)


@dataclass(frozen=True)
class BridgeConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    vlm: VlmConfig = field(default_factory=VlmConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    openpi: OpenpiConfig = field(default_factory=OpenpiConfig)

    def __post_init__(self) -> None:
        _validate(self)


def _positive(path: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{path}: must be > 0, got {value}")


def _validate(cfg: BridgeConfig) -> None:
    for name in ("max_inflight", "max_inflight_per_client", "max_inflight_bytes", "max_message_bytes",
                 "decode_workers", "decode_workers_per_client"):
        _positive(f"server.{name}", getattr(cfg.server, name))
    for identity, allowance in cfg.server.inflight_allowances.items():
        if isinstance(allowance, bool) or not isinstance(allowance, int) or allowance <= 0:
            raise ConfigError(f"server.inflight_allowances.{identity}: expected an integer > 0, got {allowance!r}")
    for name in ("max_image_width", "max_image_height", "max_image_pixels", "max_array_bytes",
                 "max_decoded_bytes_per_byte"):
        _positive(f"limits.{name}", getattr(cfg.limits, name))
    _positive("batching.max_batch", cfg.batching.max_batch)
    if cfg.scheduler.max_batch_ms < 0:
        raise ConfigError(f"scheduler.max_batch_ms: must be >= 0, got {cfg.scheduler.max_batch_ms}")
    for name in ("vlm_min_share", "admission_share"):
        value = getattr(cfg.scheduler, name)
        if not 0.0 < value < 1.0:
            raise ConfigError(f"scheduler.{name}: must be in (0, 1), got {value}")
    if not 0.0 <= cfg.scheduler.anticipation_share < 1.0:
        raise ConfigError(f"scheduler.anticipation_share: must be in [0, 1), got {cfg.scheduler.anticipation_share}")
    if cfg.device.cpu_threads < 0:
        raise ConfigError(f"device.cpu_threads: must be >= 0, got {cfg.device.cpu_threads}")
    if cfg.batching.max_wait_ms < 0:
        raise ConfigError(f"batching.max_wait_ms: must be >= 0, got {cfg.batching.max_wait_ms}")
    if cfg.server.frame_threshold_bytes < 0:
        raise ConfigError("server.frame_threshold_bytes: must be >= 0")
    if cfg.server.curve_clients_dir and not cfg.server.curve_secret_key_file:
        raise ConfigError("server.curve_clients_dir: needs server.curve_secret_key_file")
    if cfg.server.curve_secret_key_file and not cfg.server.curve_clients_dir and not cfg.server.auth_tokens:
        raise ConfigError("server.curve_secret_key_file without curve_clients_dir accepts any client key: "
                          "set server.auth_tokens too (or list the allowed clients in curve_clients_dir)")
    if not cfg.server.bind.startswith(("tcp://", "ipc://", "inproc://")):
        raise ConfigError(f"server.bind: expected tcp://, ipc:// or inproc:// endpoint, got {cfg.server.bind!r}")
    if cfg.device.dtype not in ("auto", "float32", "bfloat16"):  # float16: the VTLA's towers are bf16/fp32 only
        raise ConfigError(f"device.dtype: expected auto, float32 or bfloat16, got {cfg.device.dtype!r}")
    if bool(cfg.http.curve_server_key_file) != bool(cfg.http.curve_client_secret_key_file):
        raise ConfigError("http.curve_server_key_file and http.curve_client_secret_key_file go together")
    if not 0 < cfg.http.port < 65536:
        raise ConfigError(f"http.port: expected 1..65535, got {cfg.http.port}")
    if not 0 < cfg.openpi.port < 65536:
        raise ConfigError(f"openpi.port: expected 1..65535, got {cfg.openpi.port}")
    _positive("openpi.request_timeout_s", cfg.openpi.request_timeout_s)
    if cfg.openpi.max_message_bytes < 0:
        raise ConfigError(f"openpi.max_message_bytes: must be >= 0, got {cfg.openpi.max_message_bytes}")
    resolve_mapping(cfg.openpi.mapping, cfg.openpi.custom)


def _coerce(path: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a table, got {type(value).__name__}")
        return _build(hint, value, path)  # type: ignore[arg-type]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: expected a list of strings, got {value!r}")
        return tuple(value)
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a table, got {type(value).__name__}")
        return MappingProxyType(dict(value))
    raise ConfigError(f"{path}: unsupported config type {hint!r}")  # pragma: no cover


def _build(cls: type[Any], table: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        where = f"[{prefix}]" if prefix else "top level"
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(path, value, hints[key])
    return cls(**kwargs)


def config_from_mapping(table: Mapping[str, Any]) -> BridgeConfig:
    config: BridgeConfig = _build(BridgeConfig, table)
    return config


def load_config(path: str | Path | None = None) -> BridgeConfig:
    """Load a TOML file; ``None`` gives the built-in defaults (same as configs/default.toml)."""
    if path is None:
        return BridgeConfig()
    path = Path(path)
    try:
        with path.open("rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return config_from_mapping(table)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def with_overrides(config: BridgeConfig, **sections: Mapping[str, Any]) -> BridgeConfig:
    """A copy with some fields of some sections replaced, e.g. ``server={"bind": ...}``."""
    changes = {name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()}
    return dataclasses.replace(config, **changes)


SERVER_TOKENS_ENV = "VTLA_BRIDGE_TOKENS"  # comma-separated; adds to [server] auth_tokens (compose, k8s secrets)


def with_environment(config: BridgeConfig, env: Mapping[str, str]) -> BridgeConfig:
    """Secrets that belong in the environment, not in a TOML file: ``VTLA_BRIDGE_TOKENS`` adds
    server tokens. The HTTP companion reads ``VLM_API_KEY`` itself (bridge/http/settings.py)."""
    extra = tuple(t.strip() for t in env.get(SERVER_TOKENS_ENV, "").split(",") if t.strip())
    if not extra:
        return config
    tokens = tuple(dict.fromkeys((*config.server.auth_tokens, *extra)))
    return with_overrides(config, server={"auth_tokens": tokens})


def resolve_device(config: DeviceConfig) -> tuple[str, str]:
    """-> (device, dtype) with "auto" resolved. Imports torch: call only in the server."""
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype
