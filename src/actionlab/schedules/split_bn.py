"""Split (sub-)batch-norm for multigrid: a fixed number of clips per BN group.

With multigrid the per-device batch grows up to 8x (x4 more in the short cycle); the paper keeps
BN statistics over about ``bn_base_size`` clips by normalising ``k`` strided splits of the batch
separately (PySlowFast ``SubBatchNorm3d``): sample ``i`` belongs to split ``i mod k``. Each
split has its own running statistics; for evaluation and checkpoints they are folded into the
plain BN buffers (mean of the split means; mean of the split variances plus the variance of the
split means, the law of total variance), so checkpoints are always plain BN.

Input ``(N, C, T, H, W)``; ``N`` must be a multiple of the split count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SplitBatchNorm3d", "convert_split_bn", "split_bn_modules", "set_num_splits", "fold_split_bn", "num_splits_for"]


class SplitBatchNorm3d(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with ``num_splits`` strided BN groups in training (1 = plain BN).

    State dict keys and parameters are those of ``nn.BatchNorm3d``; the split statistics are
    not persistent (they are re-tiled from the folded ones after a restart).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
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

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c = x.shape[:2]
        k = self.num_splits
        if n % k:
            raise ValueError(
                f"split batch-norm with {k} splits got a batch of {n} clips; the per-device batch "
                "must be a multiple of the split count (use drop_last, or set schedule.split_bn=false)"
            )
        momentum = 0.1 if self.momentum is None else self.momentum
        y = F.batch_norm(
            x.reshape(n // k, c * k, *x.shape[2:]), self.split_running_mean, self.split_running_var,
            None, None, True, momentum, self.eps,
        ).view_as(x)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        if self.affine:
            shape = (1, c) + (1,) * (x.ndim - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _replace(module: nn.BatchNorm3d) -> SplitBatchNorm3d:
    new = SplitBatchNorm3d(
        module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
    )
    # The same Parameter and buffer objects: optimisers, EMA and checkpoints are unaffected.
    for name in ("weight", "bias"):
        setattr(new, name, getattr(module, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        new._buffers[name] = module._buffers.get(name)
    new.train(module.training)
    return new


def convert_split_bn(model: nn.Module) -> int:
    """Replace every ``nn.BatchNorm3d`` (whatever its name) by ``SplitBatchNorm3d`` in place;
    returns how many there are now. SyncBatchNorm and 1D/2D norms are left as they are."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm3d:
                setattr(parent, name, _replace(child))
            if isinstance(getattr(parent, name), SplitBatchNorm3d):
                count += 1
    return count


def split_bn_modules(model: nn.Module) -> list[SplitBatchNorm3d]:
    return [m for m in model.modules() if isinstance(m, SplitBatchNorm3d)]


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
