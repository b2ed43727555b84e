"""VoV3D: temporal one-shot aggregation (T-OSA) of depthwise-factorised D(2+1)D units.

Lee, Kim, Hwang, Park. "Diverse Temporal Aggregation and Depthwise Spatiotemporal
Factorization for Efficient Video Classification" (arXiv 2012.00317). Layout as in the released
code ``youngwanLEE/VoV3D`` (``docs/models/vov3d.md``):

* D(2+1)D unit: 1x1x1 conv-BN-ReLU, depthwise 1x3x3 (spatial stride), depthwise 3x1x1, one BN,
  SE on units 0/2/4, Swish, 1x1x1 conv-BN to ``dim_inner / 2``, identity residual when shapes
  allow, ReLU.
* T-OSA: 5 chained units (unit k sees 2k+1 input frames), one-shot concatenation of the
  block input (stride-1 blocks only) and every unit output, 1x1x1 aggregation conv + BN
  (zero-initialised), all inside a residual block.
* X3D stem (``C_stem = inner / 2``) and X3D head. M: inner 40, blocks (1, 2, 3, 2);
  L: inner 48, blocks (1, 2, 5, 3). Stage inner widths inner x (1, 2, 4, 8), outputs x (0.5, 1, 2, 4).

Input ``(B, 3, T, H, W)``, any ``T, H, W``; output logits ``(B, num_classes)``. Paper input
16 x 224 x 224 (train), 256 crops at test. ``models/convert/vov3d.py`` maps released weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from actionlab.models.layers import ConvBNAct3d, SqueezeExcite3d, Swish
from actionlab.models.x3d import SE_RATIO, X3DLayout, release_pool

__all__ = ["SIZES", "D2Plus1DUnit", "TOSATransform", "VoV3D", "vov3d_l", "vov3d_m"]


@dataclass(frozen=True)
class VoV3DSize:
    inner: int
    blocks: tuple[int, int, int, int]


SIZES: dict[str, VoV3DSize] = {
    "m": VoV3DSize(40, (1, 2, 3, 2)),
    "l": VoV3DSize(48, (1, 2, 5, 3)),
}
INNER_MULTIPLIER = (1, 2, 4, 8)
OUT_MULTIPLIER = (0.5, 1, 2, 4)
NUM_UNITS = 5


class D2Plus1DUnit(nn.Module):
    """Depthwise (2+1)D bottleneck ``(B, dim_in, T, H, W) -> (B, dim_inner / 2, T, H/s, W/s)``.

    There is deliberately no BN or activation between the spatial and temporal depthwise
    convs (one BN after both), as in the released model.
    """

    def __init__(self, dim_in: int, dim_inner: int, stride: int = 1, use_se: bool = True) -> None:
        super().__init__()
        dim_out = dim_inner // 2
        self.residual = dim_in == dim_out and stride == 1
        self.a = ConvBNAct3d(dim_in, dim_inner, 1)
        self.b1 = nn.Conv3d(
            dim_inner, dim_inner, (1, 3, 3), (1, stride, stride), (0, 1, 1), groups=dim_inner,
            bias=False,
        )
        self.b2 = nn.Conv3d(dim_inner, dim_inner, (3, 1, 1), 1, (1, 0, 0), groups=dim_inner, bias=False)
        self.b_bn = nn.BatchNorm3d(dim_inner)
        self.se = SqueezeExcite3d(dim_inner, SE_RATIO) if use_se else None
        self.b_act = Swish()
        self.c = ConvBNAct3d(dim_inner, dim_out, 1, act=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.b_bn(self.b2(self.b1(self.a(x))))
        if self.se is not None:
            h = self.se(h)
        h = self.c(self.b_act(h))
        if self.residual:
            h = h + x
        return self.act(h)


class TOSATransform(nn.Module):
    """T-OSA branch: ``NUM_UNITS`` chained D(2+1)D units, concatenation, 1x1x1 conv + BN.

    ``(B, dim_in, T, H, W) -> (B, dim_out, T, H/s, W/s)``; the block input joins the
    concatenation only when ``stride == 1`` (same resolution as the unit outputs).
    """

    def __init__(
        self, dim_in: int, dim_inner: int, dim_out: int, stride: int = 1, num_units: int = NUM_UNITS
    ) -> None:
        super().__init__()
        self.keep_input = stride == 1
        units, width = [], dim_in
        for k in range(num_units):
            units.append(D2Plus1DUnit(width, dim_inner, stride if k == 0 else 1, use_se=k % 2 == 0))
            width = dim_inner // 2
        self.layers = nn.ModuleList(units)
        concat = width * num_units + (dim_in if self.keep_input else 0)
        self.c = ConvBNAct3d(concat, dim_out, 1, act=None, final_bn=True)

    def forward(self, x: Tensor) -> Tensor:
        outputs = [x] if self.keep_input else []
        for unit in self.layers:
            x = unit(x)
            outputs.append(x)
        return self.c(torch.cat(outputs, dim=1))


class VoV3D(X3DLayout):
    """VoV3D classifier: ``(B, 3, T, H, W)`` clips to logits ``(B, num_classes)``.

    BN parameters take no weight decay - all of them: the released optimiser's name filter
    missed the BNs inside the units' ``a``/``c`` Sequentials, a quirk not reproduced.

    Args:
        size: ``m`` | ``l``.
        num_classes: classifier outputs (174 for SSv2, 400 for Kinetics-400).
        num_frames: frames per clip the model is trained with (informational: any T works).
        dropout: dropout before the FC (paper: 0.5).
        fc_std: std of the FC initialisation (paper: 0.01).
        release_head, train_crop_size: the released head (fixed ``(num_frames, ceil(crop /
            32) x 2)`` pool, per-position softmax average; ``models.x3d.X3D``), for the
            256-pixel test of the 224-trained releases. Default: global pooling.
    """

    def __init__(
        self,
        size: str = "m",
        num_classes: int = 174,
        num_frames: int = 16,
        dropout: float = 0.5,
        fc_std: float = 0.01,
        release_head: bool = False,
        train_crop_size: int | None = None,
    ) -> None:
        if size not in SIZES:
            raise ValueError(f"VoV3D size must be one of {sorted(SIZES)}, got {size!r}")
        cfg = SIZES[size]
        stages = [
            (count, int(cfg.inner * INNER_MULTIPLIER[k]), int(cfg.inner * OUT_MULTIPLIER[k]))
            for k, count in enumerate(cfg.blocks)
        ]

        def transform(dim_in: int, dim_inner: int, dim_out: int, stride: int, i: int) -> nn.Module:
            return TOSATransform(dim_in, dim_inner, dim_out, stride)

        train_crop = train_crop_size or 224
        pool = release_pool(num_frames, train_crop) if release_head else None
        super().__init__(
            cfg.inner // 2, stages, transform, num_classes, dropout, fc_std, head_pool=pool
        )
        self.size, self.num_classes, self.num_frames = size, num_classes, num_frames
        self.release_head, self.train_crop_size = release_head, train_crop


def vov3d_m(**kwargs) -> VoV3D:
    """VoV3D-M (paper input 16 x 224 x 224)."""
    return VoV3D(size="m", **kwargs)


def vov3d_l(**kwargs) -> VoV3D:
    """VoV3D-L (paper input 16 x 224 x 224)."""
    return VoV3D(size="l", **kwargs)
