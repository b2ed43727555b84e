"""The training task: ``run(cfg)`` builds everything from the composed config and fits.

``train.py`` at the repository root is the Hydra entry point that calls this.

Besides wiring the config groups together, the task owns what must hold for every run:
- exact resume: ``ckpt_path=.../last.ckpt`` (or, with ``auto_resume``, the newest of the run
  directory's ``checkpoints/last.ckpt`` and Lightning's ``hpc_ckpt_*.ckpt``, e.g. after a SLURM
  requeue) restores epoch, step, LR, multigrid stage, the training sampler position and the
  W&B run id;
- preemption (``actionlab.lit.preemption``): under SLURM, SIGTERM/USR1/USR2 save an
  ``hpc_ckpt``, requeue where the signal asks for it and exit without a result, also when an
  error follows the signal;
- typed configs (``actionlab.config.schema``): a wrong type or value fails before anything is
  built, with the key, the value and what is allowed;
- the multigrid schedule (``schedule=...``) sets the Trainer's epochs and loader reloading;
- W&B: offline without a key and then never uploads checkpoints; online it logs them as
  artifacts; one group per sweep; the code version; ``wandb.finish()`` after every job;
- DDP: the compiled RubiksShift op is built once before Lightning starts the other ranks.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from actionlab.config.schema import validate_train_config
from actionlab.lit.callbacks import RUN_ID_KEY, MemoryFormat, RetainCpuMemory, RunIdCheckpoint
from actionlab.lit.module import VideoClassifier
from actionlab.lit.preemption import HPC_PREFIX, SlurmPreemption
from actionlab.schedules.callback import ResumableSampling
from actionlab.utils.instantiate import instantiate_collection
from actionlab.utils.wandb_run import finish_wandb as _finish_wandb

log = logging.getLogger(__name__)

__all__ = ["run", "build_module", "newest_checkpoint", "output_dir", "resume_checkpoint"]


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def build_module(cfg: DictConfig) -> VideoClassifier:
    """Backbone from ``cfg.model``, wired with ``cfg.module``, ``cfg.optimizer``, ``cfg.scheduler``."""
    model = hydra.utils.instantiate(cfg.model)
    scheduler = hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = hydra.utils.instantiate(
        cfg.module, model=model, optimizer=hydra.utils.instantiate(cfg.optimizer), scheduler=scheduler
    )
    module.lab_config = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
    }
    return module


def _checked_ckpt_path(ckpt_path: str | None) -> str | None:
    if ckpt_path is None:
        return None
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path} does not exist; pass the last.ckpt of the run to resume, "
            "e.g. ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt"
        )
    return str(ckpt_path)


def _progress(path: Path) -> tuple[int, float]:
    """(global step, mtime) of a checkpoint; a torn or foreign file ranks last."""
    try:
        step = int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", -1))
    except Exception as err:
        log.warning("auto_resume: ignoring unreadable checkpoint %s (%s)", path, err)
        step = -2
    return step, path.stat().st_mtime


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most advanced of ``<run_dir>/checkpoints/last.ckpt`` and ``<run_dir>/hpc_ckpt_*.ckpt``
    (Lightning's SLURM checkpoints): highest global step, then the latest written."""
    candidates = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob(f"{HPC_PREFIX}*.ckpt")]
                  if p.is_file()]
    if not candidates:
        return None
    ranked = sorted(((_progress(p), p) for p in candidates), key=lambda item: item[0])
    if ranked[-1][0][0] < 0:  # starting over would overwrite them
        names = ", ".join(str(p) for p in candidates)
        raise RuntimeError(f"auto_resume: no readable checkpoint among {names}; move them away to start "
                           "this run over, or pass ckpt_path=<a good checkpoint>")
    return ranked[-1][1]


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """``cfg.ckpt_path``, else (``auto_resume``) the run directory's newest checkpoint if any."""
    explicit = _checked_ckpt_path(cfg.get("ckpt_path"))
    if explicit is not None or not cfg.get("auto_resume", False):
        return explicit
    newest = newest_checkpoint(output_dir(cfg))
    if newest is not None:
        log.info("auto_resume: continuing from %s", newest)
        return str(newest)
    return None


def _global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def _code_version() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{'-dirty' if dirty else ''}" if head else "unknown"


