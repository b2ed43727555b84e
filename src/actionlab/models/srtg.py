"""SRTG: 3D ResNets and R(2+1)D with Squeeze-and-Recursion blocks and Temporal Gates.

Stergiou, Poppe. "Learn to cycle: Time-consistent feature discovery for action recognition",
Pattern Recognition Letters 2021 (arXiv 2006.08247). Layout and parameter names follow the
released ``alexandrosstergiou/Squeeze-and-Recursion-Temporal-Gates`` (``network/srtg_resnet.py``;
``docs/models/srtg.md``), so released state dicts map key for key
except the recurrent cell, which we call ``sar.rnn`` (released ``sar.lstm``; the importer renames):
``stem.*``, ``layer{1..4}.{i}.{conv1,conv2[,conv3],downsample,sar.rnn}``, ``fc``.

Kept from the release on purpose: its "bottleneck" has expansion 1 (so the ``*_50``/``*_101``
models are narrow, 64..512 channels, fc input 512), the (2+1)D mid-width formula from the block's
*input* width, and the 3x3x3 stride-2 max-pool after the stem that the release HEAD (``1c4dd7e``)
has; older revisions of the file (``7b76e80``, ``17d2689``) have no
pool, which ``stem_pool=False`` reproduces (7x the MACs, same parameters). The SR block sits after
each block's final ReLU.

The temporal gate is ours: the released ``soft_nnc`` can never report a consistent sample (an
in-place ``scatter_`` makes the compared tensors identical), so with gates on the released block
is the identity and its LSTM gets no gradient. Here a sample is fused (``x * R``) only if the
pooled frame features ``P`` and the recurrent features ``R`` are cycle-consistent in both
directions (soft nearest neighbour over frames, then hard nearest neighbour back, must land on the
starting frame for every frame); otherwise it passes unchanged. Like the released models gates
are off by default; ``gates_from_epoch=N`` switches them on from epoch ``N`` through
``set_epoch(epoch)``, which the training module calls at every train-epoch start.

Input ``(B, C, T, H, W)``; output logits ``(B, num_classes)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from actionlab.models.layers import init_msra

__all__ = [
    "ARCHS",
    "SqueezeRecursion",
    "VideoResNet",
    "cycle_consistent",
    "r2plus1d_34",
    "r2plus1d_50",
    "r2plus1d_101",
    "r3d_34",
    "r3d_50",
    "r3d_101",
    "srtg_r2plus1d_34",
    "srtg_r2plus1d_50",
    "srtg_r2plus1d_101",
    "srtg_r3d_34",
    "srtg_r3d_50",
    "srtg_r3d_101",
]


def cycle_consistent(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample temporal cycle consistency of frame sequences ``a -> b -> a``.

    ``a``, ``b``: ``(B, C, T)``. For every frame ``i`` of ``a`` the soft nearest neighbour in
    ``b`` is ``sum_j softmax_j(-||a_i - b_j||^2) b_j``; its hard nearest neighbour back in ``a``
    must be frame ``i``. Returns a bool ``(B,)``: ``True`` where this holds for all frames.
    Computed in float64 without gradient (the decision is discrete; the released code also
    casts to double against underflow).
    """
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"cycle_consistent needs two (B, C, T) tensors, got {a.shape}, {b.shape}")
    with torch.no_grad():
        a_t, b_t = a.transpose(1, 2).double(), b.transpose(1, 2).double()
        dist = (a_t[:, :, None] - b_t[:, None]).pow(2).sum(-1)  # (B, T, T), [i, j] = |a_i-b_j|^2
        soft_nn = torch.softmax(-dist, dim=-1) @ b_t
        back = (soft_nn[:, :, None] - a_t[:, None]).pow(2).sum(-1).argmin(-1)
        frames = torch.arange(a.shape[-1], device=a.device)
        return (back == frames).all(dim=-1)


