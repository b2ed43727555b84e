"""Training callbacks: speed monitor, W&B media, run identity in checkpoints, memory format.

(The RubiksNet-AQ temperature annealing lives in ``actionlab.lit.aq_callbacks``.)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

__all__ = [
    "SpeedMonitor", "WandbMedia", "RunIdCheckpoint", "MemoryFormat", "RetainCpuMemory", "wandb_loggers",
    "RUN_ID_KEY",
]

log = logging.getLogger(__name__)
RUN_ID_KEY = "actionlab_wandb_run_id"


def wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SpeedMonitor(Callback):
    """Clips/s of reading, forward and backward, the data-wait fraction and GPU memory.

    Every step costs two ``perf_counter`` calls (data wait and wall time, never a CUDA sync).
    The per-phase split (forward, backward) is measured on one step per logging interval only,
    with a CUDA synchronisation at the phase boundaries of that step, so the default run keeps
    its speed. Logged (and shown in the progress bar) every ``trainer.log_every_n_steps``:
    ``speed/clips_per_s`` (end to end), ``speed/read_clips_per_s`` (clips / data-wait time),
    ``speed/forward_clips_per_s``, ``speed/backward_clips_per_s``, ``speed/data_wait``
    (fraction of wall time spent waiting for batches), ``speed/gpu_mem_gb`` (peak allocated).

    Args:
        interval: steps per report; None uses ``trainer.log_every_n_steps``.
        prog_bar: also show clips/s and data-wait in the progress bar.
    """

    def __init__(self, interval: int | None = None, prog_bar: bool = True) -> None:
        self.interval = interval
        self.prog_bar = prog_bar
        self._reset()

    def _reset(self) -> None:
        self._clips = 0
        self._wait = 0.0
        self._window_start: float | None = None
        self._batch_end: float | None = None
        self._profile_step = False
        self._t: dict[str, float] = {}

    def _every(self, trainer: L.Trainer) -> int:
        return max(1, self.interval or trainer.log_every_n_steps or 50)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._window_start is None:
            self._window_start = now
        elif self._batch_end is not None:
            self._wait += now - self._batch_end
        # Profile the last step of the window (its data wait is already measured).
        self._profile_step = (batch_idx + 1) % self._every(trainer) == 0
        if self._profile_step:
            _sync(pl_module.device)
            self._t = {"start": time.perf_counter()}

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if self._profile_step:
            _sync(pl_module.device)
            self._t["forward"] = time.perf_counter()

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._profile_step:
            _sync(pl_module.device)
            self._t["backward"] = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        clips = _batch_size(batch)
        self._clips += clips
        self._batch_end = time.perf_counter()
        if not self._profile_step:
            return
        wall = self._batch_end - (self._window_start or self._batch_end)
        metrics = {"speed/data_wait": self._wait / wall if wall > 0 else 0.0}
        if wall > 0:
            metrics["speed/clips_per_s"] = self._clips / wall
        if self._wait > 0:
            metrics["speed/read_clips_per_s"] = self._clips / self._wait
        t = self._t
        if "forward" in t and t["forward"] > t["start"]:
            metrics["speed/forward_clips_per_s"] = clips / (t["forward"] - t["start"])
        if "backward" in t and "forward" in t and t["backward"] > t["forward"]:
            metrics["speed/backward_clips_per_s"] = clips / (t["backward"] - t["forward"])
        if pl_module.device.type == "cuda":
            metrics["speed/gpu_mem_gb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        for name, value in metrics.items():
            shown = self.prog_bar and name in ("speed/clips_per_s", "speed/data_wait")
            pl_module.log(name, float(value), on_step=True, on_epoch=False, prog_bar=shown, logger=True)
        self._clips, self._wait = 0, 0.0
        self._window_start = self._batch_end
        self._profile_step = False


def _batch_size(batch: Any) -> int:
    clips = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(clips.shape[0]) if hasattr(clips, "shape") else 0


class RunIdCheckpoint(Callback):
    """Stores the W&B run id in every checkpoint so ``ckpt_path=...`` resumes the same run. The id
    is remembered: a preemption's save comes after W&B was detached from the trainer
    (``actionlab.lit.preemption``) and must still carry it."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remember(trainer)

    def _remember(self, trainer: L.Trainer) -> None:
        for logger in wandb_loggers(trainer):
            if logger.version:
                self.run_id = str(logger.version)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._remember(trainer)
        if self.run_id:
            checkpoint[RUN_ID_KEY] = self.run_id


class MemoryFormat(Callback):
    """Applies the ``memory_format`` setting (``auto`` | ``contiguous`` | ``channels_last``) to
    the backbone with :func:`actionlab.models.memory_format.apply_memory_format`, for the device
    the trainer runs on, at setup: before the module compiles its backbone and before the
    weights move to the device (``.to`` keeps the format)."""

    def __init__(self, memory_format: str = "auto") -> None:
        from actionlab.models.memory_format import FORMATS

        if memory_format not in FORMATS:
            raise ValueError(f"memory_format must be one of {FORMATS}, got {memory_format!r}")
        self.memory_format = memory_format
        self.applied: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from actionlab.models.memory_format import apply_memory_format

        model = getattr(pl_module, "model", pl_module)
        self.applied = apply_memory_format(model, self.memory_format, trainer.strategy.root_device)
        log.info("memory format: %s (%s)", self.applied, self.memory_format)


