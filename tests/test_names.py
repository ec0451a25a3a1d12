"""Names that never collide across layers: one class per name, one error hierarchy."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.test_layering import REPO, module_name, source_files


def test_no_two_classes_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in source_files():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(module_name(path))
    clashes = {name: mods for name, mods in where.items() if len(mods) > 1}
    assert not clashes, f"classes of the same name in several modules: {clashes}"


def test_config_and_checkpoint_errors_are_each_defined_once() -> None:
    from bridge.config import ConfigError as BridgeConfigError
    from models.moondream.config import ConfigError as MoondreamConfigError
    from models.moondream.weights import CheckpointError as MoondreamCheckpointError
    from models.vtla.checkpoint import CheckpointError as VtlaCheckpointError
    from models.vtla.config import ConfigError as VtlaConfigError
    from vtla_contracts.errors import CheckpointError, ConfigError, VtlaBridgeError

    assert BridgeConfigError is MoondreamConfigError is VtlaConfigError is ConfigError
    assert MoondreamCheckpointError is VtlaCheckpointError is CheckpointError
    assert issubclass(ConfigError, VtlaBridgeError) and issubclass(CheckpointError, ValueError)


def test_cli_modules_are_named_for_what_they_run() -> None:
    names = [p.name for p in source_files()]
    assert names.count("cli.py") == 1 and names.count("command.py") == 0
    assert Path(REPO / "bridge" / "inference_loop.py").exists()
