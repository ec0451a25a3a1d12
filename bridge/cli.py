"""``vtla-bridge`` command line: one entry point, one subcommand per job.

Subcommands that belong to other parts (http, up, run-sim, convert-vtla, bench) are imported
only when used, so ``vtla-bridge run-sim`` works where torch is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Sequence

from bridge.log_setup import configure_logging

# subcommand -> "module:function" taking the remaining argv
DELEGATED = {
    "http": ("bridge.http.serve_http:main", "the HTTP companion (aiohttp), a client of the inference server"),
    "up": ("bridge.supervise:main", "start the inference server, the HTTP companion and the openpi endpoint together"),
    "proxy": ("bridge.proxy:main", "one address in front of several inference servers (libzmq's proxy)"),
    "run-sim": ("sim_adapters.runner:main", "drive a simulator in closed loop through the bridge"),
    "convert-vtla": ("models.vtla.convert:main", "import a predecessor VTLA checkpoint"),
    "openpi": ("bridge.openpi.serve_openpi:main", "openpi's websocket policy protocol, a client of the server"),
    "bench": ("bench.run_benchmarks:main", "run the benchmarks in bench/"),
    "keys": ("bridge.curve_keys:keys_main", "write CURVE key pairs (ZeroMQ certificate files)"),
}


def _serve(argv: Sequence[str]) -> int:
    if any(a == "--devices" or a.startswith("--devices=") for a in argv):  # one server per device
        from bridge.device_servers import main as serve_devices

        return serve_devices(argv)
    from bridge.banner import banner
    from bridge.config import ConfigError, load_config, with_environment, with_overrides

    parser = argparse.ArgumentParser(prog="vtla-bridge serve", description="run the ZeroMQ inference server")
    parser.add_argument("--config", help="TOML config (default: built-in defaults = configs/default.toml)")
    parser.add_argument("--bind", help="endpoint to bind, e.g. tcp://0.0.0.0:5555 or ipc:///tmp/vtla.sock")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: [device] device)")
    parser.add_argument("--devices", help="cuda:0,cuda:1,... or all: one supervised server per device "
                        "(bridge/device_servers.py)")
    parser.add_argument("--log-level", default=os.environ.get("VTLA_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = with_environment(load_config(args.config), os.environ)
        if args.bind:
            config = with_overrides(config, server={"bind": args.bind})
        if args.device:
            config = with_overrides(config, device={"device": args.device})
    except ConfigError as exc:
        print(f"vtla-bridge serve: {exc}", file=sys.stderr)
        return 2

    if importlib.util.find_spec("torch") is None:  # the base install is the client side
        print("vtla-bridge serve: torch is not installed; the inference server needs the server extra:"
              " pip install 'vtla-bridge[server]' (README: which torch build)", file=sys.stderr)
        return 2
    from bridge.server import InferenceServer

    server = InferenceServer(config)
    try:
        server.start()
    except Exception as exc:
        print(f"vtla-bridge serve: cannot bind {config.server.bind}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not server.wait_ready(0.2) and server.loop.state.status == "loading":
        if stop.is_set():
            server.stop()
            return 130
    if server.loop.state.status != "ok":
        print(f"vtla-bridge serve: {server.loop.state.detail}", file=sys.stderr)
        server.stop()
        return 1
    print(banner(config, server, args.config), file=sys.stderr, flush=True)
    stop.wait()
    server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"serve": "run the ZeroMQ inference server", **{k: v[1] for k, v in DELEGATED.items()}}
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"  {name:<14} {text}" for name, text in commands.items()]
        print("usage: vtla-bridge COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        print("\n'vtla-bridge COMMAND --help' explains each command.")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        import bridge

        print(bridge.__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "serve":
        return _serve(rest)
    if command not in DELEGATED:
        print(f"vtla-bridge: unknown command {command!r}; one of: {', '.join(commands)}", file=sys.stderr)
        return 2
    module_name, _, func = DELEGATED[command][0].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(
            f"vtla-bridge {command}: not available ({exc}); see the README for the extras to install", file=sys.stderr
        )
        return 2
    result = getattr(module, func)(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
