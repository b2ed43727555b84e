"""Evaluation artefacts: metrics, per-class accuracy, predictions, confusion matrix, report.

Everything here works on per-video scores ``(N, K)`` (already aggregated over views), labels
``(N,)`` and dataset indices ``(N,)``, gathered from every rank and de-duplicated by
:func:`dedup_by_index` (DistributedSampler pads the last ranks with repeated videos, which would
otherwise be counted twice).

Files written by :func:`write_artefacts` into the run directory::

    metrics.json          top-1, top-5, mean class accuracy, protocol, views, params, GMACs
    per_class.csv         class_id, class_name, videos, correct, accuracy
    predictions.csv       index, video_id, label, top-5 classes and scores
    confusion.png         confusion matrix (rows: true class, normalised per row)
    confused_pairs.csv    the most frequent (true, predicted) mistakes
    report.md             one page with all of the above
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

__all__ = [
    "Predictions",
    "classification_metrics",
    "confusion_matrix",
    "dedup_by_index",
    "log_artefacts_to_wandb",
    "per_class_accuracy",
    "top_confused_pairs",
    "write_artefacts",
]


@dataclass
class Predictions:
    """Per-video results in dataset order: ``index (N,)``, ``scores (N, K)``, ``labels (N,)``."""

    index: Tensor
    scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.index.numel())


def dedup_by_index(index: Tensor, scores: Tensor, labels: Tensor) -> Predictions:
    """Keep one row per dataset index, sorted by index.

    Distributed evaluation pads the ranks to equal length by repeating videos; the repeats carry
    the same index (and the same scores), so the first occurrence is kept.
    """
    index = index.reshape(-1).long().cpu()
    scores = scores.reshape(index.numel(), -1).cpu()
    labels = labels.reshape(-1).long().cpu()
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    first = torch.ones_like(sorted_index, dtype=torch.bool)
    first[1:] = sorted_index[1:] != sorted_index[:-1]
    keep = order[first]
    return Predictions(index[keep], scores[keep], labels[keep])


def _topk(scores: Tensor, k: int) -> Tensor:
    return scores.topk(min(k, scores.shape[1]), dim=1).indices


def per_class_accuracy(
    scores: Tensor, labels: Tensor, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(videos per class, top-1 correct per class)``, both ``(num_classes,)`` int arrays."""
    pred = scores.argmax(dim=1)
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
    correct = torch.bincount(labels[pred == labels], minlength=num_classes)[:num_classes]
    return counts.numpy(), correct.numpy()


def classification_metrics(scores: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """``acc`` (top-1), ``acc5`` (top-5) and ``mean_class_acc`` over classes with videos.

    Videos with label ``-1`` (unlabelled test sets) are ignored.
    """
    known = labels >= 0
    scores, labels = scores[known], labels[known]
    if labels.numel() == 0:
        return {"acc": float("nan"), "acc5": float("nan"), "mean_class_acc": float("nan")}
    top5 = _topk(scores, 5)
    counts, correct = per_class_accuracy(scores, labels, num_classes)
    present = counts > 0
    return {
        "acc": float((top5[:, 0] == labels).float().mean()),
        "acc5": float((top5 == labels[:, None]).any(dim=1).float().mean()),
        "mean_class_acc": float((correct[present] / counts[present]).mean()),
    }


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> np.ndarray:
    """``cm[true, predicted]`` counts, ``(num_classes, num_classes)``."""
    known = labels >= 0
    flat = labels[known] * num_classes + pred[known]
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes).numpy()


