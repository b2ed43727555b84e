"""RubiksNet: a shift-only pre-activation ResNet with learnable 3D shifts.

Fan, Buch, Wang, Cao, Zhu, Niebles, Fei-Fei. "RubiksNet: Learnable 3D-Shift for Efficient
Video Action Recognition", ECCV 2020. Layout, widths and parameter names follow the released
code (``StanfordVL/RubiksNet``; ``docs/models/rubiksnet.md``), so released
state dicts map key for key: ``backbone.layer{0..4}.{i}.{bn1,conv2,bn2,as3.rubiks3d.shift,se,
conv3,shortcut}``, ``backbone.bn_last``, ``new_fc``.

Input ``(B, C, T, H, W)``; frames are folded into the batch for the 1x1 convolutions and
unfolded around every RubiksShift; the FC runs per frame and logits are averaged over T.

Variant ``rubiks3d-aq`` (RubiksNet-AQ, attention-quantized temporal shift; the
released ``AttentionShift``): each block keeps a spatial-only ``RubiksShift2d`` (``as3.shift``, ``(2, C_mid)``) and
prepends to its first 1x1 conv a per-channel 3-tap temporal attention
(``conv2.0.weight`` ``(C_in, 3)``, temperature ``conv2.0.T``; ``conv2.1`` is the conv). Annealing
the temperature to 0 (``actionlab.lit.aq_callbacks.AQTemperatureAnneal``) makes every channel a
hard {-1, 0, +1} frame shift; a budget loss (``auxiliary_losses``) keeps the fraction of
channels that shift in time under ``aq_budget``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from actionlab.models.memory_format import clip_to_frames
from actionlab.ops.batch_norm_act import bn_relu
from actionlab.ops.rubiks_shift import RubiksShift2d, RubiksShift3d

__all__ = [
    "RubiksNet",
    "RubiksNetBackbone",
    "RubiksShiftBlock",
    "TemporalAttentionShift",
    "TIERS",
    "rubiksnet_tiny",
    "rubiksnet_small",
    "rubiksnet_medium",
    "rubiksnet_large",
    "rubiksnet_tiny_aq",
    "rubiksnet_small_aq",
    "rubiksnet_medium_aq",
    "rubiksnet_large_aq",
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
VARIANTS = ("rubiks3d", "rubiks3d-aq")
SE_REDUCTION = 12
AQ_TEMPERATURE = 2.0  # released AttentionShift temperature
AQ_STD_EPS = 1e-6
# Off: fuse_for_inference leaves the stem and block 0 as every other block (for ablations:
# bench/efficiency.py times both).
fold_stem_for_inference = True


def _fold(x: Tensor) -> Tensor:
    """``(N, T, C, H, W)`` to ``(N*T, C, H, W)`` for per-frame 2D layers."""
    return x.flatten(0, 1)


def _unfold(x: Tensor, n: int) -> Tensor:
    return x.view(n, -1, *x.shape[1:])


def spatial_mean(x: Tensor) -> Tensor:
    """Mean over ``H, W`` of ``(..., C, H, W)`` as a sum divided by ``H * W``: its gradient is a
    broadcast view, so a channels-last backward stays channels-last (``Tensor.mean``'s gradient
    is materialised in the default layout by an elementwise division)."""
    return x.sum(dim=(-2, -1)) / (x.shape[-2] * x.shape[-1])


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
        scale = self.fc(spatial_mean(x))
        return x * scale[..., None, None]


class ShiftWrap(nn.Module):
    """Holds the block's ``RubiksShift3d`` as ``rubiks3d`` (the released ``as3`` layout)."""

    def __init__(self, channels: int, stride: int, **shift_kwargs) -> None:
        super().__init__()
        self.rubiks3d = RubiksShift3d(channels, stride=(1, stride, stride), **shift_kwargs)

    def forward(self, x: Tensor, scale: Tensor | None = None, bias: Tensor | None = None, relu: bool = False) -> Tensor:
        return self.rubiks3d(x, scale, bias, relu)


