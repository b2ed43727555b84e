"""A bad video in validation/test is left out of the metrics (never replaced by a counted
substitute), counted per epoch, logged once, and decord/FFmpeg's own lines go into that log line."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from actionlab.data.datamodule import VideoDataModule, excluded_index
from actionlab.data.datasets.filelist import ListAnnotations
from actionlab.data.datasets.synthetic import render_clip, write_mp4
from actionlab.lit.module import VideoClassifier

GOOD = 6


class MeanColour(nn.Module):
    """Logits from the mean colour: fast, deterministic, and not always right."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [-0.5, 1.0, -1.0]]))
            self.fc.bias.zero_()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.fc(clips.mean((2, 3, 4)))


@pytest.fixture
def data(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    lines = []
    for i in range(GOOD):
        write_mp4(videos / f"good{i}.mp4", render_clip(i % 2, np.random.default_rng(i), 8, 32, 40))
        lines.append(f"videos/good{i}.mp4 {i % 2}")
    whole = (videos / "good0.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(whole[: len(whole) // 3])  # FFmpeg: moov atom not found
    (videos / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    lines[2:2] = ["videos/truncated.mp4 1"]
    lines.append("videos/noise.mp4 0")
    for split in ("train", "val"):
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def _datamodule(root, workers: int = 0) -> VideoDataModule:
    return VideoDataModule(str(root), ListAnnotations, num_classes=2, num_frames=4, crop_size=24, scale_size=28,
                           batch_size=4, num_workers=workers, max_retries=20)


def test_validation_metrics_leave_bad_videos_out_and_count_them(data, capfd, caplog):
    dm = _datamodule(data)
    module = VideoClassifier(MeanColour(), optimizer=None, num_classes=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(data / "run"))
    with caplog.at_level(logging.WARNING, logger="actionlab"):
        (metrics,) = trainer.validate(module, datamodule=dm, verbose=False)
    assert metrics["val/excluded_videos"] == 2

    # Expected: the good videos only, each once.
    dataset = dm.datasets["val"]
    good = [i for i, r in enumerate(dataset.records) if "good" in r.path]
    clips = dm.on_after_batch_transfer((torch.stack([dataset[i][0] for i in good]),), 0)[0]
    labels = torch.tensor([dataset.records[i].label for i in good])
    with torch.no_grad():
        expected = (module.model(clips.float()).argmax(1) == labels).float().mean().item()
    assert metrics["val/acc"] == pytest.approx(expected)

    # One warning line per bad video, with the decoder's reason; nothing native on the console.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bad video ")]
    assert len(lines) == 2 and any("[decoder: " in line and "moov atom not found" in line for line in lines)
    summary = [r.getMessage() for r in caplog.records if "bad video(s) skipped so far" in r.getMessage()]
    assert len(summary) == 1  # and one line per epoch with the count (BadVideoReport)
    err = capfd.readouterr().err
    native = [line for line in err.splitlines() if ("moov atom" in line or "ERROR opening" in line)
              and "bad video" not in line]  # (a console log handler may print our own line)
    assert native == []


def test_substitutes_carry_the_bad_videos_negative_index(data):
    dm = _datamodule(data, workers=2)
    dm.setup("fit")
    indices = torch.cat([batch[2] for batch in dm.val_dataloader()]).tolist()
    records = dm.datasets["val"].records
    bad = sorted(i for i, r in enumerate(records) if "good" not in r.path)
    assert sorted(i for i in indices if i < 0) == sorted(excluded_index(i) for i in bad)
    assert sorted(i for i in indices if i >= 0) == [i for i in range(len(records)) if i not in bad]
    train = torch.cat([batch[2] for batch in dm.train_dataloader()]).tolist()
    assert min(train) >= 0  # training keeps its full batches with real substitutes


def test_test_metrics_and_eval_counts(data):
    dm = _datamodule(data)
    module = VideoClassifier(MeanColour(), optimizer=None, num_classes=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(data / "run"))
    dm.setup("validate")
    (metrics,) = trainer.test(module, dataloaders=dm.val_dataloader(), verbose=False)
    assert metrics["test/excluded_videos"] == 2
    assert len(module.test_predictions.index) == GOOD and int(module.test_predictions.index.min()) >= 0