class RetainCpuMemory(Callback):
    """On CPU, keeps freed activation buffers in the process
    (:func:`actionlab.utils.cpu_memory.retain_freed_memory`) so every step does not page-fault
    and zero its activations again (measured: a RubiksNet-Tiny train step 1.25x faster)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type == "cpu":
            from actionlab.utils.cpu_memory import retain_freed_memory

            retain_freed_memory()


class WandbMedia(Callback):
    """W&B media: sample training clips as videos once per run, and the validation confusion
    matrix as an image every validation. Does nothing without a ``WandbLogger``; costs nothing
    in training steps after the first (a forward hook is attached during validation only).

    Args:
        num_videos: training clips logged (from the first training batch).
        fps: frame rate of the logged videos.
        max_classes: above this class count the confusion image is skipped (rendering cost).
    """

    def __init__(self, num_videos: int = 4, fps: int = 4, max_classes: int = 400) -> None:
        self.num_videos = num_videos
        self.fps = fps
        self.max_classes = max_classes
        self._videos_logged = False
        self._hook: Any = None
        self._labels: Tensor | None = None
        self._cm: np.ndarray | None = None

    def _active(self, trainer: L.Trainer) -> bool:
        return bool(wandb_loggers(trainer)) and trainer.is_global_zero

    # -- sample clips ----------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._videos_logged or not self._active(trainer):
            return
        self._videos_logged = True
        datamodule = trainer.datamodule
        mean = torch.tensor(getattr(datamodule, "mean", (0.0, 0.0, 0.0))).view(1, 3, 1, 1, 1)
        std = torch.tensor(getattr(datamodule, "std", (1.0, 1.0, 1.0))).view(1, 3, 1, 1, 1)
        clips = batch[0][: self.num_videos].detach().float().cpu()
        if clips.ndim != 5 or clips.shape[1] != 3:
            return
        pixels = ((clips * std + mean).clamp(0, 1) * 255).to(torch.uint8)  # (B, C, T, H, W)
        labels = batch[1][: self.num_videos].tolist()
        names = getattr(datamodule, "class_names", None) or []
        captions = [names[i] if i < len(names) else str(i) for i in labels]
        # GIFs written with Pillow: wandb.Video would need moviepy to encode arrays itself.
        out = Path(trainer.default_root_dir) / "media"
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, clip in enumerate(pixels):
            frames = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in clip.unbind(1)]
            path = out / f"train_sample_{i}.gif"
            frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / self.fps), loop=0)
            paths.append(str(path))
        for logger in wandb_loggers(trainer):
            logger.log_video("train/samples", paths, step=trainer.global_step, caption=captions)

    # -- confusion matrix ------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        num_classes = int(getattr(pl_module, "num_classes", 0))
        if trainer.sanity_checking or not wandb_loggers(trainer) or not 0 < num_classes <= self.max_classes:
            return
        self._cm = np.zeros((num_classes, num_classes), dtype=np.int64)

        def hook(module: Any, args: Any, output: Tensor) -> None:
            # Under DDP, Lightning also calls the module with validation_step as its forward
            # (returning None): only the logits of self(clips) count.
            if not isinstance(output, Tensor):
                return
            if self._labels is not None and output.ndim == 2 and output.shape[0] == self._labels.shape[0]:
                from actionlab.reports import confusion_matrix

                self._cm += confusion_matrix(output.argmax(-1).cpu(), self._labels.cpu(), num_classes)

        self._hook = pl_module.register_forward_hook(hook)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._labels = batch[1] if self._hook is not None else None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is None:
            return
        self._hook.remove()
        self._hook, self._labels = None, None
        cm = torch.as_tensor(self._cm)
        if trainer.world_size > 1:
            cm = pl_module.all_gather(cm.to(pl_module.device)).sum(0).cpu()
        if not trainer.is_global_zero:
            return
        from actionlab.reports import _plot_confusion

        out = Path(trainer.default_root_dir) / "media"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"val_confusion_epoch{trainer.current_epoch:03d}.png"
        names = _class_names(trainer, cm.shape[0])
        _plot_confusion(cm.numpy(), names, path, f"validation, epoch {trainer.current_epoch}")
        for logger in wandb_loggers(trainer):
            logger.log_image("val/confusion_matrix", [str(path)], step=trainer.global_step)


def _class_names(trainer: L.Trainer, k: int) -> Sequence[str]:
    names = list(getattr(trainer.datamodule, "class_names", None) or [])
    return names if len(names) == k else [str(i) for i in range(k)]
