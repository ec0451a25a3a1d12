"""``run-sim --workers N``: real simulator processes against a real server, one merged summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.config import load_config, with_overrides
from bridge.server import InferenceServer
from sim_adapters.parallel_runs import split_episodes
from sim_adapters.runner import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FETCH_ARGS = ["fetch", "--task", "PickAndPlace", "--rate-hz", "0", "--image-size", "48", "--no-progress"]


@pytest.fixture(scope="module")
def fetch_server() -> Iterator[InferenceServer]:
    pytest.importorskip("gymnasium_robotics", reason="pip install gymnasium-robotics==1.4.2")
    config = with_overrides(load_config(CONFIGS / "fetch-expert.toml"), server={"bind": "tcp://127.0.0.1:*"})
    server = InferenceServer(config)
    server.start()
    assert server.wait_ready(60), server.loop.state.detail
    yield server
    server.stop()


def test_split_episodes_deals_round_robin() -> None:
    assert split_episodes(5, 2) == [(0, 2, 4), (1, 3)]
    assert split_episodes(2, 4) == [(0,), (1,)]  # no idle workers
    with pytest.raises(ValueError):
        split_episodes(3, 0)


@pytest.mark.sim
def test_run_sim_workers_2_on_fetch_merges_the_summaries(fetch_server: InferenceServer, tmp_path: Path) -> None:
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    common = [*FETCH_ARGS, "--episodes", "4", "--server", fetch_server.endpoint]
    assert main([*common, "--json", str(one)]) == 0
    assert main([*common, "--workers", "2", "--json", str(two)]) == 0
    single, merged = json.loads(one.read_text()), json.loads(two.read_text())
    assert merged["workers"] == 2 and merged["worker_errors"] == []
    assert [row["episodes"] for row in merged["per_worker"]] == [2, 2]
    # every episode once, with its own seed, in order; the deterministic expert does exactly what it did in one process
    key = [(e["index"], e["seed"], e["steps"], e["success"]) for e in merged["per_episode"]]
    assert key == [(e["index"], e["seed"], e["steps"], e["success"]) for e in single["per_episode"]]
    assert [e["index"] for e in merged["per_episode"]] == [0, 1, 2, 3]
    assert merged["successes"] == sum(row["successes"] for row in merged["per_worker"]) == single["successes"]
    assert merged["success_rate"] == merged["successes"] / 4
    assert merged["steps"] == sum(row["steps"] for row in merged["per_worker"]) == single["steps"]
    assert merged["queries"] == single["queries"] == sum(e["queries"] for e in merged["per_episode"])
    lat = merged["latency_ms"]["round_trip"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]  # percentiles over every query of both workers
    assert merged["episodes_per_s"] > 0


@pytest.mark.sim
@pytest.mark.ray
def test_ray_runs_two_fetch_workers_against_a_ray_server_actor(tmp_path: Path) -> None:
    """A local Ray instance (2 CPUs): one server actor (on CPU: num_gpus=0), found by name, and two
    simulator workers as Ray tasks. Skipped where ray is not installed."""
    pytest.importorskip("gymnasium_robotics", reason="pip install gymnasium-robotics==1.4.2")
    ray = pytest.importorskip("ray", reason="pip install 'vtla-bridge[ray]'")
    from bridge.client import BridgeClient
    from bridge.ray_servers import discover_endpoints, start_servers, stop_servers

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = tmp_path / "ray.json"
    try:
        endpoints = start_servers(1, config=str(CONFIGS / "fetch-expert.toml"), num_gpus=0)
        assert discover_endpoints() == endpoints
        code = main([*FETCH_ARGS, "--episodes", "2", "--workers", "2", "--ray", "local", "--server", "ray",
                     "--json", str(out)])
        with BridgeClient(endpoints[0], timeout_s=10.0) as client:
            served = client.health()["counters"]["act_requests"]
        assert stop_servers() == 1
    finally:
        ray.shutdown()
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["ray_address"] == "local" and summary["worker_errors"] == []
    assert [row["episodes"] for row in summary["per_worker"]] == [1, 1]
    assert [e["seed"] for e in summary["per_episode"]] == [0, 1]
    assert summary["successes"] >= 1 and summary["queries"] > 0
    assert served == summary["queries"]  # every query of both Ray workers reached the actor's server
