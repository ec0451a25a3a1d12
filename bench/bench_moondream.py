"""Moondream Generator throughput and latency at several concurrency levels (no server, no sockets).

For each concurrency N: admit N caption requests back to back (image encode + prefill each), then
call ``step()`` until all finish, as the server's inference loop does. Reports per level:

* ``ttft_ms`` p50/max: admission to first token of each request, measured from the moment the
  batch arrived (so later admissions include the wait for earlier ones);
* ``decode_tok_s``: generated tokens / decode wall time; ``requests_s``: N / total wall time;
* ``step_ms`` p50/p99: one batched decode step (what an ``act`` may have to wait for);
* memory: parameters, KV cache, peak RSS (CPU) or peak CUDA allocation.

Random-weight presets hit EOS at random; by default the bench suppresses EOS so every request
generates exactly ``--max-tokens`` tokens (``--allow-eos`` turns that off).

    python bench/bench_moondream.py --preset tiny --device cpu --concurrency 1,8,32 --max-tokens 32
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.interfaces import GenerationRequest, GenerationSettings
from models.moondream.generator import MoondreamGenerator
from models.moondream.serving import load_generator
from vtla_contracts.model_spec import ModelSpec


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_level(
    generator: MoondreamGenerator, n: int, max_tokens: int, images: list[np.ndarray], device: str
) -> dict[str, Any]:
    settings = GenerationSettings(max_tokens=max_tokens)
    first_token_s: dict[int, float] = {}
    output_tokens = 0
    step_ms: list[float] = []
    sync(device)
    batch_start_s = time.perf_counter()
    for key in range(n):
        req = GenerationRequest(key=key, skill="caption", image=images[key % len(images)], settings=settings)
        events = generator.admit(req)
        sync(device)
        first_token_s[key] = time.perf_counter()
        output_tokens += sum(e.result["metrics"]["output_tokens"] for e in events if e.result is not None)
    decode_start_s = time.perf_counter()
    while generator.active():
        t0 = time.perf_counter()
        events = generator.step()
        sync(device)
        step_ms.append((time.perf_counter() - t0) * 1000.0)
        output_tokens += sum(e.result["metrics"]["output_tokens"] for e in events if e.result is not None)
    end_s = time.perf_counter()
    ttft_ms = [(first_token_s[k] - batch_start_s) * 1000.0 for k in range(n)]
    return {
        "concurrency": n,
        "output_tokens": output_tokens,
        "ttft_ms_p50": round(statistics.median(ttft_ms), 2),
        "ttft_ms_max": round(max(ttft_ms), 2),
        "admit_ms_mean": round((decode_start_s - batch_start_s) * 1000.0 / n, 2),
        "decode_tok_s": round(output_tokens / max(end_s - decode_start_s, 1e-9), 1),
        "total_tok_s": round(output_tokens / (end_s - batch_start_s), 1),
        "requests_s": round(n / (end_s - batch_start_s), 2),
        "step_ms_p50": round(percentile(step_ms, 50), 3) if step_ms else None,
        "step_ms_p99": round(percentile(step_ms, 99), 3) if step_ms else None,
        "wall_s": round(end_s - batch_start_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny", choices=["tiny", "moondream2-2025-04-14"])
    parser.add_argument("--path", default="", help="checkpoint directory (default: random weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--image-size", default="480x640", help="HxW of the synthetic frames")
    parser.add_argument("--allow-eos", action="store_true", help="let random weights stop early")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    levels = [int(x) for x in args.concurrency.split(",") if x]
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    height, width = (int(x) for x in args.image_size.lower().split("x"))
    spec = ModelSpec(
        kind="moondream", preset=args.preset, path=args.path, options={"max_sequences": max(levels)}
    )

    load_start_s = time.perf_counter()
    generator = load_generator(spec, args.device, dtype)
    load_s = time.perf_counter() - load_start_s
    if not args.allow_eos:
        with torch.no_grad():
            generator.model.text.lm_head.bias[generator.config.tokenizer.eos_id] = -1e4
    generator.warmup()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(4)]
    run_level(generator, 1, 4, images, args.device)  # warm the batched path too
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    results = [run_level(generator, n, args.max_tokens, images, args.device) for n in levels]
    memory: dict[str, Any] = {
        "parameters": generator.info.parameters,
        "param_mib": round(
            sum(p.numel() * p.element_size() for p in generator.model.parameters()) / 2**20, 1
        ),
        "kv_cache_mib": round(generator.cache.nbytes / 2**20, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.device.startswith("cuda"):
        memory["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    report = {
        "preset": args.preset,
        "device": args.device,
        "device_name": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor(),
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "max_tokens": args.max_tokens,
        "image_size": [height, width],
        "random_weights": generator.info.random_weights,
        "load_s": round(load_s, 2),
        "memory": memory,
        "levels": results,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
