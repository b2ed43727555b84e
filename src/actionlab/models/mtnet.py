"""MTNet: Multi-Temporal Convolutions with brief and prolonged paths and recurrent alignment.

Stergiou, Poppe. "Multi-Temporal Convolutions for Human Action Recognition in Videos", IJCNN
2021 (arXiv 2011.03949). Layout and parameter names follow the released
``alexandrosstergiou/Squeeze-and-Recursion-Temporal-Gates`` (``network/MTnet.py``;
``docs/models/mtnet.md``): ``stem``, ``layer{1..4}.{i}.{conv1_1,
conv1_2,conv2,conv3,downsample}.{conv_short,conv_long,conv_short2long,norm_short,norm_long}``,
``layer*.{i}.sr_{short,long}.rnn`` (released ``.op``; the importer renames), ``fc``.

Every layer carries two tensors. The *brief* path holds ``int(C * 0.875)`` channels at full
spatio-temporal resolution, the *prolonged* path the remaining ``C / 8`` at half the spatial and
half the temporal resolution. Temporal halving is not strided: :func:`select_frames` keeps the
frames most similar to both neighbours (squared cosine similarity of spatially pooled
features). Each MTConv adds a lateral brief->prolonged connection (spatial average pool, frame
selection, resize, 1x1x1 conv, normalised by the prolonged path's norm). Each block ends with the
recurrent alignment of both paths: a Squeeze-and-Recursion with a 2-layer GRU (``x * GRU(GAP(x))``).

Input ``(B, C, T, H, W)`` with ``T >= 3`` and ``H, W >= 33``; output logits ``(B, num_classes)``.
For 16x224 the brief path runs at 8x56x56 .. 1x7x7 and the prolonged one at 4x28x28 .. 1x4x4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _triple

from actionlab.models.layers import init_msra
from actionlab.models.srtg import SqueezeRecursion

__all__ = [
    "SIZES",
    "MTBlock",
    "MTConv",
    "MTNet",
    "mtnet_l",
    "mtnet_m",
    "mtnet_s",
    "mtnet_xs",
    "select_frames",
]

SIZES: dict[str, tuple[int, int, int, int]] = {
    "xs": (2, 2, 2, 2),
    "s": (2, 2, 5, 3),
    "m": (3, 4, 6, 3),
    "l": (3, 4, 23, 3),
}
RATE = 0.875  # brief share of the channels
MIN_SIDE = 33  # brief path is 2x2 at stage 4 from here (32 px leaves 1x1, too small to pool)
WIDTHS = (64, 128, 256, 512)
Pair = tuple[Tensor, Tensor]


def select_frames(x: Tensor) -> Tensor:
    """Keep the ``T // 2`` frames most similar to both neighbours, in temporal order.

    ``x``: ``(B, C, T, H, W)``, ``T >= 3``. Scores: ``s_t = cos(g_t, g_{t+1})^2`` of the spatial
    means ``g`` (eps 1e-4), frame ``t+1`` scores ``(s_t + s_{t+1}) / 2``; the first and last
    frames are never kept. Per-sample hard selection: gradients flow through kept frames only.
    """
    b, c, t, h, w = x.shape
    if t < 3:
        raise ValueError(
            f"MTNet frame selection needs at least 3 frames, got {t}; feed longer clips"
        )
    g = x.mean(dim=(3, 4))
    sim = F.cosine_similarity(g[..., :-1], g[..., 1:], dim=1, eps=1e-4).pow(2)  # (B, T-1)
    score = (sim[:, :-1] + sim[:, 1:]) / 2  # (B, T-2), entry t scores frame t+1
    keep = score.topk(t // 2, dim=-1).indices.sort(dim=-1).values + 1
    return x.gather(2, keep[:, None, :, None, None].expand(b, c, -1, h, w))


class MTConv(nn.Module):
    """Two-path convolution on ``(brief, prolonged)`` with the lateral brief->prolonged link.

    Channel split: brief ``in_s = floor(int(in*r)/g_s)*g_s -> out_s = int(out*r)``, prolonged the
    rest. BatchNorm per path (GroupNorm when ``groups > 1``); no activation inside.
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int | tuple[int, int, int],
        rate: float = RATE,
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
        groups: int = 1,
        lateral: bool = True,
    ) -> None:
        super().__init__()
        g_short = max(math.floor(groups * rate), 1)
        g_long = max(groups - g_short, 1)
        in_short = math.floor(int(in_planes * rate) / g_short) * g_short
        self.out_short = int(out_planes * rate)
        self.out_long = out_planes - self.out_short
        k, s, p = _triple(kernel_size), _triple(stride), _triple(padding)
        self.conv_short = nn.Conv3d(in_short, self.out_short, k, s, p, groups=g_short, bias=False)
        self.conv_long = nn.Conv3d(
            in_planes - in_short, self.out_long, k, s, p, groups=g_long, bias=False
        )
        self.conv_short2long = (
            nn.Conv3d(self.out_short, self.out_long, 1, bias=False) if lateral else None
        )
        if groups > 1:
            self.norm_short: nn.Module = nn.GroupNorm(g_short, self.out_short)
            self.norm_long: nn.Module = nn.GroupNorm(g_long, self.out_long)
        else:
            self.norm_short = nn.BatchNorm3d(self.out_short)
            self.norm_long = nn.BatchNorm3d(self.out_long)

    def forward(self, x: Pair) -> Pair:
        short, long = self.conv_short(x[0]), self.conv_long(x[1])
        out_long = self.norm_long(long)
        if self.conv_short2long is not None:
            lateral = F.avg_pool3d(short, (1, 2, 2), (1, 2, 2))
            if lateral.shape[2] > 2:
                lateral = select_frames(lateral)
            if lateral.shape[2:] != long.shape[2:]:
                lateral = F.interpolate(lateral, size=long.shape[2:], mode="trilinear")
            # The released code normalises the lateral with the prolonged path's own norm.
            out_long = out_long + self.norm_long(self.conv_short2long(lateral))
        return self.norm_short(short), out_long


