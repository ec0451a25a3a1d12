from __future__ import annotations

import numpy as np
import pytest

from sim_adapters.chunking import ChunkExecutor, ChunkSettings


def chunk(start_value: float, horizon: int = 4) -> np.ndarray:
    """(H, 7) whose every entry of row i equals start_value + i."""
    return np.repeat((start_value + np.arange(horizon, dtype=np.float32))[:, None], 7, axis=1)


def test_whole_chunk_executes_before_the_next_query():
    ex = ChunkExecutor(ChunkSettings())
    assert ex.needs_query(0)
    ex.add(0, chunk(10))
    executed = []
    for step in range(4):
        assert not ex.needs_query(step)
        executed.append(ex.action(step)[0])
    assert executed == [10, 11, 12, 13]
    assert ex.needs_query(4)


def test_replan_steps_queries_early_and_uses_the_newest_chunk():
    ex = ChunkExecutor(ChunkSettings(replan_steps=2))
    ex.add(0, chunk(0))
    assert not ex.needs_query(1) and ex.needs_query(2)
    ex.add(2, chunk(100))
    assert ex.action(2)[0] == 100 and ex.action(3)[0] == 101


def test_temporal_ensemble_queries_every_step_and_weights_older_predictions_more():
    ex = ChunkExecutor(ChunkSettings(temporal_ensemble=True, ensemble_decay=1.0))
    ex.add(0, chunk(0))  # predicts 1 for step 1
    assert ex.needs_query(1)
    ex.add(1, chunk(10))  # predicts 10 for step 1
    w_old, w_new = 1.0, np.exp(-1.0)
    expected = (w_old * 1 + w_new * 10) / (w_old + w_new)
    assert ex.action(1)[0] == pytest.approx(expected, rel=1e-6)
    ex.add(2, chunk(20))
    ex.add(3, chunk(30))
    ex.add(4, chunk(40))  # the chunk from step 0 (covers 0..3) is dropped
    assert all(start > 0 for start, _ in ex._chunks)


def test_action_without_a_covering_chunk_is_an_error():
    ex = ChunkExecutor(ChunkSettings())
    with pytest.raises(RuntimeError):
        ex.action(0)
    with pytest.raises(ValueError):
        ex.add(0, np.zeros(7))


def test_policy_inputs_follow_the_hello_entry() -> None:
    from sim_adapters.interface import ActInputs
    from sim_adapters.runner import PolicyInputs

    vtla = {"models": {"vtla": {"action": {"dim": 7}, "proprio": None, "tactile": {"force_torque": {"dim": 6}}},
                       "moondream": {"skills": ["caption"]}}}
    expert = {"models": {"expert": {"action": {"dim": 7}, "proprio": {"dim": 19}, "tactile": {"image": {}}}}}
    accepts_vtla, accepts_expert = PolicyInputs.from_hello(vtla), PolicyInputs.from_hello(expert)
    assert accepts_vtla == PolicyInputs(proprio=False, tactile_image=False, force_torque=True)
    assert accepts_expert == PolicyInputs(proprio=True, tactile_image=True, force_torque=False)
    assert PolicyInputs.from_hello({}) == PolicyInputs()  # unknown server: send everything
    inputs = ActInputs(images={"cam": np.zeros((4, 4, 3), np.uint8)}, tactile_image=np.zeros((2, 2, 3), np.uint8),
                       force_torque=np.ones(6, np.float32), proprio=np.zeros(19, np.float32))
    tactile = accepts_vtla.tactile(inputs)
    assert tactile is not None and set(tactile) == {"force_torque"}
    assert accepts_expert.tactile(inputs) is not None and set(accepts_expert.tactile(inputs) or {}) == {"image"}
    assert PolicyInputs(False, False, False).tactile(inputs) is None