class SqueezeRecursion(nn.Module):
    """Squeeze-and-Recursion: spatial mean per frame, 2-layer recurrent cell over time, ``x * R``.

    No sigmoid (hidden states lie in (-1, 1)) and no residual: the released block multiplies.
    ``cell`` is ``lstm`` (SRTG) or ``gru`` (MTNet's alignment branch); hidden = ``channels``.
    With ``gate_active`` the product is applied only to cycle-consistent samples (see module
    docstring); the flag is set by the owning network, not by the constructor.
    """

    def __init__(self, channels: int, cell: str = "lstm", layers: int = 2) -> None:
        super().__init__()
        cells = {"lstm": nn.LSTM, "gru": nn.GRU}
        if cell not in cells:
            raise ValueError(f"SqueezeRecursion cell must be one of {sorted(cells)}, got {cell!r}")
        self.rnn = cells[cell](input_size=channels, hidden_size=channels, num_layers=layers)
        self.gate_active = False

    def consistency(self, pooled: Tensor, recurrent: Tensor) -> Tensor:
        """Samples to fuse: consistent in both directions, as the released block intersects."""
        return cycle_consistent(pooled, recurrent) & cycle_consistent(recurrent, pooled)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(3, 4))  # (B, C, T)
        recurrent, _ = self.rnn(pooled.permute(2, 0, 1))
        recurrent = recurrent.permute(1, 2, 0)  # (B, C, T)
        fused = x * recurrent[..., None, None]
        if not self.gate_active:
            return fused
        keep = self.consistency(pooled, recurrent)
        return torch.where(keep.view(-1, 1, 1, 1, 1), fused, x)


class Conv3DSimple(nn.Sequential):
    """3x3x3 convolution, stride ``s`` on T, H and W (``mid`` unused, for a common signature)."""

    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1) -> None:
        super().__init__(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False))


class Conv2Plus1D(nn.Sequential):
    """(1,3,3) conv to ``mid`` channels, BN, ReLU, then (3,1,1) conv; stride split the same way."""

    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(
                cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False
            ),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
        )


def _midplanes(inplanes: int, planes: int) -> int:
    """(2+1)D width matching the 3D kernel's parameters, from the block's *input* width."""
    return (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)


