"""Frozen configuration of a VTLA policy: architecture, inputs, prompt and action space.

Everything here is plain data (no torch) so that a checkpoint's ``config.json`` can be read,
validated and described without building the model. ``VTLAConfig.to_dict`` /
``VTLAConfig.from_dict`` are exact inverses; unknown keys are rejected so that a typo in a
hand-edited config fails at load time instead of silently falling back to a default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vtla_contracts.action_layout import ACTION_DIM, ACTION_NAMES, ACTION_UNITS, GRIPPER_INDEX
from vtla_contracts.errors import ConfigError
from vtla_contracts.tactile_layout import FORCE_TORQUE_DIM

CONFIG_FORMAT = "vtla-bridge/vtla-config/1"


# The predecessor's published /stats (docs/predecessors.md): the tiny preset serves these by default.
PREDECESSOR_MEAN = (-5.6e-06, 1.7e-05, 4.0e-05, -5.5e-05, -2.4e-04, -9.5e-05, 0.1132)
PREDECESSOR_STD = (0.005, 0.0066, 0.0068, 0.0136, 0.0172, 0.0182, 0.021)

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_MARKER = "<image>"
INSTRUCTION_FIELD = "{instruction}"


@dataclass(frozen=True)
class VtlaVisionConfig:
    """SigLIP vision tower (``SiglipVisionModel``), no pooling head."""

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_layers: int = 26
    num_heads: int = 16
    image_size: int = 384
    patch_size: int = 14
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    use_post_layernorm: bool = False  # Bunny read the encoder output before post_layernorm

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def check(self) -> None:
        # so400m: 384 px / patch 14 -> the strided conv floors to a 27x27 grid (729 tokens)
        _require(self.image_size >= self.patch_size, "vision.image_size must be >= patch_size")
        _require(self.hidden_size % self.num_heads == 0, "vision.hidden_size must divide by num_heads")


@dataclass(frozen=True)
class VtlaTextConfig:
    """Qwen2 decoder (``Qwen2Model``) used without its LM head."""

    hidden_size: int = 2048
    intermediate_size: int = 5504
    num_layers: int = 24
    num_heads: int = 16
    num_kv_heads: int = 16
    vocab_size: int = 151936
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768

    def check(self) -> None:
        _require(self.hidden_size % self.num_heads == 0, "text.hidden_size must divide by num_heads")
        _require(self.num_heads % self.num_kv_heads == 0, "text.num_heads must divide by num_kv_heads")


@dataclass(frozen=True)
class TactileConfig:
    """Touch inputs and how they become tokens.

    ``encoder="cnn"``: one token per enabled input (tactile image via a small CNN, force/torque
    via a linear map), each replaced by a learned "no touch" embedding when absent.
    ``encoder="resnet18"``: the predecessor's tower (ResNet-18 -> 512 -> MLP, one token, plus a
    learned position embedding); absent input is a zero image, as its "dummy tactile" was.
    """

    encoder: str = "cnn"
    image: bool = True
    force_torque: bool = True
    image_size: int = 32
    image_mean: tuple[float, ...] = SIGLIP_MEAN
    image_std: tuple[float, ...] = SIGLIP_STD
    cnn_channels: int = 16
    force_torque_scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

    @property
    def num_tokens(self) -> int:
        if self.encoder == "resnet18":
            return 1
        return int(self.image) + int(self.force_torque)

    def check(self) -> None:
        _require(
            self.encoder in ("cnn", "resnet18"), f"tactile.encoder {self.encoder!r}: use 'cnn' or 'resnet18'"
        )
        _require(
            len(self.image_mean) == 3 and len(self.image_std) == 3, "tactile image mean/std need 3 values"
        )
        _require(all(s > 0 for s in self.image_std), "tactile.image_std must be positive")
        ft_ok = len(self.force_torque_scale) == FORCE_TORQUE_DIM
        _require(ft_ok, f"tactile.force_torque_scale needs {FORCE_TORQUE_DIM} values")
        if self.encoder == "resnet18":
            _require(self.image and not self.force_torque, "the resnet18 tactile encoder takes an image only")


@dataclass(frozen=True)
class Normalization:
    """How normalised model outputs map to physical units.

    ``mean_std``: ``a = n * std + mean``. ``quantile``: ``a = (n + 1) / 2 * (q99 - q01) + q01``
    on dimensions where ``mask`` is true, ``a = n`` elsewhere. ``mean``/``std`` are kept for
    both types because ``stats`` publishes them in the predecessor's shape.
    """

    type: str = "mean_std"
    mean: tuple[float, ...] = PREDECESSOR_MEAN
    std: tuple[float, ...] = PREDECESSOR_STD
    q01: tuple[float, ...] | None = None
    q99: tuple[float, ...] | None = None
    mask: tuple[bool, ...] | None = None

    def check(self, dim: int) -> None:
        _require(
            self.type in ("mean_std", "quantile"), f"normalization.type {self.type!r}: mean_std|quantile"
        )
        _require(len(self.mean) == dim and len(self.std) == dim, f"normalization mean/std need {dim} values")
        _require(all(math.isfinite(v) for v in self.mean + self.std), "normalization mean/std must be finite")
        if self.type == "quantile":
            _require(
                self.q01 is not None and self.q99 is not None and self.mask is not None,
                "quantile normalization needs q01, q99 and mask",
            )
            assert self.q01 is not None and self.q99 is not None and self.mask is not None
            _require(
                len(self.q01) == dim and len(self.q99) == dim and len(self.mask) == dim,
                f"quantile q01/q99/mask need {dim} values",
            )
            _require(all(math.isfinite(v) for v in self.q01 + self.q99), "quantiles must be finite")


@dataclass(frozen=True)
class ActionConfig:
    """The action chunk the head predicts and how it is read out of the decoder."""

    dim: int = ACTION_DIM
    chunk_size: int = 1
    names: tuple[str, ...] = ACTION_NAMES
    units: tuple[str, ...] = ACTION_UNITS
    normalization: Normalization = field(default_factory=Normalization)
    head_hidden: tuple[int, ...] = (512, 512)
    # "query": a learned token at the end of the sequence (reads everything before it);
    # "legacy": the last image token, as the predecessor did (ignores what follows the image).
    readout: str = "query"
    gripper_index: int | None = GRIPPER_INDEX  # clipped to [0, 1] after de-normalisation

    def check(self) -> None:
        _require(self.chunk_size >= 1, "action.chunk_size must be >= 1")
        _require(
            len(self.names) == self.dim and len(self.units) == self.dim, "action names/units need dim values"
        )
        _require(self.readout in ("query", "legacy"), f"action.readout {self.readout!r}: query|legacy")
        _require(len(self.head_hidden) >= 1, "action.head_hidden needs at least one layer width")
        if self.gripper_index is not None:
            _require(0 <= self.gripper_index < self.dim, "action.gripper_index out of range")
        self.normalization.check(self.dim)


@dataclass(frozen=True)
class PromptConfig:
    """The text around the image: ``template`` holds ``{instruction}`` and optionally ``<image>``.

    Text before ``<image>`` precedes the image and tactile tokens, text after it follows them;
    without a marker all text comes first: ``[text][image][tactile][query]``.
    """

    template: str = "Instruction: {instruction}\n<image>"
    default_instruction: str = "What action should the robot take?"
    max_text_tokens: int = 128

    def split(self) -> tuple[str, str]:
        """(text before the image, text after it), both still holding ``{instruction}``."""
        if IMAGE_MARKER in self.template:
            before, _, after = self.template.partition(IMAGE_MARKER)
            return before, after
        return self.template, ""

    def check(self) -> None:
        _require(self.template.count(IMAGE_MARKER) <= 1, "prompt.template has more than one <image>")
        _require(self.template.count(INSTRUCTION_FIELD) == 1, "prompt.template needs one {instruction}")
        _require(self.max_text_tokens >= 1, "prompt.max_text_tokens must be >= 1")


@dataclass(frozen=True)
class PreprocessConfig:
    """Camera image preprocessing (SigLIP: resize to the tower's size, then (x - 0.5) / 0.5)."""

    image_mean: tuple[float, ...] = SIGLIP_MEAN
    image_std: tuple[float, ...] = SIGLIP_STD
    resize_mode: str = "bicubic"  # F.interpolate mode, with antialias

    def check(self) -> None:
        _require(len(self.image_mean) == 3 and len(self.image_std) == 3, "image mean/std need 3 values")
        _require(self.resize_mode in ("bilinear", "bicubic"), "preprocess.resize_mode: bilinear|bicubic")


@dataclass(frozen=True)
class VTLAConfig:
    name: str = "tiny"
    vision: VtlaVisionConfig = field(default_factory=VtlaVisionConfig)
    text: VtlaTextConfig = field(default_factory=VtlaTextConfig)
    tactile: TactileConfig = field(default_factory=TactileConfig)
    action: ActionConfig = field(default_factory=ActionConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    cameras: tuple[str, ...] = ("primary",)
    proprio_dim: int = 0  # 0: the model takes no proprio
    seed: int = 0  # random init of presets

    def __post_init__(self) -> None:
        for part in (self.vision, self.text, self.tactile, self.action, self.prompt, self.preprocess):
            part.check()
        _require(
            len(self.cameras) >= 1 and len(set(self.cameras)) == len(self.cameras), "cameras must be unique"
        )
        _require(self.proprio_dim >= 0, "proprio_dim must be >= 0")

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_tokens * len(self.cameras)

    def to_dict(self) -> dict[str, Any]:
        out = _to_plain(dataclasses.asdict(self))
        assert isinstance(out, dict)
        out["format"] = CONFIG_FORMAT
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VTLAConfig:
        data = dict(data)
        fmt = data.pop("format", CONFIG_FORMAT)
        if fmt != CONFIG_FORMAT:
            raise ConfigError(f"config format {fmt!r} is not {CONFIG_FORMAT!r}")
        return _build(cls, data, "config")


_T = TypeVar("_T")

_NESTED: dict[tuple[type, str], type] = {
    (VTLAConfig, "vision"): VtlaVisionConfig,
    (VTLAConfig, "text"): VtlaTextConfig,
    (VTLAConfig, "tactile"): TactileConfig,
    (VTLAConfig, "action"): ActionConfig,
    (VTLAConfig, "prompt"): PromptConfig,
    (VTLAConfig, "preprocess"): PreprocessConfig,
    (ActionConfig, "normalization"): Normalization,
}


def _build(cls: type[_T], data: dict[str, Any], where: str) -> _T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        nested = _NESTED.get((cls, key))
        if nested is not None:
            kwargs[key] = _build(nested, value, f"{where}.{key}")
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
