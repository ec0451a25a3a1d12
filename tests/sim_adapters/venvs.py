"""The per-simulator client environments that ``.ci/sim_envs.sh`` makes, driven as subprocesses.

Meta-World, LIBERO and ManiSkill3 pin packages that conflict with the main environment, so they
run in their own venvs (``$VTLA_SIM_VENVS/<sim>``, default ``~/.cache/vtla-bridge/venvs``) and talk
to an in-process :class:`bridge.server.InferenceServer` over real ZeroMQ sockets. A test whose
venv is missing skips, naming the command that makes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
VENVS = Path(os.environ.get("VTLA_SIM_VENVS", Path.home() / ".cache" / "vtla-bridge" / "venvs"))


def sim_python(sim: str) -> Path:
    """The venv's python, or skip the test with the command that makes the venv."""
    venv = VENVS / sim
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists() or not python.exists():
        pytest.skip(f"no {sim} environment at {venv}: run `bash .ci/sim_envs.sh {sim}` (CI does)")
    return python


def sim_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)  # this checkout, whatever the venv's editable install points at
    env.setdefault("MUJOCO_GL", "osmesa")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    return env


def run_in_venv(sim: str, args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``<venv>/bin/python ARGS`` from the repository root; fails the test with its output on error."""
    proc = subprocess.run([str(sim_python(sim)), *args], cwd=REPO, env=sim_env(), capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        pytest.fail(f"{sim}: {' '.join(args[:4])} ... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc


def run_sim(sim: str, endpoint: str, task: str, episodes: int, out_json: Path, *extra: str,
            timeout_s: float = 600.0) -> dict[str, Any]:
    """``run-sim`` in the simulator's venv against ``endpoint``; -> its ``--json`` summary."""
    run_in_venv(sim, ["-m", "sim_adapters.runner", sim, "--task", task, "--episodes", str(episodes),
                      "--server", endpoint, "--rate-hz", "0", "--json", str(out_json), "--no-progress", *extra],
                timeout_s)
    summary: dict[str, Any] = json.loads(out_json.read_text())
    return summary


def probe(sim: str, check: str, timeout_s: float = 300.0, *args: str) -> dict[str, Any]:
    """One check of ``tests/sim_adapters/sim_probe.py`` in the venv; -> the JSON it prints last."""
    proc = run_in_venv(sim, ["-m", "tests.sim_adapters.sim_probe", check, *args], timeout_s)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
