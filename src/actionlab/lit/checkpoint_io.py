"""Checkpoints that a crash cannot lose: atomic writes, and a ``last.ckpt`` at every save point."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from actionlab.models.convert.common import atomic_torch_save

__all__ = ["AtomicCheckpointIO", "ResumableCheckpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a crash never leaves a torn file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        if "://" in str(path):  # remote filesystems: Lightning's own transactional save
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` follows every epoch, not only the improving ones.

    Since Lightning 2.6, ``save_last=True`` writes ``last.ckpt`` only when a top-k checkpoint
    is written at the same step: with ``monitor=val/acc, save_top_k=1`` a run whose accuracy
    stopped improving keeps a ``last.ckpt`` of its best epoch, and a resume after a crash
    silently retrains every epoch since. This writes ``last.ckpt`` at each epoch-end save point
    that did not write one (the top-k logic is Lightning's, unchanged).
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def _save_last_if_stale(self, trainer: L.Trainer) -> None:
        # _should_skip_saving_checkpoint is also true when this step was just saved (last included).
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
