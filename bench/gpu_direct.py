"""Model-level GPU figures without the server, and the CUDA-graph-vs-eager equality checks.

``python -m bench.gpu_direct --out gpu_direct.json`` (what ``bench/gpu_check.sh`` runs) loads the
real-size presets (random weights, bf16) on CUDA and measures:

* ``act`` latency at batch 1 and throughput at batch 64 (640x480 frames, resized on the device);
* Moondream TTFT for one 640x480 caption, and generated tokens/s with ``streams`` captions decoding
  together (``max_sequences`` = ``streams``);
* the same requests through the CUDA-graph decode and the eager decode: equal greedy text and
  detect boxes within 1e-3 (checks, not figures);
* ``torch.cuda.max_memory_allocated`` with both models resident, and each model's memory budget.

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
    generator.warmup()
    result["load_and_warmup_s"] = time.perf_counter() - started
    result["memory"] = {"vtla": policy.describe()["memory"], "moondream": generator.describe()["memory"]}
    if device.startswith("cuda"):
        result["memory"]["resident_allocated_bytes"] = torch.cuda.memory_allocated()
    result["act"] = measure_act(policy, device, args.act_iters, args.batch, frame)
    result["moondream"] = measure_moondream(generator, device, args.streams, args.max_tokens, frame)
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
