"""A workaround for oneDNN's bf16 Conv3d weight gradient on CPU.

With torch 2.13 (oneDNN 3.12), the bf16 backward-weights kernel of a 3D convolution returns NaN
or garbage when the clip is shorter than the temporal kernel and the time axis is zero-padded
(e.g. a ``(3, 1, 1)`` kernel with padding 1 on a 2-frame feature map: wrong in ~95% of calls; a
``3x3x3`` kernel: a few %). It reads memory it never wrote, so the result changes from run to
run and from machine to machine. Deep layers of temporally strided 3D nets (SRTG, MTNet, R3D)
reach such lengths on short clips, so CPU ``bf16-mixed`` training hits it. Padding the time axis
explicitly and convolving with no temporal padding is the same convolution, and that path of
oneDNN is correct. Only those calls take it; the parameters (and checkpoints) are untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PaddedTimeConv3d", "guard_cpu_bf16_conv3d"]


def _runs_in_cpu_bf16(x: Tensor) -> bool:
    if x.device.type != "cpu":
        return False
    return x.dtype == torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


class PaddedTimeConv3d(nn.Conv3d):
    """``nn.Conv3d`` that zero-pads time itself where oneDNN's bf16 CPU kernel would pad it wrong."""

    def _needs_explicit_time_padding(self, x: Tensor) -> bool:
        if isinstance(self.padding, str) or self.padding_mode != "zeros" or self.padding[0] == 0:
            return False
        reach = self.dilation[0] * (self.kernel_size[0] - 1) + 1
        return x.shape[-3] < reach and _runs_in_cpu_bf16(x)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not self._needs_explicit_time_padding(input):
            return super()._conv_forward(input, weight, bias)
        pad_t = self.padding[0]
        padded = F.pad(input, (0, 0, 0, 0, pad_t, pad_t))
        return F.conv3d(padded, weight, bias, self.stride, (0, *self.padding[1:]), self.dilation, self.groups)


def guard_cpu_bf16_conv3d(model: nn.Module) -> int:
    """Turn every plain ``nn.Conv3d`` of ``model`` into a :class:`PaddedTimeConv3d`, in place.

    The class is swapped rather than the module replaced, so parameters, hooks, optimizer state
    and ``isinstance(m, nn.Conv3d)`` stay as they were. Returns how many convolutions changed.
    """
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = PaddedTimeConv3d
            swapped += 1
    return swapped