class TemporalAttentionShift(nn.Module):
    """Attention-quantized temporal shift of RubiksNet-AQ on ``(N, T, C, H, W)``.

    ``out[:, t, c] = a[c, 0] x[:, t-1, c] + a[c, 1] x[:, t, c] + a[c, 2] x[:, t+1, c]``, zero
    beyond the clip, with ``a = softmax((W / (std(W) + 1e-6)) / T)`` over the 3 taps (the
    released ``AttentionShift``: a depthwise temporal conv1d, kernel 3, padding 1, weights
    shared over H and W). Tap 0, 1, 2 is a temporal shift of -1, 0, +1 in RubiksShift's sign
    convention (``out(t) = x(t + s)``). ``T`` is a buffer (``conv2.0.T`` in released files);
    ``T == 0`` means hard quantisation: one-hot attention at the largest logit, i.e. an exact
    integer frame shift per channel.
    """

    def __init__(self, channels: int, temperature: float = AQ_TEMPERATURE) -> None:
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.rand(channels, 3))
        self.register_buffer("T", torch.tensor(float(temperature)))

    def logits(self) -> Tensor:
        return self.weight / (self.weight.std(dim=1, keepdim=True) + AQ_STD_EPS)

    def attention(self) -> Tensor:
        """Tap weights ``(C, 3)``: softmax at temperature ``T``, one-hot when ``T == 0``."""
        logits = self.logits()
        soft = torch.softmax(logits / self.T.clamp_min(1e-12), dim=1)
        hard = nn.functional.one_hot(logits.argmax(dim=1), 3).to(soft.dtype)
        return torch.where(self.T > 0, soft, hard)

    def shift_probability(self) -> Tensor:
        """Per-channel probability mass on a non-zero temporal shift, ``(C,)``."""
        return 1.0 - self.attention()[:, 1]

    def forward(self, x: Tensor) -> Tensor:
        w = self.attention().to(x.dtype).t().reshape(3, 1, 1, -1, 1, 1)
        # zeros_like + slices keep the layout of x (channels-last frames included); cat would not.
        prev, nxt = torch.zeros_like(x), torch.zeros_like(x)
        prev[:, 1:] = x[:, :-1]
        nxt[:, :-1] = x[:, 1:]
        return w[0] * prev + w[1] * x + w[2] * nxt

    def extra_repr(self) -> str:
        return f"{self.channels}, T={float(self.T):.4g}"


