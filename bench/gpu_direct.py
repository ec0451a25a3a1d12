"""Model-level GPU figures without the server, and the CUDA-graph-vs-eager equality checks.

``python -m bench.gpu_direct --out gpu_direct.json`` (what ``bench/gpu_check.sh`` runs) loads the
real-size presets (random weights, bf16) on CUDA and measures:

* ``act`` latency at batch 1 and throughput at batch 64 (640x480 frames, resized on the device);
* Moondream TTFT for one 640x480 caption, and generated tokens/s with ``streams`` captions decoding
  together (``max_sequences`` = ``streams``);
* the same requests through the CUDA-graph decode and the eager decode: equal greedy text and
  detect boxes within 1e-3 (checks, not figures);
* ``torch.cuda.max_memory_allocated`` with both models resident, and each model's memory budget;
* the VTLA's CUDA-graph forward against its plain eager forward (``vtla_checks``: max abs action
  difference, shapes and graphs captured by the warm-up of every (batch bucket, length) shape);
* Moondream admission (``admission``): 8 queued 640x480 captions admitted batched vs one at a
  time (vision and prefill forwards, wall time to the last first token), and with the crops
  resized on the device (tile difference to the libvips/Pillow reference, TTFT);
* ``act`` while a decode step is in flight (``launch_decode_step`` ... ``act`` ...
  ``finish_decode_step``): its latency against an idle GPU (the high-priority act stream).

``--device cpu --vtla-preset tiny --vlm-preset tiny`` runs the same code in seconds (the tests do).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.frames import scene_frame
from bench.stats import summarize

logger = logging.getLogger(__name__)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed_ms(fn: Callable[[], object], device: str, iters: int) -> list[float]:
    out = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def measure_act(policy: Any, device: str, iters: int, batch: int, frame: np.ndarray) -> dict[str, Any]:
    from models.interfaces import Observation

    one = [Observation(images={policy.cfg.cameras[0]: frame})]
    many = one * batch
    for _ in range(3):
        policy.act(one)
        policy.act(many)
    batch1 = _timed_ms(lambda: policy.act(one), device, iters)
    batched = _timed_ms(lambda: policy.act(many), device, max(3, iters // 10))
    p50_ms = summarize(batched).p50_ms
    alone = np.concatenate([policy.act(one) for _ in range(2)])
    together = policy.act(one * 2)
    return {
        "batch1_ms": summarize(batch1).as_dict(),
        f"batch{batch}_ms": summarize(batched).as_dict(),
        f"throughput_obs_s_at_{batch}": batch / (p50_ms / 1000.0),
        "batched_vs_alone_max_abs": float(np.abs(alone - together).max()),
        "staged": measure_staged_act(policy, device, max(3, iters // 10), batch),
    }


def measure_staged_act(policy: Any, device: str, iters: int, batch: int) -> dict[str, Any]:
    """``act`` of ``batch`` input-size frames staged by ``prepare`` (as the server's parsing threads do)
    against the same frames stacked on the calling thread: time of act alone and the actions' difference."""
    from models.interfaces import Observation

    prepare = getattr(policy, "prepare", None)
    if not callable(prepare):
        return {"skipped": "the policy has no prepare()"}
    s = policy.cfg.vision.image_size
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(batch)]
    plain = [Observation(images={policy.cfg.cameras[0]: f}) for f in frames]
    stacked_ms, staged_ms = [], []
    for _ in range(iters + 2):
        staged = [prepare(o) for o in plain]  # rows are released by act: stage anew every time
        _sync(device)
        start = time.perf_counter()
        staged_actions = policy.act(staged)
        _sync(device)
        staged_ms.append((time.perf_counter() - start) * 1000.0)
        start = time.perf_counter()
        stacked_actions = policy.act(plain)
        _sync(device)
        stacked_ms.append((time.perf_counter() - start) * 1000.0)
    stats = policy.staging_stats() if callable(getattr(policy, "staging_stats", None)) else None
    return {
        "batch": batch,
        "staged_ms": summarize(staged_ms[2:]).as_dict(),
        "stacked_ms": summarize(stacked_ms[2:]).as_dict(),
        "staged_vs_stacked_max_abs": float(np.abs(staged_actions - stacked_actions).max()),
        "staging_stats": stats,
    }


def _requests(frame: np.ndarray, streams: int, max_tokens: int, skill: str = "caption") -> list[Any]:
    from models.interfaces import GenerationRequest, GenerationSettings

    settings = GenerationSettings(max_tokens=max_tokens, max_objects=4)
    text = "the red cube" if skill != "caption" else None
    return [GenerationRequest(key=k, skill=skill, image=frame, text=text, settings=settings) for k in range(streams)]


