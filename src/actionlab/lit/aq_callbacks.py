"""Temperature annealing and hard quantisation of RubiksNet-AQ attention shifts.

RubiksNet-AQ (Fan et al., ECCV 2020) learns per-channel 3-tap temporal attention; annealing the
softmax temperature drives it to one-hot, i.e. an integer {-1, 0, +1} frame shift per channel.
The release ships no schedule (a fixed ``T = 2.0``), so ours is explicit: the temperature
goes from ``t_start`` to ``t_end`` over training (exponential by default, linear or cosine on
request), per optimiser step, then the attention is hard-quantised (``T = 0``) for the last
step's validation, the checkpoints saved after it and inference.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

from actionlab.models.rubiksnet import TemporalAttentionShift

__all__ = ["AQTemperatureAnneal", "temperature_at", "SCHEDULES"]

SCHEDULES = ("exp", "linear", "cosine")


def temperature_at(progress: float, t_start: float, t_end: float, schedule: str = "exp") -> float:
    """Temperature at ``progress`` in [0, 1] of training."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "exp":
        return t_start * (t_end / t_start) ** p
    if schedule == "linear":
        return t_start + (t_end - t_start) * p
    if schedule == "cosine":
        return t_end + 0.5 * (t_start - t_end) * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"AQ temperature schedule must be one of {SCHEDULES}, got {schedule!r}")


def _attention_modules(module: nn.Module) -> list[TemporalAttentionShift]:
    return [m for m in module.modules() if isinstance(m, TemporalAttentionShift)]


class AQTemperatureAnneal(L.Callback):
    """Anneal every ``TemporalAttentionShift`` temperature, then quantise hard at the end.

    Args:
        t_start: temperature at the first step (released AttentionShift: 2.0).
        t_end: temperature at the last step (> 0; exponential annealing needs it positive).
        schedule: ``exp`` | ``linear`` | ``cosine``.
        hard_at_end: set ``T = 0`` (one-hot attention) once the last training step is done,
            before the final validation and checkpoint, and again at the end of training.
        log: log ``train/aq_temperature`` and ``train/aq_shift_fraction`` (hard count).
    """

    def __init__(
        self,
        t_start: float = 2.0,
        t_end: float = 0.01,
        schedule: str = "exp",
        hard_at_end: bool = True,
        log: bool = True,
    ) -> None:
        if not (t_start > 0 and t_end > 0):
            raise ValueError(f"AQ temperatures must be > 0, got t_start={t_start}, t_end={t_end}")
        temperature_at(0.0, t_start, t_end, schedule)  # validates the schedule name
        self.t_start, self.t_end, self.schedule = t_start, t_end, schedule
        self.hard_at_end, self.log = hard_at_end, log

    @staticmethod
    def _set(pl_module: L.LightningModule, temperature: float) -> int:
        layers = _attention_modules(pl_module)
        for m in layers:
            m.T.fill_(temperature)
        return len(layers)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not _attention_modules(pl_module):
            raise ValueError(
                "AQTemperatureAnneal needs a RubiksNet-AQ model (model=rubiks_*_aq); the model "
                "has no TemporalAttentionShift layers. Remove callbacks=aq_anneal or change the model."
            )

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        total = max(int(trainer.estimated_stepping_batches), 1)
        progress = trainer.global_step / max(total - 1, 1)
        temperature = temperature_at(progress, self.t_start, self.t_end, self.schedule)
        self._set(pl_module, temperature)
        if self.log:
            pl_module.log("train/aq_temperature", temperature, on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.hard_at_end and trainer.global_step >= int(trainer.estimated_stepping_batches):
            self._set(pl_module, 0.0)
        if self.log:
            layers = _attention_modules(pl_module)
            with torch.no_grad():
                moved = torch.cat([(m.logits().argmax(dim=1) != 1).float() for m in layers])
            pl_module.log("train/aq_shift_fraction", moved.mean(), on_step=True, on_epoch=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.hard_at_end:
            self._set(pl_module, 0.0)
