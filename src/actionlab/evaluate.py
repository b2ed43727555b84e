"""The evaluation task: ``run(cfg)`` scores a checkpoint with a paper's multi-view protocol.

The checkpoint carries the model config, the data config and the class names, so
``python eval.py ckpt_path=...`` needs nothing else; ``data=<name>`` or ``data_root=`` point
it at another dataset or location (a converted release checkpoint has no data config and
needs ``data=<name>``).

Each video becomes ``V = clips x crops`` views (``actionlab.data.views``), batched as
``(B, V, C, T, H, W)`` with at most ``eval.max_views_per_batch`` views per backbone call, and its
view scores are aggregated (``eval.aggregate``). Per-video scores are gathered from every rank
and de-duplicated by dataset index before any metric is computed, so DDP's padding repeats
never count. Artefacts (``actionlab.reports``) land in the run directory and in W&B.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from actionlab.config.schema import validate_eval_config, validate_node
from actionlab.data.readers import make_reader
from actionlab.data.workers import worker_init_fn
from actionlab.data.views import PROTOCOLS, MultiViewDataset, ViewProtocol, resolve_protocol
from actionlab.lit.module import VideoClassifier
from actionlab.models.convert.common import load_state_dict_strict, read_lab_checkpoint
from actionlab.reports import ReportInfo, log_artefacts_to_wandb, write_artefacts
from actionlab.train import _finish_wandb
from actionlab.utils.instantiate import instantiate_collection

log = logging.getLogger(__name__)

__all__ = ["PROTOCOLS", "load_classifier", "profile_views", "run", "videos_per_batch"]

SPLITS = ("val", "test")


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
    module.eval()
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


def videos_per_batch(batch_size: int, world_size: int, views: int, max_views: int | None) -> int:
    """Videos per device and step: the global batch split over ranks, capped so that
    ``videos x views <= max_views`` (one video at least; its views are then split further
    inside the forward)."""
    per_device = max(1, batch_size // max(1, world_size))
    if max_views:
        per_device = min(per_device, max(1, max_views // views))
    return per_device


def profile_views(model: torch.nn.Module, protocol: ViewProtocol) -> tuple[int, int]:
    """Parameters and MACs of one view ``(1, 3, T, crop, crop)`` (``actionlab.profile``)."""
    from actionlab.profile import count_macs, count_params

    device = next(model.parameters()).device
    x = torch.zeros(
        1, 3, protocol.num_frames, protocol.crop_size, protocol.crop_size, device=device
    )
    return count_params(model), count_macs(model, x)


def run(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split`` with ``cfg.eval.protocol``.

    Returns the metrics as ``{split}/acc``, ``{split}/acc5``, ``{split}/mean_class_acc``,
    ``{split}/loss``; writes ``metrics.json``, ``per_class.csv``, ``predictions.csv``,
    ``confused_pairs.csv``, ``confusion.png`` and ``report.md`` in ``paths.output_dir``.
    """
    validate_eval_config(cfg)
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    if cfg.eval.protocol not in PROTOCOLS:
        raise ValueError(
            f"eval.protocol must be one of {sorted(PROTOCOLS)}, got {cfg.eval.protocol!r}"
        )
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        module, info = load_classifier(cfg.ckpt_path)
        data_cfg = _data_config(cfg, info, cfg.ckpt_path)
        validate_node(OmegaConf.create({"data": data_cfg}), "data")
        protocol = resolve_protocol(cfg.eval, data_cfg)
        module.aggregate = protocol.aggregate
        module.max_views_per_batch = cfg.eval.get("max_views_per_batch")
        module.eval_prefix = cfg.split
        datamodule = hydra.utils.instantiate(data_cfg)
        if module.num_classes != datamodule.num_classes:
            raise ValueError(
                f"the checkpoint predicts {module.num_classes} classes but the data has "
                f"{datamodule.num_classes}; evaluate on the dataset it was trained for"
            )
        datamodule.prepare_data()
        records = datamodule.annotations.records(cfg.split)
        dataset = MultiViewDataset(
            records,
            make_reader(datamodule.backend, datamodule.frame_template),
            protocol,
            mean=datamodule.mean,
            std=datamodule.std,
            bad_video_policy=datamodule.bad_video_policy,
            max_retries=datamodule.max_retries,
        )
        params = macs = None
        if cfg.eval.get("profile", True):
            params, macs = profile_views(module.model, protocol)

        loggers = instantiate_collection(cfg.get("logger"))
        trainer: L.Trainer = hydra.utils.instantiate(
            cfg.trainer, logger=loggers or False, callbacks=[]
        )
        loader = DataLoader(
            dataset,
            batch_size=videos_per_batch(
                int(data_cfg.batch_size),
                trainer.world_size,
                protocol.views,
                module.max_views_per_batch,
            ),
            shuffle=False,
            num_workers=int(data_cfg.num_workers),
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=worker_init_fn(trainer.global_rank),
        )
        log.info("protocol %s: %d videos x %d views", protocol.name, len(dataset), protocol.views)
        start = time.perf_counter()
        results = trainer.test(module, dataloaders=loader, verbose=False)
        seconds = time.perf_counter() - start
        metrics = {k: float(v) for k, v in results[0].items()}
        # logged with the metrics; not one of them (bad videos are left out of every metric)
        excluded = int(metrics.pop(f"{cfg.split}/excluded_videos", 0))
        preds = module.test_predictions
        if trainer.is_global_zero and preds is not None:
            report = ReportInfo(
                ckpt_path=str(cfg.ckpt_path),
                split=cfg.split,
                protocol=protocol.as_dict(),
                params=params,
                gmacs_per_view=macs / 1e9 if macs is not None else None,
                input_thw=(protocol.num_frames, protocol.crop_size, protocol.crop_size),
                seconds=seconds,
                extra={
                    "devices": str(trainer.world_size),
                    "model": info["model"].get("_target_", ""),
                },
            )
            artefacts = write_artefacts(
                out,
                preds,
                datamodule.class_names,
                [r.video_id or r.path for r in records],
                report,
                prefix=cfg.split,
            )
            log_artefacts_to_wandb(loggers, artefacts, prefix=cfg.split)
            if excluded:
                log.warning("%d videos could not be read and are not in the metrics", excluded)
            log.info("metrics: %s (report: %s)", metrics, out / "report.md")
        return metrics
    finally:
        _finish_wandb()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
