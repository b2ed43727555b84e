"""SSv2 parsing, synthetic generation, decoding, sampling, clip transforms, bad-video policy."""

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from actionlab.data.datamodule import VideoDataModule, VideoDataset
from actionlab.data.datasets.base import DatasetLayoutError
from actionlab.data.datasets.ssv2 import SSv2Annotations, parse_ssv2_labels
from actionlab.data.datasets.synthetic import TEMPLATES, SyntheticSSv2, render_clip, write_mp4
from actionlab.data.readers import DecordReader, VideoReadError
from actionlab.data.sampling import SegmentSampler, segment_indices
from actionlab.data.transforms import ClipTransform

FIXTURES = Path(__file__).parent / "fixtures" / "ssv2"


def test_ssv2_parser_on_official_layout():
    ann = SSv2Annotations(str(FIXTURES))
    assert ann.class_names == [
        "Approaching something with your camera",
        "Moving something from left to right",
        "Putting something next to something",
    ]
    train = ann.records("train")
    assert [(r.video_id, r.label) for r in train] == [("78687", 1), ("42326", 2), ("100904", 0)]
    assert train[0].path.endswith("20bn-something-something-v2/78687.webm")
    assert [(r.video_id, r.label) for r in ann.records("val")] == [("74225", 2)]
    assert ann.records("test") == ann.records("val")  # test labels are not public
    test = SSv2Annotations(str(FIXTURES), test_file="test.json").records("test")
    assert [(r.video_id, r.label) for r in test] == [("1420", -1)]


def test_ssv2_missing_files_explain_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="data.root"):
        SSv2Annotations(str(tmp_path / "nowhere")).class_names
    shutil.copy(FIXTURES / "labels.json", tmp_path / "labels.json")
    with pytest.raises(DatasetLayoutError, match="(?s)video folder not found.*labels.json, train.json"):
        SSv2Annotations(str(tmp_path)).records("train")
    (tmp_path / "20bn-something-something-v2").mkdir()
    with pytest.raises(DatasetLayoutError, match="train.json"):
        SSv2Annotations(str(tmp_path)).records("train")
    with pytest.raises(DatasetLayoutError, match="not valid JSON"):
        (tmp_path / "labels.json").write_text("{")
        parse_ssv2_labels(tmp_path / "labels.json")


def test_synthetic_dataset_layout_and_decode(synthetic_root):
    ann = SSv2Annotations(str(synthetic_root), video_dir="videos", ext="mp4")
    labels = json.loads((synthetic_root / "labels.json").read_text())
    assert len(labels) == len(TEMPLATES) == len(ann.class_names)
    train, val = ann.records("train"), ann.records("val")
    assert len(train) == 32 and len(val) == 16
    assert sorted({r.label for r in train}) == list(range(8))
    reader = DecordReader()
    for record in train[:3]:
        n = reader.num_frames(record.path)
        assert 10 <= n <= 12
        frames = reader.read(record.path, range(n))
        assert frames.shape == (n, 64, 80, 3) and frames.dtype == np.uint8


def test_decoded_frames_match_rendered_frames(tmp_path):
    frames = render_clip(0, np.random.default_rng(3), 12, 64, 80)
    write_mp4(tmp_path / "v.mp4", frames)
    decoded = DecordReader().read(str(tmp_path / "v.mp4"), [0, 5, 11, 11])
    assert decoded.shape == (4, 64, 80, 3)
    def err(a, b):
        return np.abs(a.astype(float) - b.astype(float)).mean()

    # Lossy H.264 (crf 17, per-frame grain), but the same pictures in the same order.
    assert err(decoded, frames[[0, 5, 11, 11]]) < 10.0
    assert err(decoded, frames[[0, 5, 11, 11]]) < err(decoded, frames[[11, 0, 5, 0]])
    # Reading past the end is clamped, never a hang.
    assert DecordReader().read(str(tmp_path / "v.mp4"), [500]).shape == (1, 64, 80, 3)


def test_synthetic_generation_is_idempotent_and_deterministic(tmp_path):
    a = SyntheticSSv2(str(tmp_path / "a"), num_train=8, num_val=8, min_frames=8, max_frames=9)
    a.prepare()
    video = str(tmp_path / "a" / "videos" / "3.mp4")
    first = DecordReader().read(video, range(8))
    (tmp_path / "a" / "videos" / "3.mp4").unlink()  # as if interrupted
    (tmp_path / "a" / ".complete.json").unlink()
    a.prepare()
    assert np.array_equal(DecordReader().read(video, range(8)), first)
    mtime = (tmp_path / "a" / "train.json").stat().st_mtime_ns
    a.prepare()  # complete: nothing rewritten
    assert (tmp_path / "a" / "train.json").stat().st_mtime_ns == mtime


