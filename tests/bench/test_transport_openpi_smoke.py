"""Smoke test of the transport benchmark's flat-cost variants: the bridge and the openpi-style
websocket server (bench/openpi_server.py, a reimplementation of openpi's server loop) serving
the same flat-cost policy, next to the pyzmq echo, in one run; and the per-hop stamps of
bench/request_hops.py. Real processes and sockets; structure and sanity only, no timing asserts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.report import figures_for
from bench.transport import TransportOptions, run_transport

pytestmark = pytest.mark.timeout(120)


def test_bridge_and_openpi_flat_cost_side_by_side(tmp_path: Path) -> None:
    pytest.importorskip("openpi_client")
    pytest.importorskip("websockets")
    variants = ("zmq_echo", "bridge_flat", "openpi_flat")
    options = TransportOptions(sizes=("224x224",), rounds=8, warmup_rounds=2, variants=variants, flat_ms=2.0)
    result = run_transport(options, tmp_path / "logs", progress=False)
    assert result["pending"] == {}
    size = result["sizes"]["224x224"]
    for name in ("bridge_flat", "openpi_flat"):
        entry = size[name]
        assert entry["round_trip"]["n"] == 8
        # both servers report the policy's time; a 2 ms sleep takes at least 2 ms
        assert entry["compute"]["min_ms"] >= 2.0
        assert entry["compute"]["p50_ms"] <= entry["round_trip"]["p50_ms"]
        assert entry["overhead"]["p50_ms"] > 0.0
    ratios = size["ratios"]
    for key in ("bridge_flat_overhead_vs_echo", "openpi_flat_overhead_vs_echo",
                "bridge_flat_vs_openpi_flat_round_trip_p50", "bridge_flat_vs_openpi_flat_round_trip_p99"):
        assert math.isfinite(ratios[key]) and ratios[key] > 0.0, key
    figures = figures_for("transport", {**result, "status": "ok"})
    targets = {f.target for f in figures}
    assert {"<= 1.3x echo", "<= 1.0x"} <= targets


def test_openpi_variant_is_pending_when_its_client_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.transport

    monkeypatch.setattr(bench.transport, "openpi_client_available", lambda: "pending: openpi-client is not installed")
    options = TransportOptions(sizes=("224x224",), rounds=3, warmup_rounds=1, variants=("zmq_echo", "openpi_flat"))
    result = run_transport(options, tmp_path / "logs", progress=False)
    assert "openpi_flat" in result["pending"] and "openpi_flat" not in result["sizes"]["224x224"]
    figures = figures_for("transport", {**result, "status": "ok"})
    assert any(f.measured == "pending" and "openpi" in f.name for f in figures)


def test_request_hops_stamps_every_hop_of_a_real_server() -> None:
    from bench.request_hops import HOPS, run

    result = run(rounds=10, batch_ms=1.0, frame_hw=32, warmup=3)
    assert result["rounds"] == 10
    hops = result["p50_us"]
    assert list(hops) == [f"{a}->{b}" for a, b in zip(("client_send", *HOPS), (*HOPS, "client_recv"), strict=True)]
    assert hops["forward_start->forward_end"] >= 1000.0  # the 1 ms forward is inside its hop
    assert result["round_trip_p50_us"] >= hops["forward_start->forward_end"]
