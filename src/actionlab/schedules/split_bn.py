"""Split (sub-)batch-norm for multigrid: a fixed number of clips per BN group.

With multigrid the per-device batch grows up to 8x (x4 more in the short cycle); the paper keeps
BN statistics over about ``bn_base_size`` clips by normalising ``k`` strided splits of the batch
separately (PySlowFast ``SubBatchNorm3d``): clip ``i`` belongs to split ``i mod k``. Each
split has its own running statistics; for evaluation and checkpoints they are folded into the
plain BN buffers (mean of the split means; mean of the split variances plus the variance of the
split means, the law of total variance), so checkpoints are always plain BN.

- ``SplitBatchNorm3d``: input ``(N, C, T, H, W)``; ``N`` must be a multiple of the split count.
- ``SplitBatchNorm2d``: the 2D backbones (RubiksNet, TSM) fold time into the batch, so their BN
  sees ``(N*T, C, H, W)``, clip-major. The split is still by clip (all ``T`` frames of a clip in
  one group, as plain BN pools over frames); ``T`` comes from the clip the model is called with
  (a forward pre-hook that ``convert_split_bn`` installs).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SplitBatchNorm2d",
    "SplitBatchNorm3d",
    "convert_split_bn",
    "fold_split_bn",
    "num_splits_for",
    "set_num_splits",
    "split_bn_modules",
]

_FRAMES_HOOK = "_actionlab_split_bn_frames_hook"


class _SplitStats:
    """Split running statistics and their folding, shared by the 2D and 3D split BNs.

    State dict keys and parameters are those of the wrapped ``nn.BatchNorm*d``; the split
    statistics are not persistent (they are re-tiled from the folded ones after a restart).
    """

    num_splits: int
    running_mean: Tensor | None
    running_var: Tensor | None

    def _init_splits(self) -> None:
        self.num_splits = 1
        self.register_buffer("split_running_mean", None, persistent=False)
        self.register_buffer("split_running_var", None, persistent=False)

    def set_num_splits(self, num_splits: int) -> None:
        """Change the split count; the split statistics start as copies of the folded ones."""
        num_splits = int(num_splits)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        if num_splits == self.num_splits and (num_splits == 1 or self.split_running_mean is not None):
            return
        self.fold()
        self.num_splits = num_splits
        if num_splits > 1 and self.track_running_stats:
            self.split_running_mean = self.running_mean.detach().repeat(num_splits).clone()
            self.split_running_var = self.running_var.detach().repeat(num_splits).clone()
        else:
            self.split_running_mean = self.split_running_var = None

    @torch.no_grad()
    def fold(self) -> None:
        """Write the aggregated split statistics into ``running_mean`` / ``running_var``."""
        if self.num_splits == 1 or self.split_running_mean is None:
            return
        k = self.num_splits
        means = self.split_running_mean.view(k, -1)
        variances = self.split_running_var.view(k, -1)
        mean = means.mean(0)
        self.running_mean.copy_(mean)
        self.running_var.copy_(variances.mean(0) + ((means - mean) ** 2).mean(0))

    def _split_forward(self, grouped: Tensor) -> Tensor:
        """Training BN of ``grouped`` (``k x C`` channels: one block of ``C`` per split)."""
        momentum = 0.1 if self.momentum is None else self.momentum
        y = F.batch_norm(
            grouped, self.split_running_mean, self.split_running_var, None, None, True, momentum, self.eps
        )
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        return y

    def _affine(self, y: Tensor) -> Tensor:
        """The one ``(gamma, beta)`` of size ``C`` that all splits share."""
        if not self.affine:
            return y
        shape = (1, y.shape[1]) + (1,) * (y.ndim - 2)
        return y * self.weight.view(shape) + self.bias.view(shape)

    def _check_batch(self, clips: int) -> None:
        if clips % self.num_splits:
            raise ValueError(
                f"split batch-norm with {self.num_splits} splits got a batch of {clips} clips; the "
                "per-device batch must be a multiple of the split count (use drop_last, or set "
                "schedule.split_bn=false)"
            )


class SplitBatchNorm3d(_SplitStats, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with ``num_splits`` strided BN groups in training (1 = plain BN)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_splits()

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c = x.shape[:2]
        self._check_batch(n)
        k = self.num_splits
        # (N, C, ...) -> (N/k, k*C, ...): clip i lands in channel block i mod k, no copy.
        y = self._split_forward(x.reshape(n // k, c * k, *x.shape[2:])).view_as(x)
        return self._affine(y)


class SplitBatchNorm2d(_SplitStats, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over time-folded frames ``(N*T, C, H, W)`` with ``num_splits``
    strided groups of clips in training (1 = plain BN); ``clip_frames`` is ``T``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_splits()
        self.clip_frames = 1

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        images, c, h, w = x.shape
        t, k = max(1, self.clip_frames), self.num_splits
        if images % t:
            raise ValueError(f"split batch-norm: {images} frames are not whole clips of {t} frames")
        n = images // t
        self._check_batch(n)
        # clip a*k + j, frame f -> split j: (N/k, k, T, C) -> (N/k, T, k, C) -> (N/k*T, k*C).
        grouped = x.view(n // k, k, t, c, h, w).transpose(1, 2).reshape(n // k * t, k * c, h, w)
        y = self._split_forward(grouped)
        y = y.view(n // k, t, k, c, h, w).transpose(1, 2).reshape(images, c, h, w)
        return self._affine(y)


_SPLIT_OF = {nn.BatchNorm3d: SplitBatchNorm3d, nn.BatchNorm2d: SplitBatchNorm2d}


def _replace(module: nn.modules.batchnorm._BatchNorm) -> _SplitStats:
    new = _SPLIT_OF[type(module)](
        module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
    )
    # The same Parameter and buffer objects: optimisers, EMA and checkpoints are unaffected.
    for name in ("weight", "bias"):
        setattr(new, name, getattr(module, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        new._buffers[name] = module._buffers.get(name)
    new.train(module.training)
    return new


def _record_clip_frames(norms: list[SplitBatchNorm2d], model: nn.Module, args: tuple) -> None:
    clips = args[0] if args else None
    if isinstance(clips, Tensor) and clips.ndim == 5:  # (B, C, T, H, W)
        for m in norms:
            m.clip_frames = int(clips.shape[2])


def convert_split_bn(model: nn.Module) -> int:
    """Replace every ``nn.BatchNorm3d`` and ``nn.BatchNorm2d`` (whatever its name) by its split
    version in place; returns how many there are now. SyncBatchNorm and 1D norms are left as
    they are. ``model`` takes clips ``(B, C, T, H, W)``; a 2D BN is taken to see its frames
    folded into the batch, clip-major (every 2D backbone of the lab does this)."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _SPLIT_OF:
                setattr(parent, name, _replace(child))
            if isinstance(getattr(parent, name), _SplitStats):
                count += 1
    norms_2d = [m for m in model.modules() if isinstance(m, SplitBatchNorm2d)]
    if norms_2d and not getattr(model, _FRAMES_HOOK, False):
        model.register_forward_pre_hook(functools.partial(_record_clip_frames, norms_2d))
        setattr(model, _FRAMES_HOOK, True)
    return count


def split_bn_modules(model: nn.Module) -> list[_SplitStats]:
    return [m for m in model.modules() if isinstance(m, _SplitStats)]


def set_num_splits(model: nn.Module, num_splits: int) -> None:
    for m in split_bn_modules(model):
        m.set_num_splits(num_splits)


def fold_split_bn(model: nn.Module) -> None:
    for m in split_bn_modules(model):
        m.fold()


def num_splits_for(batch_per_device: int, bn_base_size: int) -> int:
    """Splits so that each BN group holds about ``bn_base_size`` clips (PySlowFast
    ``int(batch / bn_base_size)``), lowered to a divisor of the batch so every batch splits."""
    k = max(1, batch_per_device // max(1, bn_base_size))
    while batch_per_device % k:
        k -= 1
    return k
