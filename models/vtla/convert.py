"""``vtla-bridge convert-vtla``: the predecessor's training checkpoint -> a VTLA checkpoint directory.

Input: the ``torch.save`` dict of the Nano-VTLA trainer (``model_state_dict`` with Bunny-style
names) and its ``action_mean_std.pkl``. Both are *trusted local files* given on the command
line: the checkpoint is read with ``torch.load(weights_only=True)`` (``--allow-pickle`` falls
back to full unpickling for checkpoints holding other Python objects), and the ``.pkl`` is
unpickled, so never point this tool at files from an untrusted source.

``--readout legacy`` reproduces the old service's outputs (the head reads the last image token;
old prompt ``<image>{instruction}``; zero "dummy tactile" image). ``--readout query`` keeps the
weights but appends a new, randomly initialised action-query token that still needs
fine-tuning before its outputs mean anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pickle
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from models.vtla.checkpoint import CheckpointError, check_state, save_checkpoint
from models.vtla.config import Normalization, VTLAConfig
from models.vtla.model import VTLAModel
from models.vtla.presets import legacy_variant, preset_config
from models.vtla.text import build_byte_tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

OLD_VISION = "model.vision_tower.vision_tower.vision_model."
OLD_TACTILE = "model.tactile_tower."
# torchvision's ResNet children: index in Sequential(*children[:-1]) -> attribute name.
BACKBONE_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
# Keys of the old checkpoint that the served model has no use for.
IGNORED = (
    re.compile(r"^lm_head\."),
    re.compile(r".*rotary_emb\.inv_freq$"),
    re.compile(r"^model\.reasoning_head\."),
    re.compile(r"^model\.vision_tower\.vision_tower\.vision_model\.head\."),
    re.compile(r"^model\.tactile_tower\.encoder\.resnet\.fc\."),
)


class ConversionError(ValueError):
    """The source checkpoint does not fit the base config, or holds keys this tool does not know."""


def load_source_state(path: str | Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """The old ``model_state_dict`` (``module.`` prefixes of DDP stripped)."""
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            raise ConversionError(
                f"{path}: holds Python objects beyond tensors, so weights_only loading refused it ({exc}). "
                "If this is your own trusted file, rerun with --allow-pickle."
            ) from exc
        logger.warning("%s: unpickling in full (--allow-pickle)", path)
        blob = torch.load(str(path), map_location="cpu", weights_only=False)
    state = blob.get("model_state_dict", blob) if isinstance(blob, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: expected a dict with 'model_state_dict' (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_action_stats(path: str | Path) -> Normalization:
    """``action_mean_std.pkl`` (a dict with ``mean`` and ``std``) -> mean/std normalisation.

    The file is unpickled: it must be a trusted local file.
    """
    with open(path, "rb") as f:
        stats = pickle.load(f)
    if not isinstance(stats, Mapping) or "mean" not in stats or "std" not in stats:
        raise ConversionError(f"{path}: expected a dict with 'mean' and 'std'")
    mean = np.asarray(stats["mean"], dtype=np.float64).reshape(-1)
    std = np.asarray(stats["std"], dtype=np.float64).reshape(-1)
    return Normalization(
        type="mean_std", mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std)
    )


def head_widths(state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """Hidden widths of the old action head ``mlp.{0,2,4}`` (e.g. (512, 256) or (512, 512))."""
    prefix = "action_head.mlp." if "action_head.mlp.0.weight" in state else "model.action_head.mlp."
    widths = []
    index = 0
    while f"{prefix}{index + 2}.weight" in state:
        widths.append(int(state[f"{prefix}{index}.weight"].shape[0]))
        index += 2
    if not widths:
        raise ConversionError("no action head (action_head.mlp.N.weight) in the checkpoint")
    return tuple(widths)


def map_key(old: str, vision_layers: int) -> str | None:
    """New name for an old key; None for keys deliberately dropped; raises for unknown ones."""
    if any(p.match(old) for p in IGNORED):
        return None
    if old.startswith(OLD_VISION):
        rest = old.removeprefix(OLD_VISION)
        layer = re.match(r"encoder\.layers\.(\d+)\.", rest)
        if layer and int(layer.group(1)) >= vision_layers:
            return None  # Bunny used the penultimate layer's output: the last layer never ran
        return "vision." + rest
    if old.startswith("model.mm_projector."):
        return "projector." + old.removeprefix("model.mm_projector.")
    for part in ("embed_tokens.", "layers.", "norm."):
        if old.startswith("model." + part):
            return "language." + old.removeprefix("model.")
    if old == "model.tactile_pos_embedding":
        return "tactile.pos_embedding"
    if old.startswith(OLD_TACTILE + "projector.projector."):
        return "tactile.projector." + old.removeprefix(OLD_TACTILE + "projector.projector.")
    if old.startswith(OLD_TACTILE + "encoder.resnet."):
        return "tactile.trunk." + old.removeprefix(OLD_TACTILE + "encoder.resnet.")
    if old.startswith(OLD_TACTILE + "encoder.backbone."):
        index, _, rest = old.removeprefix(OLD_TACTILE + "encoder.backbone.").partition(".")
        if index in BACKBONE_CHILDREN:
            return f"tactile.trunk.{BACKBONE_CHILDREN[index]}.{rest}"
    for prefix in ("action_head.mlp.", "model.action_head.mlp."):
        if old.startswith(prefix):
            return "action_head." + old.removeprefix(prefix)
    raise ConversionError(f"unknown key in the source checkpoint: {old}")


def convert_state(state: Mapping[str, torch.Tensor], vision_layers: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for old, tensor in state.items():
        new = map_key(old, vision_layers)
        if new is None:
            continue
        if new == "tactile.pos_embedding":
            tensor = tensor.reshape(-1)  # (1, 1, d) -> (d,)
        if new in out:  # torchvision's resnet.* and backbone.N.* name the same tensors
            if out[new].shape != tensor.shape or not torch.equal(out[new], tensor):
                raise ConversionError(f"{old} disagrees with another key that maps to {new}")
            continue
        out[new] = tensor
    return out


def source_dtype(state: Mapping[str, torch.Tensor]) -> torch.dtype:
    counts = Counter(t.dtype for t in state.values() if t.is_floating_point())
    return counts.most_common(1)[0][0] if counts else torch.float32


def target_config(
    base: VTLAConfig, state: Mapping[str, torch.Tensor], stats: Normalization, readout: str
) -> VTLAConfig:
    cfg = legacy_variant(base, head_widths(state))
    action = dataclasses.replace(cfg.action, normalization=stats, readout=readout)
    if readout == "query":
        return dataclasses.replace(cfg, name=f"{base.name}-converted", action=action)
    return dataclasses.replace(cfg, action=action)


def convert(
    source: str | Path,
    stats_path: str | Path,
    base: VTLAConfig,
    out_dir: str | Path,
    readout: str = "legacy",
    tokenizer_path: str | Path | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Convert and save; names and shapes are checked before any large allocation.

    The model is built on the meta device and the source tensors are assigned into it as they
    are (dtype included): a 2B conversion never initialises, nor holds twice, the weights.
    """
    state = load_source_state(source, allow_pickle)
    cfg = target_config(base, state, load_action_stats(stats_path), readout)
    tensors = convert_state(state, cfg.vision.num_layers)
    dtype = source_dtype(state)
    with torch.device("meta"):
        model = VTLAModel(cfg)
    expected = model.state_dict()
    for key, tensor in new_tensors(cfg, set(expected) - set(tensors), dtype).items():
        logger.warning("%s not in the source checkpoint: freshly initialised", key)
        tensors[key] = tensor
    try:
        check_state(expected, tensors, str(source))
    except CheckpointError as exc:
        raise ConversionError(
            f"{exc} (base config {base.name!r}; pick the preset/config matching the source)"
        ) from exc
    model.load_state_dict(tensors, strict=True, assign=True)
    if tokenizer_path is not None:
        tokenizer = load_tokenizer(tokenizer_path)
    else:
        logger.warning("no --tokenizer given: the checkpoint gets the built-in byte-level tokenizer")
        tokenizer = build_byte_tokenizer()
    if readout == "query":
        logger.warning("readout=query: the action-query token is new and untrained; fine-tune before use")
    return save_checkpoint(model, tokenizer, out_dir)


