"""An openpi-style evaluation loop (the shape of openpi's examples/libero/main.py) driving robosuite
Lift through the openpi websocket endpoint, with the scripted Lift expert served by the bridge.

Only the port differs from an openpi eval script: openpi's own client, the ``libero`` key mapping,
action chunks replanned every ``REPLAN_STEPS`` steps.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from bridge.server import InferenceServer
from sim_adapters.interface import AdapterSettings
from tests.bridge.openpi.conftest import LiveEndpoint, endpoint_for
from tests.sim_adapters.test_closed_loop import start_server

pytestmark = [
    pytest.mark.sim,
    pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"),
]

EPISODES = 2  # seeded: robosuite and the expert are deterministic, so these two always lift (or a bug)
CHUNK = 4
REPLAN_STEPS = 4


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[InferenceServer, LiveEndpoint]]:
    policy = {"kind": "expert-lift", "options": {"chunk_size": CHUNK}}
    server = start_server("robosuite-lift-expert.toml", policy=policy)
    live = endpoint_for(server)  # the default mapping, libero
    yield server, live
    live.stop()
    server.stop()


def test_openpi_style_robosuite_lift_loop(served: tuple[InferenceServer, LiveEndpoint]) -> None:
    pytest.importorskip("robosuite", reason="pip install robosuite==1.5.2 mujoco==3.3.7")
    from openpi_client import websocket_client_policy

    from sim_adapters.robosuite_adapter import RobosuiteAdapter

    server, live = served
    adapter = RobosuiteAdapter(AdapterSettings(task="Lift", image_size=(64, 64)))
    client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", live.port)  # <- the one changed line
    successes, infers, batch_sizes = 0, 0, []
    acts_before = server.loop.state.counters.get("act_requests", 0)
    try:
        assert client.get_server_metadata()["chunk_size"] == CHUNK
        for episode in range(EPISODES):
            adapter.reset(seed=episode)
            action_plan: collections.deque[Any] = collections.deque()
            while not adapter.done():
                if not action_plan:
                    obs = adapter.observe()
                    element = {
                        "observation/image": next(iter(obs.images.values())),
                        "observation/state": obs.proprio,
                        "prompt": "lift the cube",
                    }
                    reply = client.infer(element)
                    infers += 1
                    batch_sizes.append(reply["server_timing"]["batch_size"])
                    action_chunk = reply["actions"]
                    assert len(action_chunk) >= REPLAN_STEPS
                    action_plan.extend(action_chunk[:REPLAN_STEPS])
                adapter.apply(np.asarray(action_plan.popleft()))
                if adapter.success():
                    successes += 1
                    break
    finally:
        client._ws.close()  # openpi's client has no close()
        adapter.close()
    assert infers > EPISODES and min(batch_sizes) >= 1
    assert server.loop.state.counters.get("act_requests", 0) - acts_before == infers  # one act per chunk
    assert successes == EPISODES, f"{successes}/{EPISODES} episodes lifted the cube"
