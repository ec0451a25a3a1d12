"""Acts over real ZeroMQ sockets with the tiny VTLA: frames of the input size are staged by the
policy's prepare() on the server's parsing threads, act gathers them, and every ring row comes
back once the replies are out — also for an act the loop refuses. ``health`` shows the counters."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

from bridge.client import BridgeClient
from bridge.errors import BridgeError
from models.interfaces import Observation
from models.vtla.serving import VTLAPolicy, load_policy
from tests.conftest import StartServer
from tests.models.vtla.conftest import make_image
from vtla_contracts.model_spec import ModelSpec

ROWS_BACK_WITHIN_S = 10.0  # a bound for the row's return, not a measured time


def tiny_policy() -> VTLAPolicy:
    return load_policy(ModelSpec(kind="vtla", preset="tiny"), "cpu", "float32")


def ring(policy: VTLAPolicy) -> dict[str, int]:
    return dict(policy.staging_stats()["rings"]["primary"])


def wait_for_all_rows_free(policy: VTLAPolicy) -> dict[str, int]:
    """The reply can reach the client a moment before the server drops its last reference to the
    work (the I/O thread's send loop): collect and look again until the rows are free."""
    end = time.monotonic() + ROWS_BACK_WITHIN_S
    while True:
        gc.collect()
        stats = ring(policy)
        if stats["free_rows"] == stats["capacity"] or time.monotonic() > end:
            return stats
        time.sleep(0.01)


def test_acts_over_the_wire_take_the_staged_path_and_free_their_rows(start_server: StartServer) -> None:
    policy = tiny_policy()
    server = start_server(policy=policy)
    size = policy.cfg.vision.image_size
    before = policy.staging_stats()
    clients, per_client = 4, 6
    frames = {c: [make_image(size, size, seed=10 * c + i) for i in range(per_client)] for c in range(clients)}
    actions: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def drive(c: int) -> None:
        try:
            with BridgeClient(server.endpoint, timeout_s=60) as client:
                actions[c] = [client.act(image=f, instruction="pick").actions for f in frames[c]]
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with BridgeClient(server.endpoint, timeout_s=60) as client:  # a frame that needs a resize
        resized = client.act(image=make_image(size + 16, size, seed=99), instruction="pick").actions
        in_health = client.health()["models"][policy.info.name]["frame_staging"]
    after = policy.staging_stats()
    assert after["gathered"] - before["gathered"] == clients * per_client
    assert after["stacked"] - before["stacked"] == 1
    assert (in_health["gathered"], in_health["stacked"]) == (after["gathered"], after["stacked"])
    assert in_health["rings"]["primary"]["capacity"] == after["rings"]["primary"]["capacity"]
    stats = wait_for_all_rows_free(policy)
    assert stats["free_rows"] == stats["capacity"], stats
    assert stats["staged"] - before["rings"]["primary"]["staged"] == clients * per_client

    server.stop()  # the loop is done with the policy: act on it directly for the expected actions
    for c in range(clients):
        expected = policy.act([Observation(images={"primary": f}, instruction="pick") for f in frames[c]])
        np.testing.assert_allclose(np.stack(actions[c]), expected, rtol=1e-5, atol=1e-6)
    expected_resized = policy.act([Observation(images={"primary": make_image(size + 16, size, seed=99)},
                                               instruction="pick")])
    np.testing.assert_allclose(resized, expected_resized[0], rtol=1e-5, atol=1e-6)


def test_an_act_the_loop_refuses_gives_its_row_back(start_server: StartServer) -> None:
    policy = tiny_policy()
    server = start_server(policy=policy)
    size = policy.cfg.vision.image_size
    staged_before = ring(policy)["staged"]
    with BridgeClient(server.endpoint, timeout_s=60) as client:
        # prepare() stages the primary frame; the loop's validation then refuses the unknown camera
        with pytest.raises(BridgeError, match="unknown camera"):
            client.act(images={"primary": make_image(size, size), "wrist": make_image(size, size, seed=1)})
        assert ring(policy)["staged"] == staged_before + 1
        stats = wait_for_all_rows_free(policy)
        assert stats["free_rows"] == stats["capacity"], stats
        # and the server goes on serving staged acts
        client.act(image=make_image(size, size, seed=2))
    assert policy.staging_stats()["rings"]["primary"]["staged"] == staged_before + 2


def test_an_act_that_expires_in_the_queue_gives_its_row_back(start_server: StartServer) -> None:
    policy = tiny_policy()
    server = start_server(policy=policy)
    size = policy.cfg.vision.image_size
    staged_before = ring(policy)["staged"]
    with BridgeClient(server.endpoint, timeout_s=60) as client:
        # deadline 0: staged when parsed, past its deadline by the time the loop looks at it
        with pytest.raises(BridgeError) as raised:
            client.act(image=make_image(size, size, seed=3), deadline_ms=0)
        assert raised.value.code == "deadline_exceeded"
        assert ring(policy)["staged"] == staged_before + 1
        stats = wait_for_all_rows_free(policy)
        assert stats["free_rows"] == stats["capacity"], stats
    assert policy.staging_stats()["gathered"] == 1  # warm-up's only: the expired act never ran
