"""Per-step learning-rate schedules with linear warmup, built from epochs.

Each is a Hydra ``_partial_`` that ``VideoClassifier`` completes with the optimiser and the
run's ``total_steps`` and ``steps_per_epoch``; groups keep their own base LR (LR multipliers).
"""

from __future__ import annotations

import math
from typing import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupCosineLR", "WarmupMultiStepLR"]


class _WarmupLR(LRScheduler):
    def __init__(self, optimizer: Optimizer, warmup_steps: int, warmup_start: float) -> None:
        self.warmup_steps = max(0, int(warmup_steps))
        self.warmup_start = warmup_start
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step < self.warmup_steps:
            scale = self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps
        else:
            scale = self.factor(step)
        return [base * scale for base in self.base_lrs]


class WarmupCosineLR(_WarmupLR):
    """Linear warmup over ``warmup_epochs``, then cosine decay to ``min_lr_ratio`` x base LR."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        steps_per_epoch: int,
        warmup_epochs: float = 0.0,
        warmup_start: float = 0.1,
        min_lr_ratio: float = 0.0,
    ) -> None:
        self.total_steps = max(1, int(total_steps))
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, round(warmup_epochs * steps_per_epoch), warmup_start)

    def factor(self, step: int) -> float:
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupMultiStepLR(_WarmupLR):
    """Linear warmup, then LR x ``gamma`` at each epoch in ``milestones`` (TSM: 20, 40)."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        steps_per_epoch: int,
        milestones: Sequence[int] = (20, 40),
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        warmup_start: float = 0.1,
    ) -> None:
        self.milestone_steps = sorted(int(m * steps_per_epoch) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, round(warmup_epochs * steps_per_epoch), warmup_start)

    def factor(self, step: int) -> float:
        return self.gamma ** sum(step >= m for m in self.milestone_steps)
