"""Single-video inference: the top classes of one video from a lab checkpoint.

    python -m actionlab.predict ckpt_path=model.ckpt video=clip.mp4 [protocol=2clip topk=5]

Arguments are Hydra overrides of ``conf/predict.yaml``. Class names come from the checkpoint
(saved at training time from the dataset's labels file); a converted release checkpoint has
none, so pass ``labels=labels.json`` (SSv2 ``{name: id}``, a JSON list, or one name per line).
The input protocol (colour order, mean/std, frames, sampling, views, aggregation, model
options) is the checkpoint's, as in ``eval.py``; ``protocol``/``aggregate``/``num_frames``/
``crop_size``/``scale_size``/``sampling_rate`` given on the command line win and are printed as
changes from it. The video goes through the same views as ``eval.py``
(``actionlab.data.views``), so a prediction matches the evaluation's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from actionlab.data.datasets.base import VideoRecord
from actionlab.data.readers import DecordReader
from actionlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from actionlab.data.views import MultiViewDataset, resolve_protocol
from actionlab.pretrained.protocol import apply_protocol, describe_changes, plain

__all__ = ["main", "predict", "predict_inputs", "read_class_names"]

# predict.yaml keys and the data / eval fields they set (as in eval.py).
OPTIONS = {
    "protocol": "eval.protocol",
    "aggregate": "eval.aggregate",
    "num_frames": "data.num_frames",
    "crop_size": "eval.crop_size",
    "scale_size": "eval.scale_size",
    "sampling_rate": "eval.sampling_rate",
}


def read_class_names(path: str | Path) -> list[str]:
    """Class names in id order from an SSv2 ``labels.json`` (``{name: id}``), a JSON list or a
    text file with one name per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path} (labels=PATH)")
    if path.suffix == ".json":
        raw = json.loads(path.read_text())
        if isinstance(raw, dict):
            return sorted(raw, key=lambda name: int(raw[name]))
        return [str(name) for name in raw]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def predict_inputs(
    cfg: DictConfig, info: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, Any, Any]]]:
    """Data and eval fields of a prediction: the checkpoint's protocol over the lab defaults,
    the command-line options over both; plus the options that change the protocol."""
    from actionlab.evaluate import checkpoint_protocol

    data: dict[str, Any] = {
        "num_frames": info["model"].get("num_frames", 8),
        "crop_size": 224,
        "scale_size": 256,
        "sampling": "segment",
        "sampling_rate": 1,
        "target_fps": None,
        "pad": "repeat",
        "channel_order": "rgb",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        **{k: v for k, v in plain(info.get("data") or {}).items() if v is not None},
    }
    evals: dict[str, Any] = {"protocol": "1clip"}
    typed = set()
    for option, dotted in OPTIONS.items():
        if cfg.get(option) is not None:
            section, key = dotted.split(".")
            (data if section == "data" else evals)[key] = plain(cfg.get(option))
            typed.add(dotted)
    changes = apply_protocol(checkpoint_protocol(info), {"data": data, "eval": evals}, typed)
    return data, evals, changes


@torch.no_grad()
def predict(cfg: DictConfig) -> list[tuple[str, float]]:
    """``[(class name, probability), ...]`` of the ``cfg.topk`` best classes of ``cfg.video``."""
    from actionlab.evaluate import load_classifier

    if not Path(cfg.video).is_file():
        raise FileNotFoundError(f"video not found: {cfg.video} (video=PATH)")
    module, info = load_classifier(cfg.ckpt_path, model_overrides=cfg.get("model_overrides"))
    if cfg.get("labels"):
        names = read_class_names(cfg.labels)
    elif info.get("class_names"):
        names = list(info["class_names"])
    else:
        raise ValueError(
            f"{cfg.ckpt_path} stores no class names (a converted release checkpoint?); "
            "pass labels=PATH to the dataset's labels file"
        )
    if len(names) != module.num_classes:
        raise ValueError(
            f"{len(names)} class names but the checkpoint predicts {module.num_classes} classes; "
            "pass the labels file of the dataset it was trained on (labels=PATH)"
        )
    data, evals, changes = predict_inputs(cfg, info)
    changes = [*changes, *module.protocol_changes]
    if changes:
        from actionlab.evaluate import checkpoint_protocol

        print(describe_changes(checkpoint_protocol(info) or {}, changes), file=sys.stderr)
    protocol = resolve_protocol(OmegaConf.create(evals), OmegaConf.create(data))
    module.aggregate = protocol.aggregate
    dataset = MultiViewDataset(
        [VideoRecord(str(cfg.video), -1, Path(cfg.video).stem)],
        DecordReader(channel_order=data["channel_order"]),
        protocol,
        mean=data["mean"],
        std=data["std"],
        bad_video_policy="fail",
    )
    views, _, _ = dataset[0]
    device = torch.device(
        cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    module.to(device).eval()
    module.max_views_per_batch = cfg.get("max_views_per_batch")
    scores = module(views.unsqueeze(0).to(device))[0].float()
    # logits_mean gives logits; softmax_mean and sum give probabilities (sum: V times them).
    probs = scores.softmax(dim=-1) if protocol.aggregate == "logits_mean" else scores / scores.sum()
    top = probs.topk(min(int(cfg.topk), probs.numel()))
    return [(names[i], float(p)) for i, p in zip(top.indices.tolist(), top.values.tolist())]


def _compose(overrides: Sequence[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    import actionlab  # noqa: F401  (registers the config resolvers)
    from actionlab.profile import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("predict", overrides=list(overrides))


def main(argv: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """``python -m actionlab.predict ckpt_path=PATH video=PATH [key=value ...]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return []
    cfg = _compose(args)
    missing = [k for k in ("ckpt_path", "video") if OmegaConf.is_missing(cfg, k)]
    if missing:
        raise SystemExit(
            "missing "
            + ", ".join(missing)
            + ": python -m actionlab.predict ckpt_path=PATH video=PATH"
        )
    top = predict(cfg)
    width = max(len(name) for name, _ in top)
    print(f"{cfg.video} ({cfg.protocol or 'the checkpoint protocol'}):")
    for rank, (name, prob) in enumerate(top, 1):
        print(f"  {rank}. {name:<{width}}  {prob:.4f}")
    return top


if __name__ == "__main__":
    main()
