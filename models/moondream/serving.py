"""The registry factory: ``load_generator(spec, device, dtype)`` -> a Moondream :class:`MoondreamGenerator`.

* ``spec.path`` -> a local directory with ``model.safetensors`` (official key names) and
  ``tokenizer.json``, optionally ``config.json`` ({"preset": ..., "text": {...}, "vision": {...},
  "region": {...}, "tokenizer": {...}}). Sections are read only when the file names a ``preset``
  (a Hugging Face ``config.json`` beside the official weights is ignored); without one, the
  preset is ``spec.preset`` unless that is ``tiny``, in which case the real preset is assumed.
* ``spec.hub_download`` (opt-in) -> the official files of vikhyatk/moondream2 at revision
  2025-04-14 via ``huggingface_hub.snapshot_download`` into the HF cache.
* neither -> ``spec.preset`` with seeded random weights (``info.random_weights=True``).

``spec.options``: ``max_sequences`` (KV slots, default 8), ``max_crops``, ``context`` (KV-cache
positions per slot, default the model's), ``seed`` (random weights and sampling, default 0),
``encode_chunk_crops`` (crops encoded per admission unit between control work, default 4),
``length_bucket`` (decode attends over a length rounded up to this, default 128), ``cuda_graphs``
(capture each decode shape in a CUDA graph on CUDA, default true), ``batch_admission`` (crops of
several waiting requests in one vision forward and several prefills in one forward, default true),
``prefill_batch`` (most requests per prefill forward, default 4), ``prefill_length_bucket``
(requests share a prefill when their input lengths round up to the same multiple of this,
default 32), ``prefill_tokens`` (most positions, rows x padded length, in one prefill forward;
default the context, so the activation budget is that of one whole-context prefill),
``crop_resize`` (``"host"``: libvips/Pillow in the decode workers, the reference and the default;
``"device"``: the image uploaded once as uint8 and the crops resized on the model's device
with torch bicubic + antialias).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from models.interfaces import ModelInfo
from models.loading import assert_no_meta, materialize, meta_skeleton
from models.moondream.admission_plan import AdmissionOptions
from models.moondream.config import (
    REAL_PRESET,
    REAL_REVISION,
    TINY_PRESET,
    MoondreamConfig,
    apply_overrides,
    preset_config,
)
from models.moondream.decode_step import DecodeOptions
from models.moondream.generator import MoondreamGenerator
from models.moondream.model import MoondreamModel, init_random_weights
from models.moondream.tokenizer import EOS_TEXT, build_tiny_tokenizer, load_tokenizer, templates_from_texts
from models.moondream.weights import load_checkpoint
from vtla_contracts.model_spec import ModelSpec

logger = logging.getLogger(__name__)

HUB_REPO = "vikhyatk/moondream2"
HUB_TOKENIZER_REPO = "moondream/starmie-v1"  # the official tokenizer, if the model repo lacks one
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
_DTYPES: Mapping[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_CONFIG_SECTIONS = ("text", "vision", "region", "tokenizer", "revision")


def load_generator(spec: ModelSpec, device: str, dtype: str) -> MoondreamGenerator:
    torch_device = torch.device(device)
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {', '.join(_DTYPES)}")
    torch_dtype = _DTYPES[dtype]
    options = dict(spec.options)
    seed = int(options.get("seed", 0))

    directory = Path(spec.path).expanduser() if spec.path else (hub_snapshot() if spec.hub_download else None)
    if directory is not None:
        config, tokenizer = _config_and_tokenizer_from_dir(directory, spec.preset, options)
        model = load_checkpoint(directory / WEIGHTS_FILE, config, torch_device, torch_dtype)
        random_weights, source = False, str(directory)
    else:
        config, tokenizer = _config_and_tokenizer_for_preset(spec.preset, options)
        model = random_model(config, torch_device, torch_dtype, seed)
        random_weights, source = True, spec.preset
        logger.warning(
            "moondream preset %r has RANDOM weights: its text and boxes are meaningless", spec.preset
        )

    info = ModelInfo(
        name=f"moondream2-{config.revision}" if config.revision != TINY_PRESET else "moondream2-tiny",
        kind=spec.kind,
        device=str(torch_device),
        dtype=dtype,
        random_weights=random_weights,
        parameters=model.parameter_count(),
        source=source,
    )
    generator = MoondreamGenerator(
        model,
        tokenizer,
        info,
        max_sequences=int(options.get("max_sequences", 8)),
        cache_context=int(options["context"]) if "context" in options else None,
        seed=seed,
        encode_chunk_crops=int(options.get("encode_chunk_crops", 4)),
        decode_options=DecodeOptions(
            length_bucket=int(options.get("length_bucket", DecodeOptions.length_bucket)),
            cuda_graphs=bool(options.get("cuda_graphs", DecodeOptions.cuda_graphs)),
        ),
        admission_options=AdmissionOptions(
            batch=bool(options.get("batch_admission", AdmissionOptions.batch)),
            prefill_batch=int(options.get("prefill_batch", AdmissionOptions.prefill_batch)),
            prefill_length_bucket=int(options.get("prefill_length_bucket", AdmissionOptions.prefill_length_bucket)),
            prefill_tokens=int(options["prefill_tokens"]) if "prefill_tokens" in options else None,
            crop_resize=str(options.get("crop_resize", AdmissionOptions.crop_resize)),
        ),
    )
    logger.info(
        "moondream ready: %s, %s params, %d slots x %d positions (%.1f MiB KV cache) on %s/%s",
        info.source,
        f"{info.parameters:,}",
        generator.cache.slots,
        generator.cache.context,
        generator.cache.nbytes / 2**20,
        device,
        dtype,
    )
    return generator


def random_model(
    config: MoondreamConfig, device: torch.device, dtype: torch.dtype, seed: int
) -> MoondreamModel:
    """Seeded random weights made directly in ``dtype`` on ``device`` (no float32 copy of the model)."""
    model = materialize(meta_skeleton(lambda: MoondreamModel(config)), device, dtype)
    init_random_weights(model, seed)  # draws each tensor in float32, one at a time
    model.text.rebuild_rope(device)  # rotary tables stay float32
    assert_no_meta(model)
    return model.eval()


def _with_options(config: MoondreamConfig, options: Mapping[str, Any]) -> MoondreamConfig:
    if "max_crops" in options:
        config = apply_overrides(config, {"vision": {"max_crops": int(options["max_crops"])}})
    return config


def _tiny_tokenizer_config(config: MoondreamConfig, tokenizer: Tokenizer) -> MoondreamConfig:
    eos_id = tokenizer.token_to_id(EOS_TEXT)
    if eos_id is None:
        raise ValueError(f"the tiny preset's tokenizer needs an {EOS_TEXT!r} token")
    tokenizer_section = {"bos_id": eos_id, "eos_id": eos_id, "templates": templates_from_texts(tokenizer)}
    return apply_overrides(config, {"tokenizer": tokenizer_section})


def _config_and_tokenizer_for_preset(
    preset: str, options: Mapping[str, Any]
) -> tuple[MoondreamConfig, Tokenizer]:
    config = _with_options(preset_config(preset), options)
    tokenizer = build_tiny_tokenizer()
    if preset == TINY_PRESET:
        config = _tiny_tokenizer_config(config, tokenizer)
    # other presets keep their official prompt ids; the small tokenizer only has to encode/decode text
    return config.validate(), tokenizer


def _config_and_tokenizer_from_dir(
    directory: Path, spec_preset: str, options: Mapping[str, Any]
) -> tuple[MoondreamConfig, Tokenizer]:
    if not directory.is_dir():
        raise FileNotFoundError(f"moondream checkpoint directory not found: {directory}")
    for needed in (WEIGHTS_FILE, TOKENIZER_FILE):
        if not (directory / needed).is_file():
            raise FileNotFoundError(f"moondream checkpoint {directory} lacks {needed}")
    raw: dict[str, Any] = {}
    if (directory / CONFIG_FILE).is_file():
        raw = json.loads((directory / CONFIG_FILE).read_text())
    preset = str(raw.get("preset") or (spec_preset if spec_preset != TINY_PRESET else REAL_PRESET))
    overrides = {key: raw[key] for key in _CONFIG_SECTIONS if key in raw and "preset" in raw}
    config = apply_overrides(preset_config(preset), overrides)
    tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
    if preset == TINY_PRESET and "templates" not in overrides.get("tokenizer", {}):
        config = _tiny_tokenizer_config(config, tokenizer)
    return _with_options(config, options).validate(), tokenizer


def hub_snapshot(revision: str = REAL_REVISION) -> Path:
    """Opt-in download of the official weights + tokenizer into the Hugging Face cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise RuntimeError(
            "hub_download needs the huggingface_hub package: pip install huggingface_hub"
        ) from exc
    try:
        directory = Path(
            snapshot_download(
                repo_id=HUB_REPO, revision=revision, allow_patterns=[WEIGHTS_FILE, TOKENIZER_FILE]
            )
        )
        if not (directory / TOKENIZER_FILE).is_file():
            tok_dir = Path(snapshot_download(repo_id=HUB_TOKENIZER_REPO, allow_patterns=[TOKENIZER_FILE]))
            raise_if_missing = tok_dir / TOKENIZER_FILE
            if not raise_if_missing.is_file():
                raise FileNotFoundError(f"{HUB_TOKENIZER_REPO} has no {TOKENIZER_FILE}")
            return _merged_dir(directory, raise_if_missing)
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"could not download {HUB_REPO}@{revision} from the Hugging Face Hub ({exc}); "
            "are you offline? Download model.safetensors and tokenizer.json yourself and set the path."
        ) from exc
    return directory


def _merged_dir(weights_dir: Path, tokenizer_file: Path) -> Path:
    """A cache-side directory linking the model's weights and the separately fetched tokenizer."""
    merged = weights_dir.parent / f"{weights_dir.name}-with-tokenizer"
    merged.mkdir(exist_ok=True)
    for link, target in (
        (merged / WEIGHTS_FILE, weights_dir / WEIGHTS_FILE),
        (merged / TOKENIZER_FILE, tokenizer_file),
    ):
        if not link.exists():
            link.symlink_to(target.resolve())
    return merged
