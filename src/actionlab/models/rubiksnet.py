"""RubiksNet: a shift-only pre-activation ResNet with learnable 3D shifts.

Fan, Buch, Wang, Cao, Zhu, Niebles, Fei-Fei. "RubiksNet: Learnable 3D-Shift for Efficient
Video Action Recognition", ECCV 2020. Layout, widths and parameter names follow the released
code (``StanfordVL/RubiksNet``; ``shared/design/papers/rubiksnet.md`` section 2), so released
state dicts map key for key: ``backbone.layer{0..4}.{i}.{bn1,conv2,bn2,as3.rubiks3d.shift,se,
conv3,shortcut}``, ``backbone.bn_last``, ``new_fc``.

Input ``(B, C, T, H, W)``; frames are folded into the batch for the 1x1 convolutions and
unfolded around every RubiksShift; the FC runs per frame and logits are averaged over T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from actionlab.ops.rubiks_shift import RubiksShift3d

__all__ = [
    "RubiksNet",
    "RubiksNetBackbone",
    "RubiksShiftBlock",
    "TIERS",
    "rubiksnet_tiny",
    "rubiksnet_small",
    "rubiksnet_medium",
    "rubiksnet_large",
]


@dataclass(frozen=True)
class TierConfig:
    width: int
    repeats: tuple[int, int, int, int]
    use_se: bool


TIERS: dict[str, TierConfig] = {
    "tiny": TierConfig(54, (3, 4, 6, 3), False),
    "small": TierConfig(72, (3, 4, 6, 3), True),
    "medium": TierConfig(72, (3, 4, 23, 3), False),
    "large": TierConfig(72, (3, 8, 36, 3), False),
}
VARIANTS = ("rubiks3d",)
SE_REDUCTION = 12


def _fold(x: Tensor) -> Tensor:
    """``(N, T, C, H, W)`` to ``(N*T, C, H, W)`` for per-frame 2D layers."""
    return x.flatten(0, 1)


def _unfold(x: Tensor, n: int) -> Tensor:
    return x.view(n, -1, *x.shape[1:])


class SqueezeExcite(nn.Module):
    """Per-frame squeeze-and-excitation with bias-free linear layers (``se.fc.{0,2}``)."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc(x.mean(dim=(-2, -1)))
        return x * scale[..., None, None]


