"""X3D: progressively expanded 3D networks (XS, S, M, L).

Feichtenhofer. "X3D: Expanding Architectures for Efficient Video Recognition", CVPR 2020.
Layout as in PySlowFast's ``X3D`` class (``docs/models/x3d.md``):
stem (1x3x3 conv, stride 2, then depthwise 5x1x1 conv, BN, ReLU), four stages of bottleneck
blocks (1x1x1 -> depthwise 3x3x3 -> SE on even blocks -> Swish -> 1x1x1 with zero-init BN)
inside residual blocks, and the X3D head (conv5 -> pool -> 2048 -> FC, dropout 0.5).

Expansion as implemented: width factor 2.0 (stage outputs 24, 48, 96, 192), bottleneck factor
2.25 (inner 54, 108, 216, 432), depth factor 2.2 (blocks 3, 5, 11, 7) for XS/S/M and 5.0
(5, 10, 25, 15) for L. XS, S and M are the same network; they differ in input
(frames x crop: 4x160, 13x160, 16x224; L: 16x312).

Input ``(B, 3, T, H, W)``, any ``T, H, W`` (adaptive head pooling); output logits
``(B, num_classes)``. ``release_head=True`` gives the released head's fixed pooling and
per-position softmax average instead (the 256-pixel test protocol of the X3D releases). Parameter names are ours; ``models/convert/x3d.py`` maps PySlowFast's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from actionlab.models.heads import X3DHead
from actionlab.models.layers import (
    ConvBNAct3d,
    ResBlock3d,
    SqueezeExcite3d,
    Swish,
    init_msra,
    norm_parameter_names,
    round_width,
)

__all__ = [
    "SIZES",
    "X3D",
    "X3DLayout",
    "X3DStem",
    "X3DTransform",
    "release_pool",
    "x3d_l",
    "x3d_m",
    "x3d_s",
    "x3d_xs",
]


@dataclass(frozen=True)
class X3DSize:
    depth_factor: float
    num_frames: int  # paper training input (frames x crop)
    crop_size: int
    test_crop_size: int  # 3-crop test resolution


SIZES: dict[str, X3DSize] = {
    "xs": X3DSize(2.2, 4, 160, 182),
    "s": X3DSize(2.2, 13, 160, 182),
    "m": X3DSize(2.2, 16, 224, 256),
    "l": X3DSize(5.0, 16, 312, 356),
}
DIM_C1 = 12
BASE_DEPTHS = (1, 2, 5, 3)
WIDTH_FACTOR = 2.0
BOTTLENECK_FACTOR = 2.25
DIM_C5 = 2048
SE_RATIO = 0.0625


class X3DStem(nn.Module):
    """Spatial 1x3x3 conv (stride 1x2x2) then depthwise temporal ``k``x1x1 conv, BN, ReLU.

    Shared with VoV3D. Input ``(B, 3, T, H, W)``, output ``(B, dim_out, T, H/2, W/2)``.
    """

    def __init__(self, dim_in: int, dim_out: int, temporal_kernel: int = 5) -> None:
        super().__init__()
        self.conv_xy = nn.Conv3d(
            dim_in, dim_out, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False
        )
        self.conv_t = ConvBNAct3d(dim_out, dim_out, (temporal_kernel, 1, 1), groups=dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_t(self.conv_xy(x))


class X3DTransform(nn.Module):
    """X3D bottleneck branch: 1x1x1 conv-BN-ReLU, depthwise 3x3x3 conv (stride 1xsxs)-BN,
    optional SE, Swish, 1x1x1 conv-BN (zero-init). ``(B, dim_in, T, H, W)`` to
    ``(B, dim_out, T, H/s, W/s)``."""

    def __init__(
        self, dim_in: int, dim_inner: int, dim_out: int, stride: int = 1, use_se: bool = True
    ) -> None:
        super().__init__()
        self.a = ConvBNAct3d(dim_in, dim_inner, 1)
        self.b = ConvBNAct3d(
            dim_inner, dim_inner, 3, stride=(1, stride, stride), groups=dim_inner, act=None
        )
        self.se = SqueezeExcite3d(dim_inner, SE_RATIO) if use_se else None
        self.b_act = Swish()
        self.c = ConvBNAct3d(dim_inner, dim_out, 1, act=None, final_bn=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.b(self.a(x))
        if self.se is not None:
            x = self.se(x)
        return self.c(self.b_act(x))


def release_pool(num_frames: int, train_crop_size: int) -> tuple[int, int, int]:
    """The released head's pooling kernel: ``(NUM_FRAMES, ceil(TRAIN_CROP_SIZE / 32)) x 2``
    (PySlowFast ``video_model_builder.X3D._construct_network``, VoV3D's builder alike)."""
    side = math.ceil(train_crop_size / 32.0)
    return (int(num_frames), side, side)


class X3DLayout(nn.Module):
    """The X3D network layout, shared with VoV3D: stem, stages ``s2..s5`` of residual blocks
    (spatial stride 2 in each stage's first block) and the X3D head.

    ``transform(dim_in, dim_inner, dim_out, stride, index_in_stage)`` builds a block's residual
    branch; ``stages`` lists ``(blocks, dim_inner, dim_out)`` per stage; ``head_pool`` is the
    head's ``pool_size`` (None: global pooling).
    """

    def __init__(
        self,
        stem_width: int,
        stages: list[tuple[int, int, int]],
        transform: Callable[[int, int, int, int, int], nn.Module],
        num_classes: int,
        dropout: float,
        fc_std: float,
        drop_path: float = 0.0,
        head_pool: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.stem = X3DStem(3, stem_width)
        dim_in, total, index = stem_width, sum(n for n, _, _ in stages), 0
        for stage, (count, dim_inner, dim_out) in enumerate(stages):
            blocks = []
            for i in range(count):
                stride = 2 if i == 0 else 1
                branch = transform(dim_in, dim_inner, dim_out, stride, i)
                blocks.append(ResBlock3d(branch, dim_in, dim_out, stride, drop_path * index / total))
                dim_in, index = dim_out, index + 1
            self.add_module(f"s{stage + 2}", nn.Sequential(*blocks))
        self.head = X3DHead(
            dim_in, stages[-1][1], num_classes, DIM_C5, dropout, pool_size=head_pool
        )
        init_msra(self, fc_std=fc_std, zero_init_final_bn=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"{type(self).__name__} expects clips (B, C, T, H, W), got {tuple(x.shape)}")
        x = self.stem(x)
        x = self.s5(self.s4(self.s3(self.s2(x))))
        return self.head(x)

    def no_weight_decay(self) -> set[str]:
        """BN parameters take no weight decay (PySlowFast ``BN.WEIGHT_DECAY 0``)."""
        return norm_parameter_names(self)


class X3D(X3DLayout):
    """X3D classifier: ``(B, 3, T, H, W)`` clips to logits ``(B, num_classes)``.

    Args:
        size: ``xs`` | ``s`` | ``m`` | ``l`` (sets the depth factor; see ``SIZES``).
        num_classes: classifier outputs (400 for Kinetics-400, 174 for SSv2).
        num_frames: frames per clip the model is trained with (informational: any T works).
        dropout: dropout before the FC (paper: 0.5).
        drop_path: maximum stochastic-depth rate, growing linearly with depth (paper: 0).
        fc_std: std of the FC initialisation (paper: 0.01).
        release_head: the released head (``model.release_head``): a fixed
            ``(num_frames, ceil(train_crop_size / 32) x 2)`` average pool with stride 1 and the
            per-position softmax average (``X3DHead`` ``pool_size``), which is what PySlowFast
            computes on a 256 test input of a 224-trained model. False (default, and for
            training): global pooling. Same weights either way.
        train_crop_size: the training crop the release pool is built from
            (``model.train_crop_size``; None: the size's paper crop, 160/160/224/312).
    """

    def __init__(
        self,
        size: str = "m",
        num_classes: int = 400,
        num_frames: int = 16,
        dropout: float = 0.5,
        drop_path: float = 0.0,
        fc_std: float = 0.01,
        release_head: bool = False,
        train_crop_size: int | None = None,
    ) -> None:
        if size not in SIZES:
            raise ValueError(f"X3D size must be one of {sorted(SIZES)}, got {size!r}")
        depth_factor = SIZES[size].depth_factor
        widths = [DIM_C1]
        for _ in range(3):
            widths.append(round_width(widths[-1], 2.0))
        stages = []
        for base_width, base_depth in zip(widths, BASE_DEPTHS):
            dim_out = round_width(base_width, WIDTH_FACTOR)
            stages.append((math.ceil(depth_factor * base_depth), int(BOTTLENECK_FACTOR * dim_out), dim_out))

        def transform(dim_in: int, dim_inner: int, dim_out: int, stride: int, i: int) -> nn.Module:
            return X3DTransform(dim_in, dim_inner, dim_out, stride, use_se=i % 2 == 0)

        stem = round_width(DIM_C1, WIDTH_FACTOR)
        train_crop = train_crop_size or SIZES[size].crop_size
        pool = release_pool(num_frames, train_crop) if release_head else None
        super().__init__(stem, stages, transform, num_classes, dropout, fc_std, drop_path, pool)
        self.size, self.num_classes, self.num_frames = size, num_classes, num_frames
        self.release_head, self.train_crop_size = release_head, train_crop


def x3d_xs(**kwargs) -> X3D:
    """X3D-XS (paper input 4 x 160 x 160)."""
    return X3D(size="xs", **kwargs)


def x3d_s(**kwargs) -> X3D:
    """X3D-S (paper input 13 x 160 x 160)."""
    return X3D(size="s", **kwargs)


def x3d_m(**kwargs) -> X3D:
    """X3D-M (paper input 16 x 224 x 224)."""
    return X3D(size="m", **kwargs)


def x3d_l(**kwargs) -> X3D:
    """X3D-L (paper input 16 x 312 x 312)."""
    return X3D(size="l", **kwargs)