def top_confused_pairs(
    cm: np.ndarray, class_names: Sequence[str], k: int = 10
) -> list[dict[str, Any]]:
    """The ``k`` largest off-diagonal cells: true class, predicted class, count, share of the class."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    rows = []
    for cell in flat:
        t, p = divmod(int(cell), cm.shape[1])
        if off[t, p] == 0:
            break
        rows.append(
            {
                "true_id": t,
                "true": class_names[t],
                "predicted_id": p,
                "predicted": class_names[p],
                "count": int(off[t, p]),
                "share_of_true": float(off[t, p] / max(1, cm[t].sum())),
            }
        )
    return rows


def _plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    side = min(16.0, max(5.0, 0.3 * k))
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 40:  # names stay legible up to ~40 classes; beyond that, ids only
        names = [n if len(n) <= 40 else n[:37] + "..." for n in class_names]
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@dataclass
class ReportInfo:
    """What the report states besides the numbers."""

    ckpt_path: str
    split: str
    protocol: dict[str, Any]
    params: int | None = None
    gmacs_per_view: float | None = None
    input_thw: tuple[int, int, int] | None = None
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The input the clips were made with (colour order, mean/std, frames, sampling, model
    # options) and where it came from (the checkpoint's protocol, command-line changes).
    inputs: dict[str, Any] = field(default_factory=dict)
    # The paper's result when the checkpoint came from the registry of released weights:
    # top1, top5, views, source, registry, same_protocol.
    paper: dict[str, Any] | None = None

    @property
    def views(self) -> int:
        return int(self.protocol.get("views", 1))


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _report_markdown(
    info: ReportInfo,
    metrics: dict[str, float],
    num_videos: int,
    pairs: list[dict[str, Any]],
    worst: list[tuple[str, int, float]],
) -> str:
    p = info.protocol
    cost = "-"
    if info.gmacs_per_view is not None:
        cost = f"{info.gmacs_per_view:.3f} GMACs x {info.views} views = {info.gmacs_per_view * info.views:.3f} GMACs"
    thw = "x".join(str(s) for s in info.input_thw) if info.input_thw else "-"
    speed = (
        f"{info.seconds:.1f} s ({num_videos / info.seconds:.1f} videos/s)" if info.seconds else "-"
    )
    summary = [
        ("checkpoint", f"`{info.ckpt_path}`"),
        ("split", f"{info.split} ({num_videos} videos)"),
        (
            "protocol",
            (
                f"`{p.get('name')}`: {p.get('clips')} clip(s) x {p.get('crops')} crop(s), "
                f"{p.get('sampling')} sampling, short side {p.get('scale_size')}, "
                f"crop {p.get('crop_size')}"
            ),
        ),
        ("aggregation", f"`{p.get('aggregate')}`"),
        *_input_rows(info.inputs),
        ("params", f"{info.params / 1e6:.3f} M" if info.params else "-"),
        ("input per view (T x H x W)", thw),
        ("cost per video", cost),
        ("evaluation time", speed),
        *((k, str(v)) for k, v in info.extra.items()),
    ]
    numbers = [
        ("top-1", f"{100 * metrics['acc']:.2f}%"),
        ("top-5", f"{100 * metrics['acc5']:.2f}%"),
        ("mean class accuracy", f"{100 * metrics['mean_class_acc']:.2f}%"),
    ]
    header = ["metric", "value"]
    paper = info.paper
    if paper:
        header.append(f"paper ({paper.get('registry')}: {paper.get('views')})")
        reported = [paper.get("top1"), paper.get("top5"), None]
        numbers = [(*row, "-" if v is None else f"{v:.2f}%") for row, v in zip(numbers, reported)]
    parts = [
        "# Evaluation report",
        "",
        _markdown_table(["", ""], summary),
        "",
        "## Accuracy",
        "",
        _markdown_table(header, numbers),
        "",
        *(
            [
                f"Paper numbers: {paper.get('source')}."
                + ("" if paper.get("same_protocol") else " This run's views differ from the paper's."),
                "",
            ]
            if paper
            else []
        ),
        "## Most confused pairs (true -> predicted)",
        "",
        _markdown_table(
            ["true", "predicted", "videos", "share of true class"],
            [
                (r["true"], r["predicted"], r["count"], f"{100 * r['share_of_true']:.1f}%")
                for r in pairs
            ],
        )
        if pairs
        else "No mistakes.",
        "",
        "## Lowest per-class accuracy",
        "",
        _markdown_table(
            ["class", "videos", "top-1"], [(n, c, f"{100 * a:.1f}%") for n, c, a in worst]
        ),
        "",
        "![confusion matrix](confusion.png)",
        "",
        "Files: `metrics.json`, `per_class.csv`, `predictions.csv`, `confused_pairs.csv`, `confusion.png`.",
        "",
    ]
    return "\n".join(parts)


def _input_rows(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    if not inputs:
        return []
    rows = [
        (
            "input",
            (f"{str(inputs.get('channel_order', 'rgb')).upper()}, mean {inputs.get('mean')}, "
            f"std {inputs.get('std')}, {inputs.get('num_frames')} frames "
            f"({inputs.get('sampling')}, rate {inputs.get('sampling_rate')}, "
            f"fps {inputs.get('target_fps')})"),
        ),
        ("input protocol from", str(inputs.get("origin") or "the data config")),
    ]
    if inputs.get("model_options"):
        rows.append(("model options", str(inputs["model_options"])))
    if inputs.get("command_line"):
        rows.append(("changed on the command line", ", ".join(inputs["command_line"])))
    return rows


def write_artefacts(
    out_dir: str | Path,
    preds: Predictions,
    class_names: Sequence[str],
    video_ids: Sequence[str],
    info: ReportInfo,
    prefix: str = "test",
) -> dict[str, Any]:
    """Write every artefact of one evaluation into ``out_dir``; returns metrics and file paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = len(class_names)
    if preds.scores.shape[1] != k:
        raise ValueError(
            f"scores have {preds.scores.shape[1]} classes but there are {k} class names; "
            "evaluate on the dataset the checkpoint was trained for"
        )
    scores = preds.scores.float()
    labels = preds.labels
    metrics = classification_metrics(scores, labels, k)
    known = labels >= 0
    counts, correct = per_class_accuracy(scores[known], labels[known], k)
    cm = confusion_matrix(scores.argmax(1), labels, k)
    pairs = top_confused_pairs(cm, class_names, k=10)

    files = {
        name: out / name
        for name in (
            "metrics.json",
            "per_class.csv",
            "predictions.csv",
            "confused_pairs.csv",
            "confusion.png",
            "report.md",
        )
    }
    _write_csv(
        files["per_class.csv"],
        ["class_id", "class_name", "videos", "correct", "accuracy"],
        [
            (
                i,
                class_names[i],
                int(counts[i]),
                int(correct[i]),
                f"{correct[i] / counts[i]:.6f}" if counts[i] else "",
            )
            for i in range(k)
        ],
    )
    top = scores.topk(min(5, k), dim=1)
    pred_rows = []
    for row, idx in enumerate(preds.index.tolist()):
        cells: list[Any] = [idx, video_ids[idx], int(labels[row])]
        for c, s in zip(top.indices[row].tolist(), top.values[row].tolist()):
            cells += [class_names[c], f"{s:.6g}"]
        pred_rows.append(cells)
    header = ["index", "video_id", "label"]
    for r in range(1, min(5, k) + 1):
        header += [f"top{r}_class", f"top{r}_score"]
    _write_csv(files["predictions.csv"], header, pred_rows)
    _write_csv(
        files["confused_pairs.csv"],
        ["true_id", "true", "predicted_id", "predicted", "count", "share_of_true"],
        [tuple(r.values()) for r in pairs],
    )
    _plot_confusion(
        cm,
        class_names,
        files["confusion.png"],
        f"{info.protocol.get('name')} on {info.split}: top-1 {100 * metrics['acc']:.1f}%",
    )
    acc = [(class_names[i], int(counts[i]), correct[i] / counts[i]) for i in range(k) if counts[i]]
    worst = sorted(acc, key=lambda r: r[2])[:10]
    files["report.md"].write_text(_report_markdown(info, metrics, len(preds), pairs, worst))
    named = {f"{prefix}/{name}": value for name, value in metrics.items()}
    payload = {
        "ckpt_path": info.ckpt_path,
        "split": info.split,
        "protocol": info.protocol,
        "videos": len(preds),
        "params": info.params,
        "gmacs_per_view": info.gmacs_per_view,
        "gmacs_per_video": info.gmacs_per_view * info.views
        if info.gmacs_per_view is not None
        else None,
        "input_thw": list(info.input_thw) if info.input_thw else None,
        "seconds": info.seconds,
        "inputs": info.inputs,
        "paper": info.paper,
        "metrics": named,
    }
    files["metrics.json"].write_text(json.dumps(payload, indent=2))
    return {"metrics": named, "files": files, "confused_pairs": pairs}


def log_artefacts_to_wandb(loggers: Sequence[Any], artefacts: dict[str, Any], prefix: str) -> bool:
    """Log the metrics, the confusion PNG and the CSV tables to every W&B logger; True if any."""
    from lightning.pytorch.loggers import WandbLogger

    logged = False
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        run = logger.experiment
        files = artefacts["files"]
        payload: dict[str, Any] = dict(artefacts["metrics"])
        payload[f"{prefix}/confusion"] = wandb.Image(str(files["confusion.png"]))
        for name in ("per_class", "predictions", "confused_pairs"):
            with open(files[f"{name}.csv"], newline="") as f:
                rows = list(csv.reader(f))
            payload[f"{prefix}/{name}"] = wandb.Table(columns=rows[0], data=rows[1:])
        run.log(payload)
        run.summary.update(artefacts["metrics"])
        artifact = wandb.Artifact(f"eval-{run.id}", type="evaluation")
        for path in files.values():
            artifact.add_file(str(path))
        run.log_artifact(artifact)
        logged = True
    return logged
