"""compose.yaml: valid against the Compose specification's JSON schema, and secure by default.

No Docker engine runs here, so the file is checked, not run: the schema is the one the
``docker-compose`` 1.29.2 distribution ships (``compose/config/compose_spec.json``; .ci/run
installs it with ``--no-deps``, only for this file). The health checks it names are run for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartServer, free_port

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
    return data


def compose_schema() -> dict[str, Any]:
    try:
        dist = metadata.distribution("docker-compose")
    except metadata.PackageNotFoundError:
        pytest.skip("the compose schema comes with docker-compose==1.29.2 (pip install --no-deps; .ci/run does)")
    schema: dict[str, Any] = json.loads(Path(str(dist.locate_file("compose/config/compose_spec.json"))).read_text())
    return schema


def test_compose_file_follows_the_compose_specification() -> None:
    schema = compose_schema()
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    broken = compose()
    broken["services"]["server"]["deploy"]["resources"]["reservations"]["devices"] = "all"
    assert any(True for _ in validator.iter_errors(broken)), "the schema check must be able to fail"


def test_three_services_a_gpu_for_the_server_and_checkpoints_read_only() -> None:
    services = compose()["services"]
    assert set(services) == {"server", "http", "openpi"}
    devices = services["server"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert any(v.endswith(":/models:ro") for v in services["server"]["volumes"])
    for companion in ("http", "openpi"):
        assert "tcp://server:5555" in services[companion]["command"]
        assert "server" in services[companion]["depends_on"]
        assert "deploy" not in services[companion], f"{companion} needs no GPU"


def test_nothing_is_published_beyond_loopback_and_secrets_are_required() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for key, value in service.get("environment", {}).items():
            assert str(value).startswith("${" + key + ":?"), f"{name}.{key} must be required (${{{key}:?...}})"
    assert "VTLA_BRIDGE_TOKENS" in services["server"]["environment"]
    assert {"VTLA_BRIDGE_TOKENS", "VLM_API_KEY"} <= set(services["http"]["environment"])
    assert {"VTLA_BRIDGE_TOKENS", "OPENPI_API_KEY"} <= set(services["openpi"]["environment"])


def test_health_checks_probe_health_and_slash_health() -> None:
    services = compose()["services"]
    assert services["server"]["healthcheck"]["test"][-1] == "tcp://127.0.0.1:5555"
    assert services["http"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8000"
    assert services["openpi"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8001/healthz"
    for service in services.values():
        assert service["healthcheck"]["test"][1:4] == ["python", "-m", "bridge.healthcheck"]


def run_healthcheck(endpoint: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.healthcheck", endpoint, "--timeout-s", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )


def test_the_server_health_check_runs_against_a_real_server(start_server: StartServer) -> None:
    server = start_server(server={"bind": "tcp://127.0.0.1:*", "auth_tokens": ("s3cret",)})
    ok = run_healthcheck(server.endpoint, {"VTLA_BRIDGE_TOKENS": "s3cret"})
    assert ok.returncode == 0, ok.stderr
    refused = run_healthcheck(server.endpoint, {"VTLA_BRIDGE_TOKENS": "wrong"})
    assert refused.returncode == 1 and "unauthorized" in refused.stderr


def test_the_openpi_health_check_and_its_api_key_from_the_environment(start_server: StartServer) -> None:
    """The openpi service as compose runs it: ``OPENPI_API_KEY`` protects the websocket, and the
    health check probes ``/healthz`` (which needs no key) of a real endpoint process."""
    server = start_server()
    port = free_port()
    env = {**os.environ, "OPENPI_API_KEY": "k-compose"}
    endpoint = subprocess.Popen(
        [sys.executable, "-m", "bridge", "openpi", "--server", server.endpoint, "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline_s = time.monotonic() + 60
        while run_healthcheck(url + "/healthz").returncode != 0:
            assert endpoint.poll() is None, endpoint.communicate()[1]
            assert time.monotonic() < deadline_s, "the openpi endpoint never became healthy"
            time.sleep(0.3)
        request = urllib.request.Request(url + "/", headers={"Authorization": "Api-Key wrong"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
    finally:
        endpoint.terminate()
        endpoint.wait(30)


def test_the_health_checks_fail_when_nothing_answers() -> None:
    assert run_healthcheck("tcp://127.0.0.1:1").returncode == 1
    assert run_healthcheck("http://127.0.0.1:1").returncode == 1
    assert run_healthcheck("http://127.0.0.1:1/healthz").returncode == 1


def test_the_dockerfile_copies_every_package_the_distribution_has() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    missing = [p for p in sorted(packages) if f"COPY {p} ./{p}" not in dockerfile]
    assert not missing, f"the Dockerfile does not COPY {missing}"