def _run_all(generator: Any, requests: list[Any]) -> tuple[dict[int, Any], float, float | None]:
    """Admit everything, run to the end -> (results by key, elapsed s, first-token ms of key 0)."""
    start = time.perf_counter()
    first_ms = None
    for req in requests:
        generator.admit(generator.prepare(req))
    results: dict[int, Any] = {}
    for _ in range(100_000):
        if not generator.active():
            break
        for event in generator.step():
            if event.result is not None:
                results[event.key] = event.result
        if first_ms is None and 0 not in generator._admitting:
            first_ms = (time.perf_counter() - start) * 1000.0
    return results, time.perf_counter() - start, first_ms


def measure_moondream(generator: Any, device: str, streams: int, max_tokens: int, frame: np.ndarray) -> dict[str, Any]:
    from models.moondream.decode_step import DecodeOptions, DecodeStep

    _run_all(generator, _requests(frame, 1, 4))  # warm
    ttfts = [_run_all(generator, _requests(frame, 1, 1))[2] or 0.0 for _ in range(5)]
    results, elapsed_s, _ = _run_all(generator, _requests(frame, streams, max_tokens))
    tokens = sum(r["metrics"]["output_tokens"] for r in results.values())
    out: dict[str, Any] = {
        "ttft_ms_640x480": summarize(ttfts).as_dict(),
        f"tokens_per_s_{streams}_streams": tokens / elapsed_s,
        "generated_tokens": tokens,
        "cuda_graphs_captured": generator.decode.graphs_captured,
    }
    # the same requests through the eager step: greedy text identical, boxes within 1e-3
    check_rows = min(4, streams)
    graph_text, _, _ = _run_all(generator, _requests(frame, check_rows, 24))
    graph_boxes, _, _ = _run_all(generator, _requests(frame, min(2, streams), 8, skill="detect"))
    graph_step = generator.decode
    generator.decode = DecodeStep(
        generator.model.text,
        generator.model.region,
        generator.cache,
        DecodeOptions(length_bucket=graph_step.options.length_bucket, cuda_graphs=False),
        generator._rng,
    )
    try:
        eager_text, _, _ = _run_all(generator, _requests(frame, check_rows, 24))
        eager_boxes, _, _ = _run_all(generator, _requests(frame, min(2, streams), 8, skill="detect"))
    finally:
        generator.decode = graph_step
    out["graph_vs_eager_text_equal"] = all(
        graph_text[k]["caption"] == eager_text[k]["caption"] for k in graph_text
    )
    diffs = [
        abs(a[c] - b[c])
        for k in graph_boxes
        for a, b in zip(graph_boxes[k]["objects"], eager_boxes[k]["objects"], strict=False)
        for c in a
    ]
    out["graph_vs_eager_box_max_abs"] = max(diffs, default=0.0)
    out["graph_vs_eager_boxes_equal"] = all(
        len(graph_boxes[k]["objects"]) == len(eager_boxes[k]["objects"]) for k in graph_boxes
    ) and out["graph_vs_eager_box_max_abs"] <= 1e-3
    return out


def vtla_checks(policy: Any, frame: np.ndarray, warmup_s: float) -> dict[str, Any]:
    """CUDA-graph replay vs the plain eager forward on the same batches (same weights)."""
    from models.interfaces import Observation

    static = policy.static
    out: dict[str, Any] = {
        "warmup_s": warmup_s,
        "shapes_warmed": len(static.shapes()) if static is not None else 0,
        "graphs_captured": static.graphs_captured if static is not None else 0,
        "expected_shapes": len(policy.batch_buckets) * len(policy.sequence_lengths()),
    }
    cam = policy.cfg.cameras[0]
    batches = [
        [Observation(images={cam: frame}, instruction="pick up the red cube")],
        [Observation(images={cam: frame}, instruction="x" * (i + 1)) for i in range(5)],
    ]
    graph = [policy.act(b) for b in batches]
    policy.static = None
    try:
        eager = [policy.act(b) for b in batches]
    finally:
        policy.static = static
    out["graph_vs_eager_max_abs"] = max(float(np.abs(g - e).max()) for g, e in zip(graph, eager, strict=True))
    return out


