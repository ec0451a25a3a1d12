"""Cost of hostile request headers: time and peak memory of decoding (before any reply).

Each case is a header frame of the maximum message size (``server.max_message_bytes``, 64 MiB by
default) built to make msgpack allocate as much as possible per byte. Run:

    python -m bench.hostile_input [--mib 64]

Figures go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import struct
import time
import tracemalloc
from collections.abc import Callable

from bridge.codec import decode_header
from bridge.config import LimitsConfig
from bridge.protocol import ProtocolError


def _array32(n: int, item: bytes) -> bytes:
    return b"\xdd" + struct.pack(">I", n) + item * n


def cases(size: int) -> dict[str, Callable[[], bytes]]:
    n = size - 5
    nested_n = (size - 16) // 2
    return {
        "array of empty maps": lambda: _array32(n, b"\x80"),
        "array of empty lists": lambda: _array32(n, b"\x90"),
        "array of uint16": lambda: _array32(n // 3, b"\xcd\x12\x34"),
        "maps nested": lambda: b"\x81\xa1a" * (size // 3),
        "lists of lists of empty maps": lambda: _array32(nested_n // 8192 + 1, b"\xdc\x20\x00" + b"\x80" * 8192),
        "one huge str": lambda: b"\xdb" + struct.pack(">I", n) + b"x" * n,
        "one huge bin": lambda: b"\xc6" + struct.pack(">I", n) + b"x" * n,
        # not max-size: the most objects the bounds let through (12,282 empty maps in 12 KiB)
        "most objects allowed (12 KiB)": lambda: b"\x93" + (b"\xdc\x0f\xfe" + b"\x80" * 4094) * 3,
    }


def _decode(blob: bytes) -> str:
    try:
        decode_header(memoryview(blob), [], LimitsConfig().max_array_bytes)
    except ProtocolError as exc:
        return f"{exc.code}: {exc.message[:60]}"
    return "decoded"


def measure(blob: bytes) -> tuple[float, int, str]:
    """(seconds without tracing, peak traced bytes in a second run, outcome)."""
    started = time.perf_counter()
    outcome = _decode(blob)
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    _decode(blob)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=64.0, help="header size in MiB")
    args = parser.parse_args()
    size = int(args.mib * 1024 * 1024)
    print(f"| header ({args.mib:g} MiB) | time (s) | peak memory (MiB) | memory / size | outcome |")
    print("|---|---|---|---|---|")
    for name, build in cases(size).items():
        blob = build()
        elapsed, peak, outcome = measure(blob)
        print(f"| {name} | {elapsed:.3f} | {peak / 2**20:.1f} | {peak / len(blob):.2f} | {outcome} |")


if __name__ == "__main__":
    main()
