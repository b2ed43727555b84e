"""Evaluation protocols: exact frame indices and crop boxes, and the decoded multi-view items."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from actionlab.data.datamodule import VideoDataset
from actionlab.data.datasets.base import VideoRecord
from actionlab.data.datasets.synthetic import render_clip, write_mp4
from actionlab.data.readers import DecordReader
from actionlab.data.sampling import DenseSampler, SegmentSampler
from actionlab.data.transforms import ClipTransform, resize_short_side
from actionlab.data.views import (
    PROTOCOLS,
    MultiViewDataset,
    resolve_protocol,
    spatial_views,
    temporal_views,
)

DATA = OmegaConf.create({"num_frames": 8, "crop_size": 224, "scale_size": 256})


def protocol(name, data=DATA, **overrides):
    return resolve_protocol(OmegaConf.create({"protocol": name, **overrides}), data)


def test_1clip_segment_centres_and_centre_crop():
    p = protocol("1clip")
    assert (p.clips, p.crops, p.views, p.aggregate) == (1, 1, 1, "logits_mean")
    (clip,) = temporal_views(48, p)
    # tick = 6: int(3 + 6k), RubiksNet/TSM 1-based int(tick/2 + tick*k) + 1 minus one.
    assert clip.tolist() == [3, 9, 15, 21, 27, 33, 39, 45]
    # 256 short side, 224 centre crop of a 340x256 (W x H) frame.
    assert spatial_views(256, 340, p) == [(16, 58)]


def test_2clip_centres_then_starts_and_three_tsm_crops():
    p = protocol("2clip")
    assert (p.clips, p.crops, p.views, p.scale_size) == (2, 3, 6, 256)
    centres, starts = temporal_views(48, p)
    assert centres.tolist() == [3, 9, 15, 21, 27, 33, 39, 45]
    assert starts.tolist() == [0, 6, 12, 18, 24, 30, 36, 42]
    # GroupFullResSample: w_step = (340-224)//4 = 29, h_step = (256-224)//4 = 8;
    # in its order left (0, 2h), right (4w, 2h), centre (2w, 2h), as (y0, x0).
    assert spatial_views(256, 340, p) == [(16, 0), (16, 116), (16, 58)]
    # Quarter steps: a 341-wide frame keeps the same boxes (PySlowFast would move to 59/117).
    assert spatial_views(256, 341, p) == [(16, 0), (16, 116), (16, 58)]
    # Non-multiple length: tick = 50/8 = 6.25.
    centres, starts = temporal_views(50, p)
    assert centres.tolist() == [3, 9, 15, 21, 28, 34, 40, 46]
    assert starts.tolist() == [0, 6, 12, 18, 25, 31, 37, 43]


def test_kinetics_10x3_dense_clips_and_pyslowfast_crops():
    data = OmegaConf.create(
        {"num_frames": 8, "crop_size": 224, "scale_size": 256, "sampling_rate": 8}
    )
    p = protocol("kinetics_10x3", data)
    assert (p.clips, p.crops, p.views, p.scale_size, p.aggregate) == (
        10,
        3,
        30,
        224,
        "softmax_mean",
    )
    clips = temporal_views(300, p)
    # span 8 x 8 = 64, delta = 236, starts round(linspace(0, 236, 10)).
    starts = [0, 26, 52, 79, 105, 131, 157, 184, 210, 236]
    assert [c.tolist() for c in clips] == [[s + 8 * i for i in range(8)] for s in starts]
    # Short side resized to the crop (224): a 298x224 frame gives left/centre/right that cover it.
    assert spatial_views(224, 298, p) == [(0, 0), (0, 37), (0, 74)]
    assert spatial_views(298, 224, p) == [(0, 0), (37, 0), (74, 0)]  # portrait: top/centre/bottom
    # eval.sampling_rate overrides the data's.
    assert temporal_views(300, protocol("kinetics_10x3", data, sampling_rate=2))[
        0
    ].tolist() == list(range(0, 16, 2))


def test_ssv2_2x3_draws_per_view_and_explicit_clips_crops():
    p = protocol("ssv2_2x3")
    assert (p.clips, p.crops, p.scale_size, p.aggregate, p.frames_per_view) == (
        2, 3, 224, "sum", True
    )
    views = temporal_views(48, p, key=7)
    # VoV3D: seg = 47/8; every one of the 6 views draws a frame in each [round(seg i),
    # round(seg (i+1))], the same draws for the same video (key) every time.
    assert len(views) == 6 and len({tuple(v) for v in views}) > 1
    assert all(np.array_equal(a, b) for a, b in zip(views, temporal_views(48, p, key=7)))
    (single,) = temporal_views(48, protocol("ssv2_2x3", clips=1, crops=1))
    # [0, 6], [6, 12], [12, 18], [18, 24] (23.5 rounds to even), [24, 29], ...: (a + b) // 2.
    assert single.tolist() == [3, 9, 15, 21, 26, 32, 38, 44]
    p4 = protocol("1clip", clips=4, crops=3, aggregate="sum")
    assert (p4.views, p4.aggregate) == (12, "sum")
    clips = temporal_views(48, p4)
    # Offsets (1/2 + j/4) mod 1 of each 6-frame segment: centres first, then 3/4, starts, 1/4.
    assert [c[:2].tolist() for c in clips] == [[3, 9], [4, 10], [0, 6], [1, 7]]
    assert all(np.all(np.diff(c) > 0) for c in clips)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"protocol": "3clip"}, "eval.protocol must be one of"),
        ({"protocol": "1clip", "crops": 2}, "eval.crops"),
    ],
)
def test_bad_protocol_settings_name_the_key(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_protocol(OmegaConf.create(overrides), DATA)


def test_named_protocols_are_the_documented_ones():
    assert set(PROTOCOLS) == {
        "1clip", "2clip", "kinetics_10x3", "ssv2_2x3", "pyslowfast_10x3", "tokshift_10x3",
        "srtg_1x1",
    }
    import actionlab.data.views as views

    assert all(f"``{name}``" in views.__doc__ for name in PROTOCOLS)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("views") / "clip.mp4"
    frames = render_clip(0, np.random.default_rng(0), 24, 48, 64)
    write_mp4(path, frames)
    return str(path)


def test_multiview_item_matches_manual_views(video):
    small = OmegaConf.create({"num_frames": 4, "crop_size": 32, "scale_size": 40})
    p = protocol("2clip", small)
    ds = MultiViewDataset(
        [VideoRecord(video, 3, "clip")], DecordReader(), p, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    views, label, index = ds[0]
    assert views.shape == (6, 3, 4, 32, 32) and label == 3 and index == 0
    reader = DecordReader()
    starts = temporal_views(24, p)[1]
    frames = torch.from_numpy(reader.read(video, starts)).permute(0, 3, 1, 2)
    frames = resize_short_side(frames, 40, "tsm")
    assert frames.shape[-2:] == (40, 53)  # int(40 * 64 / 48)
    y0, x0 = spatial_views(40, 53, p)[2]  # TSM's third crop (centre) of the second clip = view 5
    expected = (
        frames[..., y0 : y0 + 32, x0 : x0 + 32].permute(1, 0, 2, 3).float() / 255 - 0.5
    ) / 0.25
    torch.testing.assert_close(views[5], expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(views[3], views[5])


def test_1clip_view_equals_the_validation_clip(video):
    """Evaluation's 1-clip view is exactly what validation during training sees."""
    small = OmegaConf.create({"num_frames": 4, "crop_size": 32, "scale_size": 40})
    record = VideoRecord(video, 0, "clip")
    views, _, _ = MultiViewDataset([record], DecordReader(), protocol("1clip", small))[0]
    val = VideoDataset(
        [record], DecordReader(), SegmentSampler(4), ClipTransform(32, 40, train=False), train=False
    )
    clip, _, _ = val[0]
    assert views.shape == (1, *clip.shape)
    assert torch.equal(views[0], clip)
    # Dense data (X3D-style recipes): 1clip follows data.sampling, the centred dense clip.
    dense = OmegaConf.create({**small, "sampling": "dense", "sampling_rate": 3, "pad": "loop"})
    views, _, _ = MultiViewDataset([record], DecordReader(), protocol("1clip", dense))[0]
    val = VideoDataset(
        [record], DecordReader(), DenseSampler(4, 3, pad="loop"), ClipTransform(32, 40, train=False),
        train=False,
    )
    assert torch.equal(views[0], val[0][0])


def test_readme_protocol_table_lists_every_protocol():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("<!-- protocols:start -->")[1].split("<!-- protocols:end -->")[0]
    rows = [r.split("|")[1:-1] for r in table.strip().splitlines()[2:]]
    scores = {"logits mean": "logits_mean", "logits": "logits_mean",
              "softmax summed": "sum", "softmax mean": "softmax_mean"}
    listed = {}
    for name, views, *_, score in rows:
        clips, crops = (int(v) for v in views.split("x"))
        listed[name.strip().strip("`")] = (clips, crops, scores[score.strip()])
    assert listed == {n: (p.clips, p.crops, p.aggregate) for n, p in PROTOCOLS.items()}
