"""What the openpi websocket endpoint costs on top of the ZeroMQ protocol, and what batching gives it.

    python -m bench.openpi_endpoint [--rounds 200] [--clients 8] [--out DIR]

Three processes as in production — ``vtla-bridge serve`` (the benchmark null policy, so no model
compute hides the transport; chunk 50 as openpi's pi0 models), ``vtla-bridge openpi`` in front of
it, and this client process:

* ``zmq_act``     BridgeClient.act, 224x224x3 uint8 frame, sequential (the bridge's own protocol);
* ``openpi_ws``   openpi-client's WebsocketClientPolicy.infer of the same frame (libero keys),
  sequential: the extra cost of the websocket hop + openpi msgpack;
* ``openpi_ws_N`` N openpi clients at once (threads), each sequential: per-request latency,
  total observations/s and the batch sizes the server reports (here with a policy that takes
  ``--forward-ms`` per forward, so that requests of several connections meet in one batch).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.lifecycle import StartStop
from bench.processes import NULL_POLICY_KIND, ServerProcess, _ChildProcess, free_tcp_port
from bench.stats import summarize
from bridge.client import BridgeClient

CHUNK = 50


class OpenpiProcess(_ChildProcess, StartStop):
    """``vtla-bridge openpi`` in front of ``server_endpoint``, ready when /healthz answers."""

    def __init__(self, name: str, server_endpoint: str, work_dir: Path) -> None:
        self.port = free_tcp_port()
        argv = [sys.executable, "-m", "bridge", "openpi", "--server", server_endpoint, "--host", "127.0.0.1",
                "--port", str(self.port)]
        super().__init__(name, argv, work_dir / f"{name}.log")

    def start(self, ready_timeout_s: float = 60.0) -> OpenpiProcess:
        self._spawn()
        self._wait_http_ok(f"http://127.0.0.1:{self.port}/healthz", ready_timeout_s, 0.2)
        return self


def _openpi_client(port: int) -> Any:
    from openpi_client import websocket_client_policy

    with warnings.catch_warnings():  # openpi-client 0.1.2 + websockets >= 14: a DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)


def _sequential_zmq(endpoint: str, frame: np.ndarray, rounds: int) -> list[float]:
    samples = []
    with BridgeClient(endpoint, timeout_s=30) as client:
        for i in range(rounds + 10):
            started = time.perf_counter()
            client.act(images={"primary": frame}, instruction="pick up the cube")
            if i >= 10:
                samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def _sequential_openpi(port: int, frame: np.ndarray, rounds: int) -> tuple[list[float], list[int]]:
    policy = _openpi_client(port)
    samples, batch_sizes = [], []
    try:
        for i in range(rounds + 10):
            started = time.perf_counter()
            reply = policy.infer({"observation/image": frame, "prompt": "pick up the cube"})
            if i >= 10:
                samples.append((time.perf_counter() - started) * 1000.0)
                batch_sizes.append(int(reply["server_timing"]["batch_size"]))
    finally:
        policy._ws.close()
    return samples, batch_sizes


def _concurrent_openpi(port: int, frame: np.ndarray, clients: int, rounds: int) -> dict[str, Any]:
    policies = [_openpi_client(port) for _ in range(clients)]
    samples: list[list[float]] = [[] for _ in policies]
    batches: list[list[int]] = [[] for _ in policies]
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        barrier.wait()
        for _ in range(rounds):
            started = time.perf_counter()
            reply = policies[i].infer({"observation/image": frame, "prompt": f"client {i}"})
            samples[i].append((time.perf_counter() - started) * 1000.0)
            batches[i].append(int(reply["server_timing"]["batch_size"]))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(600)
    elapsed_s = time.perf_counter() - started
    for policy in policies:
        policy._ws.close()
    flat = [s for per in samples for s in per]
    sizes = [b for per in batches for b in per]
    return {
        "latency_ms": summarize(flat).as_dict(),
        "observations_per_s": len(flat) / elapsed_s,
        "batch_size_mean": float(np.mean(sizes)),
        "batch_size_max": int(max(sizes)),
    }


def run(rounds: int, clients: int, forward_ms: float, work_dir: Path) -> dict[str, Any]:
    work_dir.mkdir(parents=True, exist_ok=True)
    frame = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    base = {"device": {"device": "cpu"}, "vlm": {"enabled": False},
            "policy": {"kind": NULL_POLICY_KIND, "options": {"chunk_size": CHUNK}}}
    results: dict[str, Any] = {"rounds": rounds, "clients": clients, "chunk_size": CHUNK, "frame": [224, 224, 3]}
    server = ServerProcess("openpi-null", base, work_dir).start()
    try:
        endpoint = OpenpiProcess("openpi-endpoint", server.endpoint, work_dir).start()
        try:
            results["zmq_act"] = summarize(_sequential_zmq(server.endpoint, frame, rounds)).as_dict()
            samples, _ = _sequential_openpi(endpoint.port, frame, rounds)
            results["openpi_ws"] = summarize(samples).as_dict()
        finally:
            endpoint.stop()
    finally:
        server.stop()
    # the concurrent case: a policy whose forward takes forward_ms, so requests meet in batches
    timed = {**base, "policy": {"kind": "bench.openpi_endpoint:timed_null",
                                "options": {"chunk_size": CHUNK, "forward_ms": forward_ms}}}
    server = ServerProcess("openpi-timed", timed, work_dir).start()
    try:
        endpoint = OpenpiProcess("openpi-endpoint-n", server.endpoint, work_dir).start()
        try:
            results[f"openpi_ws_{clients}"] = _concurrent_openpi(endpoint.port, frame, clients, max(10, rounds // 4))
            results["openpi_ws_1_timed"] = _concurrent_openpi(endpoint.port, frame, 1, max(10, rounds // 4))
        finally:
            endpoint.stop()
    finally:
        server.stop()
    results["forward_ms"] = forward_ms
    return results


class TimedNullPolicy:
    """The null policy with a fixed cost per forward (benchmark only): requests of several
    connections then wait together and meet in one batch, as with a real model."""

    def __init__(self, inner: Any, forward_s: float) -> None:
        self._inner = inner
        self._forward_s = forward_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def act(self, batch: Sequence[Any]) -> np.ndarray:
        time.sleep(self._forward_s)
        return np.asarray(self._inner.act(batch))


def timed_null(spec: Any, device: str, dtype: str) -> TimedNullPolicy:
    """``kind = "bench.openpi_endpoint:timed_null"``, options ``chunk_size``, ``forward_ms``."""
    from bench.null_policy import load

    return TimedNullPolicy(load(spec, device, dtype), float(spec.options.get("forward_ms", 20.0)) / 1000.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.openpi_endpoint", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--forward-ms", type=float, default=20.0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    results = run(args.rounds, args.clients, args.forward_ms, out / "logs")
    (out / "openpi_endpoint.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
