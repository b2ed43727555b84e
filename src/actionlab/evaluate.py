"""The evaluation task: ``run(cfg)`` scores a checkpoint with a paper's multi-view protocol.

The checkpoint carries the model config, the data config, the class names and its input
protocol, so ``python eval.py ckpt_path=...`` needs nothing else; ``data=<name>`` or
``data_root=`` point it at another dataset or location (a converted release checkpoint has no
data config and needs ``data=<name> data.root=DIR``).

The checkpoint's input protocol (``actionlab.pretrained.protocol``: colour order, mean/std,
frames, sampling, crop, views, aggregation, model options such as the X3D release head; a
lab-trained checkpoint's is its data config) is applied over the data group's defaults, so a
converted release is evaluated exactly as its authors did. What the user typed on the command
line (Hydra's task overrides: ``data.mean=...``, ``eval.protocol=...``,
``+model_overrides.release_head=false``) wins, and is logged once as a change from the
checkpoint's protocol. A checkpoint from the registry shows the paper's number beside the
measured one in ``report.md`` and ``metrics.json``.

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
from actionlab.pretrained.protocol import (
    DATA_KEYS,
    apply_protocol,
    describe_changes,
    plain,
    training_protocol,
    typed_keys,
)
from actionlab.reports import ReportInfo, log_artefacts_to_wandb, write_artefacts
from actionlab.train import _finish_wandb
from actionlab.utils.instantiate import instantiate_collection

log = logging.getLogger(__name__)

__all__ = [
    "PROTOCOLS",
    "checkpoint_protocol",
    "command_line_keys",
    "load_classifier",
    "profile_views",
    "resolve_inputs",
    "run",
    "videos_per_batch",
]

SPLITS = ("val", "test")


def checkpoint_protocol(info: dict[str, Any]) -> dict[str, Any] | None:
    """The input protocol a lab checkpoint carries: the one it stores, or (lab files written
    before protocols were stored) its training data config."""
    if info.get("protocol"):
        return info["protocol"]
    if info.get("data"):
        return training_protocol(info["data"])
    return None


def model_config(
    info: dict[str, Any], overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[tuple[str, Any, Any]]]:
    """The checkpoint's model config with its protocol's model options and the user's
    ``model_overrides`` over them; plus the overrides that change a protocol option."""
    protocol = checkpoint_protocol(info) or {}
    model_cfg = {**info["model"], **(protocol.get("model") or {})}
    overrides = plain(dict(overrides or {}))
    typed = {f"model_overrides.{k}" for k in overrides}
    target = {**model_cfg, **overrides}
    changes = apply_protocol({"model": protocol.get("model") or {}}, {"model": target}, typed)
    return target, changes


def load_classifier(
    ckpt_path: str, aggregate: str = "logits_mean", model_overrides: dict[str, Any] | None = None
) -> tuple[VideoClassifier, dict]:
    """A ``VideoClassifier`` with the checkpoint's backbone and weights, plus its metadata.

    The backbone is built from the stored model config with the protocol's model options
    (e.g. ``release_head``) and then ``model_overrides``; the changes the overrides make to the
    protocol's options are in ``module.protocol_changes``.
    """
    state, info = read_lab_checkpoint(ckpt_path)
    if not info.get("model"):
        raise ValueError(f"{ckpt_path} has no model config; it was not written by actionlab")
    model_cfg, changes = model_config(info, model_overrides)
    model = hydra.utils.instantiate(OmegaConf.create(model_cfg))
    load_state_dict_strict(model, state, source=str(ckpt_path))
    num_classes = int(info["model"].get("num_classes") or getattr(model, "num_classes", 0))
    module = VideoClassifier(model, optimizer=None, num_classes=num_classes, aggregate=aggregate)
    module.lab_config = info
    module.protocol_changes = changes
    module.model_config = model_cfg
    module.eval()
    return module, info


def command_line_keys(cfg: DictConfig, overrides: list[str] | None = None) -> set[str]:
    """The keys the user typed: ``overrides`` when given, else Hydra's task overrides (the
    running app's, or those of a config composed with ``return_hydra_config``)."""
    if overrides is None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            overrides = list(HydraConfig.get().overrides.task)
        else:
            task = OmegaConf.select(cfg, "hydra.overrides.task")
            overrides = list(task) if task is not None else []
    return typed_keys(overrides)


