"""Loading without an fp32 detour: meta skeleton, target dtype, rope base, and real-size peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from models.loading import assert_no_meta, materialize, meta_skeleton
from models.vtla.checkpoint import build_model, check_rope_base, load_checkpoint, save_checkpoint
from models.vtla.config import ConfigError
from models.vtla.presets import preset_config
from models.vtla.text import build_byte_tokenizer

CPU = torch.device("cpu")


def test_vtla_checkpoint_loads_straight_into_bfloat16(tmp_path: Path) -> None:
    model = build_model(preset_config("tiny"), CPU, torch.float32)
    save_checkpoint(model, build_byte_tokenizer(), tmp_path)
    loaded, _ = load_checkpoint(tmp_path, CPU, torch.bfloat16)
    assert_no_meta(loaded)
    params = dict(loaded.named_parameters())
    assert {p.dtype for p in params.values()} == {torch.bfloat16}
    assert loaded.language.rotary_emb.inv_freq.dtype == torch.float32  # rebuilt, not cast
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name].float(), value.to(torch.bfloat16).float())


def test_materialize_keeps_integer_buffers_and_random_build_is_seeded() -> None:
    skeleton = meta_skeleton(lambda: torch.nn.Embedding(10, 4))
    assert skeleton.weight.is_meta
    real = materialize(skeleton, CPU, torch.bfloat16)
    assert real.weight.dtype == torch.bfloat16 and not real.weight.is_meta
    a = build_model(preset_config("tiny"), CPU, torch.bfloat16)
    b = build_model(preset_config("tiny"), CPU, torch.bfloat16)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
        assert torch.isfinite(pa.float()).all(), name


def test_rope_base_assertion_fails_on_a_mismatched_config() -> None:
    model = build_model(preset_config("tiny"), CPU, torch.float32)
    check_rope_base(model)  # the tiny preset's 1e6 is what the decoder runs with
    model.language.config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
    with pytest.raises(ConfigError, match="rope_theta"):
        check_rope_base(model)


def test_rope_base_assertion_fails_on_a_stale_rotary_table() -> None:
    model = build_model(preset_config("tiny"), CPU, torch.float32)
    model.language.rotary_emb.inv_freq.mul_(0.5)
    with pytest.raises(ConfigError, match="rotary table"):
        check_rope_base(model)


_MEASURE = textwrap.dedent(
    """
    import gc, json, resource, sys
    import torch
    from vtla_contracts.model_spec import ModelSpec
    role, preset = sys.argv[1], sys.argv[2]
    if role == "policy":
        from models.vtla.serving import load_policy
        loaded = load_policy(ModelSpec(kind="vtla", preset=preset), "cpu", "bfloat16")
    else:
        from models.moondream.serving import load_generator
        loaded = load_generator(
            ModelSpec(kind="moondream", preset=preset, options={"max_sequences": 1}), "cpu", "bfloat16"
        )
    gc.collect()
    steady_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"steady_kb": steady_kb, "peak_kb": peak_kb}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(("role", "preset"), [("policy", "nano-2b"), ("vlm", "moondream2-2025-04-14")])
def test_real_size_preset_loads_in_bfloat16_with_peak_rss_within_15_percent(role: str, preset: str) -> None:
    """Each real-size model (~2 B parameters, bf16) in its own subprocess, one after the other."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, role, preset],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    ratio = figures["peak_kb"] / figures["steady_kb"]
    print(f"{preset}: steady {figures['steady_kb'] / 2**20:.2f} GiB, peak {figures['peak_kb'] / 2**20:.2f} GiB")
    assert ratio <= 1.15, f"{preset}: peak RSS {ratio:.3f}x the steady RSS after load ({figures})"