class ShiftWrap(nn.Module):
    """Holds the block's ``RubiksShift3d`` as ``rubiks3d`` (the released ``as3`` layout)."""

    def __init__(self, channels: int, stride: int, **shift_kwargs) -> None:
        super().__init__()
        self.rubiks3d = RubiksShift3d(channels, stride=(1, stride, stride), **shift_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.rubiks3d(x)


class RubiksShiftBlock(nn.Module):
    """Pre-activation shift block: BN-ReLU-1x1-BN-ReLU-RubiksShift(stride)-[SE]-1x1 + shortcut.

    Works on ``(N, T, C, H, W)``. The spatial stride happens inside the shift; the projection
    shortcut (when shape changes) is a strided 1x1 on the pre-activated input.
    """

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, use_se: bool = False, **shift_kwargs
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.as3 = ShiftWrap(planes, stride, **shift_kwargs)
        self.se = SqueezeExcite(planes) if use_se else None
        self.conv3 = nn.Conv2d(planes, planes, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            if stride != 1 or in_planes != planes
            else None
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        flat = _fold(x)
        a = self.relu(self.bn1(flat))
        shortcut = flat if self.shortcut is None else self.shortcut(a)
        h = self.relu(self.bn2(self.conv2(a)))
        h = _fold(self.as3(_unfold(h, n)))
        if self.se is not None:
            h = self.se(h)
        h = self.conv3(h) + shortcut
        return _unfold(h, n)


class RubiksNetBackbone(nn.Module):
    """Stem 3x3/2 conv, layer0 (1 block) and layer1..4, then BN-ReLU-global pool per frame.

    Input ``(N, T, 3, H, W)``, output per-frame features ``(N, T, 8 * width)``.
    """

    def __init__(
        self, width: int, repeats: tuple[int, ...], use_se: bool = False, **shift_kwargs
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        widths = (width, width, 2 * width, 4 * width, 8 * width)
        stage_repeats = (1, *repeats)
        in_planes = width
        for i, (planes, count) in enumerate(zip(widths, stage_repeats)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(count):
                blocks.append(
                    RubiksShiftBlock(
                        in_planes, planes, stride if j == 0 else 1, use_se, **shift_kwargs
                    )
                )
                in_planes = planes
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.bn_last = nn.BatchNorm2d(in_planes)
        self.num_features = in_planes
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        h = _unfold(self.conv1(_fold(x)), n)
        for i in range(5):
            h = getattr(self, f"layer{i}")(h)
        h = torch.relu(self.bn_last(_fold(h)))
        return h.mean(dim=(-2, -1)).view(n, -1, self.num_features)


class RubiksNet(nn.Module):
    """RubiksNet classifier: ``(B, 3, T, H, W)`` clips to logits ``(B, num_classes)``.

    Args:
        tier: ``tiny`` | ``small`` | ``medium`` | ``large``.
        num_classes: classifier outputs (174 for Something-Something V2).
        num_frames: frames per clip the model is trained with (kept for the released API and
            checkpoints; any ``T`` works at run time).
        variant: ``rubiks3d`` (learnable 3D shift).
        shift_lr_mult: learning-rate multiplier of the shift parameters (paper: 0.01).
        normalize_grad: ActiveShift per-channel normalisation of the shift gradient.
        quantize: round shifts to integers in the forward pass (straight-through gradient).
        shift_impl: RubiksShift implementation, ``auto`` or ``reference``.
    """

    def __init__(
        self,
        tier: str = "tiny",
        num_classes: int = 174,
        num_frames: int = 8,
        variant: str = "rubiks3d",
        shift_lr_mult: float = 0.01,
        normalize_grad: bool = True,
        quantize: bool = False,
        shift_impl: str = "auto",
    ) -> None:
        super().__init__()
        if tier not in TIERS:
            raise ValueError(f"RubiksNet tier must be one of {sorted(TIERS)}, got {tier!r}")
        if variant not in VARIANTS:
            raise ValueError(f"RubiksNet variant must be one of {VARIANTS}, got {variant!r}")
        cfg = TIERS[tier]
        self.tier, self.variant = tier, variant
        self.num_classes, self.num_frames = num_classes, num_frames
        self.shift_lr_mult = shift_lr_mult
        self.backbone = RubiksNetBackbone(
            cfg.width,
            cfg.repeats,
            cfg.use_se,
            normalize_grad=normalize_grad,
            quantize=quantize,
            impl=shift_impl,
        )
        self.new_fc = nn.Linear(self.backbone.num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"RubiksNet expects clips (B, C, T, H, W), got {tuple(x.shape)}")
        features = self.backbone(x.transpose(1, 2).contiguous())
        return self.new_fc(features).mean(dim=1)

    def replace_new_fc(self, num_classes: int) -> None:
        """A fresh classifier for fine-tuning on another label set."""
        self.new_fc = nn.Linear(self.backbone.num_features, num_classes)
        self.num_classes = num_classes

    def shift_parameter_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if n.endswith("shift")]

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay beyond norms and biases (the shifts)."""
        return set(self.shift_parameter_names())

    def lr_multipliers(self) -> dict[str, float]:
        """Per-parameter learning-rate multipliers (shifts train at ``shift_lr_mult``)."""
        return {n: self.shift_lr_mult for n in self.shift_parameter_names()}


def rubiksnet_tiny(**kwargs) -> RubiksNet:
    return RubiksNet(tier="tiny", **kwargs)


def rubiksnet_small(**kwargs) -> RubiksNet:
    return RubiksNet(tier="small", **kwargs)


def rubiksnet_medium(**kwargs) -> RubiksNet:
    return RubiksNet(tier="medium", **kwargs)


def rubiksnet_large(**kwargs) -> RubiksNet:
    return RubiksNet(tier="large", **kwargs)
