"""The house's layers, enforced: every import (module level or inside a function) goes downwards.

    contracts  <-  wire (protocol, codec, socket frames, config, client messages)  <-  clients  <-  sim adapters, HTTP
    contracts  <-  models  <-  server (loop, scheduling, parsing)  <-  CLI / supervisor / bench

and the client side's import closure never contains torch or transformers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("vtla_contracts", "bridge", "models", "sim_adapters", "bench")

# layer name -> the layers it may import from (itself included)
ALLOWED: dict[str, set[str]] = {
    "contracts": {"contracts"},
    "wire": {"contracts", "wire"},
    "clients": {"contracts", "wire", "clients"},
    "edge": {"contracts", "wire", "clients", "edge"},
    "models": {"contracts", "models"},
    "server": {"contracts", "wire", "models", "server"},
    "top": {"contracts", "wire", "clients", "edge", "models", "server", "top"},
}
WIRE = {
    "bridge",
    "bridge.protocol",
    "bridge.codec",
    "bridge.socket_frames",
    "bridge.errors",
    "bridge.messages",
    "bridge.image_args",
    "bridge.config",
    "bridge.header_bounds",
    "bridge.quoting",
    "bridge.curve_keys",
    "bridge.exposure",
    "bridge.log_setup",
}
CLIENTS = {"bridge.ops", "bridge.client", "bridge.aio_client", "bridge.endpoints", "bridge.ray_discovery"}
TOP = {
    "bridge.cli", "bridge.__main__", "bridge.supervise", "bridge.banner", "bridge.healthcheck",
    "bridge.device_servers", "bridge.proxy", "bridge.ray_servers",
}


def layer_of(module: str) -> str:
    top = module.split(".")[0]
    if top == "vtla_contracts":
        return "contracts"
    if top == "models":
        return "models"
    if top == "sim_adapters" or module.startswith("bridge.http") or module.startswith("bridge.openpi"):
        return "edge"
    if top == "bench" or module in TOP:
        return "top"
    if module in WIRE:
        return "wire"
    if module in CLIENTS:
        return "clients"
    return "server"  # every other bridge module: the inference process


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of one of the project's packages in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from bridge import client` imports bridge.client; `from bridge.x import Y` imports bridge.x
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n for n in names if _is_module(n)] or [node.module]
        else:
            continue
        out += [(node.lineno, n) for n in names if n.split(".")[0] in PACKAGES]
    return out


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (REPO / rel).with_suffix(".py").exists() or (REPO / rel / "__init__.py").exists()


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_every_import_goes_down_the_layers() -> None:
    violations = []
    for path in source_files():
        importer = module_name(path)
        mine = layer_of(importer)
        for line, imported in project_imports(path):
            theirs = layer_of(imported)
            if theirs not in ALLOWED[mine]:
                violations.append(f"{path.relative_to(REPO)}:{line}: {importer} ({mine}) imports {imported} ({theirs})")
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_the_layer_map_knows_a_violation_when_it_sees_one(tmp_path: Path) -> None:
    assert "server" not in ALLOWED[layer_of("models.vtla.serving")]
    assert "models" not in ALLOWED[layer_of("bridge.client")]
    assert "edge" not in ALLOWED[layer_of("vtla_contracts.action_layout")]
    assert layer_of("bridge.inference_loop") == "server"


CLIENT_SIDE = ("bridge.client", "bridge.aio_client", "bridge.http.app", "sim_adapters.runner", "vtla_contracts")


@pytest.mark.parametrize("module", CLIENT_SIDE)
def test_client_side_import_closure_has_no_torch(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'safetensors', 'tokenizers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"