def measure_admission(generator: Any, device: str, frame: np.ndarray, queued: int = 8) -> dict[str, Any]:
    """``queued`` captions admitted batched vs one at a time; then the device-side crop resize."""
    import dataclasses

    import torch

    from models.moondream.crops import overlap_crops, overlap_crops_on_device, upload_image

    queued = min(queued, generator.cache.slots)
    out: dict[str, Any] = {"queued": queued}
    saved, saved_tokens = generator.admission, generator.prefill_tokens
    try:
        for name, batch in (("batched", True), ("one_at_a_time", False)):
            generator.admission = dataclasses.replace(saved, batch=batch)
            # a shared prefill of up to 4 real-size rows (the default budget, the context, fits 1 at 1024)
            generator.prefill_tokens = max(saved_tokens, 4 * 768)
            _run_all(generator, _requests(frame, queued, 1))  # warm this path
            vision0, prefill0 = generator.vision_forwards, generator.prefill_forwards
            results, elapsed_s, _ = _run_all(generator, _requests(frame, queued, 1))
            out[name] = {
                "vision_forwards": generator.vision_forwards - vision0,
                "prefill_forwards": generator.prefill_forwards - prefill0,
                "all_first_tokens_s": elapsed_s,
                "ttft_ms_max": max(r["metrics"]["ttft_ms"] for r in results.values()),
            }
        generator.admission = dataclasses.replace(saved, crop_resize="device")
        _run_all(generator, _requests(frame, 1, 1))
        ttfts = [_run_all(generator, _requests(frame, 1, 1))[2] or 0.0 for _ in range(5)]
        out["device_resize_ttft_ms_640x480"] = summarize(ttfts).as_dict()
    finally:
        generator.admission, generator.prefill_tokens = saved, saved_tokens
    reference, _ = overlap_crops(frame, generator.config.vision)
    on_device, _ = overlap_crops_on_device(upload_image(frame, torch.device(device)), generator.config.vision)
    diff = np.abs(on_device.cpu().numpy().astype(np.int16) - reference.astype(np.int16))
    out["device_resize_vs_reference_levels"] = {"max": int(diff.max()), "mean": float(diff.mean())}
    out["reference_resize"] = generator.describe()["image_resize"]
    return out


def measure_act_during_decode(policy: Any, generator: Any, device: str, frame: np.ndarray) -> dict[str, Any]:
    """``act`` (batch 1) launched while a decode step of ``max_sequences`` rows is in flight."""
    from models.interfaces import Observation

    one = [Observation(images={policy.cfg.cameras[0]: frame})]
    streams = generator.cache.slots
    for req in _requests(frame, streams, 64):
        generator.admit(generator.prepare(req))
    while generator._admitting:
        generator.step()
    during = []
    for _ in range(20):
        if not generator.active():
            break
        generator.launch_decode_step()
        start = time.perf_counter()
        policy.act(one)
        during.append((time.perf_counter() - start) * 1000.0)
        generator.finish_decode_step()
    for key in list(generator._by_key):
        generator.cancel(key)
    idle = _timed_ms(lambda: policy.act(one), device, 20)
    return {"act_ms_during_decode": summarize(during).as_dict(), "act_ms_idle": summarize(idle).as_dict()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from models.moondream.serving import load_generator
    from models.vtla.serving import load_policy
    from vtla_contracts.model_spec import ModelSpec

    device, dtype = args.device, args.dtype
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    frame = scene_frame(480, 640, seed=3)
    result: dict[str, Any] = {"device": device, "dtype": dtype, "torch": torch.__version__}
    if device.startswith("cuda"):
        result["device_name"] = torch.cuda.get_device_name(0)
    started = time.perf_counter()
    policy = load_policy(ModelSpec(kind="vtla", preset=args.vtla_preset), device, dtype)
    options = {"max_sequences": args.streams, "context": args.context}
    generator = load_generator(ModelSpec(kind="moondream", preset=args.vlm_preset, options=options), device, dtype)
    warm_started = time.perf_counter()
    policy.warmup()  # every (batch bucket, length) shape on CUDA, as the server does before health ok
    vtla_warmup_s = time.perf_counter() - warm_started
    generator.warmup()
    result["load_and_warmup_s"] = time.perf_counter() - started
    result["memory"] = {"vtla": policy.describe()["memory"], "moondream": generator.describe()["memory"]}
    if device.startswith("cuda"):
        result["memory"]["resident_allocated_bytes"] = torch.cuda.memory_allocated()
    result["act"] = measure_act(policy, device, args.act_iters, args.batch, frame)
    result["moondream"] = measure_moondream(generator, device, args.streams, args.max_tokens, frame)
    result["vtla_checks"] = vtla_checks(policy, frame, vtla_warmup_s)
    result["admission"] = measure_admission(generator, device, frame)
    result["act_during_decode"] = measure_act_during_decode(policy, generator, device, frame)
    if device.startswith("cuda"):
        result["memory"]["max_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--vtla-preset", default="nano-2b")
    parser.add_argument("--vlm-preset", default="moondream2-2025-04-14")
    parser.add_argument("--act-iters", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--context", type=int, default=1024)  # 730 image prefix + prompt + 128 tokens fit
    parser.add_argument("--out", type=Path, default=Path("gpu_direct.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = run(args)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
