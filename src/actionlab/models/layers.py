"""Building blocks shared by the video backbones: Swish, squeeze-excitation, conv-BN-act,
stochastic depth, width rounding and the PySlowFast/ResNet weight initialisation.

Every block here is generic (any width, any activation) so each model family file holds only
what is specific to its paper. 3D blocks take ``(B, C, T, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Activation",
    "ConvBNAct3d",
    "DropPath",
    "ResBlock3d",
    "SqueezeExcite3d",
    "Swish",
    "init_msra",
    "mark_final_bn",
    "norm_parameter_names",
    "round_width",
]

Activation = Callable[[], nn.Module]
FINAL_BN_ATTR = "final_bn"


class Swish(nn.Module):
    """``x * sigmoid(x)`` (X3D / VoV3D). ``F.silu`` saves only its input for backward, which is
    the memory saving PySlowFast's custom autograd Swish exists for."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)


def round_width(width: float, multiplier: float = 1.0, min_width: int = 8, divisor: int = 8) -> int:
    """``width * multiplier`` rounded to a multiple of ``divisor`` (never below ``min_width``,
    never more than 10% under the exact value); PySlowFast ``round_width``."""
    if not multiplier:
        return int(width)
    width = width * multiplier
    min_width = min_width or divisor
    rounded = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


class SqueezeExcite3d(nn.Module):
    """Squeeze-and-excitation on ``(B, C, T, H, W)``: global average pool, 1x1x1 conv ``C -> r``
    with bias, activation, 1x1x1 conv ``r -> C`` with bias, gate, multiply.

    Hu et al., CVPR 2018; the X3D/VoV3D variant (parameter names ``fc1``, ``fc2`` as in
    PySlowFast). ``r = round_width(C, ratio)`` unless ``hidden`` is given.

    Args:
        channels: input and output channels ``C``.
        ratio: hidden width as a fraction of ``C`` (X3D: 0.0625), rounded to ``divisor``.
        hidden: exact hidden width (overrides ``ratio``), e.g. ``C // 16`` for the SE-ResNet rule.
        act: activation between the two convs (``nn.ReLU`` in X3D, ``Swish`` in EfficientNet).
        gate: gating nonlinearity (``nn.Sigmoid``; ``nn.Hardsigmoid`` for eSE-style gates).
    """

    def __init__(
        self,
        channels: int,
        ratio: float = 0.0625,
        hidden: int | None = None,
        act: Activation = nn.ReLU,
        gate: Activation = nn.Sigmoid,
        min_width: int = 8,
        divisor: int = 8,
    ) -> None:
        super().__init__()
        self.hidden = hidden if hidden is not None else round_width(channels, ratio, min_width, divisor)
        self.fc1 = nn.Conv3d(channels, self.hidden, 1, bias=True)
        self.fc1_act = act()
        self.fc2 = nn.Conv3d(self.hidden, channels, 1, bias=True)
        self.gate = gate()

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3, 4), keepdim=True)
        s = self.gate(self.fc2(self.fc1_act(self.fc1(s))))
        return x * s


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


class ConvBNAct3d(nn.Sequential):
    """``Conv3d`` (no bias) -> ``BatchNorm3d`` -> optional activation; children ``conv``, ``bn``,
    ``act``. Input ``(B, C_in, T, H, W)``.

    Args:
        kernel, stride: ints or ``(t, h, w)``; padding defaults to ``kernel // 2`` ("same").
        groups: ``out_channels`` for a depthwise conv.
        act: activation factory or ``None`` (a plain conv-BN, e.g. before a residual add).
        final_bn: zero-initialise this BN's scale in :func:`init_msra` (last BN of a residual
            branch, so every block starts as the identity).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        groups: int = 1,
        act: Activation | None = nn.ReLU,
        final_bn: bool = False,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        kernel = _triple(kernel)
        padding = tuple(k // 2 for k in kernel) if padding is None else _triple(padding)
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel, _triple(stride), padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=bn_momentum)
        if final_bn:
            mark_final_bn(self.bn)
        if act is not None:
            self.act = act()


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., ECCV 2016): drops a residual branch per sample with
    probability ``p`` in training and rescales the kept ones by ``1 / (1 - p)``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ResBlock3d(nn.Module):
    """``act(shortcut(x) + drop_path(branch2(x)))`` on ``(B, C, T, H, W)`` (PySlowFast
    ``ResBlock``). The shortcut is the identity, or a strided 1x1x1 conv + BN (``branch1``)
    when the width or the spatial stride changes.

    Args:
        branch2: the residual branch (the paper's transform), mapping ``dim_in`` to ``dim_out``
            channels with spatial stride ``stride``.
    """

    def __init__(
        self,
        branch2: nn.Module,
        dim_in: int,
        dim_out: int,
        stride: int = 1,
        drop_path: float = 0.0,
        act: Activation = nn.ReLU,
    ) -> None:
        super().__init__()
        self.branch1 = (
            ConvBNAct3d(dim_in, dim_out, 1, stride=(1, stride, stride), act=None)
            if dim_in != dim_out or stride != 1
            else None
        )
        self.branch2 = branch2
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.branch1 is None else self.branch1(x)
        return self.act(shortcut + self.drop_path(self.branch2(x)))


def mark_final_bn(bn: nn.Module) -> nn.Module:
    """Flag ``bn`` as the last BN of a residual branch (its scale starts at 0 in ``init_msra``)."""
    setattr(bn, FINAL_BN_ATTR, True)
    return bn


def init_msra(model: nn.Module, fc_std: float = 0.01, zero_init_final_bn: bool = True) -> None:
    """PySlowFast / ResNet initialisation (He et al. 2015; Goyal et al. 2017):

    * conv weights: Kaiming normal, fan-out, ReLU gain (Caffe2 ``MSRAFill``); biases 0;
    * BN: scale 1 and shift 0, scale 0 for BNs flagged by :func:`mark_final_bn`;
    * linear layers: N(0, ``fc_std``), bias 0.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                zero = zero_init_final_bn and getattr(m, FINAL_BN_ATTR, False)
                nn.init.constant_(m.weight, 0.0 if zero else 1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, fc_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)



def norm_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters of every normalisation layer (the papers' "no decay on BN")."""
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    return {
        f"{mod_name}.{p_name}" if mod_name else p_name
        for mod_name, m in model.named_modules()
        if isinstance(m, norms)
        for p_name, _ in m.named_parameters(recurse=False)
    }
