"""Benchmark 1: transport overhead of one ``act``, for a 224x224 and a 640x480 RGB frame.

Compared in one run, alternating request by request (the order rotates every round):

* ``zmq_echo``      a bare pyzmq ROUTER/DEALER echo of the bytes ``act`` sends (the floor);
* ``zmq_echo_flat`` the same echo sleeping ``flat_ms`` before it replies (the floor for the
  flat-cost variants: after a 5 ms pause every thread and idle CPU on the path wakes up cold);
* ``bridge_null``   the bridge with the benchmark null policy (codec + server + loop overhead);
* ``bridge_vtla``   the bridge with the tiny VTLA;
* ``http_png``      the HTTP companion's ``POST /predict`` with a PNG upload (the predecessor's way);
* ``http_jpeg_uri`` the HTTP companion's ``POST /v1/act`` with a JPEG ``data:`` URI;
* ``bridge_flat``   the bridge with a policy that takes a flat ``flat_ms`` (5 ms) per forward
  (the benchmark null policy with ``batch_ms``: a sleep, as a GPU forward is for the host);
* ``openpi_flat``   openpi's websocket policy server loop serving the same flat-cost policy,
  driven by openpi-client's ``WebsocketClientPolicy`` (runs when ``openpi_client`` and
  ``websockets`` are importable). The server is a reimplementation of openpi's
  ``WebsocketPolicyServer`` written for this benchmark (:mod:`bench.openpi_server`), not openpi's code.

Overhead = round trip − model compute (``compute_ms`` reported by the server). The HTTP
variants encode the frame on every request, as a predecessor client did; that time is part of
their round trip and also reported on its own (``encode``). Both HTTP variants sit in front of
the null-policy server, so their overhead compares directly with ``bridge_null``. For
``openpi_flat`` compute is the server's ``server_timing.infer_ms``. The ratios of each size:
bridge overhead ÷ echo round trip, flat-cost overheads ÷ ``zmq_echo_flat``'s (round trip − its
measured pause), and ``bridge_flat`` ÷ ``openpi_flat`` round trip (p50, p99).
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.echo import EchoClient, EchoServer
from bench.frames import SIZES_HW, encode, scene_frame
from bench.processes import (
    NULL_POLICY_KIND,
    HttpProcess,
    OpenpiStyleServerProcess,
    ServerProcess,
    http_companion_available,
    openpi_client_available,
    server_table,
)
from bench.stats import ratio, summarize
from bridge.client import BridgeClient
from bridge.messages import act_args, build_request
from bridge.protocol import OP_ACT
from vtla_contracts.action_layout import ACTION_DIM

logger = logging.getLogger(__name__)

VARIANTS = (
    "zmq_echo", "bridge_null", "bridge_vtla", "http_png", "http_jpeg_uri",
    "zmq_echo_flat", "bridge_flat", "openpi_flat",
)
HTTP_VARIANTS = ("http_png", "http_jpeg_uri")


@dataclass(frozen=True)
class TransportOptions:
    sizes: tuple[str, ...] = ("224x224", "640x480")
    rounds: int = 150  # measured requests per variant and size
    warmup_rounds: int = 10  # discarded
    variants: tuple[str, ...] = VARIANTS
    timeout_s: float = 30.0
    torch_threads: int | None = 1  # OMP_NUM_THREADS of the servers; None: torch's default
    flat_ms: float = 5.0  # bridge_flat / openpi_flat: the policy's fixed cost per forward


@dataclass(frozen=True)
class Sample:
    """One request's clocks (ms). ``queue_ms``/``server_ms`` are the server's, NaN where unknown."""

    round_trip_ms: float
    compute_ms: float = 0.0
    encode_ms: float = 0.0  # client-side image encoding, part of round_trip_ms
    queue_ms: float = float("nan")
    server_ms: float = float("nan")


@dataclass
class _Samples:
    round_trip_ms: list[float] = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.round_trip_ms.append(sample.round_trip_ms)
        self.compute_ms.append(sample.compute_ms)
        self.encode_ms.append(sample.encode_ms)
        self.queue_ms.append(sample.queue_ms)
        self.server_ms.append(sample.server_ms)


Probe = Callable[[], Sample]  # one request


def server_timing_ms(header: str, name: str) -> float:
    """``compute;dur=1.250, server;dur=2.0`` -> 1.25 for ``name="compute"``; NaN when absent."""
    for part in header.split(","):
        label, _, rest = part.strip().partition(";")
        if label == name and rest.startswith("dur="):
            return float(rest[len("dur=") :])
    return float("nan")


def _echo_probe(client: EchoClient, frame: np.ndarray) -> Probe:
    frames = [b"", *build_request(1, OP_ACT, act_args(frame), None, None, 1024)]

    def probe() -> Sample:
        round_trip_ms, pause_ms = client.exchange(frames)
        return Sample(round_trip_ms, compute_ms=pause_ms)

    return probe


def _bridge_probe(client: BridgeClient, frame: np.ndarray) -> Probe:
    def probe() -> Sample:
        result = client.act(image=frame)
        if result.actions.ndim != 2 or result.actions.shape[1] != ACTION_DIM:
            raise RuntimeError(f"act returned actions of shape {result.actions.shape}")
        timing = result.timing
        return Sample(
            result.round_trip_ms,
            compute_ms=float(timing.get("compute_ms", 0.0)),
            queue_ms=float(timing.get("queue_ms", float("nan"))),
            server_ms=float(timing.get("server_ms", float("nan"))),
        )

    return probe


def _openpi_probe(policy: Any, frame: np.ndarray) -> Probe:
    obs = {"observation/image": frame}

    def probe() -> Sample:
        start = time.perf_counter()
        reply = policy.infer(obs)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        actions = reply.get("actions")
        if not isinstance(actions, np.ndarray) or actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
            raise RuntimeError(f"openpi server answered {str(reply)[:200]}")
        return Sample(elapsed_ms, compute_ms=float(reply["server_timing"]["infer_ms"]))

    return probe


def _openpi_client(port: int) -> Any:
    import warnings

    from openpi_client import websocket_client_policy

    with warnings.catch_warnings():  # openpi-client 0.1.2 + websockets >= 14: a DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)


def _http_png_probe(session: Any, base_url: str, frame: np.ndarray, timeout_s: float) -> Probe:
    def probe() -> Sample:
        start = time.perf_counter()
        png = encode(frame, "png")
        encoded = time.perf_counter()
        files = {"image": ("frame.png", png, "image/png")}
        response = session.post(base_url + "/predict", files=files, timeout=timeout_s)
        body = response.json()
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if response.status_code != 200 or not body.get("success"):
            raise RuntimeError(f"/predict answered {response.status_code}: {str(body)[:200]}")
        header = response.headers.get("Server-Timing", "")
        return Sample(
            elapsed_ms,
            compute_ms=server_timing_ms(header, "compute"),
            encode_ms=(encoded - start) * 1000.0,
            queue_ms=server_timing_ms(header, "queue"),
            server_ms=server_timing_ms(header, "server"),
        )

    return probe


def _http_jpeg_probe(session: Any, base_url: str, frame: np.ndarray, timeout_s: float) -> Probe:
    def probe() -> Sample:
        start = time.perf_counter()
        uri = "data:image/jpeg;base64," + base64.b64encode(encode(frame, "jpeg")).decode("ascii")
        encoded = time.perf_counter()
        response = session.post(base_url + "/v1/act", json={"image_url": uri}, timeout=timeout_s)
        body = response.json()
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if response.status_code != 200 or "action" not in body:
            raise RuntimeError(f"/v1/act answered {response.status_code}: {str(body)[:200]}")
        timing = body.get("timing", {})
        return Sample(
            elapsed_ms,
            compute_ms=float(timing.get("compute_ms", float("nan"))),
            encode_ms=(encoded - start) * 1000.0,
            queue_ms=float(timing.get("queue_ms", float("nan"))),
            server_ms=float(timing.get("server_ms", float("nan"))),
        )

    return probe


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _summaries(samples: _Samples) -> dict[str, Any]:
    s = samples
    overhead = [rt - c for rt, c in zip(s.round_trip_ms, s.compute_ms, strict=True)]
    # where the overhead goes: outside the server (client, sockets, I/O-thread decode before the
    # receive stamp, reply send) and inside it around the model call (queue + bookkeeping)
    outside = [rt - sv for rt, sv in zip(s.round_trip_ms, s.server_ms, strict=True)]
    inside = [sv - c for sv, c in zip(s.server_ms, s.compute_ms, strict=True)]
    return {
        "round_trip": summarize(s.round_trip_ms).as_dict(),
        "compute": summarize(s.compute_ms).as_dict(),
        "overhead": summarize(overhead).as_dict(),
        "client_encode": summarize(s.encode_ms).as_dict(),
        "server_queue": summarize(_finite(s.queue_ms)).as_dict(),
        "server_non_compute": summarize(_finite(inside)).as_dict(),
        "outside_server": summarize(_finite(outside)).as_dict(),
        "round_trip_ms": samples.round_trip_ms,  # raw, for the CDF plots
    }


def _measure_size(
    probes: Mapping[str, Probe], options: TransportOptions, label: str, progress: bool
) -> dict[str, _Samples]:
    names = list(probes)
    samples = {name: _Samples() for name in names}
    total = options.warmup_rounds + options.rounds
    for i in tqdm(
        range(total), desc=f"transport {label}", file=sys.stderr, disable=not progress, leave=False
    ):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:  # rotate: no variant always goes first
            sample = probes[name]()
            if i >= options.warmup_rounds:
                samples[name].add(sample)
    return samples


def _ratios(size_result: Mapping[str, Any]) -> dict[str, float]:
    def p50(name: str, what: str) -> float:
        entry = size_result.get(name)
        return float(entry[what]["p50_ms"]) if isinstance(entry, Mapping) and what in entry else float("nan")

    def p99(name: str, what: str) -> float:
        entry = size_result.get(name)
        return float(entry[what]["p99_ms"]) if isinstance(entry, Mapping) and what in entry else float("nan")

    echo = p50("zmq_echo", "round_trip")
    return {
        "bridge_null_overhead_vs_echo": ratio(p50("bridge_null", "overhead"), echo),
        "bridge_vtla_overhead_vs_echo": ratio(p50("bridge_vtla", "overhead"), echo),
        "bridge_flat_overhead_vs_echo": ratio(p50("bridge_flat", "overhead"), echo),
        "openpi_flat_overhead_vs_echo": ratio(p50("openpi_flat", "overhead"), echo),
        "bridge_flat_overhead_vs_echo_flat": ratio(p50("bridge_flat", "overhead"), p50("zmq_echo_flat", "overhead")),
        "openpi_flat_overhead_vs_echo_flat": ratio(p50("openpi_flat", "overhead"), p50("zmq_echo_flat", "overhead")),
        "bridge_flat_vs_openpi_flat_round_trip_p50": ratio(
            p50("bridge_flat", "round_trip"), p50("openpi_flat", "round_trip")
        ),
        "bridge_flat_vs_openpi_flat_round_trip_p99": ratio(
            p99("bridge_flat", "round_trip"), p99("openpi_flat", "round_trip")
        ),
        "http_png_overhead_vs_bridge_null": ratio(
            p50("http_png", "overhead"), p50("bridge_null", "overhead")
        ),
        "http_jpeg_uri_overhead_vs_bridge_null": ratio(
            p50("http_jpeg_uri", "overhead"), p50("bridge_null", "overhead")
        ),
    }


def _http_unavailable_reason() -> str | None:
    """Why the HTTP variants cannot run here, or None when they can."""
    if not http_companion_available():
        return "pending: the HTTP companion (bridge/http/serve_http.py) is not in this tree"
    if importlib.util.find_spec("requests") is None:
        return "pending: the HTTP client 'requests' is not installed (pip install requests)"
    return None


def run_transport(options: TransportOptions, work_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Start the processes, measure every size, stop them; -> the JSON-ready result."""
    unknown = sorted(set(options.variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown transport variant(s) {unknown}; known: {list(VARIANTS)}")
    wanted = list(options.variants)
    pending: dict[str, str] = {}
    http_missing = _http_unavailable_reason() if any(v in HTTP_VARIANTS for v in wanted) else None
    if http_missing is not None:
        logger.warning("transport: HTTP variants skipped: %s", http_missing)
        for v in HTTP_VARIANTS:
            if v in wanted:
                pending[v] = http_missing
                wanted.remove(v)
    if "openpi_flat" in wanted:
        openpi_missing = openpi_client_available()
        if openpi_missing is not None:
            logger.warning("transport: openpi_flat skipped: %s", openpi_missing)
            pending["openpi_flat"] = openpi_missing
            wanted.remove("openpi_flat")
    need_null = "bridge_null" in wanted or any(v in HTTP_VARIANTS for v in wanted)
    result: dict[str, Any] = {"options": {**options.__dict__}, "sizes": {}, "pending": pending}
    with ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        if need_null:
            null_table = server_table(policy={"kind": NULL_POLICY_KIND})
            servers["null"] = ServerProcess(
                "transport-null-server", null_table, work_dir, options.torch_threads
            ).launch()
            stack.callback(servers["null"].stop)
        if "bridge_vtla" in wanted:
            servers["vtla"] = ServerProcess(
                "transport-vtla-server", server_table(), work_dir, options.torch_threads
            ).launch()
            stack.callback(servers["vtla"].stop)
        if "bridge_flat" in wanted:
            flat_table = server_table(policy={"kind": NULL_POLICY_KIND, "options": {"batch_ms": options.flat_ms}})
            servers["flat"] = ServerProcess(
                "transport-flat-server", flat_table, work_dir, options.torch_threads
            ).launch()
            stack.callback(servers["flat"].stop)
        openpi_server: OpenpiStyleServerProcess | None = None
        if "openpi_flat" in wanted:
            openpi_server = OpenpiStyleServerProcess("transport-openpi-server", work_dir, options.flat_ms).launch()
            stack.callback(openpi_server.stop)
        echo = stack.enter_context(EchoServer()) if "zmq_echo" in wanted else None
        echo_flat = stack.enter_context(EchoServer(options.flat_ms)) if "zmq_echo_flat" in wanted else None
        for server in servers.values():
            server.wait_ready()
        openpi_policy: Any = None
        if openpi_server is not None:
            openpi_server.wait_ready()
            openpi_policy = _openpi_client(openpi_server.port)
            stack.callback(openpi_policy._ws.close)
        http: HttpProcess | None = None
        if any(v in HTTP_VARIANTS for v in wanted):
            http = HttpProcess("transport-http", servers["null"].endpoint, work_dir).launch()
            stack.callback(http.stop)
            http.wait_ready()
        session: Any = None
        if http is not None:
            import requests

            session = stack.enter_context(requests.Session())
        clients = {
            name: stack.enter_context(BridgeClient(server.endpoint, timeout_s=options.timeout_s))
            for name, server in servers.items()
        }
        echo_client = stack.enter_context(EchoClient(echo.endpoint)) if echo is not None else None
        echo_flat_client = stack.enter_context(EchoClient(echo_flat.endpoint)) if echo_flat is not None else None
        result["servers"] = {name: dict(server.hello.get("models", {})) for name, server in servers.items()}
        for label in options.sizes:
            height, width = SIZES_HW[label]
            frame = scene_frame(height, width, seed=height)
            probes: dict[str, Probe] = {}
            for name in wanted:
                if name == "zmq_echo":
                    assert echo_client is not None
                    probes[name] = _echo_probe(echo_client, frame)
                elif name == "zmq_echo_flat":
                    assert echo_flat_client is not None
                    probes[name] = _echo_probe(echo_flat_client, frame)
                elif name == "bridge_null":
                    probes[name] = _bridge_probe(clients["null"], frame)
                elif name == "bridge_vtla":
                    probes[name] = _bridge_probe(clients["vtla"], frame)
                elif name == "bridge_flat":
                    probes[name] = _bridge_probe(clients["flat"], frame)
                elif name == "openpi_flat":
                    probes[name] = _openpi_probe(openpi_policy, frame)
                elif name == "http_png":
                    assert http is not None
                    probes[name] = _http_png_probe(session, http.base_url, frame, options.timeout_s)
                elif name == "http_jpeg_uri":
                    assert http is not None
                    probes[name] = _http_jpeg_probe(session, http.base_url, frame, options.timeout_s)
            samples = _measure_size(probes, options, label, progress)
            size_result: dict[str, Any] = {name: _summaries(s) for name, s in samples.items()}
            size_result["ratios"] = _ratios(size_result)
            size_result["frame_bytes"] = int(frame.nbytes)
            result["sizes"][label] = size_result
    return result
