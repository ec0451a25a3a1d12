"""``vtla-bridge serve --devices cuda:0,cuda:1`` (or ``all``): one supervised inference server per device.

One process per GPU, each with its own inference loop, models and ROUTER socket — the scale-out
unit of the bridge (a GPU is never shared between two loops). The processes are supervised as
``vtla-bridge up`` supervises its two (:mod:`bridge.supervise`): a server that dies is restarted
with exponential backoff, the others keep serving; one that dies quickly three times in a row
stops everything with status 1; Ctrl-C / SIGTERM stops all of them cleanly.

**Port scheme.** Server *k* (the *k*-th entry of ``--devices``, from 0) binds the base
endpoint's port + *k*: with ``--bind tcp://0.0.0.0:5555`` (the default ``[server] bind``'s port),
``cuda:0`` serves on 5555, ``cuda:1`` on 5556, … An ``ipc://PATH.sock`` base becomes
``ipc://PATH-k.sock``; a ``tcp://HOST:*`` base gives every server a free port of its own. The
endpoints are printed once as the comma-separated list clients take
(``BridgeClient("tcp://h:5555,tcp://h:5556")``, ``run-sim --server ...``).

Each server is ``vtla-bridge serve --device DEV --bind EP_k``: ``hello.server.device`` and
``health.device`` name its device. ``cpu`` may appear in the list (several times), which is how
the tests run this without a GPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence

from bridge.config import ConfigError, load_config, with_overrides
from bridge.log_setup import configure_logging
from bridge.supervise import Child, Supervisor, SupervisorPolicy, resolve_bind

logger = logging.getLogger(__name__)


def cuda_device_count() -> int:
    """GPUs on this machine, from ``nvidia-smi -L`` (no torch import in the supervisor); 0 without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def parse_devices(text: str, count_gpus: int | None = None) -> list[str]:
    """``"all"`` -> every CUDA device; ``"cuda:0,cuda:1"`` / ``"cpu,cpu"`` -> that list (checked)."""
    if text.strip() == "all":
        n = cuda_device_count() if count_gpus is None else count_gpus
        if n == 0:
            raise ConfigError("--devices all: no CUDA device found (nvidia-smi lists none)")
        return [f"cuda:{i}" for i in range(n)]
    devices = [d.strip() for d in text.split(",")]
    for device in devices:
        index = device.partition(":")[2]
        if device != "cpu" and not (device.startswith("cuda:") and index.isdigit()):
            raise ConfigError(f"--devices: expected cuda:N, cpu or all, got {device!r}")
    cuda = [d for d in devices if d != "cpu"]
    if len(set(cuda)) != len(cuda):
        raise ConfigError(f"--devices: a GPU listed twice in {text!r} (one server per GPU)")
    return devices


def device_endpoints(base: str, count: int) -> list[str]:
    """The port scheme: server k binds base port + k (ipc: PATH-k; tcp://HOST:*: a free port each)."""
    if base.startswith("tcp://"):
        host, _, port = base[len("tcp://"):].rpartition(":")
        if port in ("*", "0"):
            return [resolve_bind(base) for _ in range(count)]
        if not port.isdigit() or int(port) + count - 1 > 65535:
            raise ConfigError(f"--bind: cannot derive {count} ports from {base!r}")
        return [f"tcp://{host}:{int(port) + k}" for k in range(count)]
    if base.startswith("ipc://"):
        stem, dot, ext = base.rpartition(".")
        return [f"{stem}-{k}.{ext}" if dot and "/" not in ext else f"{base}-{k}" for k in range(count)]
    raise ConfigError(f"--bind: one server per device needs tcp:// or ipc://, got {base!r}")


def connect_endpoints(binds: Sequence[str]) -> list[str]:
    """What a client connects to: a wildcard host (0.0.0.0, *) becomes this machine's loopback."""
    out = []
    for bind in binds:
        for wildcard in ("tcp://0.0.0.0:", "tcp://*:"):
            if bind.startswith(wildcard):
                bind = "tcp://127.0.0.1:" + bind[len(wildcard):]
        out.append(bind)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtla-bridge serve --devices",
                                     description="one supervised inference server per device")
    parser.add_argument("--devices", required=True, help="cuda:0,cuda:1,... or all (cpu entries allowed)")
    parser.add_argument("--config", help="TOML config for every server (default: built-in defaults)")
    parser.add_argument("--bind", help="base endpoint; server k binds its port + k (default: [server] bind)")
    parser.add_argument("--log-level", default=os.environ.get("VTLA_LOG_LEVEL", "INFO"))
    parser.add_argument("--min-uptime-s", type=float, default=SupervisorPolicy.min_uptime_s,
                        help="a server that lived less than this failed quickly (3 in a row: give up)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
        devices = parse_devices(args.devices)
        binds = device_endpoints(args.bind or config.server.bind, len(devices))
        for bind in binds:
            with_overrides(config, server={"bind": bind})  # validates each endpoint
    except ConfigError as exc:
        print(f"vtla-bridge serve: {exc}", file=sys.stderr)
        return 2
    common = [*(["--config", args.config] if args.config else []), "--log-level", str(args.log_level)]
    children = [
        Child(f"server {k} ({device})",
              [sys.executable, "-m", "bridge", "serve", "--bind", bind, "--device", device, *common])
        for k, (device, bind) in enumerate(zip(devices, binds, strict=True))
    ]
    supervisor = Supervisor(children, SupervisorPolicy(stop_grace_s=config.server.shutdown_grace_s + 5.0,
                                                       min_uptime_s=args.min_uptime_s))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, supervisor.request_stop)
    endpoints = ",".join(connect_endpoints(binds))

    def banner() -> None:
        rows = "\n".join(f"  {device:<8} {bind}" for device, bind in zip(devices, binds, strict=True))
        print(f"vtla-bridge serve: {len(devices)} inference servers\n{rows}\n  endpoints {endpoints}\n"
              "  Ctrl-C stops all.", file=sys.stderr, flush=True)

    code = supervisor.run(on_started=banner)
    if supervisor.failed:
        print(f"vtla-bridge serve: {supervisor.failed}", file=sys.stderr)
    return code
