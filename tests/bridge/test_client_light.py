"""Simulators install only the client: importing it must not pull torch or transformers."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import bridge.client, bridge.aio_client, bridge.messages, bridge.codec
heavy = sorted(m for m in ("torch", "transformers", "safetensors", "tokenizers") if m in sys.modules)
print(",".join(heavy))
"""


def test_client_import_is_torch_free() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_the_check_itself_would_notice_torch() -> None:
    out = subprocess.run([sys.executable, "-c", "import torch\n" + CHECK], capture_output=True, text=True,
                         check=True, timeout=120)
    assert "torch" in out.stdout
