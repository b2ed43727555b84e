"""Clip samplers (segments, twice sample, dense, fps-aware, padding) and test-crop boxes."""

import math

import numpy as np
import pytest
import torch

from actionlab.data.sampling import (
    DenseSampler,
    dense_indices,
    fps_scaled_rate,
    pad_indices,
    segment_indices,
    twice_sample_indices,
)
from actionlab.data.transforms import crop_boxes, crop_clip

LENGTHS = (1, 2, 3, 7, 8, 9, 16, 31, 64, 65, 300)


def test_twice_sample_matches_tsm_formula():
    # TSM _get_test_indices(twice_sample) minus its +1: 48 frames, 8 segments, tick 6.
    centres, starts = twice_sample_indices(48, 8)
    assert centres.tolist() == [3, 9, 15, 21, 27, 33, 39, 45]
    assert starts.tolist() == [0, 6, 12, 18, 24, 30, 36, 42]
    # Non-integer tick: 30 frames -> tick 3.75.
    centres, starts = twice_sample_indices(30, 8)
    assert centres.tolist() == [int(3.75 / 2 + 3.75 * k) for k in range(8)] == [1, 5, 9, 13, 16, 20, 24, 28]
    assert starts.tolist() == [int(3.75 * k) for k in range(8)] == [0, 3, 7, 11, 15, 18, 22, 26]
    # The centre clip is the single-clip evaluation clip.
    assert np.array_equal(twice_sample_indices(77, 8)[0], segment_indices(77, 8, train=False))


@pytest.mark.parametrize("n", LENGTHS)
def test_twice_sample_in_range_and_sorted(n):
    views = twice_sample_indices(n, 8)
    assert len(views) == 2
    for v in views:
        assert v.shape == (8,) and v.min() >= 0 and v.max() < n and np.all(np.diff(v) >= 0)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("rate", (1, 2, 5, 8))
def test_dense_properties(n, rate):
    for train in (True, False):
        for clips in (1, 3, 10):
            views = dense_indices(n, 8, rate, train, np.random.default_rng(n), num_clips=clips)
            assert len(views) == clips
            for v in views:
                assert v.shape == (8,) and v.min() >= 0 and v.max() < n
                assert np.all(np.diff(v) >= 0)  # repeat padding keeps order
                if n >= 8 * rate:  # long enough: exact stride, nothing padded
                    assert np.all(np.diff(v) == rate)


def test_dense_test_views_evenly_spaced_over_valid_starts():
    # 100 frames, 8x4 clip spans 32: starts over [0, 68].
    views = dense_indices(100, 8, 4, train=False, num_clips=5)
    assert [int(v[0]) for v in views] == [0, 17, 34, 51, 68]
    assert views[-1].tolist() == list(range(68, 100, 4))  # the last view ends at the last frame
    assert dense_indices(100, 8, 4, train=False)[0][0] == 34  # one view: the centre clip
    # Short video: every view is the whole (padded) video.
    short = dense_indices(10, 8, 2, train=False, num_clips=3)
    assert all(v.tolist() == [0, 2, 4, 6, 8, 9, 9, 9] for v in short)


