"""ResNet-50/101/152 (bottleneck, "v1.5": stride on the 3x3) with torchvision parameter names.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition", CVPR 2016. Written here
(the lab does not depend on torchvision) with the same module names - ``conv1, bn1,
layer{1..4}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.{0,1}}`` - so ImageNet state dicts
load key for key (``models/convert/tsm.py``). The ``fc`` layer is left to the caller's head.

Input ``(N, 3, H, W)`` frames; :meth:`ResNet.forward_features` returns pooled ``(N, 2048)``.
Each bottleneck takes an optional parameter-free ``shift`` module applied to the residual
branch input only (TSM's residual shift).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from actionlab.models.layers import init_msra, mark_final_bn
from actionlab.ops.batch_norm_act import bn_relu

__all__ = ["DEPTHS", "Bottleneck", "ResNet"]

DEPTHS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4) bottleneck on ``(N, C, H, W)``, torchvision layout."""

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, shift: nn.Module | None = None
    ) -> None:
        super().__init__()
        out_planes = planes * EXPANSION
        self.shift = shift
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = mark_final_bn(nn.BatchNorm2d(out_planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        h = x if self.shift is None else self.shift(x)
        h = bn_relu(self.bn1, self.conv1(h), self.relu)
        h = bn_relu(self.bn2, self.conv2(h), self.relu)
        h = self.bn3(self.conv3(h))
        return self.relu(h + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet trunk without the classifier.

    Args:
        depth: 50, 101 or 152.
        shift_factory: ``(stage, block_index) -> module | None``; the module is applied to the
            residual branch input of that block (TSM); ``None`` leaves the block plain.
        zero_init_residual: start every block as the identity (last BN scale 0); torchvision
            and TSM default to ``False``.
    """

    def __init__(
        self,
        depth: int = 50,
        shift_factory: Callable[[int, int], nn.Module | None] | None = None,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = 64
        for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), DEPTHS[depth])):
            blocks = []
            for i in range(count):
                shift = shift_factory(stage, i) if shift_factory is not None else None
                stride = 2 if i == 0 and stage > 0 else 1
                blocks.append(Bottleneck(in_planes, planes, stride, shift))
                in_planes = planes * EXPANSION
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.num_features = in_planes
        init_msra(self, zero_init_final_bn=zero_init_residual)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, 3, H, W)`` frames to globally pooled features ``(N, 2048)``."""
        x = self.maxpool(bn_relu(self.bn1, self.conv1(x), self.relu))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # sum / HW, not mean: its gradient is a broadcast view, so channels-last training keeps
        # its layout (mean's gradient is materialised contiguous).
        return x.sum(dim=(2, 3)) / (x.shape[2] * x.shape[3])

    forward = forward_features
