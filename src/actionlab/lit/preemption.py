"""Preemption that loses nothing: a SLURM job's signals become a checkpoint, a requeue and an exit.

Under SLURM, :class:`SlurmPreemption` (added to every training run by ``actionlab.train``)
replaces, for the time of ``fit``, the main process's handlers of

- ``SIGTERM``: ``scontrol requeue``, preemption, ``scancel``, the time limit (SLURM kills the job
  ``KillWait`` seconds later and decides itself whether it runs again);
- ``SIGUSR1``: Lightning's requeue signal (plain ``sbatch --signal=USR1@300``; honoured when the
  trainer's ``SLURMEnvironment`` has ``auto_requeue``);
- ``SIGUSR2``: submitit's time-out/preemption signal (``hydra/launcher=slurm``),

with one that only records the signal. The training acts on it at the next optimizer step (or
at the end of the validation that is running), at the same step on every rank (one tiny
all-reduce per step under DDP): it saves ``<run dir>/hpc_ckpt_N.ckpt`` (Lightning's name and
place, the full mid-epoch state, older ``hpc_ckpt_*`` removed), requeues the job for USR1/USR2
(USR2 through submitit's own handler, which also counts time-outs against ``max_num_timeout``)
and exits through :class:`Preempted`, a ``SystemExit``: neither Hydra nor submitit records the
interrupted attempt as a result, so the sweep keeps waiting for the requeued job, which resumes
from the newest checkpoint of its run directory (``actionlab.train.resume_checkpoint``).

Lightning's own handlers would instead save in the middle of a step (a collective inside a
signal handler), and submitit's would exit without saving. Loader workers ignore these signals
(``actionlab.data.workers``). An error raised after a preemption signal is turned into the same
exit by :meth:`SlurmPreemption.exit_after_error`, never into a failed or successful result.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import threading
import traceback
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from actionlab import slurm
from actionlab.utils.wandb_run import finish_wandb

__all__ = ["HPC_PREFIX", "Preempted", "SlurmPreemption"]

log = logging.getLogger(__name__)
HPC_PREFIX = "hpc_ckpt_"
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
HANDLED_SIGNALS = (signal.SIGTERM, *REQUEUE_SIGNALS)


class Preempted(SystemExit):
    """The run stopped for a preemption signal; the job was saved (and requeued where that is
    the signal's meaning). A ``SystemExit``, so Hydra and submitit write no result for it."""

    def __init__(self, signum: int, requeued: bool) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.requeued = requeued


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def _is_submitit_handler(handler: Any) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("submitit")


class SlurmPreemption(Callback):
    """Save, requeue and exit on SLURM's preemption signals (see the module docstring).

    Args:
        enabled: handle the signals; None: only inside a SLURM job (``SLURM_JOB_ID``).
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = enabled
        self.signum: int | None = None
        self.requeued = False
        self._previous: dict[int, Any] = {}
        self._installed = False
        self._last_step = -1
        self._trainer: L.Trainer | None = None

    # -- signals ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(self.enabled) if self.enabled is not None else "SLURM_JOB_ID" in os.environ

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning("received %s: saving and stopping at the next step", _name(signum))
            if signum == signal.SIGTERM:
                self._detach_wandb()

    def _detach_wandb(self) -> None:
        """SLURM's SIGTERM also reaches W&B's service process, which exits at once: any W&B call
        until the save (a validation's metrics, the confusion matrix, the loggers' ``finalize``)
        would raise. The trainer stops logging to W&B for the rest of this attempt; the requeued
        one continues the same W&B run (:class:`~actionlab.lit.callbacks.RunIdCheckpoint` keeps
        its id for the save). USR1/USR2 leave the service running."""
        trainer = self._trainer
        if trainer is None:
            return
        kept = [lg for lg in trainer.loggers if not isinstance(lg, WandbLogger)]
        if len(kept) != len(trainer.loggers):
            trainer.loggers = kept  # a new list: a loop over the old one in progress is unaffected
            log.warning("SIGTERM ends W&B's service too: no more W&B logging in this attempt")

    def _install(self, trainer: L.Trainer) -> None:
        # After Lightning registered its handlers (right before the run stage), which it
        # restores to the pre-fit ones at teardown.
        if self._installed or not self.active or threading.current_thread() is not threading.main_thread():
            return
        self._trainer = trainer
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)
        self._installed = True

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._installed = False
        self._trainer = None

    # -- acting on a signal ---------------------------------------------------------------
    def _agreed_signal(self, trainer: L.Trainer) -> int:
        """The signal any rank received (0: none), so that every rank stops at the same step."""
        mine = int(self.signum or 0)
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([mine], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            mine = int(flag.item())
        return mine

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if not self._installed or trainer.global_step == self._last_step:
            return  # inside gradient accumulation: wait for the optimizer step
        self._last_step = trainer.global_step
        self._act(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._installed:
            self._act(trainer)

    def _act(self, trainer: L.Trainer) -> None:
        signum = self._agreed_signal(trainer)
        if not signum:
            return
        self.signum = self.signum or signum
        path = self.save(trainer)
        log.warning("%s: saved %s at global step %d; stopping", _name(signum), path, trainer.global_step)
        finish_wandb(teardown=True)  # while its service still runs: SLURM signals every process
        self._requeue(trainer, signum)
        raise Preempted(signum, self.requeued)

    def save(self, trainer: L.Trainer) -> str:
        """``<default_root_dir>/hpc_ckpt_<N+1>.ckpt`` (every rank takes part), older ones removed."""
        root = str(trainer.default_root_dir)
        path = trainer._checkpoint_connector.hpc_save_path(root)
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            for old in glob.glob(os.path.join(root, f"{HPC_PREFIX}*.ckpt")):
                if os.path.abspath(old) != os.path.abspath(path):
                    os.remove(old)
        return path

    def _requeue(self, trainer: L.Trainer, signum: int) -> None:
        if self.requeued or signum not in REQUEUE_SIGNALS:
            return  # SIGTERM: SLURM itself requeues (scontrol requeue, preemption) or ends the job
        environment = trainer._accelerator_connector.cluster_environment
        if signum == signal.SIGUSR1 and not getattr(environment, "auto_requeue", isinstance(environment, SLURMEnvironment)):
            log.warning("SIGUSR1 with auto_requeue off: not requeueing")
            return
        previous = self._previous.get(signum)
        if signum == signal.SIGUSR2 and _is_submitit_handler(previous):
            # submitit dumps its resubmission, requeues (counting time-outs against
            # max_num_timeout) and exits on rank 0; it returns on the other ranks.
            self.requeued = True
            previous(signum, None)
            return
        if trainer.is_global_zero:
            self.requeued = slurm.requeue()
        else:
            self.requeued = True

    def exit_after_error(self, error: BaseException) -> Preempted | None:
        """For an error raised after a preemption signal: make sure the job is requeued when the
        signal asked for it and return the :class:`Preempted` to raise instead (None without a
        signal, or for submitit's "not requeued" verdict, which must stay a failure)."""
        if self.signum is None or isinstance(error, SystemExit):
            return None
        if type(error).__name__ == "UncompletedJobError":
            return None
        if _lost_wandb_service(error):
            # expected after SIGTERM (see _detach_wandb): a call already under way when it came
            log.warning("W&B lost its service after %s (%s: %s); the job will resume from its newest "
                        "checkpoint", _name(self.signum), type(error).__name__, error)
        else:
            log.error("%s after %s; the job will resume from its newest checkpoint", type(error).__name__,
                      _name(self.signum), exc_info=error)
        if self.signum in REQUEUE_SIGNALS and not self.requeued and _rank() == 0:
            self.requeued = slurm.requeue()
        return Preempted(self.signum, self.requeued)


def _lost_wandb_service(error: BaseException) -> bool:
    """A connection error raised inside the ``wandb`` package: its service process is gone."""
    if not isinstance(error, (ConnectionError, EOFError)):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    return any(f"{os.sep}wandb{os.sep}" in frame.filename for frame in frames)


def _rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0
