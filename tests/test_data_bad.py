"""Bad data never stops a run: every kind of bad file in one dataset, a full epoch with 2 workers."""

import shutil

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actionlab.data.datamodule import VideoDataModule, VideoDataset, read_bad_video_reports
from actionlab.data.datasets.base import VideoRecord
from actionlab.data.datasets.filelist import ListAnnotations
from actionlab.data.datasets.synthetic import render_clip, write_mp4
from actionlab.data.readers import DecordReader, VideoReadError
from actionlab.data.sampling import SegmentSampler
from actionlab.data.transforms import ClipTransform

GOOD = 8


def make_videos(root):
    """8 good videos and one of each kind of bad file; returns (good names, bad names)."""
    videos = root / "videos"
    videos.mkdir(parents=True)
    good = []
    for i in range(GOOD):
        frames = render_clip(i % 2, np.random.default_rng(i), 8 + i % 3, 32, 40)
        write_mp4(videos / f"good{i}.mp4", frames)
        good.append(f"good{i}.mp4")
    data = (videos / "good0.mp4").read_bytes()
    (videos / "corrupt.mp4").write_bytes(b"\x00" * 4096 + data[4096:])  # header destroyed
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])  # index (moov) cut off
    (videos / "empty.mp4").write_bytes(b"")  # zero bytes
    from PIL import Image

    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(videos / "image.png")
    shutil.move(videos / "image.png", videos / "picture.avi")  # wrong extension: a PNG
    write_mp4(videos / "short.mp4", render_clip(0, np.random.default_rng(99), 2, 32, 40))
    bad = ["corrupt.mp4", "truncated.mp4", "empty.mp4", "picture.avi", "missing.mp4", "short.mp4"]
    return good, bad


class Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.seen = {"train": [], "val": []}
        self.shapes = set()

    def _step(self, batch, stage):
        clips, labels, index = batch
        self.seen[stage] += index.tolist()
        self.shapes.add(tuple(clips.shape[1:]))
        return F.cross_entropy(self.fc(clips.mean((2, 3, 4))), labels)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_full_epoch_with_two_workers_survives_every_kind_of_bad_video(tmp_path):
    good, bad = make_videos(tmp_path / "data")
    names = good[:4] + bad[:3] + good[4:] + bad[3:]  # interleaved: bad ones land in both workers
    lines = "".join(f"videos/{n} {int(n in good) and int(n[4:-4]) % 2}\n" for n in names)
    (tmp_path / "data" / "train.txt").write_text(lines)
    (tmp_path / "data" / "val.txt").write_text(lines)
    dm = VideoDataModule(
        str(tmp_path / "data"), ListAnnotations, num_classes=2, num_frames=4, crop_size=24,
        scale_size=28, batch_size=7, num_workers=2, min_video_frames=4, max_retries=20,
    )
    model = Recorder()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=str(tmp_path / "run"))
    trainer.fit(model, datamodule=dm)  # must not raise

    records = dm.datasets["train"].records
    good_index = {i for i, r in enumerate(records) if r.path.rsplit("/", 1)[1] in good}
    assert len(records) == 14 and len(good_index) == GOOD
    for stage in ("train", "val"):
        seen = model.seen[stage]
        # Every item produced a clip (2 full batches), only ever from a good video, and every
        # good video was seen (each good index loads itself). Validation marks the substitutes
        # of bad videos with their negative index (-1 - i) so that metrics leave them out.
        assert len(seen) == 14, stage
        assert {i for i in seen if i >= 0} == good_index, stage
        excluded = sorted(-1 - i for i in seen if i < 0)
        assert excluded == ([] if stage == "train" else sorted(set(range(14)) - good_index)), stage
    assert model.shapes == {(3, 4, 24, 24)}

    # Each bad video recorded exactly once across the 2 workers, train and val.
    reports = read_bad_video_reports(dm.report_dir)
    assert sorted(p.rsplit("/", 1)[1] for p in reports) == sorted(bad)
    assert len([p for p in (tmp_path / "run" / ".bad_videos").iterdir()]) == len(bad)
    assert "fewer than data.min_video_frames=4" in reports[str(tmp_path / "data" / "videos" / "short.mp4")]
    assert "not found" in reports[str(tmp_path / "data" / "videos" / "missing.mp4")]
    assert "0 bytes" in reports[str(tmp_path / "data" / "videos" / "empty.mp4")]
    # The epoch-end report in the run directory lists them with their reasons.
    listed = (tmp_path / "run" / "bad_videos.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0].rsplit("/", 1)[1] for line in listed) == sorted(bad)
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] for line in listed)
    assert trainer.callback_metrics["data/bad_videos"].item() == len(bad)


def test_fail_policy_and_bounded_retries(tmp_path):
    good, bad = make_videos(tmp_path)
    reader, sampler, transform = DecordReader(), SegmentSampler(4), ClipTransform(24, 28, False)
    bad_records = [VideoRecord(str(tmp_path / "videos" / n), 0) for n in bad]
    for record in bad_records:
        strict = VideoDataset([record], reader, sampler, transform, train=False, bad_video_policy="fail",
                              min_video_frames=4)
        with pytest.raises(VideoReadError, match=record.path.rsplit("/", 1)[1]):
            strict[0]
    # Nothing but bad videos: skip gives up after max_retries + 1 attempts, naming the fix.
    hopeless = VideoDataset(bad_records, reader, sampler, transform, train=False, max_retries=3,
                            min_video_frames=4, report_dir=str(tmp_path / "reports"))
    with pytest.raises(VideoReadError, match="4 videos in a row failed.*data.root"):
        hopeless[0]
    assert 1 <= len(read_bad_video_reports(str(tmp_path / "reports"))) <= 4


def test_short_videos_are_padded_not_dropped_above_the_minimum(tmp_path):
    write_mp4(tmp_path / "short.mp4", render_clip(0, np.random.default_rng(1), 3, 32, 40))
    ds = VideoDataset([VideoRecord(str(tmp_path / "short.mp4"), 1)], DecordReader(), SegmentSampler(8),
                      ClipTransform(24, 28, False, mean=(0, 0, 0), std=(1, 1, 1)), train=True)
    clip, label, index = ds[0]
    assert clip.shape == (3, 8, 24, 24) and label == 1 and not ds.bad_videos
