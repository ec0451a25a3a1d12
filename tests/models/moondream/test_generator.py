"""The Generator contract: streaming, finals, finish reasons, region results, validation, slots."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.interfaces import GenerationSettings, InputError, ReadyWork
from models.moondream.generator import MoondreamGenerator
from models.moondream.tokenizer import encode
from tests.models.moondream.conftest import MakeGenerator, make_image, request, run_to_end


def force_eos(generator: MoondreamGenerator, bias: float) -> None:
    with torch.no_grad():
        generator.model.text.lm_head.bias[generator.config.tokenizer.eos_id] = bias


def test_stream_chunks_in_order_then_exactly_one_final(make_generator: MakeGenerator) -> None:
    generator = make_generator()
    force_eos(generator, -1e4)  # long enough to contain several words
    settings = GenerationSettings(max_tokens=60, temperature=5.0)  # near-uniform: spaces and odd bytes
    events = generator.admit(request(5, "caption", seed=1, stream=True, settings=settings))
    events += generator.admit(request(6, "query", seed=2, text="why?", stream=True, settings=settings))
    events += run_to_end(generator)
    for key, field in ((5, "caption"), (6, "answer")):
        mine = [e for e in events if e.key == key]
        finals = [e for e in mine if e.final]
        assert len(finals) == 1 and mine[-1] is finals[0]
        chunks = [e.chunk for e in mine[:-1]]
        assert all(chunks) and len(chunks) >= 2
        assert "".join(c for c in chunks if c) == finals[0].result[field]  # type: ignore[index]
        for chunk in chunks[:-1]:  # every chunk but the tail ends at a word boundary
            assert chunk is not None and chunk[-1] in " \n\t"
        assert finals[0].result["finish_reason"] == "length"  # type: ignore[index]
        assert finals[0].result["metrics"]["output_tokens"] == 60  # type: ignore[index]


def test_no_chunks_without_stream_and_metrics(make_generator: MakeGenerator) -> None:
    generator = make_generator()
    req = request(1, "query", text="what color?", settings=GenerationSettings(max_tokens=7))
    events = generator.admit(req) + run_to_end(generator)
    assert [e.chunk for e in events] == [None] and events[0].final
    result = events[0].result
    assert result is not None and set(result) == {"answer", "finish_reason", "metrics"}
    metrics = result["metrics"]
    assert set(metrics) == {"input_tokens", "output_tokens", "prefill_ms", "decode_ms", "ttft_ms"}
    assert metrics["input_tokens"] == generator.config.prefix_attn_len + len(generator.prompt_ids(req))
    assert metrics["output_tokens"] <= 7 and metrics["ttft_ms"] >= metrics["prefill_ms"] > 0


def test_eos_first_finishes_when_admission_completes(make_generator: MakeGenerator) -> None:
    generator = make_generator()
    force_eos(generator, 1e4)
    assert generator.admit(request(1, "caption", stream=True)) == []  # admission runs in step()
    caption = run_to_end(generator)
    assert len(caption) == 1 and caption[0].result is not None
    assert caption[0].result["caption"] == "" and caption[0].result["finish_reason"] == "stop"
    assert caption[0].result["metrics"]["output_tokens"] == 0
    generator.admit(request(2, "detect"))
    assert [e.result for e in run_to_end(generator)] == [{"objects": []}]
    assert generator.active() == 0 and generator.free_slots() == 4


def test_admission_is_cut_into_units_and_ready_reports_them(make_generator: MakeGenerator) -> None:
    generator = make_generator()
    generator.encode_chunk_crops = 2
    force_eos(generator, -1e4)  # never EOS: the first caption keeps decoding
    generator.admit(request(1, "caption", settings=GenerationSettings(max_tokens=50)))
    run_units = 0
    while 1 in generator._admitting:
        generator.step()
        run_units += 1
    crops = len(generator.prepare(request(1, "caption")).prepared[0])
    assert run_units == -(-crops // 2) + 1  # encode chunks, then the prefill
    pos_before = generator._by_key[1].pos
    generator.admit(request(2, "caption", seed=3, settings=GenerationSettings(max_tokens=50)))
    assert generator.ready() == ReadyWork(admitting=1, decoding=1)
    for _ in range(2):  # the server's scheduling policy interleaves; here: explicitly
        generator.decode_step()
        generator.admission_unit()
    assert generator._by_key[1].pos == pos_before + 2
    assert generator._admitting[2].encoded == 2 * 2


def test_max_tokens_one_and_context_cap(make_generator: MakeGenerator) -> None:
    generator = make_generator()
    force_eos(generator, -1e4)
    generator.admit(request(1, "caption", settings=GenerationSettings(max_tokens=1)))
    one = run_to_end(generator)
    assert one[-1].result is not None and one[-1].result["metrics"]["output_tokens"] == 1
    assert one[-1].result["finish_reason"] == "length"
    generator.admit(request(2, "caption", settings=GenerationSettings(max_tokens=100_000)))
    final = run_to_end(generator, max_steps=300)[-1].result
    assert final is not None and final["finish_reason"] == "length"
    assert final["metrics"]["input_tokens"] + final["metrics"]["output_tokens"] == generator.cache.context


@pytest.mark.parametrize(("skill", "per_object_steps"), [("detect", 3), ("point", 2)])
def test_region_skills_return_normalised_results(
    make_generator: MakeGenerator, skill: str, per_object_steps: int
) -> None:
    generator = make_generator()
    force_eos(generator, -1e4)  # never stop early: exactly max_objects
    req = request(1, skill, settings=GenerationSettings(max_objects=4))
    assert generator.admit(req) == []
    admission_units = -(-len(generator.prepare(req).prepared[0]) // generator.encode_chunk_crops) + 1
    steps, events = 0, []
    while generator.active():
        events += generator.step()
        steps += 1
    assert steps == admission_units + 4 * per_object_steps  # one region step per step() call
    assert len(events) == 1 and events[0].result is not None
    name = "objects" if skill == "detect" else "points"
    items = events[0].result[name]
    assert len(items) == 4
    for item in items:
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in item.values())
        if skill == "detect":
            assert set(item) == {"x_min", "y_min", "x_max", "y_max"}
            assert item["x_min"] <= item["x_max"] and item["y_min"] <= item["y_max"]
        else:
            assert set(item) == {"x", "y"}


BAD_REQUESTS = [
    ({"skill": "segment"}, "unknown skill"),
    ({"skill": "query", "text": None}, "question"),
    ({"skill": "query", "text": "   "}, "question"),
    ({"skill": "detect", "text": ""}, "object"),
    ({"skill": "point", "text": None}, "object"),
    ({"skill": "caption", "length": "huge"}, "length"),
    ({"skill": "caption", "settings": GenerationSettings(temperature=-0.1)}, "temperature"),
    ({"skill": "caption", "settings": GenerationSettings(temperature=float("nan"))}, "temperature"),
    ({"skill": "caption", "settings": GenerationSettings(top_p=0.0)}, "top_p"),
    ({"skill": "caption", "settings": GenerationSettings(top_p=1.5)}, "top_p"),
    ({"skill": "caption", "settings": GenerationSettings(max_tokens=0)}, "max_tokens"),
    ({"skill": "detect", "text": "cube", "settings": GenerationSettings(max_objects=0)}, "max_objects"),
    ({"skill": "caption", "image": np.zeros((8, 8, 3), dtype=np.float32)}, "uint8"),
    ({"skill": "caption", "image": np.zeros((8, 8), dtype=np.uint8)}, "(H, W, 3)"),
    ({"skill": "caption", "image": np.zeros((0, 8, 3), dtype=np.uint8)}, "empty"),
]


@pytest.mark.parametrize(("change", "message"), BAD_REQUESTS)
def test_bad_requests_raise_input_error_and_take_no_slot(
    make_generator: MakeGenerator, change: dict[str, object], message: str
) -> None:
    generator = make_generator()
    generator.admit(request(1, "caption"))  # an innocent neighbour
    base = request(2, "caption")
    bad = dataclasses.replace(base, **change)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generator.admit(bad)
    assert generator.free_slots() == 3 and generator.active() == 1
    final = run_to_end(generator)[-1]
    assert final.key == 1 and final.result is not None


def test_prompt_longer_than_context_is_input_error(make_generator: MakeGenerator) -> None:
    generator = make_generator()
    question = "the quick brown fox " * 80
    assert len(encode(generator.tokenizer, question)) > generator.cache.context
    with pytest.raises(InputError, match="context"):
        generator.admit(request(1, "query", text=question))
    assert generator.free_slots() == 4


def test_slots_cancel_and_duplicate_keys(make_generator: MakeGenerator) -> None:
    generator = make_generator(max_sequences=2)
    generator.admit(request(1, "caption"))
    with pytest.raises(InputError, match="already active"):
        generator.admit(request(1, "caption"))
    generator.admit(request(2, "point"))
    assert generator.free_slots() == 0 and generator.active() == 2
    with pytest.raises(RuntimeError, match="free"):
        generator.admit(request(3, "caption"))
    generator.cancel(1)
    generator.cancel(12345)  # unknown: no-op
    assert generator.free_slots() == 1 and generator.active() == 1
    generator.admit(request(3, "caption", image=make_image(500, 300)))
    keys = {e.key for e in run_to_end(generator) if e.final}
    assert keys == {2, 3}  # the cancelled request never reports


def test_describe_warmup_and_info(make_generator: MakeGenerator) -> None:
    generator = make_generator(max_sequences=3)
    generator.warmup()
    assert generator.active() == 0 and generator.free_slots() == 3
    described = generator.describe()
    assert described["skills"] == ["caption", "query", "detect", "point"]
    assert described["max_sequences"] == 3 and described["context"] == generator.cache.context
    assert described["revision"] == "tiny" and described["random_weights"] is True
    assert described["parameters"] == generator.model.parameter_count() > 0
    assert "random" in described["warning"]
    assert tuple(generator.skills()) == ("caption", "query", "detect", "point")


def test_bfloat16_runs_every_skill(make_generator: MakeGenerator) -> None:
    generator = make_generator(dtype=torch.bfloat16)
    assert generator.model.dtype == torch.bfloat16 and generator.cache.k.dtype == torch.bfloat16
    assert generator.model.text.rope_cos.dtype == torch.float32  # rotary tables stay float32
    settings = GenerationSettings(max_tokens=6, max_objects=2, temperature=0.7, top_p=0.9)
    events = []
    for key, skill in enumerate(("caption", "query", "detect", "point")):
        events += generator.admit(request(key, skill, seed=key, stream=True, settings=settings))
    finals = [e for e in events + run_to_end(generator) if e.final]
    assert sorted(e.key for e in finals) == [0, 1, 2, 3]
    assert all(e.result is not None for e in finals)


def test_prepared_requests_give_the_same_results(make_generator: MakeGenerator) -> None:
    """Generator.prepare() (crops made by the server's decode workers) changes where work runs, not results."""
    plain, prepared = make_generator(), make_generator()
    for key, skill in enumerate(("caption", "query", "detect")):
        req = request(key, skill, seed=key)
        ready = prepared.prepare(req)
        assert ready.prepared is not None and req.prepared is None
        events_a = plain.admit(req) + run_to_end(plain)
        events_b = prepared.admit(ready) + run_to_end(prepared)
        final_a = next(e for e in events_a if e.final)
        final_b = next(e for e in events_b if e.final)
        strip = ("metrics",)
        assert {k: v for k, v in final_a.result.items() if k not in strip} == {
            k: v for k, v in final_b.result.items() if k not in strip
        }


def test_prepare_rejects_bad_requests_early(make_generator: MakeGenerator) -> None:
    generator = make_generator()
    with pytest.raises(InputError):
        generator.prepare(request(1, "query", text=""))
    assert generator.free_slots() == 4
