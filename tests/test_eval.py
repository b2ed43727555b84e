"""``eval.py`` end to end on a trained synthetic checkpoint: 1-clip reproduces the training
validation, 2-clip aggregates six views, converted checkpoints, artefacts and W&B."""

import csv
import json
from pathlib import Path

import hydra
import pytest
import torch
from conftest import _compose
from filelock import FileLock
from omegaconf import OmegaConf

from actionlab import evaluate, train
from actionlab.data.readers import DecordReader
from actionlab.data.views import MultiViewDataset, resolve_protocol
from actionlab.models.convert.common import read_lab_checkpoint, save_lab_checkpoint

# Overfitting: the training crop sees the frame at the test scale (32 px short side), little jitter.
OVERFIT_SIZE = [
    "data.num_frames=4",
    "data.crop_size=32",
    "data.scale_size=32",
    "data.train_scale_size=32",
]
# Its own small dataset: 8 training videos (ids 0-7, one per class) and 2 validation videos
# (ids 8, 9: classes 0 and 1). A batch of 2 makes the validation set exactly one batch.
OVERFIT_DATA = [
    "data.annotations.num_train=8",
    "data.annotations.num_val=2",
    "data.annotations.min_frames=8",
    "data.annotations.max_frames=10",
]
OVERFIT_STEPS = 40