def _relu(x: Pair) -> Pair:
    return torch.relu(x[0]), torch.relu(x[1])


def _resize_like(x: Tensor, ref: Tensor) -> Tensor:
    if x.shape[2:] == ref.shape[2:]:
        return x
    return F.interpolate(x, size=ref.shape[2:], mode="trilinear")


class MTBlock(nn.Module):
    """MTConv 1x1 (in->w) - 1x1 (w->in) - 3x3x3 (stride) - 1x1 or 1x3x3, GRU alignment, + shortcut.

    Expansion 1 as released; the last conv is 1x1x1 in the downsampling block and 1x3x3 otherwise.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: MTConv | None = None,
        groups: int = 1,
        rate: float = RATE,
    ) -> None:
        super().__init__()
        width = planes // groups
        self.conv1_1 = MTConv(inplanes, width, 1, rate)
        self.conv1_2 = MTConv(width, inplanes, 1, rate)
        self.conv2 = MTConv(inplanes, width, 3, rate, stride, 1, groups)
        if downsample is not None:
            self.conv3 = MTConv(width, planes, 1, rate, groups=groups)
        else:
            self.conv3 = MTConv(width, planes, (1, 3, 3), rate, padding=(0, 1, 1), groups=groups)
        self.downsample = downsample
        self.sr_short = SqueezeRecursion(self.conv3.out_short, cell="gru")
        self.sr_long = SqueezeRecursion(self.conv3.out_long, cell="gru")

    def forward(self, x: Pair) -> Pair:
        out = _relu(self.conv1_1(x))
        out = _relu(self.conv1_2(out))
        out = _relu(self.conv2(out))
        short, long = self.conv3(out)
        id_short, id_long = x
        if self.downsample is not None:
            if id_long.shape[3] < 3:
                # Released: a prolonged map below 3 px is upsampled before the strided 1x1x1.
                id_long = F.interpolate(id_long, size=(id_long.shape[2], 3, 3), mode="trilinear")
            id_short, id_long = self.downsample((id_short, id_long))
        short = self.sr_short(short) + _resize_like(id_short, short)
        long = self.sr_long(long) + _resize_like(id_long, long)
        return torch.relu(short), torch.relu(long)


class MTNet(nn.Module):
    """MTNet classifier: ``(B, 3, T, H, W)`` clips to logits ``(B, num_classes)``.

    Args:
        size: ``xs`` | ``s`` | ``m`` | ``l`` (blocks per stage in :data:`SIZES`).
        num_classes: classifier outputs.
        num_frames: clip length used in training (kept for configs; any ``T >= 3`` works).
        groups: grouped MTConvs with GroupNorm (the released ``*_g8`` variants use 8).
        rate: brief share of the channels (0.875).
    """

    def __init__(
        self,
        size: str = "m",
        num_classes: int = 400,
        num_frames: int = 16,
        groups: int = 1,
        rate: float = RATE,
    ) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"MTNet size must be one of {sorted(SIZES)}, got {size!r}")
        self.size, self.num_classes, self.num_frames = size, num_classes, num_frames
        self.split = (int(64 * rate), 64 - int(64 * rate))
        self.stem = nn.Sequential(
            nn.Conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        inplanes = 64
        for i, (planes, count) in enumerate(zip(WIDTHS, SIZES[size])):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = MTConv(inplanes, planes, 1, rate, stride=stride, lateral=False)
            blocks = [MTBlock(inplanes, planes, stride, downsample, groups, rate)]
            blocks += [MTBlock(planes, planes, groups=groups, rate=rate) for _ in range(count - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.fc = nn.Linear(inplanes, num_classes)
        init_msra(self, fc_std=0.01, zero_init_final_bn=False)  # the release's initialisation

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"MTNet expects clips (B, C, T, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(
                f"MTNet needs frames of at least {MIN_SIDE}x{MIN_SIDE} px, got {tuple(x.shape[-2:])} "
                "(the stage-4 lateral link pools 2x2 on the brief path); use a larger crop_size"
            )
        x = self.stem(x)
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            x = F.pad(x, (1, 0, 1, 0, 0, 0), mode="replicate")
        x = select_frames(self.pool(x))
        short, long = torch.split(x, self.split, dim=1)
        long = F.avg_pool3d(long, (1, 2, 2), (1, 2, 2))
        if long.shape[2] > 2:
            long = select_frames(long)
        short, long = self.layer4(self.layer3(self.layer2(self.layer1((short, long)))))
        return self.fc(torch.cat((short.mean(dim=(2, 3, 4)), long.mean(dim=(2, 3, 4))), dim=1))

    def reset_fc(self, num_classes: int) -> None:
        """A fresh classifier (released init N(0, 0.01)) for another label set."""
        self.fc = nn.Linear(self.fc.in_features, num_classes)
        init_msra(self.fc, fc_std=0.01)
        self.num_classes = num_classes


def mtnet_xs(**kwargs) -> MTNet:
    return MTNet(size="xs", **kwargs)


def mtnet_s(**kwargs) -> MTNet:
    return MTNet(size="s", **kwargs)


def mtnet_m(**kwargs) -> MTNet:
    return MTNet(size="m", **kwargs)


def mtnet_l(**kwargs) -> MTNet:
    return MTNet(size="l", **kwargs)