class _Block(nn.Module):
    """Residual block skeleton: ``relu(branch(x) + shortcut(x))``, then the optional SR block.

    Subclasses build their branch in :meth:`build` (module names ``conv1..3`` as released).
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        builder: type[nn.Module],
        stride: int = 1,
        downsample: nn.Module | None = None,
        recursion: bool = False,
    ) -> None:
        super().__init__()
        self.build(inplanes, planes, builder, stride)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)
        self.sar = SqueezeRecursion(planes) if recursion else None

    def build(self, inplanes: int, planes: int, builder: type[nn.Module], stride: int) -> None:
        raise NotImplementedError

    def branch(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.branch(x) + identity)
        return out if self.sar is None else self.sar(out)


class BasicBlock(_Block):
    """Two spatio-temporal convs (stride in the first) + shortcut."""

    def build(self, inplanes: int, planes: int, builder: type[nn.Module], stride: int) -> None:
        mid = _midplanes(inplanes, planes)
        self.conv1 = nn.Sequential(
            builder(inplanes, planes, mid, stride), nn.BatchNorm3d(planes), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(builder(planes, planes, mid), nn.BatchNorm3d(planes))

    def branch(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class Bottleneck(_Block):
    """1x1x1 - spatio-temporal (stride) - 1x1x1 with the released expansion of 1."""

    def build(self, inplanes: int, planes: int, builder: type[nn.Module], stride: int) -> None:
        self.conv1 = nn.Sequential(
            nn.Conv3d(inplanes, planes, 1, bias=False),
            nn.BatchNorm3d(planes),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            builder(planes, planes, _midplanes(inplanes, planes), stride),
            nn.BatchNorm3d(planes),
            nn.ReLU(inplace=True),
        )
        self.conv3 = nn.Sequential(nn.Conv3d(planes, planes, 1, bias=False), nn.BatchNorm3d(planes))

    def branch(self, x: Tensor) -> Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


def r3d_stem() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        nn.BatchNorm3d(64),
        nn.ReLU(inplace=True),
    )


def r2plus1d_stem() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, 45, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(45),
        nn.ReLU(inplace=True),
        nn.Conv3d(45, 64, (3, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(64),
        nn.ReLU(inplace=True),
    )


@dataclass(frozen=True)
class Arch:
    block: type[nn.Module]
    builder: type[nn.Module]
    layers: tuple[int, int, int, int]
    stem: str  # "r3d" | "r2plus1d"


ARCHS: dict[str, Arch] = {
    "r3d_34": Arch(BasicBlock, Conv3DSimple, (3, 4, 6, 3), "r3d"),
    "r3d_50": Arch(Bottleneck, Conv3DSimple, (3, 4, 6, 3), "r3d"),
    "r3d_101": Arch(Bottleneck, Conv3DSimple, (3, 4, 23, 3), "r3d"),
    "r2plus1d_34": Arch(BasicBlock, Conv2Plus1D, (3, 4, 6, 3), "r2plus1d"),
    "r2plus1d_50": Arch(Bottleneck, Conv2Plus1D, (3, 4, 6, 3), "r2plus1d"),
    "r2plus1d_101": Arch(Bottleneck, Conv2Plus1D, (3, 4, 23, 3), "r2plus1d"),
}
STEMS = {"r3d": r3d_stem, "r2plus1d": r2plus1d_stem}
WIDTHS = (64, 128, 256, 512)


class VideoResNet(nn.Module):
    """3D ResNet / R(2+1)D classifier with optional SR blocks: ``(B, 3, T, H, W)`` to logits.

    Args:
        arch: a key of :data:`ARCHS` (``r3d_34`` ... ``r2plus1d_101``).
        num_classes: classifier outputs.
        num_frames: clip length used in training (kept for configs; any ``T`` works).
        recursion: SR block after every residual block (the ``srtg_*`` models).
        gates_from_epoch: ``None`` keeps the temporal gates off (released models); ``N`` turns
            them on from training epoch ``N`` (0 = from the start) via :meth:`set_epoch`, and on
            for a model that is not in a training run (``set_epoch`` never called).
        stem_pool: 3x3x3 stride-2 max-pool after the stem (release HEAD; ``False`` for the
            older revisions without it: about 7x the MACs at the same parameters).
    """

    def __init__(
        self,
        arch: str = "r3d_34",
        num_classes: int = 400,
        num_frames: int = 16,
        recursion: bool = True,
        gates_from_epoch: int | None = None,
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"VideoResNet arch must be one of {sorted(ARCHS)}, got {arch!r}")
        if gates_from_epoch is not None and not recursion:
            raise ValueError(
                "gates_from_epoch needs recursion=True (the temporal gate belongs to the SR "
                "block); use an srtg_* model or set gates_from_epoch: null"
            )
        cfg = ARCHS[arch]
        self.arch, self.num_classes, self.num_frames = arch, num_classes, num_frames
        self.gates_from_epoch = gates_from_epoch
        self.epoch: int | None = None
        self.stem = STEMS[cfg.stem]()
        self.pool = nn.MaxPool3d(3, stride=2, padding=1) if stem_pool else None
        inplanes = 64
        for i, (planes, count) in enumerate(zip(WIDTHS, cfg.layers)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv3d(inplanes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm3d(planes),
                )
            blocks = [cfg.block(inplanes, planes, cfg.builder, stride, downsample, recursion)]
            blocks += [
                cfg.block(planes, planes, cfg.builder, recursion=recursion)
                for _ in range(count - 1)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.fc = nn.Linear(inplanes, num_classes)
        init_msra(self, fc_std=0.01, zero_init_final_bn=False)  # the release's initialisation
        self._apply_gates()

    def gates_active(self) -> bool:
        if self.gates_from_epoch is None:
            return False
        return self.epoch is None or self.epoch >= self.gates_from_epoch

    def _apply_gates(self) -> None:
        on = self.gates_active()
        for m in self.modules():
            if isinstance(m, SqueezeRecursion):
                m.gate_active = on

    def set_epoch(self, epoch: int) -> None:
        """Called by the training module at each train-epoch start: switches the gates."""
        self.epoch = epoch
        self._apply_gates()

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"VideoResNet expects clips (B, C, T, H, W), got {tuple(x.shape)}")
        x = self.stem(x)
        if self.pool is not None:
            x = self.pool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3, 4)))

    def reset_fc(self, num_classes: int) -> None:
        """A fresh classifier (released init N(0, 0.01)) for another label set."""
        self.fc = nn.Linear(self.fc.in_features, num_classes)
        init_msra(self.fc, fc_std=0.01)
        self.num_classes = num_classes


def r3d_34(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r3d_34", recursion=False, **kwargs)


def r3d_50(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r3d_50", recursion=False, **kwargs)


def r3d_101(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r3d_101", recursion=False, **kwargs)


def r2plus1d_34(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r2plus1d_34", recursion=False, **kwargs)


def r2plus1d_50(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r2plus1d_50", recursion=False, **kwargs)


def r2plus1d_101(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r2plus1d_101", recursion=False, **kwargs)


def srtg_r3d_34(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r3d_34", recursion=True, **kwargs)


def srtg_r3d_50(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r3d_50", recursion=True, **kwargs)


def srtg_r3d_101(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r3d_101", recursion=True, **kwargs)


def srtg_r2plus1d_34(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r2plus1d_34", recursion=True, **kwargs)


def srtg_r2plus1d_50(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r2plus1d_50", recursion=True, **kwargs)


def srtg_r2plus1d_101(**kwargs) -> VideoResNet:
    return VideoResNet(arch="r2plus1d_101", recursion=True, **kwargs)
