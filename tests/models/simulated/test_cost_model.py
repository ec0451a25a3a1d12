"""The simulated accelerator's (batch, tokens) -> ms function against figures computed by hand.

The hand derivations below use only the real configs' numbers (models/vtla/presets.py nano-2b,
models/moondream/config.py moondream2-2025-04-14) and the H200 device file; they are written
out as plain arithmetic, independently of models/simulated/costs.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from models.simulated.device import DeviceModel, DeviceWork, wait_ms
from models.simulated.generator import SimulatedGenerator
from models.simulated.policy import SimulatedPolicy
from vtla_contracts.errors import ConfigError
from vtla_contracts.model_spec import ModelSpec

H200_COMPUTE = 989e12 * 0.6  # FLOP/s achievable (spec peak x efficiency)
H200_MEMORY = 4.8e12 * 0.8  # bytes/s achievable
LAUNCH_MS = 2.0e-3  # per kernel


def test_phase_ms_takes_the_binding_roof_plus_launches() -> None:
    device = DeviceModel("test", 1e12, 1e9, 0.5, 0.5, 10.0)
    # compute-bound: 1e9 FLOP at 0.5e12 -> 2 ms; 1e5 bytes at 0.5e9 -> 0.2 ms; 3 kernels x 10 us
    assert device.phase_ms(DeviceWork(1e9, 1e5, 3)) == pytest.approx(2.0 + 0.03)
    # memory-bound: 1e6 bytes at 0.5e9 -> 2 ms
    assert device.phase_ms(DeviceWork(1e6, 1e6, 0)) == pytest.approx(2.0)
    with pytest.raises(ConfigError):
        DeviceModel("bad", 1e12, 1e9, 1.5, 0.5, 0.0)


def test_nano_2b_forward_on_h200_matches_the_hand_count() -> None:
    policy = SimulatedPolicy(ModelSpec("simulated", "nano-2b-h200"))
    # vision (SigLIP so400m, 26 layers, d 1152, ff 4304, 729 tokens): per layer
    #   params 4*1152^2 + 2*1152*4304 = 15_224_832; FLOPs 2*15_224_832*729 + 4*729^2*1152
    vision = 26 * (2 * 15_224_832 * 729 + 4 * 729**2 * 1152)
    patch = 2 * 729 * 588 * 1152
    projector = 2 * 729 * (1152 * 2048 + 2048 * 2048)
    # decoder (Qwen1.5-1.8B shapes, 24 layers, d 2048, ff 5504, 3 MLP mats), sequence 24 text
    # + 729 image + 2 tactile + 1 action query = 756; params 4*2048^2 + 3*2048*5504 = 50_593_792
    text = 24 * (2 * 50_593_792 * 756 + 4 * 756**2 * 2048)
    flops_b1 = vision + patch + projector + text
    assert flops_b1 == pytest.approx(2.5997e12, rel=1e-4)  # DESIGN.md: ~2.6 TFLOP per observation
    params = 26 * 15_224_832 + 588 * 1152 + 1152 * 2048 + 2048 * 2048 + 24 * 50_593_792
    activations = 12 * (26 * 729 * 1152 + 24 * 756 * 2048) * 2
    kernels = 26 * 10 + 24 * 15 + 24
    for batch in (1, 8):
        bytes_moved = 2 * params + batch * activations
        expected_ms = max(batch * flops_b1 / H200_COMPUTE, bytes_moved / H200_MEMORY) * 1e3 + kernels * LAUNCH_MS
        assert policy.forward_ms(batch) == pytest.approx(expected_ms, rel=1e-9)
    assert policy.forward_ms(1) == pytest.approx(5.669, abs=1e-3)  # 4.381 compute + 1.288 launches


def test_moondream_decode_step_on_h200_matches_the_hand_count() -> None:
    generator = SimulatedGenerator(ModelSpec("simulated", "moondream2-h200"))
    # 24 Phi layers, d 2048, ff 8192: params 4*2048^2 + 2*2048*8192 = 50_331_648; LM head 2048 x 51200
    params = 24 * 50_331_648 + 2048 * 51200
    for rows, context in ((1, 800), (32, 800)):
        kv_bytes = rows * context * 2 * 2048 * 2 * 24  # K and V, bf16, every layer
        act_bytes = 12 * rows * 2048 * 2 * 24
        bytes_moved = 2 * params + kv_bytes + act_bytes
        flops = 2 * rows * params + 24 * 4 * rows * context * 2048
        expected_ms = max(flops / H200_COMPUTE, bytes_moved / H200_MEMORY) * 1e3 + (24 * 11 + 16) * LAUNCH_MS
        assert generator.decode_ms([context] * rows) == pytest.approx(expected_ms, rel=1e-9)
    assert generator.decode_ms([800] * 32) == pytest.approx(2.564, abs=1e-3)  # memory-bound: the KV cache


def test_presets_are_overridable_and_checked() -> None:
    fast = SimulatedPolicy(ModelSpec("simulated", "nano-2b-h200", options={"device": {"compute_efficiency": 1.0}}))
    base = SimulatedPolicy(ModelSpec("simulated", "nano-2b-h200"))
    assert fast.forward_ms(8) < base.forward_ms(8)
    with pytest.raises(ConfigError, match="unknown simulated preset"):
        SimulatedPolicy(ModelSpec("simulated", "nope"))
    with pytest.raises(ConfigError, match="unknown keys"):
        SimulatedPolicy(ModelSpec("simulated", "nano-2b-h200", options={"costs": {"typo": 1}}))


def test_wait_releases_the_gil() -> None:
    counted = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal counted
        while not stop.is_set():
            counted += 1

    thread = threading.Thread(target=count)
    thread.start()
    time.sleep(0.01)
    before = counted
    waited = wait_ms(50.0)
    during = counted - before
    stop.set()
    thread.join()
    assert waited >= 50.0
    assert during > 1000  # the other thread ran while this one waited
