"""Moondream admission batched vs one request at a time: forwards and wall time for queued captions.

``python -m bench.gpu_admission`` (tiny preset on CPU by default; ``--device cuda --preset
moondream2-2025-04-14 --dtype bfloat16`` on a GPU) admits ``--queued`` captions at once and runs
every admission unit until each has its first token, ``--repeats`` times per mode, and prints
JSON: vision-encoder forwards, prefill forwards and wall time (min / median / max) per mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np


def admit_all(generator: Any, requests: list[Any]) -> float:
    """Admit (already prepared) ``requests``, run admission units until none is left -> seconds;
    then cancel them. The host crop resize (``prepare``, in the server's decode workers) is not timed."""
    import torch

    start = time.perf_counter()
    for req in requests:
        generator.admit(req)
    while generator.ready().admitting:
        generator.admission_unit()
    if generator.model.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed_s = time.perf_counter() - start
    for req in requests:
        generator.cancel(req.key)
    return elapsed_s


def run(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    from bench.frames import scene_frame
    from models.interfaces import GenerationRequest, GenerationSettings
    from models.moondream.serving import load_generator
    from vtla_contracts.model_spec import ModelSpec

    options = {"max_sequences": args.queued, "encode_chunk_crops": args.chunk, "prefill_tokens": args.prefill_tokens}
    spec = ModelSpec(kind="moondream", preset=args.preset, options=options)
    generator = load_generator(spec, args.device, args.dtype)
    frame = scene_frame(args.height, args.width, seed=3)
    settings = GenerationSettings(max_tokens=1)
    requests = [
        generator.prepare(GenerationRequest(key=k, skill="caption", image=frame, settings=settings))
        for k in range(args.queued)
    ]
    out: dict[str, Any] = {"args": vars(args), "crops_per_request": None}
    base = generator.admission
    for name, batch in (("batched", True), ("one_at_a_time", False)):
        generator.admission = dataclasses.replace(base, batch=batch)
        admit_all(generator, requests)  # warm
        times, vision, prefill = [], 0, 0
        for _ in range(args.repeats):
            v0, p0 = generator.vision_forwards, generator.prefill_forwards
            times.append(admit_all(generator, requests))
            vision, prefill = generator.vision_forwards - v0, generator.prefill_forwards - p0
        out[name] = {
            "vision_forwards": vision,
            "prefill_forwards": prefill,
            "wall_ms": {
                "min": round(min(times) * 1000, 1),
                "median": round(statistics.median(times) * 1000, 1),
                "max": round(max(times) * 1000, 1),
            },
        }
    crops, _ = requests[0].prepared
    out["crops_per_request"] = int(np.asarray(crops).shape[0])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--queued", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=4, help="encode_chunk_crops")
    parser.add_argument("--prefill-tokens", type=int, default=1024)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