class RubiksShiftBlock(nn.Module):
    """Pre-activation shift block: BN-ReLU-1x1-BN-ReLU-RubiksShift(stride)-[SE]-1x1 + shortcut.

    Works on ``(N, T, C, H, W)``. The spatial stride happens inside the shift; the projection
    shortcut (when shape changes) is a strided 1x1 on the pre-activated input. With
    ``variant="rubiks3d-aq"`` the shift is spatial only and a ``TemporalAttentionShift`` runs
    before the first 1x1 (``conv2 = Sequential(attention, conv)``, the released layout).
    """

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        use_se: bool = False,
        variant: str = "rubiks3d",
        aq_temperature: float = AQ_TEMPERATURE,
        **shift_kwargs,
    ) -> None:
        super().__init__()
        self.aq = variant == "rubiks3d-aq"
        self.bn1 = nn.BatchNorm2d(in_planes)
        conv2 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.conv2 = (
            nn.Sequential(TemporalAttentionShift(in_planes, aq_temperature), conv2)
            if self.aq
            else conv2
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.as3 = (
            RubiksShift2d(planes, stride, **shift_kwargs)
            if self.aq
            else ShiftWrap(planes, stride, **shift_kwargs)
        )
        self.se = SqueezeExcite(planes) if use_se else None
        self.conv3 = nn.Conv2d(planes, planes, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            if stride != 1 or in_planes != planes
            else None
        )
        self.relu = nn.ReLU(inplace=True)

    def _conv2(self, a: Tensor, n: int) -> Tensor:
        if self.aq:
            return self.conv2[1](_fold(self.conv2[0](_unfold(a, n))))
        return self.conv2(a)

    def _act_shift(self, h: Tensor, n: int) -> Tensor:
        """``shift(relu(bn2(h)))``. In inference (eval mode, no autograd) in one pass: the BN
        (as a per-channel scale and bias, or already folded into ``conv2``) and the ReLU are
        applied to each value as the shift reads it, instead of two passes writing and reading
        ``h`` first."""
        if not self.training and not torch.is_grad_enabled():
            if isinstance(self.bn2, nn.Identity):  # folded by fuse_for_inference
                return _fold(self.as3(_unfold(h, n), relu=True))
            if isinstance(self.bn2, nn.BatchNorm2d) and self.bn2.track_running_stats:
                from actionlab.models.fuse import bn_affine

                scale, bias = bn_affine(self.bn2)
                return _fold(self.as3(_unfold(h, n), scale, bias, relu=True))
        return _fold(self.as3(_unfold(bn_relu(self.bn2, h, self.relu), n)))

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        flat = _fold(x)
        a = bn_relu(self.bn1, flat, self.relu)
        shortcut = flat if self.shortcut is None else self.shortcut(a)
        h = self._act_shift(self._conv2(a, n), n)
        if self.se is not None:
            h = self.se(h)
        h = self.conv3(h) + shortcut
        return _unfold(h, n)

    def fuse_for_inference_(self) -> None:
        """``conv2`` with ``bn2`` folded and the ReLU in its epilogue, ``conv3`` with the residual
        add in its epilogue, ``bn1`` frozen (see ``actionlab.models.fuse``)."""
        from actionlab.models.fuse import ConvAct, FrozenAffine, fold_bn_into_conv

        if isinstance(self.bn2, nn.BatchNorm2d):
            conv = ConvAct(fold_bn_into_conv(self.conv2[1] if self.aq else self.conv2, self.bn2), "relu")
            if self.aq:
                self.conv2[1] = conv
            else:
                self.conv2 = conv
            self.bn2 = nn.Identity()
            self.conv3 = ConvAct(self.conv3)
        if isinstance(self.bn1, nn.BatchNorm2d):
            self.bn1 = FrozenAffine(self.bn1)

    def forward_fused(
        self, flat: Tensor | None, a: Tensor, n: int, following: nn.Module
    ) -> tuple[Tensor | None, Tensor]:
        """Fused inference on folded frames: ``flat`` is the block input, ``a`` its activation
        ``relu(bn1(flat))`` (computed by the block before); returns the block output and its
        activation by ``following`` (the next ``bn1`` or ``bn_last``, a ``FrozenAffine``).
        Passes over memory: ``conv2`` (+ BN + ReLU), the shift, ``conv3`` (+ the residual),
        BN + ReLU of the sum. A block marked ``emits_activation`` (see
        :meth:`RubiksNetBackbone.fuse_for_inference_`) has ``following`` folded into ``conv3``
        and gets its shortcut as ``flat`` already scaled by it: the activation comes out of
        ``conv3``'s epilogue and no output is returned (``None``)."""
        from actionlab.models.fuse import affine_relu

        shortcut = flat if self.shortcut is None else self.shortcut(a)
        h = _fold(self.as3(_unfold(self._conv2(a, n), n)))
        if self.se is not None:
            h = self.se(h)
        h = self.conv3(h, shortcut)
        if getattr(self, "emits_activation", False):
            return None, h
        return h, affine_relu(h, following.scale, following.bias)


class RubiksNetBackbone(nn.Module):
    """Stem 3x3/2 conv, layer0 (1 block) and layer1..4, then BN-ReLU-global pool per frame.

    Input ``(N, T, 3, H, W)``, output per-frame features ``(N, T, 8 * width)``.
    """

    def __init__(
        self, width: int, repeats: tuple[int, ...], use_se: bool = False, **block_kwargs
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
                        in_planes, planes, stride if j == 0 else 1, use_se, **block_kwargs
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

    def blocks(self) -> list[RubiksShiftBlock]:
        return [b for i in range(5) for b in getattr(self, f"layer{i}")]

    def fuse_for_inference_(self) -> None:
        """Eval-only, in place (``actionlab.models.fuse.fuse_for_inference`` calls it): BNs
        folded or frozen, the forward then runs :meth:`RubiksShiftBlock.forward_fused`.

        The first block runs at the stem's resolution (half the input: the largest tensors of
        the network), where every pass over memory costs most. Its input is needed only as its
        identity shortcut, and its output only through the next block's BN + ReLU when that
        block has a projection shortcut (RubiksNet: layer0 is one block, layer1 starts strided).
        Then the stem convolution (3 input channels, cheap) runs twice with the BNs folded in:
        once with block 0's ``bn1`` and the ReLU (its activation), once with block 1's ``bn1``
        scale and bias (its shortcut, pre-scaled), and block 0's ``conv3`` is scaled by that
        ``bn1`` too, with the ReLU in its epilogue: ``relu(s * (conv3(y) + h) + b) ==
        relu(conv3_s(y) + (s * h + b))``. That replaces two BN + ReLU passes over the largest
        tensors by one more stem convolution."""
        from actionlab.models.fuse import ConvAct, FrozenAffine, bn_affine, fold_affine_into_conv

        blocks = self.blocks()
        first, second = blocks[0], blocks[1] if len(blocks) > 1 else None
        stem_folds = (
            fold_stem_for_inference
            and isinstance(self.conv1, nn.Conv2d)
            and first.shortcut is None
            and second is not None
            and second.shortcut is not None
            and isinstance(first.bn1, nn.BatchNorm2d)
            and isinstance(second.bn1, nn.BatchNorm2d)
        )
        if stem_folds:
            scale, bias = bn_affine(second.bn1)
            self.stem_act = ConvAct(fold_affine_into_conv(copy.deepcopy(self.conv1), *bn_affine(first.bn1)), "relu")
            self.conv1 = ConvAct(fold_affine_into_conv(self.conv1, scale, bias))
            fold_affine_into_conv(first.conv3, scale)
        for block in blocks:
            block.fuse_for_inference_()
        if stem_folds:
            first.conv3.act = "relu"
            first.emits_activation = True
        if isinstance(self.bn_last, nn.BatchNorm2d):
            self.bn_last = FrozenAffine(self.bn_last)
        self.fused = True

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if getattr(self, "fused", False):
            return self._forward_fused(x)
        h = _unfold(self.conv1(_fold(x)), n)
        for i in range(5):
            h = getattr(self, f"layer{i}")(h)
        h = bn_relu(self.bn_last, _fold(h))
        return spatial_mean(h).view(n, -1, self.num_features)

    def _forward_fused(self, x: Tensor) -> Tensor:
        from actionlab.models.fuse import affine_relu

        n = x.shape[0]
        blocks = self.blocks()
        frames = _fold(x)
        h = self.conv1(frames)
        stem_act = getattr(self, "stem_act", None)
        a = stem_act(frames) if stem_act is not None else affine_relu(h, blocks[0].bn1.scale, blocks[0].bn1.bias)
        for i, block in enumerate(blocks):
            h, a = block.forward_fused(h, a, n, blocks[i + 1].bn1 if i + 1 < len(blocks) else self.bn_last)
        return spatial_mean(a).view(n, -1, self.num_features)


class RubiksNet(nn.Module):
    """RubiksNet classifier: ``(B, 3, T, H, W)`` clips to logits ``(B, num_classes)``.

    Args:
        tier: ``tiny`` | ``small`` | ``medium`` | ``large``.
        num_classes: classifier outputs (174 for Something-Something V2).
        num_frames: frames per clip the model is trained with (kept for the released API and
            checkpoints; any ``T`` works at run time).
        variant: ``rubiks3d`` (learnable 3D shift) or ``rubiks3d-aq`` (attention-quantized
            temporal shift + spatial 2D shift).
        shift_lr_mult: learning-rate multiplier of the shift parameters (paper: 0.01).
        normalize_grad: ActiveShift per-channel normalisation of the shift gradient.
        quantize: round shifts to integers in the forward pass (straight-through gradient).
        shift_impl: RubiksShift implementation: ``auto`` (compiled kernel when built, else the
            reference), ``kernel`` or ``reference``.
        aq_temperature: initial attention temperature of the AQ variant (released: 2.0).
        aq_budget: AQ only; the fraction of channels allowed a non-zero temporal shift
            (released checkpoint name: 0.125), ``None`` for no budget.
        aq_budget_weight: weight of the budget loss ``relu(fraction - aq_budget)``.
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
        aq_temperature: float = AQ_TEMPERATURE,
        aq_budget: float | None = 0.125,
        aq_budget_weight: float = 1.0,
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
        self.aq_budget, self.aq_budget_weight = aq_budget, aq_budget_weight
        # Layout of the frames: set by actionlab.models.memory_format.apply_memory_format.
        self.memory_format = "contiguous"
        self.backbone = RubiksNetBackbone(
            cfg.width,
            cfg.repeats,
            cfg.use_se,
            variant=variant,
            aq_temperature=aq_temperature,
            normalize_grad=normalize_grad,
            quantize=quantize,
            impl=shift_impl,
        )
        self.new_fc = nn.Linear(self.backbone.num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"RubiksNet expects clips (B, C, T, H, W), got {tuple(x.shape)}")
        features = self.backbone(clip_to_frames(x, self.memory_format))
        return self.new_fc(features).mean(dim=1)

    def replace_new_fc(self, num_classes: int) -> None:
        """A fresh classifier for fine-tuning on another label set."""
        self.new_fc = nn.Linear(self.backbone.num_features, num_classes)
        self.num_classes = num_classes

    @classmethod
    def load_pretrained(cls, path: str, **kwargs) -> "RubiksNet":
        """A model from a released RubiksNet file (``ssv2_tiny.pth.tar``, ...; both variants).

        The file is a dict with ``tier``, ``num_classes``, ``num_frames``, ``variant`` and
        ``model`` (the state dict), read with ``weights_only=True``. Keys must match exactly:
        a mismatch raises ``CheckpointMismatchError`` listing missing and unexpected keys.
        ``kwargs`` go to the constructor (e.g. ``shift_impl``).
        """
        from actionlab.models.convert.rubiksnet import load_official

        return load_official(path, cls, **kwargs)

    def shift_parameter_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if n.endswith("shift")]

    def attention_shifts(self) -> list[TemporalAttentionShift]:
        """The AQ temporal attention modules (empty for ``rubiks3d``)."""
        return [m for m in self.modules() if isinstance(m, TemporalAttentionShift)]

    def temporal_shift_fraction(self, hard: bool = False) -> Tensor:
        """Fraction of AQ channels with a non-zero temporal shift, over all blocks.

        ``hard``: count channels whose largest attention is not the centre tap; otherwise the
        expected fraction under the attention (differentiable; equal to the hard one at T=0).
        """
        layers = self.attention_shifts()
        if not layers:
            return torch.zeros(())
        if hard:
            moved = [(m.logits().argmax(dim=1) != 1).float() for m in layers]
        else:
            moved = [m.shift_probability() for m in layers]
        return torch.cat(moved).mean()

    def auxiliary_losses(self) -> dict[str, Tensor]:
        """AQ budget loss ``weight * relu(fraction - budget)`` (nothing for ``rubiks3d``)."""
        if self.variant != "rubiks3d-aq" or self.aq_budget is None or not self.aq_budget_weight:
            return {}
        excess = torch.relu(self.temporal_shift_fraction() - self.aq_budget)
        return {"aq_budget": self.aq_budget_weight * excess}

    def set_aq_temperature(self, temperature: float) -> None:
        """Set the temperature of every AQ attention (0 = hard quantisation)."""
        for m in self.attention_shifts():
            m.T.fill_(float(temperature))

    def quantize_attention(self) -> None:
        """Hard quantisation for inference: every AQ channel becomes an integer frame shift."""
        self.set_aq_temperature(0.0)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay beyond norms and biases: the shifts and the
        AQ attention logits (their softmax is scale-invariant, decay would only shrink them)."""
        names = set(self.shift_parameter_names())
        return names | {n for n, _ in self.named_parameters() if n.endswith("conv2.0.weight")}

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


def rubiksnet_tiny_aq(**kwargs) -> RubiksNet:
    return RubiksNet(tier="tiny", variant="rubiks3d-aq", **kwargs)


def rubiksnet_small_aq(**kwargs) -> RubiksNet:
    return RubiksNet(tier="small", variant="rubiks3d-aq", **kwargs)


def rubiksnet_medium_aq(**kwargs) -> RubiksNet:
    return RubiksNet(tier="medium", variant="rubiks3d-aq", **kwargs)


def rubiksnet_large_aq(**kwargs) -> RubiksNet:
    return RubiksNet(tier="large", variant="rubiks3d-aq", **kwargs)
