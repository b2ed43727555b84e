"""The training task: ``run(cfg)`` builds everything from the composed config and fits.

``train.py`` at the repository root is the Hydra entry point that calls this.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from actionlab.lit.module import VideoClassifier
from actionlab.utils.instantiate import instantiate_collection

log = logging.getLogger(__name__)

__all__ = ["run", "build_module", "output_dir"]


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


def _finish_wandb() -> None:
    """Close the W&B run so the next multirun job starts its own."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def run(cfg: DictConfig) -> dict[str, float]:
    """Train (and optionally test) as configured; returns the final metrics as floats."""
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config_resolved.yaml", resolve=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    try:
        datamodule = hydra.utils.instantiate(cfg.data)
        module = build_module(cfg)
        callbacks = instantiate_collection(cfg.get("callbacks"))
        loggers = instantiate_collection(cfg.get("logger"))
        trainer: L.Trainer = hydra.utils.instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False
        )
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        metrics: dict[str, Any] = {}
        if cfg.get("train", True):
            trainer.fit(module, datamodule=datamodule, ckpt_path=_checked_ckpt_path(cfg.get("ckpt_path")))
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