def test_segment_sampling_rules():
    # Evaluation: segment centres int(tick/2 + tick*k) (TSM), 0-based.
    assert segment_indices(48, 8, train=False).tolist() == [3, 9, 15, 21, 27, 33, 39, 45]
    rng = np.random.default_rng(0)
    for n in (5, 8, 9, 30, 200):
        idx = segment_indices(n, 8, train=True, rng=rng)
        assert len(idx) == 8 and idx.min() >= 0 and idx.max() < n
        assert np.all(np.diff(idx) >= 0)
        if n >= 8:
            seg = n // 8
            assert np.all((idx >= np.arange(8) * seg) & (idx < np.arange(8) * seg + seg))
    assert SegmentSampler(4)(4, False, rng).tolist() == [0, 1, 2, 3]


def test_clip_transform_same_crop_for_every_frame():
    frame = np.random.default_rng(0).integers(0, 255, size=(40, 50, 3), dtype=np.uint8)
    clip = np.stack([frame] * 6)
    t = ClipTransform(32, (36, 44), train=True, mean=(0, 0, 0), std=(1, 1, 1))
    out, label = t(clip, 3, np.random.default_rng(1))
    assert out.shape == (3, 6, 32, 32) and label == 3
    assert all(torch.equal(out[:, 0], out[:, i]) for i in range(6))
    val = ClipTransform(32, 36, train=False)
    a, _ = val(clip, 0, np.random.default_rng(1))
    b, _ = val(clip, 0, np.random.default_rng(2))
    assert torch.equal(a, b)  # centre crop: no randomness


def test_flip_swaps_labels_per_map():
    clip = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    clip[:, :, :4] = 255  # left half white
    t = ClipTransform(8, 8, train=True, mean=(0, 0, 0), std=(1, 1, 1), flip=True, flip_label_map={0: 1, 1: 0})
    seen = set()
    for seed in range(20):
        out, label = t(clip, 0, np.random.default_rng(seed))
        flipped = bool(out[0, 0, 0, -1] > 0.5)
        assert label == (1 if flipped else 0)
        seen.add(flipped)
    assert seen == {True, False}


def test_bad_videos_are_skipped_logged_and_counted(synthetic_root, tmp_path, caplog):
    ann = SSv2Annotations(str(synthetic_root), video_dir="videos", ext="mp4")
    records = ann.records("val")[:4]
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    from actionlab.data.datasets.base import VideoRecord

    bad = [VideoRecord(str(tmp_path / "empty.mp4"), 0), VideoRecord(str(tmp_path / "junk.mp4"), 0),
           VideoRecord(str(tmp_path / "missing.mp4"), 0)]
    ds = VideoDataset(records + bad, DecordReader(), SegmentSampler(4), ClipTransform(32, 40, False), train=False)
    seen = [ds[i] for i in range(len(ds))]
    assert all(clip.shape == (3, 4, 32, 32) for clip, _, _ in seen)
    assert all(index < 4 for _, _, index in seen)  # replaced by good videos
    assert set(ds.bad_videos) == {r.path for r in bad}
    assert "empty.mp4" in caplog.text
    strict = VideoDataset(bad, DecordReader(), SegmentSampler(4), ClipTransform(32, 40, False), False, "fail")
    with pytest.raises(VideoReadError, match="missing.mp4|empty.mp4|junk.mp4"):
        strict[2]


def test_datamodule_batches_and_class_check(synthetic_root):
    dm = VideoDataModule(str(synthetic_root), partial(SyntheticSSv2, num_train=32, num_val=16,
                         min_frames=10, max_frames=12), num_classes=8, num_frames=4, crop_size=32,
                         scale_size=40, batch_size=4, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    clips, labels, index = next(iter(dm.train_dataloader()))
    assert clips.shape == (4, 3, 4, 32, 32) and clips.dtype == torch.float32
    assert labels.dtype == torch.int64 and index.shape == (4,)
    wrong = VideoDataModule(str(synthetic_root), partial(SSv2Annotations, video_dir="videos", ext="mp4"),
                            num_classes=174, num_workers=0)
    with pytest.raises(ValueError, match="data.num_classes=8"):
        wrong.setup("fit")
