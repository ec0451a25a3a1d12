"""Two streams on one simulated device: the shared-roofline overlap rule against hand-computed values,
and the split decode step of the simulated generator (launch, overlap, finish)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from models.interfaces import GenerationRequest, Observation
from models.simulated.device import DeviceModel, DeviceWork, PhaseTimes
from models.simulated.generator import SimulatedGenerator
from models.simulated.policy import SimulatedPolicy
from models.simulated.streams import DeviceStreams, concurrent_rates, overlap, streams_for
from vtla_contracts.model_spec import ModelSpec

# hi: compute-bound act-like unit, alone 4 + 1 = 5 ms; lo: memory-bound decode-like unit, alone 1.6 + 0.4 = 2 ms
ACT = PhaseTimes(compute_ms=4.0, memory_ms=1.0, launch_ms=1.0)
DECODE = PhaseTimes(compute_ms=0.1, memory_ms=1.6, launch_ms=0.4)


def test_phase_times_split_the_roofline() -> None:
    device = DeviceModel("test", 1e12, 1e9, 0.5, 0.5, 10.0)
    times = device.phase_times(DeviceWork(1e9, 1e5, 3))
    assert times.compute_ms == pytest.approx(2.0) and times.memory_ms == pytest.approx(0.2)
    assert times.launch_ms == pytest.approx(0.03) and times.alone_ms == pytest.approx(2.03)


def test_no_contention_both_run_at_their_own_speed() -> None:
    # hi at 1/5 per ms uses 4/5 of compute and 1/5 of memory; lo at 1/2 uses 0.05 compute (fits
    # in the 0.2 left) and 0.8 memory: 0.2 + 0.8 = 1.0, no scaling
    assert concurrent_rates(ACT, DECODE) == pytest.approx((0.2, 0.5))
    result = overlap(ACT, DECODE)
    # lo ends at 2 ms; hi did 0.4 of its work by then, the other 0.6 alone: 3 ms -> 5 ms in all
    assert result.lo_end_ms == pytest.approx(2.0) and result.hi_ms == pytest.approx(5.0)
    assert result.lo_left_at_hi_end == 0.0


def test_memory_bandwidth_is_shared_in_proportion() -> None:
    hi = PhaseTimes(compute_ms=4.0, memory_ms=2.0, launch_ms=1.0)  # alone 5 ms, memory 0.4 of bandwidth
    # demands 0.4 + 0.8 = 1.2: both rates / 1.2 -> hi 1/6, lo 0.5/1.2 = 5/12 per ms
    assert concurrent_rates(hi, DECODE) == pytest.approx((1 / 6, 5 / 12))
    result = overlap(hi, DECODE)
    # lo ends at 1 / (5/12) = 2.4 ms; hi did 2.4/6 = 0.4 by then, 0.6 x 5 = 3 ms alone -> 5.4 ms
    assert result.lo_end_ms == pytest.approx(2.4) and result.hi_ms == pytest.approx(5.4)


def test_compute_goes_to_the_high_priority_unit_first() -> None:
    hi = PhaseTimes(compute_ms=5.0, memory_ms=1.0, launch_ms=0.0)  # every SM cycle of its 5 ms
    assert concurrent_rates(hi, DECODE) == pytest.approx((0.2, 0.0))
    result = overlap(hi, DECODE)
    # lo stalls while hi runs (5 ms, unslowed), then runs its 2 ms alone
    assert result.hi_ms == pytest.approx(5.0) and result.lo_end_ms == pytest.approx(7.0)
    assert result.lo_left_at_hi_end == pytest.approx(1.0)


def test_a_partly_done_unit_and_a_short_high_priority_unit() -> None:
    # lo half done: ends after 0.5 / 0.5 = 1 ms; hi did 0.2 by then, 0.8 x 5 = 4 ms alone -> 5 ms
    half = overlap(ACT, DECODE, lo_left=0.5)
    assert half.lo_end_ms == pytest.approx(1.0) and half.hi_ms == pytest.approx(5.0)
    short = PhaseTimes(compute_ms=0.5, memory_ms=0.1, launch_ms=0.5)  # alone 1 ms
    # rates 1 and 0.5 (compute 0.5 + 0.05, memory 0.1 + 0.8: no contention): hi ends at 1 ms with
    # lo half done; lo's other half alone: 1 ms -> lo ends 2 ms after hi started
    result = overlap(short, DECODE)
    assert result.hi_ms == pytest.approx(1.0) and result.lo_left_at_hi_end == pytest.approx(0.5)
    assert result.lo_end_ms == pytest.approx(2.0)
    assert overlap(ACT, DECODE, lo_left=0.0).hi_ms == pytest.approx(5.0)  # nothing left in flight


def test_h200_presets_act_beside_a_32_sequence_decode_step() -> None:
    policy = SimulatedPolicy(ModelSpec("simulated", "nano-2b-h200"))
    generator = SimulatedGenerator(ModelSpec("simulated", "moondream2-h200"))
    device = policy.preset.device
    hi = device.phase_times(policy.forward_work(1))
    lo = device.phase_times(generator.decode_work([800] * 32))
    # by hand from the two units' times: hi uses C/T of compute and M/T of memory at 1/T
    c_hi, m_hi, t_hi = hi.compute_ms / hi.alone_ms, hi.memory_ms / hi.alone_ms, hi.alone_ms
    r_lo = min(1 / lo.alone_ms, (1 - c_hi) / lo.compute_ms)
    demand = m_hi + lo.memory_ms * r_lo
    assert demand == pytest.approx(0.995, abs=1e-3)  # 0.214 + 0.782: just fits the bandwidth
    result = overlap(hi, lo)
    assert result.hi_ms == pytest.approx(t_hi) and result.lo_end_ms == pytest.approx(lo.alone_ms)
    # an 8-row act is compute-bound at 96 % of the compute: the decode step stretches 2.56 -> 4.23 ms
    hi8 = device.phase_times(policy.forward_work(8))
    r_lo8 = (1 - hi8.compute_ms / hi8.alone_ms) / lo.compute_ms
    assert overlap(hi8, lo).lo_end_ms == pytest.approx(1 / r_lo8)
    assert 1 / r_lo8 == pytest.approx(4.234, abs=1e-3)


def test_device_streams_launch_run_finish_in_real_time() -> None:
    streams = DeviceStreams()
    with pytest.raises(RuntimeError):
        streams.finish()
    long = PhaseTimes(0.0, 150.0, 0.0)  # 150 ms of memory work
    streams.launch(long)
    with pytest.raises(RuntimeError):
        streams.launch(long)
    assert not streams.done()
    waited = streams.run(PhaseTimes(20.0, 0.0, 0.0))  # compute beside it: no contention (0 + 1 memory)
    assert waited >= 20.0 and streams.overlapped_units == 1
    assert not streams.done()
    span_ms = streams.finish()
    assert span_ms == pytest.approx(150.0, abs=1e-6)  # its own time: the act took nothing from it
    assert streams.done() and not streams.in_flight


def test_generator_split_decode_step_and_the_act_beside_it() -> None:
    spec = ModelSpec("simulated", "moondream2-h200", options={"device": {"kernel_launch_us": 300.0}})
    generator = SimulatedGenerator(spec)
    policy = SimulatedPolicy(ModelSpec("simulated", "nano-2b-h200"))
    image = np.zeros((64, 64, 3), np.uint8)
    for key in (1, 2):
        generator.admit(generator.prepare(GenerationRequest(key, "caption", image, length="short", stream=True)))
    while generator.ready().admitting:
        generator.admission_unit()
    with pytest.raises(RuntimeError, match="without launch"):
        generator.finish_decode_step()
    generator.launch_decode_step()  # ~85 ms with 300 us launches
    with pytest.raises(RuntimeError, match="already in flight"):
        generator.launch_decode_step()
    with pytest.raises(RuntimeError, match="in flight"):
        generator.admission_unit()
    assert not generator.decode_step_done()
    policy.act([Observation(images={"image": image})])  # on this thread's streams: beside the step
    assert not generator.decode_step_done()  # the act (6 ms) ended first
    assert streams_for(policy.preset.device).overlapped_units >= 1
    generator.cancel(2)  # takes effect: its row of the step in flight yields no event
    events = generator.finish_decode_step()
    assert [e.key for e in events] == [1] and events[0].chunk == "tok2 "
    assert generator.decode_step_done()
    assert [e.key for e in generator.decode_step()] == [1]  # decode_step() == launch + finish


def test_streams_belong_to_their_thread() -> None:
    device = DeviceModel("per-thread", 1e12, 1e9, 1.0, 1.0, 0.0)
    here = streams_for(device)
    assert streams_for(device) is here
    other: list[DeviceStreams] = []
    thread = threading.Thread(target=lambda: other.append(streams_for(device)))
    thread.start()
    thread.join()
    assert other[0] is not here
