"""``VideoClassifier``: any backbone ``(B, C, T, H, W) -> logits`` as a LightningModule.

Cross-entropy (optional label smoothing), optimiser and scheduler from Hydra partials, optimiser
groups from the backbone's declarations (``actionlab.lit.optim``), torchmetrics top-1/top-5 per
stage under ``stage/name`` (``train/loss``, ``val/acc``, ``val/acc5``, ``val/acc_best``).
Multi-view batches ``(B, V, C, T, H, W)`` are scored per view and aggregated over ``V``.
Validation/test items whose dataset index is negative stand in for a video that could not be
read (``actionlab.data.datamodule.excluded_index``): they never reach a metric, and each epoch
logs how many there were (``val/excluded_videos``, ``test/excluded_videos``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from actionlab.lit.optim import param_groups
from actionlab.models.convert.common import LAB_KEY
from actionlab.models.cpu_bf16 import guard_cpu_bf16_conv3d
from actionlab.pretrained.protocol import PROTOCOL_KEY, training_protocol
from actionlab.reports import Predictions, classification_metrics, dedup_by_index

__all__ = ["AGGREGATIONS", "PROBABILITY_AGGREGATIONS", "VideoClassifier", "aggregate_views"]

AGGREGATIONS = ("logits_mean", "softmax_mean", "sum")
# Aggregations whose output is (a multiple of) class probabilities rather than logits.
PROBABILITY_AGGREGATIONS = ("softmax_mean", "sum")


def aggregate_views(scores: Tensor, method: str) -> Tensor:
    """Combine per-view logits ``(B, V, K)`` into per-video scores ``(B, K)``.

    ``logits_mean``: mean of the logits (TSM, RubiksNet, TokShift test scripts).
    ``softmax_mean``: mean of the per-view softmax probabilities (PySlowFast's docstring).
    ``sum``: sum of the per-view probabilities (PySlowFast ``TestMeter``, ``ENSEMBLE_METHOD
    sum``; ranks like ``softmax_mean``, scores are ``V`` times larger).
    """
    if method == "logits_mean":
        return scores.mean(dim=1)
    if method == "softmax_mean":
        return scores.softmax(dim=-1).mean(dim=1)
    if method == "sum":
        return scores.softmax(dim=-1).sum(dim=1)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {method!r}")


def _score_loss(scores: Tensor, labels: Tensor, probabilities: bool) -> Tensor:
    """Cross-entropy of per-video scores (logits, or probabilities up to a factor)."""
    known = labels >= 0  # unlabelled test videos carry -1
    scores, labels = scores[known], labels[known]
    if labels.numel() == 0:
        return scores.new_zeros(())
    if probabilities:
        probs = scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return F.nll_loss(probs.clamp_min(1e-12).log(), labels)
    return F.cross_entropy(scores, labels)


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        },
        prefix=prefix,
    )


class VideoClassifier(L.LightningModule):
    """Training/evaluation wrapper of a video backbone.

    Args:
        model: backbone mapping ``(B, C, T, H, W)`` to ``(B, num_classes)``.
        optimizer: partial ``params -> Optimizer`` (e.g. ``torch.optim.SGD`` with lr, momentum).
        scheduler: partial ``(optimizer, total_steps, steps_per_epoch) -> LRScheduler`` or None.
        num_classes: classifier outputs.
        label_smoothing: cross-entropy label smoothing.
        weight_decay: decay for weights; norms, biases and declared parameters get none.
        aggregate: how multi-view scores are combined (``logits_mean`` for TSN-style models).
        compile: wrap the backbone in ``torch.compile`` when fitting.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        num_classes: int = 174,
        label_smoothing: float = 0.0,
        weight_decay: float = 1e-4,
        aggregate: str = "logits_mean",
        compile: bool = False,
    ) -> None:
        super().__init__()
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"module.aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"], logger=False)
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.weight_decay = weight_decay
        self.aggregate = aggregate
        self.compile = compile
        self.train_metrics = _metrics(num_classes, "train/")
        self.val_metrics = _metrics(num_classes, "val/")
        self.test_metrics = _metrics(num_classes, "test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_excluded, self.test_excluded = SumMetric(), SumMetric()
        self.val_acc_best = MaxMetric()
        # Resolved model/data configs stored in every checkpoint (set by the train task).
        self.lab_config: dict[str, Any] = {}
        # Evaluation: views per backbone call (memory cap; None = all), the metric prefix of
        # test runs (evaluate.py sets "val" for the validation split) and their predictions.
        self.max_views_per_batch: int | None = None
        self.eval_prefix = "test"
        self.test_predictions: Predictions | None = None
        self._test_outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self._test_probabilities = False

    def forward(self, clips: Tensor) -> Tensor:
        if clips.ndim == 6:  # (B, V, C, T, H, W): one score per view, then aggregate
            b, v = clips.shape[:2]
            flat = clips.flatten(0, 1)
            chunk = self.max_views_per_batch or flat.shape[0]
            scores = torch.cat([self.model(part) for part in flat.split(chunk)]).view(b, v, -1)
            return aggregate_views(scores, self.aggregate)
        return self.model(clips)

    def setup(self, stage: str) -> None:
        on_cpu = self.trainer.strategy.root_device.type == "cpu"
        if stage == "fit" and on_cpu and "bf16" in str(self.trainer.precision):
            guard_cpu_bf16_conv3d(self.model)  # before compiling: the guard is part of the traced forward
        if self.compile and stage == "fit":
            self.model.compile()  # in place: parameter names (and checkpoints) stay the same

    def on_train_epoch_start(self) -> None:
        set_epoch = getattr(self.model, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.current_epoch)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        clips, labels, _ = batch
        logits = self(clips)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        aux = getattr(self.model, "auxiliary_losses", None)
        for name, value in (aux() if callable(aux) else {}).items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True)
            loss = loss + value
        self.train_metrics.update(logits.detach(), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        clips, labels, index = batch
        scores = self(clips)
        keep = index >= 0
        self.val_excluded.update((~keep).sum())
        if not keep.all():
            scores, labels = scores[keep], labels[keep]
            if labels.numel() == 0:
                return
        loss = _score_loss(scores, labels, self._probabilities(clips))
        self.val_metrics.update(scores, labels)
        self.val_loss.update(loss, weight=labels.numel())

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict(values, prog_bar=True, sync_dist=False)
        self.log("val/loss", self.val_loss.compute())
        self.log("val/excluded_videos", self.val_excluded.compute())
        self.val_excluded.reset()
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(values["val/acc"])
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)
        self.val_metrics.reset()
        self.val_loss.reset()

    def _probabilities(self, clips: Tensor) -> bool:
        return clips.ndim == 6 and self.aggregate in PROBABILITY_AGGREGATIONS

    def on_test_epoch_start(self) -> None:
        self._test_outputs.clear()
        self.test_predictions = None

    def test_step(self, batch, batch_idx: int) -> None:
        # Per-video scores are kept with their dataset index: metrics are computed once all
        # ranks' rows are gathered and the DistributedSampler's padding repeats removed.
        clips, labels, index = batch
        scores = self(clips)
        self._test_probabilities = self._probabilities(clips)
        keep = index >= 0
        self.test_excluded.update((~keep).sum())
        self._test_outputs.append((index[keep].long(), scores[keep].detach().float(), labels[keep].long()))

    def on_test_epoch_end(self) -> None:
        excluded = self.test_excluded.compute()
        self.test_excluded.reset()
        self.log(f"{self.eval_prefix}/excluded_videos", excluded, sync_dist=False)
        if not self._test_outputs:
            return
        index, scores, labels = (torch.cat(parts) for parts in zip(*self._test_outputs))
        self._test_outputs.clear()
        if self.trainer.world_size > 1:
            index, scores, labels = (t.flatten(0, 1) for t in self.all_gather((index, scores, labels)))
        preds = dedup_by_index(index, scores, labels)
        self.test_predictions = preds
        values = classification_metrics(preds.scores, preds.labels, self.num_classes)
        values["loss"] = float(_score_loss(preds.scores, preds.labels, self._test_probabilities))
        # Every rank holds the same gathered values, so no further reduction is needed.
        self.log_dict({f"{self.eval_prefix}/{k}": v for k, v in values.items()}, sync_dist=False)

    def configure_optimizers(self) -> dict[str, Any]:
        groups = param_groups(self.model, self.weight_decay)
        optimizer = self.optimizer_factory(groups)
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_mult", 1.0)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(1, self.trainer.max_epochs or 1)
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total, steps_per_epoch=max(1, total // epochs)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = dict(self.lab_config)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "class_names"):
            info["class_names"] = list(datamodule.class_names)
        if info.get("data") and not info.get(PROTOCOL_KEY):
            # A lab-trained checkpoint's input protocol is its own data config: eval.py and
            # predict evaluate it with the frames, crop and normalisation it was trained on.
            info[PROTOCOL_KEY] = training_protocol(info["data"], info.get("eval"))
        checkpoint[LAB_KEY] = info

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.lab_config = dict(checkpoint.get(LAB_KEY, {}))
