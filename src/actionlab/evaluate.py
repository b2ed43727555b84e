"""The evaluation task: ``run(cfg)`` rebuilds model and data from a lab checkpoint and tests.

The checkpoint carries the model config, the data config and the class names, so
``python eval.py ckpt_path=...`` needs nothing else; ``data=<name>`` or ``data_root=`` point
it at another dataset or location.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from actionlab.lit.module import VideoClassifier
from actionlab.models.convert.common import load_state_dict_strict, read_lab_checkpoint
from actionlab.train import _finish_wandb
from actionlab.utils.instantiate import instantiate_collection

log = logging.getLogger(__name__)

__all__ = ["run", "load_classifier", "PROTOCOLS"]

# Single-view protocols available now; multi-view ones build on the same datamodule.
PROTOCOLS = ("1clip",)


def load_classifier(ckpt_path: str, aggregate: str = "logits_mean") -> tuple[VideoClassifier, dict]:
    """A ``VideoClassifier`` with the checkpoint's backbone and weights, plus its metadata."""
    state, info = read_lab_checkpoint(ckpt_path)
    if not info.get("model"):
        raise ValueError(f"{ckpt_path} has no model config; it was not written by actionlab")
    model = hydra.utils.instantiate(OmegaConf.create(info["model"]))
    load_state_dict_strict(model, state, source=str(ckpt_path))
    num_classes = int(info["model"].get("num_classes") or getattr(model, "num_classes", 0))
    module = VideoClassifier(model, optimizer=None, num_classes=num_classes, aggregate=aggregate)
    module.lab_config = info
    return module, info


def _data_config(cfg: DictConfig, info: dict[str, Any], ckpt_path: str) -> DictConfig:
    if cfg.get("data"):
        data_cfg = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
    elif info.get("data"):
        data_cfg = OmegaConf.create(info["data"])
    else:
        raise ValueError(
            f"{ckpt_path} stores no data config (a converted release checkpoint?); "
            "choose one with data=<name> data.root=/path/to/dataset"
        )
    if cfg.get("data_root"):
        data_cfg.root = cfg.data_root
    if cfg.eval.get("batch_size"):
        data_cfg.batch_size = cfg.eval.batch_size
    if cfg.eval.get("num_workers") is not None:
        data_cfg.num_workers = cfg.eval.num_workers
    return data_cfg


def run(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; writes ``metrics.json`` in the run directory."""
    if cfg.eval.protocol not in PROTOCOLS:
        raise ValueError(f"eval.protocol must be one of {PROTOCOLS}, got {cfg.eval.protocol!r}")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        module, info = load_classifier(cfg.ckpt_path, cfg.eval.aggregate)
        datamodule = hydra.utils.instantiate(_data_config(cfg, info, cfg.ckpt_path))
        if module.num_classes != datamodule.num_classes:
            raise ValueError(
                f"the checkpoint predicts {module.num_classes} classes but the data has "
                f"{datamodule.num_classes}; evaluate on the dataset it was trained for"
            )
        loggers = instantiate_collection(cfg.get("logger"))
        trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False, callbacks=[])
        if cfg.split == "val":
            results = trainer.validate(module, datamodule=datamodule)
        elif cfg.split == "test":
            results = trainer.test(module, datamodule=datamodule)
        else:
            raise ValueError(f"split must be 'val' or 'test', got {cfg.split!r}")
        metrics = {k: float(v) for k, v in results[0].items()}
        metrics_file = out / "metrics.json"
        metrics_file.write_text(
            json.dumps(
                {"ckpt_path": str(cfg.ckpt_path), "protocol": cfg.eval.protocol, "metrics": metrics},
                indent=2,
            )
        )
        log.info("metrics: %s (written to %s)", metrics, metrics_file)
        return metrics
    finally:
        _finish_wandb()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
