"""Memory format of a model's activations and weights: one setting, one function.

``memory_format`` (top level of ``conf/train.yaml``; ``python train.py memory_format=...``):

* ``contiguous`` - PyTorch's default ``(N, C, H, W)`` / ``(B, C, T, H, W)`` planes.
* ``channels_last`` - channels innermost: ``torch.channels_last`` (NHWC) frames for the
  time-folded 2D backbones (RubiksNet, TSM), ``torch.channels_last_3d`` (NTHWC) clips for the
  3D ones (X3D, VoV3D, R3D/SRTG, MTNet).
* ``auto`` (default) - the format measured fastest for the model on the device it runs on
  (:data:`PREFERRED`; ``bench/efficiency.py`` holds the measurements).

Why it matters: oneDNN (CPU) and cuDNN run convolutions natively in channels-last, so in
``contiguous`` every convolution reorders its input and output; a time-folded 2D network with
1x1 convolutions between cheap memory-bound ops pays that on every layer. Channels-last only pays
if every op keeps the layout: RubiksShift has kernels for it (``cuda/``, CPU and CUDA), the TSM
temporal shift keeps it, and ``tests/test_memory_format.py`` checks that a whole forward and
backward never leaves it.

Other code calls :func:`apply_memory_format` (the train task through the
``actionlab.lit.callbacks.MemoryFormat`` callback, ``actionlab.profile`` for latency, the
benchmarks); it converts the weights in place and makes the model put its input in the format.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "FORMATS",
    "PREFERRED",
    "apply_memory_format",
    "clip_to_frames",
    "current_memory_format",
    "model_kind",
    "resolve_memory_format",
]

FORMATS = ("auto", "contiguous", "channels_last")
_HOOK_ATTR = "_actionlab_memory_format_hook"
_FORMAT_ATTR = "_actionlab_memory_format"

# What ``auto`` picks, per model kind and device type (bench/efficiency.py measures the CPU
# rows; channels-last is cuDNN's native layout for convolutions on GPUs).
PREFERRED: dict[str, dict[str, str]] = {
    "frames": {"cpu": "channels_last", "cuda": "channels_last"},
    "clips": {"cpu": "contiguous", "cuda": "channels_last"},
}


def model_kind(model: nn.Module) -> str:
    """``frames`` for models that fold time into the batch of 2D layers (they declare a
    ``memory_format`` attribute and lay their frames out themselves), else ``clips``."""
    return "frames" if hasattr(model, "memory_format") else "clips"


def resolve_memory_format(model: nn.Module, fmt: str, device: torch.device | str | None = None) -> str:
    """``fmt`` with ``auto`` replaced by the model's preferred format on ``device``
    (default: where its parameters are)."""
    if fmt not in FORMATS:
        raise ValueError(
            f"memory_format must be one of {FORMATS}, got {fmt!r} (set it at the top level: "
            "python train.py memory_format=channels_last)"
        )
    if fmt != "auto":
        return fmt
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
    return PREFERRED[model_kind(model)].get(torch.device(device).type, "contiguous")


def _convert_parameters(model: nn.Module, channels_last: bool) -> None:
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.ndim not in (4, 5):
                continue
            fmt = torch.contiguous_format
            if channels_last:
                fmt = torch.channels_last if param.ndim == 4 else torch.channels_last_3d
            param.data = param.data.contiguous(memory_format=fmt)
            if param.grad is not None:
                param.grad = param.grad.contiguous(memory_format=fmt)


def _clip_input_hook(module: nn.Module, args: tuple) -> tuple | None:
    x = args[0] if args else None
    if isinstance(x, Tensor) and x.ndim == 5:
        return (x.contiguous(memory_format=torch.channels_last_3d), *args[1:])
    return None


def apply_memory_format(
    model: nn.Module, fmt: str = "auto", device: torch.device | str | None = None
) -> str:
    """Put ``model`` in memory format ``fmt`` (``auto``, ``contiguous``, ``channels_last``);
    returns the format applied (``auto`` resolved for ``device``, default: the parameters').

    Converts 4-D / 5-D weights (and their gradients) in place, keeping the same ``Parameter``
    objects, so optimisers and checkpoints are unaffected (state dicts hold the same values).
    Time-folded 2D models then lay their frames out channels-last themselves; other models get
    a forward pre-hook that converts their ``(B, C, T, H, W)`` input to ``channels_last_3d``.
    Calling it again with another format undoes the previous one.
    """
    resolved = resolve_memory_format(model, fmt, device)
    channels_last = resolved == "channels_last"
    _convert_parameters(model, channels_last)
    hook = getattr(model, _HOOK_ATTR, None)
    if hook is not None:
        hook.remove()
        delattr(model, _HOOK_ATTR)
    if model_kind(model) == "frames":
        model.memory_format = resolved
    elif channels_last:
        setattr(model, _HOOK_ATTR, model.register_forward_pre_hook(_clip_input_hook))
    setattr(model, _FORMAT_ATTR, resolved)
    return resolved


def current_memory_format(model: nn.Module) -> str:
    """The format :func:`apply_memory_format` last applied (``contiguous`` if never)."""
    return getattr(model, _FORMAT_ATTR, getattr(model, "memory_format", "contiguous"))


def clip_to_frames(x: Tensor, memory_format: str) -> Tensor:
    """Clips ``(B, C, T, H, W)`` to time-major ``(B, T, C, H, W)`` in one copy: contiguous, or
    channels-last (stored ``B, T, H, W, C``, so ``flatten(0, 1)`` is a ``torch.channels_last``
    batch of frames). No copy when the input is already stored that way."""
    if memory_format == "channels_last":
        return x.permute(0, 2, 3, 4, 1).contiguous().permute(0, 1, 4, 2, 3)
    return x.transpose(1, 2).contiguous()
