"""Building models without an fp32 detour: skeleton on the meta device, tensors made in the target dtype.

``meta_skeleton`` builds a module on the meta device (no memory, no init work), ``materialize``
gives it empty storage on the real device directly in the target dtype, and ``load_tensors``
fills it from a safetensors file one tensor at a time (read, cast, ``assign=True``), so the peak
memory of a load is the weights plus one tensor, never a float32 copy of the model.
Non-persistent buffers (rotary tables, position ids) are not in a checkpoint and have no value
on the meta device: the model code recomputes them (``rebuild_buffers`` callbacks) and
:func:`assert_no_meta` refuses a model that still holds a meta tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import safe_open
from torch import nn

M = TypeVar("M", bound=nn.Module)

INIT_STD = 0.02  # random weights: N(0, 0.02) matrices, as Hugging Face's initializer_range


def meta_skeleton(factory: Callable[[], M]) -> M:
    """``factory()`` with every tensor it creates on the meta device."""
    with torch.device("meta"):
        return factory()


def materialize(model: M, device: torch.device, dtype: torch.dtype, keep_float32: Iterable[str] = ()) -> M:
    """Uninitialised storage on ``device``: floating parameters/buffers in ``dtype`` (those named in
    ``keep_float32`` stay float32), others in their own dtype."""
    keep = set(keep_float32)
    for module_name, module in model.named_modules():
        for registry in (module._parameters, module._buffers):
            for name, tensor in list(registry.items()):
                if tensor is None:
                    continue
                full = f"{module_name}.{name}" if module_name else name
                target = dtype if tensor.is_floating_point() and full not in keep else tensor.dtype
                empty = torch.empty(tensor.shape, dtype=target, device=device)
                if isinstance(tensor, nn.Parameter):
                    registry[name] = nn.Parameter(empty, requires_grad=tensor.requires_grad)
                else:
                    registry[name] = empty
    return model


@torch.no_grad()
def init_random(model: nn.Module, seed: int, normal_init_roots: Iterable[nn.Module] = ()) -> None:
    """Deterministic random weights in place, in each tensor's own dtype (under ``torch.manual_seed(seed)``).

    Modules with ``reset_parameters`` (Linear, Conv, Embedding, LayerNorm, BatchNorm) use PyTorch's
    default init, except Linear/Embedding under ``normal_init_roots`` (Hugging Face towers), which get
    N(0, 0.02) weights and zero biases as their ``initializer_range``. Other parameters: a 1-D
    ``weight`` (RMSNorm) is 1, anything else N(0, 0.02).
    """
    torch.manual_seed(seed)
    normal_ids = {id(m) for root in normal_init_roots for m in root.modules()}
    for module in model.modules():
        if id(module) in normal_ids and isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, INIT_STD)
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.zero_()
            continue
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            continue
        for name, param in module.named_parameters(recurse=False):
            if name == "weight" and param.ndim == 1:  # RMSNorm
                param.fill_(1.0)
            elif name == "bias":
                param.zero_()
            else:
                param.normal_(0.0, INIT_STD)


def load_tensors(
    model: nn.Module,
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    rename: Callable[[str], str | None] = lambda key: key,
    keep_float32: Iterable[str] = (),
) -> list[str]:
    """Fill ``model`` (a meta skeleton) from a safetensors file, each tensor read, cast to ``dtype``
    (floating ones, except ``keep_float32``) and assigned; returns the file's unused keys.

    ``rename`` maps a file key to the model's state-dict key (None: skip it). Shapes and the key
    set are the caller's to check before (``strict`` loading raises on any missing key).
    """
    keep = set(keep_float32)
    state: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        for key in handle.keys():
            name = rename(key)
            if name is None:
                unused.append(key)
                continue
            tensor = handle.get_tensor(key)
            target = dtype if tensor.is_floating_point() and name not in keep else tensor.dtype
            state[name] = tensor.to(device=device, dtype=target)
            del tensor
    model.load_state_dict(state, strict=True, assign=True)
    return unused


def assert_no_meta(model: nn.Module) -> None:
    """Raise naming the first parameter or buffer still on the meta device."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_meta:
            raise RuntimeError(f"{name} is still on the meta device after loading (a buffer not rebuilt?)")


def state_shapes(model: nn.Module) -> Mapping[str, tuple[int, ...]]:
    """State-dict key -> shape (works on a meta skeleton)."""
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}