def train_overfit_checkpoint(base_dir: Path) -> tuple[Path, dict[str, float], Path]:
    """RubiksNet-Tiny (4 x 32 x 32, AdamW, constant LR) overfitted on training videos 0 and 1
    (classes 0 and 1).

    ``overfit_batches=1`` repeats the first (unshuffled) batch of 2 for ``OVERFIT_STEPS`` steps;
    validation runs once, at the end, on both validation videos. Cached on disk for the session
    so the eval and predict test modules share one training run.
    Returns ``(checkpoint, the training's final metrics, dataset root)``.
    """
    run_dir = base_dir / "eval_trained_rubiks_tiny"
    root = base_dir / "eval_synthetic"
    metrics_file = run_dir / "train_metrics.json"
    with FileLock(str(base_dir / "eval_trained.lock")):
        if not metrics_file.is_file():
            cfg = _compose(
                "train",
                [
                    "trainer=cpu",
                    "logger=none",
                    f"data.root={root}",
                    *OVERFIT_DATA,
                    *OVERFIT_SIZE,
                    "data.batch_size=2",
                    "data.num_workers=0",
                    "optimizer=adamw",
                    "scheduler=none",
                    f"trainer.max_epochs={OVERFIT_STEPS}",
                    f"trainer.check_val_every_n_epoch={OVERFIT_STEPS}",
                    "+trainer.overfit_batches=1",
                    "+trainer.num_sanity_val_steps=0",
                    "+trainer.enable_progress_bar=false",
                    "~callbacks.model_summary",
                ],
                run_dir,
            )
            metrics = train.run(cfg)
            run_dir.mkdir(parents=True, exist_ok=True)
            metrics_file.write_text(json.dumps(metrics))
    # The newest checkpoint holds the final weights, whichever callback wrote it last.
    ckpt = max((run_dir / "out" / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    return ckpt, json.loads(metrics_file.read_text()), root


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return train_overfit_checkpoint(tmp_path_factory.getbasetemp())


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_1clip_eval_reproduces_training_validation(trained, compose_eval):
    ckpt, train_metrics, _ = trained
    cfg = compose_eval(f"ckpt_path={ckpt}", "split=val", "eval.protocol=1clip")
    metrics = evaluate.run(cfg)
    assert metrics["val/acc"] == pytest.approx(train_metrics["val/acc"], abs=1e-6)
    assert metrics["val/loss"] == pytest.approx(train_metrics["val/loss"], rel=1e-4)
    assert metrics["val/acc5"] == pytest.approx(train_metrics["val/acc5"], abs=1e-6)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["protocol"]["name"] == "1clip" and saved["protocol"]["views"] == 1
    assert saved["params"] > 1_000_000 and saved["gmacs_per_view"] > 0
    preds = _rows(out / "predictions.csv")
    assert [r["video_id"] for r in preds] == ["8", "9"] and [r["label"] for r in preds] == [
        "0",
        "1",
    ]
    per_class = _rows(out / "per_class.csv")
    assert len(per_class) == 8 and [r["videos"] for r in per_class[:3]] == ["1", "1", "0"]
    report = (out / "report.md").read_text()
    assert "x 1 views" in report and "`1clip`" in report and (out / "confusion.png").is_file()


@pytest.mark.slow
def test_2clip_scores_are_mean_logits_of_six_views(trained, compose_eval):
    ckpt, _, _ = trained
    cfg = compose_eval(
        f"ckpt_path={ckpt}", "split=val", "eval.protocol=2clip", "eval.max_views_per_batch=4"
    )
    metrics = evaluate.run(cfg)
    out = Path(cfg.paths.output_dir)
    preds = _rows(out / "predictions.csv")
    # Recompute each video's score by hand: mean of the six views' logits.
    module, info = evaluate.load_classifier(str(ckpt))
    data_cfg = OmegaConf.create(info["data"])
    protocol = resolve_protocol(OmegaConf.create({"protocol": "2clip"}), data_cfg)
    records = hydra.utils.instantiate(data_cfg).annotations.records("val")
    dataset = MultiViewDataset(records, DecordReader(), protocol)
    names = info["class_names"]
    correct = 0
    for i, row in enumerate(preds):
        views, label, _ = dataset[i]
        assert views.shape == (6, 3, 4, 32, 32)
        with torch.no_grad():
            logits = module.model(views).mean(dim=0)
        assert row["top1_class"] == names[int(logits.argmax())]
        assert float(row["top1_score"]) == pytest.approx(float(logits.max()), rel=1e-4, abs=1e-5)
        correct += int(logits.argmax()) == label
    assert metrics["val/acc"] == pytest.approx(correct / len(preds))
    assert json.loads((out / "metrics.json").read_text())["protocol"]["views"] == 6
    assert "x 6 views" in (out / "report.md").read_text()


@pytest.mark.slow
def test_converted_checkpoint_dense_views_and_wandb(trained, compose_eval, tmp_path, monkeypatch):
    ckpt, _, root = trained
    state, info = read_lab_checkpoint(ckpt)
    model = hydra.utils.instantiate(OmegaConf.create(info["model"]))
    model.load_state_dict(state)
    converted = tmp_path / "converted.ckpt"
    save_lab_checkpoint(converted, model, info["model"], source="released weights (test)")
    with pytest.raises(ValueError, match="data=<name>"):
        evaluate.run(compose_eval(f"ckpt_path={converted}"))

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_eval(
        f"ckpt_path={converted}",
        "data=synthetic",
        f"data.root={root}",
        *OVERFIT_DATA,
        *OVERFIT_SIZE,
        "data.batch_size=2",
        "split=val",
        "eval.protocol=kinetics_10x3",
        "eval.clips=2",
        "eval.sampling_rate=2",
        "logger=wandb",
        "logger.wandb.project=test",
    )
    metrics = evaluate.run(cfg)
    assert set(metrics) == {"val/acc", "val/acc5", "val/mean_class_acc", "val/loss"}
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["protocol"]["sampling"] == "dense" and saved["protocol"]["views"] == 6
    assert (
        saved["protocol"]["aggregate"] == "softmax_mean" and saved["protocol"]["scale_size"] == 32
    )  # = crop
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = {p.name for p in (runs[0] / "files" / "media").rglob("*")}
    assert any(n.endswith(".png") for n in media)  # the confusion matrix
    assert any(n.endswith(".table.json") for n in media)


def test_bad_protocol_and_split_are_named(compose_eval, tmp_path):
    with pytest.raises(ValueError, match="eval.protocol must be one of"):
        evaluate.run(compose_eval("ckpt_path=x.ckpt", "eval.protocol=3clip", "split=val"))
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate.run(compose_eval("ckpt_path=x.ckpt", "split=train"))


@pytest.mark.slow
def test_original_protocols_and_bgr_run_through_eval(trained, compose_eval):
    """TokShift's and SRTG's protocols end to end; data.channel_order=bgr reaches the reader
    (the same checkpoint scores the BGR frames differently) and the report names the rules."""
    ckpt, _, root = trained
    common = [f"ckpt_path={ckpt}", "data=synthetic", f"data.root={root}", *OVERFIT_DATA,
              *OVERFIT_SIZE, "data.batch_size=2", "split=val"]
    scores = {}
    for order in ("rgb", "bgr"):
        cfg = compose_eval(*common, "eval.protocol=tokshift_10x3", "eval.clips=2",
                           "data.sampling_rate=2", f"data.channel_order={order}")
        evaluate.run(cfg)
        out = Path(cfg.paths.output_dir)
        saved = json.loads((out / "metrics.json").read_text())["protocol"]
        assert (saved["name"], saved["views"], saved["resize"], saved["aggregate"]) == (
            "tokshift_10x3", 6, "tokshift", "logits_mean")
        assert "TokShift" in saved["reference"]
        scores[order] = [float(r["top1_score"]) for r in _rows(out / "predictions.csv")]
        out.joinpath("metrics.json").unlink()
    assert scores["rgb"] != scores["bgr"]
    cfg = compose_eval(*common, "eval.protocol=srtg_1x1", "eval.scale_size=36")
    evaluate.run(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["protocol"]
    assert (saved["sampling"], saved["scale_size"], saved["crop_size"], saved["views"]) == (
        "srtg", 36, 32, 1)
