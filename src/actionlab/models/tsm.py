"""TSM: ResNet with a temporal shift in every residual branch (Temporal Shift Module).

Lin, Gan, Han. "TSM: Temporal Shift Module for Efficient Video Understanding", ICCV 2019.
As in the released code (``docs/models/tsm.md``): frames are folded
into the batch of a 2D ResNet; 1/8 of the channels shift one frame each way (zero-padded at
clip ends) before the first 1x1 conv of each bottleneck, the identity path untouched
("blockres"); every block for ResNet-50, every other block for ResNet-101 and deeper; a
per-frame FC after dropout 0.5 and logits averaged over T (TSN consensus).

Input ``(B, 3, T, H, W)``, output ``(B, num_classes)``. Paper input 8 x 224 x 224
(ResNet-50: 4.1 GMACs per frame, 32.9 per clip). Parameter names: ``backbone.*`` is a
torchvision ResNet, ``head.fc`` TSM's ``new_fc``; ``models/convert/tsm.py`` loads both.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from actionlab.models.heads import FrameAverageHead
from actionlab.models.layers import init_msra, norm_parameter_names
from actionlab.models.memory_format import clip_to_frames
from actionlab.models.resnet import ResNet
from actionlab.ops.temporal_shift import TemporalShift

__all__ = ["SIZES", "TSM", "tsm_r50", "tsm_r101"]


@dataclass(frozen=True)
class TSMSize:
    depth: int
    shift_every: int  # TSM's n_round: 2 when layer3 has >= 23 blocks


SIZES: dict[str, TSMSize] = {
    "r50": TSMSize(50, 1),
    "r101": TSMSize(101, 2),
}


class TSM(nn.Module):
    """TSM classifier: ``(B, 3, T, H, W)`` clips to logits ``(B, num_classes)``.

    Args:
        size: ``r50`` | ``r101``.
        num_classes: classifier outputs (174 for SSv2).
        num_frames: segments per clip (8 in the paper; the shift adapts to the input's T).
        shift_div: 1/``shift_div`` of the channels shift each way (paper: 8).
        dropout: dropout before the per-frame FC (paper: 0.5).
        fc_std: std of the FC initialisation (TSM: 0.001).
        fc_lr_mult: LR multiplier of the new FC weight (bias: twice it) when fine-tuning from
            ImageNet (TSM's ``fc_lr5``: 5); 1 to train everything at one LR.
        backbone_weights: optional torchvision ResNet state-dict file (ImageNet) loaded into
            the backbone with strict key accounting (its ``fc`` is dropped).
    """

    def __init__(
        self,
        size: str = "r50",
        num_classes: int = 174,
        num_frames: int = 8,
        shift_div: int = 8,
        dropout: float = 0.5,
        fc_std: float = 0.001,
        fc_lr_mult: float = 1.0,
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"TSM size must be one of {sorted(SIZES)}, got {size!r}")
        cfg = SIZES[size]
        self.size, self.num_classes, self.num_frames = size, num_classes, num_frames
        self.fc_lr_mult = fc_lr_mult
        # Layout of the frames: set by actionlab.models.memory_format.apply_memory_format.
        self.memory_format = "contiguous"

        def shift_factory(stage: int, index: int) -> nn.Module | None:
            return TemporalShift(num_frames, shift_div) if index % cfg.shift_every == 0 else None

        self.backbone = ResNet(cfg.depth, shift_factory)
        self.head = FrameAverageHead(self.backbone.num_features, num_classes, dropout)
        init_msra(self.head, fc_std=fc_std)
        if backbone_weights:
            from actionlab.models.convert.tsm import load_torchvision_resnet

            load_torchvision_resnet(self.backbone, backbone_weights)

    def _set_segments(self, t: int) -> None:
        for m in self.backbone.modules():
            if isinstance(m, TemporalShift):
                m.num_segments = t

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"TSM expects clips (B, C, T, H, W), got {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        self._set_segments(t)
        frames = clip_to_frames(x, self.memory_format).flatten(0, 1)
        features = self.backbone(frames).view(b, t, -1)
        return self.head(features)

    def no_weight_decay(self) -> set[str]:
        """BN parameters take no weight decay (TSM's optimiser policy)."""
        return norm_parameter_names(self)

    def lr_multipliers(self) -> dict[str, float]:
        """TSM ``fc_lr5``: new FC weight x ``fc_lr_mult``, bias x 2 ``fc_lr_mult``."""
        if self.fc_lr_mult == 1.0:
            return {}
        return {"head.fc.weight": self.fc_lr_mult, "head.fc.bias": 2 * self.fc_lr_mult}


def tsm_r50(**kwargs) -> TSM:
    """TSM with ResNet-50 (paper input 8 x 224 x 224)."""
    return TSM(size="r50", **kwargs)


def tsm_r101(**kwargs) -> TSM:
    """TSM with ResNet-101 (paper input 8 x 224 x 224)."""
    return TSM(size="r101", **kwargs)

