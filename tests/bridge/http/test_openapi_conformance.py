"""schemathesis against the real companion: every operation of /openapi.json, all default checks
(server errors, status codes, content types, response schemas and headers, schema-valid data
accepted, schema-violating data rejected, auth, unsupported methods), zero failures.

The companion runs on a real port in front of a real inference server (test-double models, so
generation is fast whatever max_tokens schemathesis picks), with an API key so that the auth
checks run. Settings: tests/bridge/http/schemathesis.toml (why /predict skips one check);
real images for ``format: data-uri``: tests/bridge/http/schemathesis_hooks.py. Rerun by hand:
docs/http.md ("Checking the spec").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.http.settings import HttpSettings
from bridge.server import InferenceServer
from tests.bridge.http.conftest import LiveHttp
from tests.conftest import server_config
from tests.doubles import EchoPolicy, WordGenerator

pytest.importorskip("schemathesis")

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
API_KEY = "schemathesis-key"
MAX_EXAMPLES = int(os.environ.get("VTLA_SCHEMATHESIS_EXAMPLES", "30"))  # per operation and phase
SEED = os.environ.get("VTLA_SCHEMATHESIS_SEED", "1")  # fixed in CI: a failure reproduces


@pytest.fixture(scope="module")
def companion_url() -> Iterator[str]:
    policy, generator = EchoPolicy(), WordGenerator()
    server = InferenceServer(server_config(), load_policy=lambda *a: policy, load_generator=lambda *a: generator)
    server.start()
    try:
        assert server.wait_ready(120), server.loop.state.detail
        live = LiveHttp(HttpSettings(server_endpoint=server.endpoint, api_keys=(API_KEY,),
                                     body_read_timeout_s=10.0)).start()
        try:
            yield live.url
        finally:
            live.stop()
    finally:
        server.stop()


def _summary(output: str, pattern: str) -> int:
    match = re.search(pattern, output)
    assert match, f"no {pattern!r} in schemathesis' summary:\n{output[-3000:]}"
    return int(match.group(1))


@pytest.mark.slow
def test_schemathesis_finds_no_failure_on_the_real_companion(companion_url: str, artifacts_dir: Path,
                                                           tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"),
        "run", f"{companion_url}/openapi.json", "--header", f"X-Moondream-Auth: {API_KEY}",
        "--max-examples", str(MAX_EXAMPLES), "--seed", SEED, "--generation-database", "none",
        "--request-timeout", "30", "--no-color",
        "--suppress-health-check", "too_slow",  # a timing judgement: a busy CI host must not fail the run
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "SCHEMATHESIS_HOOKS": "tests.bridge.http.schemathesis_hooks"}
    started_s = time.perf_counter()
    # run in a scratch directory: schemathesis keeps a crash cache (.schemathesis/) in its working directory
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    wall_s = time.perf_counter() - started_s
    output = result.stdout + result.stderr
    (artifacts_dir / "schemathesis.txt").write_text(output)
    assert result.returncode == 0, output[-12000:]
    tested = _summary(output, r"Tested: (\d+)")
    generated = _summary(output, r"(\d+) generated, \d+ passed")
    passed = _summary(output, r"\d+ generated, (\d+) passed")
    assert tested == 12, output[-3000:]  # every documented operation
    assert passed == generated >= 300, output[-3000:]
    print(f"schemathesis: {tested} operations, {generated} cases, 0 failures, {wall_s:.1f} s")
