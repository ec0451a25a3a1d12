"""On CUDA: batched admission, device-side crop resize and the split-phase step, against the CPU-tested paths."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from models.interfaces import ModelInfo
from models.moondream.admission_plan import AdmissionOptions
from models.moondream.config import preset_config
from models.moondream.crops import default_resize_backend, overlap_crops, overlap_crops_on_device, upload_image
from models.moondream.generator import MoondreamGenerator
from models.moondream.serving import _tiny_tokenizer_config, random_model
from models.moondream.tokenizer import build_tiny_tokenizer
from tests.models.moondream.test_admission import BATCHED, ONE_AT_A_TIME, assert_same_results, mixed_requests, outputs
from tests.models.moondream.test_device_resize import MAX_DIFF_LEVELS, MEAN_DIFF_LEVELS, smooth_image
from tests.models.moondream.test_split_decode import drive, split_step, strip

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def cuda_generator(admission: AdmissionOptions, dtype: torch.dtype = torch.float64) -> MoondreamGenerator:
    tokenizer = build_tiny_tokenizer()
    config = _tiny_tokenizer_config(preset_config("tiny"), tokenizer).validate()
    model = random_model(config, torch.device("cuda"), dtype, 0)
    info = ModelInfo("moondream2-tiny", "moondream", "cuda", str(dtype), True, model.parameter_count(), "tiny")
    return MoondreamGenerator(model, tokenizer, info, max_sequences=4, admission_options=admission)


def test_batched_admission_equals_one_at_a_time_on_cuda() -> None:
    batched, single = cuda_generator(BATCHED), cuda_generator(ONE_AT_A_TIME)
    got: dict[int, Any] = outputs(batched, mixed_requests())
    assert_same_results(got, outputs(single, mixed_requests()))
    assert batched.vision_forwards < single.vision_forwards
    assert batched._stream is not None  # generation ran on its own stream


def test_device_resize_on_cuda_matches_the_reference() -> None:
    config = preset_config("moondream2-2025-04-14").vision
    image = smooth_image(480, 640)
    want, _ = overlap_crops(image, config, default_resize_backend())
    got, _ = overlap_crops_on_device(upload_image(image, torch.device("cuda")), config)
    diff = np.abs(got.cpu().numpy().astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= MAX_DIFF_LEVELS and diff.mean() <= MEAN_DIFF_LEVELS


def test_split_phase_step_on_cuda_equals_decode_step() -> None:
    want = strip(drive(cuda_generator(AdmissionOptions()), MoondreamGenerator.decode_step))
    generator = cuda_generator(AdmissionOptions())
    got = strip(drive(generator, split_step))
    assert got == want
    assert generator.decode.graphs_captured >= 1


def test_decode_step_done_is_the_event_query_on_cuda() -> None:
    """A launched step is asynchronous on CUDA: done() is the recorded event's query, True after the finish."""
    generator = cuda_generator(AdmissionOptions())
    for req in mixed_requests()[:1]:
        generator.admit(generator.prepare(req))
    while generator.ready().admitting:
        generator.admission_unit()
    generator.launch_decode_step()
    torch.cuda.synchronize()
    assert generator.decode_step_done()  # the event has completed once the device is idle
    generator.finish_decode_step()
    assert generator.decode_step_done()