def resolve_inputs(
    cfg: DictConfig, info: dict[str, Any], typed: set[str]
) -> tuple[DictConfig, DictConfig, list[tuple[str, Any, Any]]]:
    """The data and eval configs of an evaluation: the data group (or the checkpoint's data
    config) with the checkpoint's protocol over it, except what the user typed; plus the typed
    values that differ from the protocol."""
    if cfg.get("data"):
        data = plain(cfg.data)
    elif info.get("data"):
        data = plain(info["data"])
    else:
        raise ValueError(
            f"{cfg.ckpt_path} stores no data config (a converted release checkpoint?); "
            "choose one with data=<name> data.root=/path/to/dataset"
        )
    evals = plain(cfg.eval)
    changes = apply_protocol(checkpoint_protocol(info), {"data": data, "eval": evals}, typed)
    data_cfg, eval_cfg = OmegaConf.create(data), OmegaConf.create(evals)
    if cfg.get("data_root"):
        data_cfg.root = cfg.data_root
    if eval_cfg.get("batch_size"):
        data_cfg.batch_size = eval_cfg.batch_size
    if eval_cfg.get("num_workers") is not None:
        data_cfg.num_workers = eval_cfg.num_workers
    return data_cfg, eval_cfg, changes


def _paper(info: dict[str, Any], protocol: ViewProtocol) -> dict[str, Any] | None:
    """The registry's paper result for a checkpoint converted from a release, marked with
    whether this run used the views it was measured with."""
    stored = checkpoint_protocol(info) or {}
    if not stored.get("registry") or not stored.get("paper"):
        return None
    paper = stored.get("input") or {}  # the registry's InputProtocol of the paper's row
    same = (protocol.name, protocol.clips, protocol.crops, protocol.crop_size, protocol.scale_size,
            protocol.num_frames) == tuple(
        paper.get(k) for k in ("eval_protocol", "clips", "crops", "test_crop", "test_scale", "num_frames")
    )
    return {**stored["paper"], "registry": stored["registry"], "same_protocol": same}


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


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split`` with the checkpoint's protocol (or
    ``cfg.eval.protocol``).

    ``overrides`` are the command-line overrides that win over the checkpoint's protocol
    (default: Hydra's task overrides). Returns the metrics as ``{split}/acc``, ``{split}/acc5``,
    ``{split}/mean_class_acc``, ``{split}/loss``; writes ``metrics.json``, ``per_class.csv``,
    ``predictions.csv``, ``confused_pairs.csv``, ``confusion.png`` and ``report.md`` in
    ``paths.output_dir``.
    """
    validate_eval_config(cfg)
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    if cfg.eval.protocol is not None and cfg.eval.protocol not in PROTOCOLS:
        raise ValueError(
            f"eval.protocol must be one of {sorted(PROTOCOLS)}, got {cfg.eval.protocol!r}"
        )
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        typed = command_line_keys(cfg, overrides)
        module, info = load_classifier(cfg.ckpt_path, model_overrides=cfg.get("model_overrides"))
        data_cfg, eval_cfg, changes = resolve_inputs(cfg, info, typed)
        validate_node(OmegaConf.create({"data": data_cfg}), "data")
        changes = [*changes, *module.protocol_changes]
        if changes:
            log.info(describe_changes(checkpoint_protocol(info) or {}, changes))
        if eval_cfg.get("protocol") is None:
            eval_cfg.protocol = "1clip"
        protocol = resolve_protocol(eval_cfg, data_cfg)
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
            make_reader(datamodule.backend, datamodule.frame_template, datamodule.channel_order),
            protocol,
            mean=datamodule.mean,
            std=datamodule.std,
            bad_video_policy=datamodule.bad_video_policy,
            max_retries=datamodule.max_retries,
            min_video_frames=datamodule.min_video_frames,
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
                inputs={
                    **{k: plain(data_cfg.get(k)) for k in DATA_KEYS if k in data_cfg},
                    "model_options": {
                        k: module.model_config.get(k)
                        for k in {*((checkpoint_protocol(info) or {}).get("model") or {}),
                                  *(cfg.get("model_overrides") or {})}
                    },
                    "origin": (checkpoint_protocol(info) or {}).get("origin"),
                    "command_line": [key for key, _, _ in changes],
                },
                paper=_paper(info, protocol),
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