def new_tensors(cfg: VTLAConfig, missing: set[str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Initial values for the tensors the old model never had (other missing keys stay missing)."""
    out: dict[str, torch.Tensor] = {}
    d = cfg.text.hidden_size
    if "action_query" in missing:
        generator = torch.Generator().manual_seed(cfg.seed)
        out["action_query"] = (torch.randn(d, generator=generator) * 0.02).to(dtype)
    dv = cfg.vision.hidden_size
    if "vision.post_layernorm.weight" in missing:  # unused unless use_post_layernorm; identity init
        out["vision.post_layernorm.weight"] = torch.ones(dv, dtype=dtype)
    if "vision.post_layernorm.bias" in missing:
        out["vision.post_layernorm.bias"] = torch.zeros(dv, dtype=dtype)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtla-bridge convert-vtla",
        description="Convert the predecessor's Nano-VTLA training checkpoint into a VTLA checkpoint "
        "directory. Both inputs are unpickled: only use local files you produced or trust.",
    )
    parser.add_argument(
        "source", help="the old training checkpoint (.pt, torch.save dict with model_state_dict)"
    )
    parser.add_argument("--stats", required=True, help="action_mean_std.pkl saved beside the checkpoint")
    shapes = parser.add_mutually_exclusive_group()
    shapes.add_argument("--preset", default="nano-2b", help="preset giving the architecture's shapes")
    shapes.add_argument("--base-config", help="config.json giving the architecture's shapes")
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument("--readout", choices=("legacy", "query"), default="legacy")
    parser.add_argument("--tokenizer", help="tokenizer.json of the base model (Qwen1.5); default: byte-level")
    parser.add_argument("--allow-pickle", action="store_true", help="fully unpickle a trusted checkpoint")
    parser.add_argument("--log-level", default="INFO", help="DEBUG | INFO | WARNING")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # This is the subcommand's entry point: configure logging unless the caller already did.
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.base_config:
        base = VTLAConfig.from_dict(json.loads(Path(args.base_config).read_text()))
    else:
        base = preset_config(args.preset)
    try:
        out = convert(
            args.source, args.stats, base, args.out, args.readout, args.tokenizer, args.allow_pickle
        )
    except (ConversionError, OSError) as exc:
        logger.error("convert-vtla failed: %s", exc)
        return 1
    logger.info("wrote VTLA checkpoint %s (readout=%s)", out, args.readout)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
