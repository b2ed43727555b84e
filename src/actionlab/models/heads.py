"""Classification heads shared by the backbones; each returns logits ``(B, num_classes)``.

* :class:`X3DHead` - X3D / VoV3D head (Feichtenhofer, CVPR 2020): 1x1x1 conv + BN + ReLU,
  global average pool, 1x1x1 "lin_5" to 2048 + ReLU, dropout, FC. Pooling is adaptive, so any
  ``T x H x W`` works (multigrid shapes, full-resolution multi-crop testing); PySlowFast's
  fixed ``AvgPool3d`` plus per-position softmax at test time is replaced by logits of the
  globally pooled features (the training module applies softmax where it aggregates views).
  ``pool_size`` restores the released head exactly (what a 256 test input of a 224-trained
  model computes there).
* :class:`FrameAverageHead` - TSN/TSM consensus: dropout, FC per frame, logits averaged over T.
* :class:`ClipPoolHead` - global average pool over ``T x H x W``, dropout, FC (3D ResNets).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from actionlab.models.layers import ConvBNAct3d

__all__ = ["ClipPoolHead", "FrameAverageHead", "X3DHead"]


class X3DHead(nn.Module):
    """Input ``(B, dim_in, T, H, W)`` res5 features; parameter names follow PySlowFast
    (``conv_5``, ``lin_5``, ``projection``) up to the conv-BN grouping.

    Args:
        dim_in: res5 width (X3D-M: 192).
        dim_inner: ``conv_5`` width (X3D-M: 432).
        dim_out: ``lin_5`` width (2048, ``X3D.DIM_C5``).
        num_classes: classifier outputs.
        dropout: dropout before the FC (0.5 in the papers).
        bn_lin5: BN after ``lin_5`` (off in X3D and VoV3D).
        pool_size: None (default): global average pooling, logits out. ``(T, h, w)``: the
            released PySlowFast/VoV3D head (``head_helper.X3DHead``): ``AvgPool3d(pool_size,
            stride=1)`` (built from ``NUM_FRAMES`` and ``ceil(TRAIN_CROP_SIZE / 32)``), then
            ``lin_5`` and the FC at every remaining position; with one position the logits are
            the global head's, with several (a 256 input of a 224-trained model: 2 x 2) the
            output is ``log(mean over positions of softmax)``, whose softmax is exactly the
            original's per-position softmax average. A kernel larger than the feature map
            is cut to it (the original would fail there).
    """

    def __init__(
        self,
        dim_in: int,
        dim_inner: int,
        num_classes: int,
        dim_out: int = 2048,
        dropout: float = 0.5,
        bn_lin5: bool = False,
        pool_size: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.conv_5 = ConvBNAct3d(dim_in, dim_inner, 1)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.pool_size = tuple(int(k) for k in pool_size) if pool_size is not None else None
        self.lin_5 = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.lin_5_bn = nn.BatchNorm3d(dim_out) if bn_lin5 else None
        self.lin_5_act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(dim_out, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_5(x)
        if self.pool_size is None:
            x = self.pool(x)
        else:
            kernel = tuple(min(k, n) for k, n in zip(self.pool_size, x.shape[2:]))
            x = F.avg_pool3d(x, kernel, stride=1)
        x = self.lin_5(x)
        if self.lin_5_bn is not None:
            x = self.lin_5_bn(x)
        x = self.lin_5_act(x)
        if self.pool_size is None:
            return self.projection(self.dropout(x.flatten(1)))
        x = self.projection(self.dropout(x.flatten(2).transpose(1, 2)))  # (B, positions, K)
        if x.shape[1] == 1:
            return x[:, 0]
        return x.log_softmax(dim=-1).logsumexp(dim=1) - math.log(x.shape[1])


class FrameAverageHead(nn.Module):
    """Per-frame features ``(B, T, C)`` -> dropout -> FC ``fc`` -> mean of logits over T."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(x)).mean(dim=1)


class ClipPoolHead(nn.Module):
    """Clip features ``(B, C, T, H, W)`` -> global average pool -> dropout -> FC ``fc``."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(x.mean(dim=(2, 3, 4))))
