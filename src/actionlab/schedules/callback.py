"""Lightning callbacks that own the training loader's order and shape.

``ResumableSampling`` (always on, added by ``actionlab.train``): the training batches of epoch
``e`` are a function of ``(seed, e)``, and a run restarted from a mid-epoch checkpoint skips the
batches it already trained on, so it continues exactly where it stopped.

``Multigrid`` (``conf/schedule/{long_cycle,short_cycle,multigrid}.yaml``): before each training
loader is built it sets the datamodule's frames, crop, jitter range and global batch for the
epoch's long-cycle stage, installs the short-cycle batch sampler, sets the split-BN group count,
and per iteration sets the LR to ``base LR x relative LR of the stage`` (with linear warmup).
The loader hook runs when Lightning requests the loader (``reload_dataloaders_every_n_epochs=1``),
so the shape is right whatever restart path Lightning takes.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback

from actionlab.schedules.multigrid import LONG_CYCLE_FACTORS, SHORT_CYCLE_FACTORS, MultigridSchedule, steps_from_fractions
from actionlab.schedules.samplers import ResumableBatchSampler, SamplerState, ShortCycleBatchSampler
from actionlab.schedules.split_bn import convert_split_bn, fold_split_bn, num_splits_for, set_num_splits

__all__ = ["ResumableSampling", "Multigrid"]

log = logging.getLogger(__name__)

_WRAPPED = "_actionlab_loader_hook"


class ResumableSampling(Callback):
    """Seeded per-epoch order and mid-epoch skip for the training loader (exact resume).

    Args:
        seed: order seed; None takes ``PL_GLOBAL_SEED`` (set by ``seed_everything``) or 0.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.state = SamplerState(seed=int(seed if seed is not None else os.environ.get("PL_GLOBAL_SEED", 0)))
        # (epoch, batches to skip) of the first loader built after a restore
        self._resume: tuple[int, int] | None = None
        self._trainer: L.Trainer | None = None

    # -- loader hook ---------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None or getattr(datamodule, _WRAPPED, None) is not None:
            return
        original = datamodule.train_dataloader

        @functools.wraps(original)
        def train_dataloader() -> Any:
            self.before_train_loader(trainer, datamodule)
            return original()

        datamodule.train_dataloader = train_dataloader
        setattr(datamodule, _WRAPPED, self)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage == "fit" and datamodule is not None and getattr(datamodule, _WRAPPED, None) is self:
            del datamodule.train_dataloader  # back to the class method
            delattr(datamodule, _WRAPPED)

    def loader_epoch(self, trainer: L.Trainer) -> int:
        """The epoch the next training loader serves. Right after a restore that is the
        checkpoint's, even when Lightning builds the loader before restoring its loops (it does,
        to estimate the steps of an LR schedule, and then keeps that loader)."""
        return self._resume[0] if self._resume is not None else trainer.current_epoch

    def before_train_loader(self, trainer: L.Trainer, datamodule: Any) -> None:
        """Called right before ``datamodule.train_dataloader()`` builds the loader of an epoch."""
        self.state.epoch = self.loader_epoch(trainer)
        self.state.skip = self._resume[1] if self._resume is not None else 0
        self._resume = None
        if hasattr(datamodule, "batch_sampler_factory"):
            datamodule.batch_sampler_factory = self.batch_sampler_factory(trainer, datamodule)
        elif self.state.skip:  # pragma: no cover - datamodules without the multigrid hooks
            log.warning("%s has no batch_sampler_factory: a mid-epoch resume restarts the epoch order",
                        type(datamodule).__name__)

    def batch_sampler_factory(self, trainer: L.Trainer, datamodule: Any) -> Callable[..., Any]:
        return functools.partial(ResumableBatchSampler, state=self.state)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Loaders that are not rebuilt every epoch are re-iterated after this hook.
        self.state.epoch = trainer.current_epoch

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        if trainer is None:
            return {"seed": self.state.seed}
        return {
            "seed": self.state.seed,
            "epoch": trainer.current_epoch,
            "batches_done": int(trainer.fit_loop.epoch_loop.batch_progress.current.ready),
            "batches_in_epoch": trainer.num_training_batches,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.state.seed = int(state_dict.get("seed", self.state.seed))
        if "epoch" not in state_dict:
            return
        epoch, done = int(state_dict["epoch"]), int(state_dict.get("batches_done", 0))
        total = int(state_dict.get("batches_in_epoch", 0) or 0)
        if 0 < done < total:  # inside an epoch: the same epoch, minus the batches trained
            self._resume = (epoch, done)
        else:  # at an epoch's end the restored loader serves the next epoch
            self._resume = (epoch + 1 if total and done >= total else epoch, 0)


class Multigrid(ResumableSampling):
    """Multigrid long and/or short cycles (Wu et al., CVPR 2020) on a ``VideoDataModule``.

    Args:
        long_cycle, short_cycle: which cycles run (``multigrid`` = both).
        base_epochs: epochs of the base recipe (``trainer.max_epochs``); the run trains
            ``max_epochs`` (about ``epoch_factor x base_epochs``), which ``actionlab.train`` passes
            to the Trainer.
        base_batch_size, base_num_frames, base_crop_size: the base shape ``(B0, T0, S0)``.
        steps: stepwise LR epochs ``[0, s1, ..., sn]`` of the base recipe; when None,
            ``step_fractions`` of ``base_epochs``.
        epoch_factor, gamma, long_cycle_factors, short_cycle_factors: see ``MultigridSchedule``.
        bn_base_size: clips per split-BN group (8); ``split_bn`` turns split BN on (long cycle).
        warmup_epochs, warmup_start: linear LR warmup from ``warmup_start x base LR`` to the
            scheduled LR at ``warmup_epochs`` (long cycle; the LR scheduler must be ``none``).
        lr_scaling: stage LR against its batch factor: ``linear`` (PySlowFast), ``sqrt``, ``none``.
        seed: sampler seed (see ``ResumableSampling``).
    """

    def __init__(
        self,
        long_cycle: bool = True,
        short_cycle: bool = True,
        base_epochs: int = 100,
        base_batch_size: int = 64,
        base_num_frames: int = 16,
        base_crop_size: int = 224,
        steps: Sequence[int] | None = None,
        step_fractions: Sequence[float] = (0.0, 0.393, 0.644, 0.82),
        epoch_factor: float = 1.5,
        gamma: float = 0.1,
        long_cycle_factors: Sequence[Sequence[float]] = LONG_CYCLE_FACTORS,
        short_cycle_factors: Sequence[float] = SHORT_CYCLE_FACTORS,
        bn_base_size: int = 8,
        split_bn: bool = True,
        warmup_epochs: float = 0.0,
        warmup_start: float = 0.1,
        lr_scaling: str = "linear",
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        steps = list(steps) if steps is not None else steps_from_fractions(step_fractions, base_epochs)
        self.schedule = MultigridSchedule(
            batch_size=base_batch_size, num_frames=base_num_frames, crop_size=base_crop_size,
            max_epoch=base_epochs, steps=steps, long_cycle=long_cycle, short_cycle=short_cycle,
            epoch_factor=epoch_factor, gamma=gamma, long_factors=long_cycle_factors,
            short_factors=short_cycle_factors, lr_scaling=lr_scaling,
        )
        self.bn_base_size = bn_base_size
        self.split_bn = split_bn and long_cycle
        self.warmup_epochs = warmup_epochs
        self.warmup_start = warmup_start
        self._base_scale: Any = None
        self.num_splits = 1

    @property
    def max_epochs(self) -> int:
        return self.schedule.total_epochs

    @property
    def trainer_overrides(self) -> dict[str, Any]:
        """Trainer arguments the schedule needs (``actionlab.train`` passes them)."""
        return {"max_epochs": self.max_epochs, "reload_dataloaders_every_n_epochs": 1}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        missing = [a for a in ("num_frames", "crop_size", "batch_size") if not hasattr(datamodule, a)]
        if missing:
            raise TypeError(f"schedule=multigrid needs a datamodule with {missing}; use data=<a VideoDataModule config>")
        if self.schedule.short_cycle and not hasattr(datamodule, "batch_sampler_factory"):
            raise TypeError("the multigrid short cycle needs VideoDataModule.batch_sampler_factory; "
                            "update actionlab or use schedule=long_cycle")
        self._check_dataset_size(trainer, datamodule)
        if self._base_scale is None:
            self._base_scale = getattr(datamodule, "train_scale_size", None)
        if self.split_bn:
            if getattr(trainer._accelerator_connector, "sync_batchnorm", False):
                raise ValueError("split batch-norm and trainer.sync_batchnorm=true exclude each other: "
                                 "set trainer.sync_batchnorm=false or schedule.split_bn=false")
            model = getattr(pl_module, "model", pl_module)
            if convert_split_bn(model) == 0:
                log.info("multigrid: %s has no BatchNorm2d/3d, split BN is off", type(model).__name__)
                self.split_bn = False

    def _check_dataset_size(self, trainer: L.Trainer, datamodule: Any) -> None:
        """Fail before training when a stage's largest batch exceeds the training set: the
        loader drops incomplete batches, so that stage would silently train on nothing."""
        train_set = getattr(datamodule, "datasets", {}).get("train")
        if train_set is None:
            return
        world = max(1, trainer.world_size)
        clips = len(train_set) // world
        for index, stage in enumerate(self.schedule.stages):
            if stage.epochs == 0:
                continue
            batch = stage.shape.b * self.schedule.batch_size // world
            factor = max(self.schedule.short_cycle_batches(stage.start)[1]) if self.schedule.short_cycle else 1
            if batch * factor > clips:
                raise ValueError(
                    f"schedule=multigrid: stage {index} (epochs {stage.start}-{stage.end}) needs batches "
                    f"of {batch * factor} clips per device (data.batch_size={self.schedule.batch_size} x "
                    f"long-cycle factor {stage.shape.b} x short-cycle factor {factor}), but the training "
                    f"set has {clips} clips per device, so every batch of the stage would be dropped. "
                    "Lower data.batch_size, set schedule.short_cycle=false, or train on more clips."
                )

    def _scaled_jitter(self, crop: int) -> Any:
        base, s0 = self._base_scale, self.schedule.crop_size
        if base is None:
            return None
        if isinstance(base, (int, float)):
            return max(crop, int(round(base * crop / s0)))
        lo, hi = int(base[0]), int(base[1])
        # PySlowFast: the smaller crop sees a proportionally smaller short side (larger span).
        return [max(crop, int(round(lo * crop / s0))), max(hi, crop)]

    def before_train_loader(self, trainer: L.Trainer, datamodule: Any) -> None:
        batch, frames, crop = self.schedule.shape_at(self.loader_epoch(trainer))
        datamodule.batch_size, datamodule.num_frames, datamodule.crop_size = batch, frames, crop
        if self._base_scale is not None:
            datamodule.train_scale_size = self._scaled_jitter(crop)
        if self.split_bn:
            per_device = batch // max(1, trainer.world_size)
            self.num_splits = num_splits_for(per_device, self.bn_base_size)
            set_num_splits(trainer.lightning_module.model, self.num_splits)
        super().before_train_loader(trainer, datamodule)

    def batch_sampler_factory(self, trainer: L.Trainer, datamodule: Any) -> Callable[..., Any]:
        if not self.schedule.short_cycle:
            return super().batch_sampler_factory(trainer, datamodule)
        return functools.partial(
            ShortCycleBatchSampler, state=self.state, crop_size=datamodule.crop_size,
            default_crop_size=self.schedule.crop_size, factors=self.schedule.short_factors,
        )

    def lr_factor(self, epoch: float) -> float:
        """Relative LR at fractional epoch ``epoch`` including the warmup."""
        if self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            target = self.schedule.relative_lr(self.warmup_epochs)
            return self.warmup_start + (target - self.warmup_start) * epoch / self.warmup_epochs
        return self.schedule.relative_lr(epoch)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.schedule.long_cycle:
            return
        epoch = trainer.current_epoch + batch_idx / max(1, trainer.num_training_batches)
        factor = self.lr_factor(epoch)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group.setdefault("multigrid_base_lr", group["lr"])  # saved with the optimizer state
                group["lr"] = group["multigrid_base_lr"] * factor

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        batch, frames, crop = self.schedule.shape_at(trainer.current_epoch)
        stage = self.schedule.stages.index(self.schedule.stage_at(trainer.current_epoch))
        pl_module.log_dict(
            {"multigrid/stage": float(stage), "multigrid/batch": float(batch), "multigrid/frames": float(frames),
             "multigrid/crop": float(crop), "multigrid/bn_splits": float(self.num_splits)},
            on_step=False, on_epoch=True,
        )

    # Evaluation and checkpoints always see plain BN statistics.
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fold_split_bn(pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        fold_split_bn(pl_module)  # in place: the state dict already references these buffers

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fold_split_bn(pl_module)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["num_splits"] = self.num_splits
        return state