def _sweep_group() -> str | None:
    """The multirun sweep's directory name: one W&B group per sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None


def _configure_wandb(cfg: DictConfig, ckpt_path: str | None) -> None:
    """Fill the W&B logger's run id (resume), group (sweep) and checkpoint upload (online only)."""
    node = (cfg.get("logger") or {}).get("wandb")
    if not node:
        return
    with open_dict(cfg):
        offline = bool(node.get("offline", False))
        if offline and node.get("log_model"):
            log.warning("W&B is offline: checkpoints are not uploaded (logger.wandb.log_model=false)")
        # Online runs upload checkpoints as artifacts; offline ones never can.
        node.log_model = False if offline else (node.get("log_model") if node.get("log_model") is not None else True)
        if ckpt_path and not node.get("id"):
            run_id = _checkpoint_run_id(ckpt_path)
            if run_id:
                node.id = run_id
        if not node.get("group"):
            node.group = _sweep_group() or ""


def _checkpoint_run_id(path: str) -> str | None:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an old or foreign checkpoint: start a new W&B run
        return None
    return ckpt.get(RUN_ID_KEY)


def memory_format_setting(cfg: DictConfig) -> str:
    """The top-level ``memory_format``; the removed ``channels_last_3d: true`` fails naming it."""
    if cfg.get("channels_last_3d"):
        raise ValueError(
            "channels_last_3d was replaced by memory_format (auto | contiguous | channels_last): "
            "use memory_format=channels_last (torch.channels_last_3d for 3D models, "
            "torch.channels_last for the time-folded 2D ones) or keep the default memory_format=auto"
        )
    return str(cfg.get("memory_format", "auto"))


def _prebuild_ops(cfg: DictConfig, module: VideoClassifier) -> None:
    """Build the compiled RubiksShift op in the launching process so DDP ranks load it."""
    distributed = cfg.trainer.get("devices", 1) not in (1, "1") or int(cfg.trainer.get("num_nodes", 1)) > 1
    if not distributed or "LOCAL_RANK" in os.environ:
        return
    from actionlab.ops.rubiks_shift import RubiksShift3d

    if any(isinstance(m, RubiksShift3d) for m in module.modules()):
        from actionlab.ops import _extension

        _extension.load(warn=False)


def run(cfg: DictConfig) -> dict[str, float]:
    """Train (and optionally test) as configured; returns the final metrics as floats."""
    memory_format = memory_format_setting(cfg)  # the removed key fails naming its replacement
    validate_train_config(cfg)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    if _global_rank() == 0:
        OmegaConf.save(cfg, out / "config_resolved.yaml", resolve=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    try:
        ckpt_path = resume_checkpoint(cfg)
        _configure_wandb(cfg, ckpt_path)
        datamodule = hydra.utils.instantiate(cfg.data)
        module = build_module(cfg)
        if cfg.module.get("compile"):
            from torch import _dynamo

            _dynamo.config.suppress_errors = True  # a graph that fails to compile runs eagerly
        callbacks = instantiate_collection(cfg.get("callbacks"))
        trainer_kwargs: dict[str, Any] = {}
        schedule = hydra.utils.instantiate(cfg.schedule) if cfg.get("schedule") and "_target_" in cfg.schedule else None
        if schedule is not None:
            callbacks.append(schedule)
            trainer_kwargs.update(schedule.trainer_overrides)
            log.info("multigrid schedule:\n%s", schedule.schedule.table())
        else:
            callbacks.append(ResumableSampling(cfg.get("seed")))
        callbacks.append(RunIdCheckpoint())
        callbacks.append(MemoryFormat(memory_format))
        callbacks.append(RetainCpuMemory())
        preemption = SlurmPreemption()
        callbacks.append(preemption)  # last: acts after the other callbacks saw the step
        loggers = instantiate_collection(cfg.get("logger"))
        trainer: L.Trainer = hydra.utils.instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_kwargs
        )
        if loggers:
            params = OmegaConf.to_container(cfg, resolve=True)
            params["code_version"] = _code_version()
            for logger in loggers:
                logger.log_hyperparams(params)
        _prebuild_ops(cfg, module)
        metrics: dict[str, Any] = {}
        if cfg.get("train", True):
            try:
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            except Exception as err:
                preempted = preemption.exit_after_error(err)
                if preempted is not None:
                    # the process exits: stop W&B's service too (it may be gone already, and its
                    # exit hook would print the failure again)
                    _finish_wandb(teardown=True)
                    raise preempted from err
                raise
            metrics.update(trainer.callback_metrics)
        if cfg.get("test", False):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(trainer.callback_metrics)
        result = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor))}
        log.info("output dir: %s", out)
        return result
    finally:
        _finish_wandb()
