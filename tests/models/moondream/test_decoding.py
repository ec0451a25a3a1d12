"""KV-cached decoding equals full recomputation; batched slots equal one-at-a-time; sampling rules."""

from __future__ import annotations

import torch

from models.interfaces import GenerationSettings
from models.moondream.config import preset_config
from models.moondream.generator import MoondreamGenerator
from models.moondream.model import MoondreamModel, init_random_weights
from models.moondream.sampling import sample_tokens
from models.moondream.text import KVCache
from tests.models.moondream.conftest import MakeGenerator, request, run_to_end


def tiny_text_model() -> MoondreamModel:
    model = MoondreamModel(preset_config("tiny")).to(torch.float64)
    init_random_weights(model, seed=3)
    model.text.rebuild_rope(torch.device("cpu"))
    return model.eval()


@torch.inference_mode()
def test_prefix_mask_is_bidirectional_over_bos_and_image_then_causal() -> None:
    text = tiny_text_model().text
    prefix = text.prefix_len  # 1 + 8*8 for the tiny preset
    mask = text.prefix_mask(prefix + 3, torch.device("cpu"))
    assert mask[:prefix, :prefix].all()
    assert not mask[:prefix, prefix:].any()
    assert mask[prefix + 1, : prefix + 2].all() and not mask[prefix + 1, prefix + 2 :].any()


@torch.inference_mode()
def test_cached_multi_slot_decode_equals_full_recomputation() -> None:
    model = tiny_text_model()
    text, dim = model.text, model.config.text.dim
    gen = torch.Generator().manual_seed(0)
    cache = KVCache(model.config.text, slots=4, context=160, device=torch.device("cpu"), dtype=torch.float64)
    lengths = {0: 70, 2: 90, 3: 66}  # slot 1 stays free: a dummy row in the batched step
    sequences = {s: torch.randn(1, n, dim, generator=gen, dtype=torch.float64) for s, n in lengths.items()}
    for slot, embeds in sequences.items():
        text.prefill(embeds, cache, slot)
    for _ in range(6):
        rows = 4
        new = torch.randn(rows, 1, dim, generator=gen, dtype=torch.float64)
        positions = torch.tensor([sequences[s].shape[1] if s in sequences else 0 for s in range(rows)])
        hidden = text.decode(new, cache, positions, int(positions.max()) + 1)
        for slot in sequences:
            sequences[slot] = torch.cat([sequences[slot], new[slot : slot + 1]], dim=1)
            full = text.prefill(sequences[slot])  # no cache: recompute everything
            torch.testing.assert_close(hidden[slot, 0], full[0, -1], rtol=1e-9, atol=1e-9)


@torch.inference_mode()
def reference_greedy_text(generator: MoondreamGenerator, req_kwargs: dict[str, object]) -> tuple[str, str]:
    """Greedy generation by re-running the whole sequence for every token (no KV cache)."""
    req = request(**req_kwargs)  # type: ignore[arg-type]
    model, eos = generator.model, generator.config.tokenizer.eos_id
    image_tokens = model.vision.embed_image(req.image)
    prompt = generator.prompt_ids(req)
    tokens: list[int] = []
    reason = "length"
    for _ in range(req.settings.max_tokens):
        ids = torch.tensor([generator.config.tokenizer.bos_id, *prompt, *tokens])
        embeds = torch.cat([model.text.embed(ids[:1]), image_tokens, model.text.embed(ids[1:])])[None]
        token = int(model.text.logits(model.text.prefill(embeds)[0, -1:]).argmax())
        if token == eos:
            reason = "stop"
            break
        tokens.append(token)
    table = generator._token_bytes
    return b"".join(table[t] for t in tokens).decode("utf-8", errors="replace"), reason


def test_generator_text_equals_full_recomputation(make_generator: MakeGenerator) -> None:
    generator = make_generator(max_sequences=3)
    cases = [
        {"key": 1, "skill": "caption", "seed": 1, "settings": GenerationSettings(max_tokens=15)},
        {
            "key": 2,
            "skill": "query",
            "seed": 2,
            "text": "what is red?",
            "settings": GenerationSettings(max_tokens=9),
        },
    ]
    for case in cases:
        generator.admit(request(**case))  # type: ignore[arg-type]
    finals = {e.key: e.result for e in run_to_end(generator) if e.result is not None}
    for case in cases:
        expected_text, expected_reason = reference_greedy_text(generator, case)
        result = finals[int(case["key"])]  # type: ignore[call-overload]
        assert result is not None
        field = "caption" if case["skill"] == "caption" else "answer"
        assert result[field] == expected_text
        assert result["finish_reason"] == expected_reason


def strip_metrics(result: dict[str, object] | None) -> dict[str, object]:
    assert result is not None
    return {k: v for k, v in result.items() if k != "metrics"}


def test_batched_slots_equal_one_at_a_time(make_generator: MakeGenerator) -> None:
    settings = GenerationSettings(max_tokens=14, max_objects=3)
    cases = [
        {"key": 10, "skill": "caption", "seed": 1, "settings": settings, "stream": True},
        {"key": 11, "skill": "query", "seed": 2, "text": "how many cubes?", "settings": settings},
        {"key": 12, "skill": "detect", "seed": 3, "settings": settings},
        {"key": 13, "skill": "point", "seed": 4, "settings": settings},
        {"key": 14, "skill": "caption", "seed": 5, "settings": settings, "length": "short"},
    ]
    alone: dict[int, dict[str, object]] = {}
    single = make_generator(max_sequences=1)
    for case in cases:
        events = single.admit(request(**case)) + run_to_end(single)  # type: ignore[arg-type]
        alone[int(case["key"])] = strip_metrics(events[-1].result)  # type: ignore[call-overload]

    batched = make_generator(max_sequences=4)
    events = []
    for case in cases[:3]:
        events += batched.admit(request(**case))  # type: ignore[arg-type]
    for _ in range(3):  # the others join mid-flight, at other positions
        events += batched.step()
    events += batched.admit(request(**cases[3]))  # type: ignore[arg-type]
    while batched.free_slots() == 0:
        events += batched.step()
    events += batched.admit(request(**cases[4]))  # type: ignore[arg-type]
    events += run_to_end(batched)
    together = {e.key: strip_metrics(e.result) for e in events if e.result is not None}
    assert together == alone
    assert any(alone[12]["objects"]) and any(alone[13]["points"])  # type: ignore[arg-type]


def test_sample_tokens_greedy_rows_and_top_p_cut() -> None:
    probs = torch.tensor([0.5, 0.3, 0.2])
    logits = probs.log()[None].repeat(2, 1)
    gen = torch.Generator().manual_seed(0)
    seen: set[int] = set()
    for _ in range(400):
        picked = sample_tokens(logits, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.6]), gen)
        assert int(picked[0]) == 0  # temperature 0 -> argmax
        seen.add(int(picked[1]))
    assert seen == {0, 1}  # token 2 lies beyond the 0.6 mass


def test_sampling_with_tiny_top_p_equals_greedy(make_generator: MakeGenerator) -> None:
    greedy = make_generator()
    sampled = make_generator(seed=0)
    g_events = greedy.admit(request(1, "caption", settings=GenerationSettings(max_tokens=10)))
    s_settings = GenerationSettings(max_tokens=10, temperature=0.8, top_p=1e-6)
    s_events = sampled.admit(request(1, "caption", settings=s_settings))
    g_final = (g_events + run_to_end(greedy))[-1].result
    s_final = (s_events + run_to_end(sampled))[-1].result
    assert g_final is not None and s_final is not None
    assert g_final["caption"] == s_final["caption"]
