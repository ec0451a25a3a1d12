"""Generation under act saturation for several ``[scheduler] vlm_min_share`` values, side by side.

    python -m bench.generation_share [--shares 0.3,0.35] [--repeats 3]

One server per share (both ``simulated`` H200 presets, overlap on, the engine benchmark's
config otherwise), then the engine benchmark's generation stage on each in turn, ``--repeats``
times: 8 caption streams alone, then next to 64 closed-loop act clients. Prints per run the
ratio loaded ÷ alone tokens/s and the acts/s served meanwhile (what the share costs control).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench import engine
from bench.processes import ServerProcess


def run(shares: list[float], repeats: int, work_dir: Path) -> list[dict[str, Any]]:
    options = engine.EngineOptions()
    servers: dict[float, ServerProcess] = {}
    rows: list[dict[str, Any]] = []
    try:
        for share in shares:
            table = engine._table(options, True)
            table["scheduler"]["vlm_min_share"] = share
            servers[share] = ServerProcess(f"generation-share-{share:g}", table, work_dir).launch()
        for server in servers.values():
            server.wait_ready()
        for repeat in range(repeats):
            for share, server in servers.items():  # alternating: each share sees the same host minute
                target = engine._Target(server.endpoint, server.pid, {})
                target.stage = "generation"
                result = engine._generation(target, options)
                rows.append({"vlm_min_share": share, "repeat": repeat, **result})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shares", default="0.3,0.35")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="generation-share-") as tmp:
        run([float(s) for s in args.shares.split(",")], args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