def test_dense_train_is_seeded_and_covers_starts():
    a = dense_indices(200, 8, 2, True, np.random.default_rng(7), num_clips=4)
    b = dense_indices(200, 8, 2, True, np.random.default_rng(7), num_clips=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    starts = {int(dense_indices(40, 8, 2, True, np.random.default_rng(s))[0][0]) for s in range(300)}
    assert starts == set(range(40 - 16 + 1))  # uniform over every valid start, none past


def test_padding_modes():
    assert pad_indices(np.arange(8), 5, "repeat").tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert pad_indices(np.arange(8), 5, "loop").tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    loop = dense_indices(5, 8, 1, train=False, pad="loop")[0]
    assert loop.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    with pytest.raises(ValueError, match="pad must be one of"):
        pad_indices(np.arange(3), 2, "mirror")


def test_frame_rate_aware_sampling():
    assert fps_scaled_rate(5, 60.0, 30.0) == 10.0
    assert fps_scaled_rate(5, 15.0, 30.0) == 2.5
    assert fps_scaled_rate(5, None, 30.0) == 5.0 and fps_scaled_rate(5, 60.0, None) == 5.0
    s = DenseSampler(4, sampling_rate=2, target_fps=30)
    rng = np.random.default_rng(0)
    assert np.diff(s(300, False, rng, fps=60.0)).tolist() == [4, 4, 4]
    assert np.diff(s(300, False, rng, fps=30.0)).tolist() == [2, 2, 2]
    assert s(300, False, rng, fps=15.0).tolist() == [148, 149, 150, 151]  # rate 1 at 15 fps
    assert DenseSampler(4, 2)(300, False, rng, fps=60.0).tolist() == [146, 148, 150, 152]


@pytest.mark.parametrize("n", LENGTHS)
def test_segments_deterministic_under_seed(n):
    a = segment_indices(n, 8, True, np.random.default_rng(3))
    b = segment_indices(n, 8, True, np.random.default_rng(3))
    assert np.array_equal(a, b) and a.min() >= 0 and a.max() < n and np.all(np.diff(a) >= 0)


def test_sampling_rejects_empty_videos():
    for fn in (lambda: segment_indices(0, 8, False), lambda: twice_sample_indices(0, 8),
               lambda: dense_indices(0, 8, 2, False)):
        with pytest.raises(ValueError, match="0 frames"):
            fn()


def test_crop_boxes_landscape_portrait_square():
    # Short side 256, long side 455 (16:9 resized), 224 crops.
    assert crop_boxes(256, 455, 224, "center") == [(16, 116)]
    assert crop_boxes(256, 455, 224, "three") == [(16, 0), (16, 116), (16, 231)]
    # TSM GroupFullResSample: w_step = 231 // 4 = 57, h_step = 8 -> x 0/228/114, y 16.
    assert crop_boxes(256, 455, 224, "three_tsm") == [(16, 0), (16, 228), (16, 114)]
    # PySlowFast 3-crop at crop = short side: the crops tile the full frame.
    assert crop_boxes(256, 341, 256, "three") == [(0, 0), (0, 43), (0, 85)]
    # Portrait: top/centre/bottom.
    assert crop_boxes(300, 256, 256, "three") == [(0, 0), (22, 0), (44, 0)]
    # TSM crops run across the width even on portrait frames: h_step = 76 // 4 = 19.
    assert crop_boxes(300, 256, 224, "three_tsm") == [(38, 0), (38, 32), (38, 16)]
    # Square frame: the three crops coincide along the long side.
    assert crop_boxes(224, 224, 224, "three") == [(0, 0)] * 3
    assert crop_boxes(225, 230, 224, "center") == [(math.ceil(1 / 2), math.ceil(6 / 2))]


def test_crop_boxes_errors_name_the_fix():
    with pytest.raises(ValueError, match="scale_size"):
        crop_boxes(200, 300, 224, "center")
    with pytest.raises(ValueError, match="crop mode must be one of"):
        crop_boxes(256, 300, 224, "five")


def test_crop_clip_slices_every_frame_identically():
    clip = torch.arange(3 * 4 * 6 * 9).reshape(3, 4, 6, 9)
    for box in crop_boxes(6, 9, 5, "three"):
        out = crop_clip(clip, box, 5)
        assert out.shape == (3, 4, 5, 5)
        y0, x0 = box
        assert torch.equal(out, clip[:, :, y0 : y0 + 5, x0 : x0 + 5])
    arr = np.zeros((4, 6, 9, 3))
    with pytest.raises(ValueError, match="does not fit"):
        crop_clip(torch.zeros(2, 6, 9), (2, 5), 5)
    assert crop_clip(arr.transpose(0, 3, 1, 2), (1, 4), 5).shape == (4, 3, 5, 5)
