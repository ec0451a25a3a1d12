"""Batched admission: crops of several requests in one vision forward, several prefills in one forward.

The results must equal admitting one request at a time (float64 tiny model: the same tokens; the
prefill hidden states agree to 1e-9), while the number of vision and prefill forwards drops.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from models.interfaces import GenerationSettings, ModelInfo
from models.moondream.admission_plan import AdmissionOptions
from models.moondream.config import preset_config
from models.moondream.generator import MoondreamGenerator
from models.moondream.serving import _tiny_tokenizer_config, random_model
from models.moondream.tokenizer import build_tiny_tokenizer
from tests.models.moondream.conftest import make_image, request, run_to_end

BATCHED = AdmissionOptions(batch=True, prefill_batch=4, prefill_length_bucket=32, prefill_tokens=1024)
ONE_AT_A_TIME = AdmissionOptions(batch=False)


def generator(admission: AdmissionOptions, dtype: torch.dtype = torch.float64, chunk: int = 4) -> MoondreamGenerator:
    tokenizer = build_tiny_tokenizer()
    config = _tiny_tokenizer_config(preset_config("tiny"), tokenizer).validate()
    model = random_model(config, torch.device("cpu"), dtype, 0)
    info = ModelInfo("moondream2-tiny", "moondream", "cpu", str(dtype), True, model.parameter_count(), "tiny")
    return MoondreamGenerator(
        model, tokenizer, info, max_sequences=4, encode_chunk_crops=chunk, admission_options=admission
    )


def mixed_requests() -> list[Any]:
    settings = GenerationSettings(max_tokens=10, max_objects=2)
    return [
        request(1, "caption", image=make_image(90, 120, 1), settings=settings),
        request(2, "query", image=make_image(64, 64, 2), text="what is it?", settings=settings),
        request(3, "detect", image=make_image(150, 100, 3), settings=settings),
        request(4, "point", image=make_image(70, 200, 4), settings=settings),
    ]


def outputs(gen: MoondreamGenerator, requests: list[Any]) -> dict[int, Any]:
    for req in requests:
        gen.admit(req)
    events = run_to_end(gen)
    return {e.key: {k: v for k, v in e.result.items() if k != "metrics"} for e in events if e.result}


def assert_same_results(got: dict[int, Any], want: dict[int, Any]) -> None:
    assert got.keys() == want.keys()
    for key, result in want.items():
        for field, value in result.items():
            if field in ("objects", "points"):  # coordinates: the same bins, floats within 1e-9
                assert len(got[key][field]) == len(value)
                for a, b in zip(got[key][field], value, strict=True):
                    assert a.keys() == b.keys()
                    assert all(abs(a[k] - b[k]) < 1e-9 for k in a)
            else:
                assert got[key][field] == value


def test_batched_admission_equals_one_at_a_time_with_fewer_forwards() -> None:
    batched, single = generator(BATCHED), generator(ONE_AT_A_TIME)
    got, want = outputs(batched, mixed_requests()), outputs(single, mixed_requests())
    assert len(want) == 4
    assert_same_results(got, want)
    crops = sum(1 + t.n_tiles for t in (batched_tiling(r) for r in mixed_requests()))
    assert single.vision_forwards == sum(-(-(1 + batched_tiling(r).n_tiles) // 4) for r in mixed_requests())
    assert batched.vision_forwards == -(-crops // 4) < single.vision_forwards
    assert single.prefill_forwards == 4
    assert batched.prefill_forwards < 4


def batched_tiling(req: Any) -> Any:
    from models.moondream.crops import tiling_for

    return tiling_for(req.image.shape[0], req.image.shape[1], preset_config("tiny").vision)


def test_shared_prefill_hidden_states_match_single_prefills() -> None:
    """The padded, shared prefill gives each row the hidden state and KV entries of its own prefill."""
    gen = generator(BATCHED)
    text, device = gen.model.text, gen.model.device
    rng = torch.Generator().manual_seed(0)
    lengths = [gen.config.prefix_attn_len + n for n in (3, 9, 14)]
    rows = [torch.randn(n, text.config.dim, generator=rng, dtype=torch.float64) for n in lengths]
    padded = rows[0].new_zeros((3, 96, text.config.dim))
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    with torch.inference_mode():
        shared = text.prefill(padded.to(device), gen.cache, [2, 0, 1])
        shared_k = gen.cache.k.clone()
        for i, (row, slot) in enumerate(zip(rows, [2, 0, 1], strict=True)):
            alone = text.prefill(row[None], gen.cache, slot)[0]
            torch.testing.assert_close(shared[i, : len(row)], alone, atol=1e-9, rtol=0)
            torch.testing.assert_close(
                shared_k[:, slot, :, : len(row)], gen.cache.k[:, slot, :, : len(row)], atol=1e-9, rtol=0
            )


def test_eight_captions_prefill_in_groups() -> None:
    """A prefill starts as soon as the oldest request is encoded, with the others encoded by then:
    with 8 crops per unit, a wave of 4 captions (2 crops each) is one vision forward + one prefill."""
    gen = generator(BATCHED, chunk=8)
    settings = GenerationSettings(max_tokens=3)
    reqs = [request(i, "caption", image=make_image(64, 64, i), settings=settings) for i in range(8)]
    got: dict[int, Any] = {}
    for start in (0, 4):  # 4 slots: two waves
        got |= outputs(gen, reqs[start : start + 4])
    assert len(got) == 8
    assert gen.prefill_forwards == 2  # 4 rows each (64x64 images: 1 tile + the global crop)
    assert gen.vision_forwards == 2
    single = generator(ONE_AT_A_TIME, chunk=8)
    want: dict[int, Any] = {}
    for start in (0, 4):
        want |= outputs(single, reqs[start : start + 4])
    assert_same_results(got, want)


def test_prefill_token_budget_limits_shared_rows() -> None:
    gen = generator(AdmissionOptions(prefill_batch=4))  # budget: the context (256 positions)
    settings = GenerationSettings(max_tokens=2)
    for i in range(4):
        gen.admit(request(i, "caption", image=make_image(64, 64, i), settings=settings))
    run_to_end(gen)
    padded = -(-(gen.config.prefix_attn_len + 5) // 32) * 32  # 96 positions per row
    assert gen.prefill_forwards == -(-4 // (gen.cache.context // padded))


def test_admission_options_are_checked() -> None:
    with pytest.raises(ValueError, match="prefill_batch"):
        AdmissionOptions(prefill_batch=0)
    with pytest.raises(ValueError, match="crop_resize"):
        AdmissionOptions(crop_resize="gpu")


def test_describe_reports_admission_and_resize_path() -> None:
    gen = generator(BATCHED)
    described = gen.describe()
    assert described["admission"]["prefill_batch"] == 4 and described["admission"]["batch"] is True
    assert described["image_resize"] in ("pyvips", "pillow")
    assert generator(AdmissionOptions(crop_resize="device")).describe()["image_resize"] == "device-bicubic"
