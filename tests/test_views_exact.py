"""Every named test protocol against the original test code, index for index and box for box.

Each ``original_*`` function below is a transcription of the original repository's test-time
code (repository @ commit, file and lines cited), kept as close to the original's arithmetic as
Python allows: the same float expressions, the same rounding (``int``, ``math.floor``,
``round`` half to even, ``np.round``), ``torch.linspace`` in float32 where the original uses it.
The tests sweep frame counts 1..400 and frame sizes (landscape, portrait, square, odd sides)
and require exact equality of frame indices, resized frame sizes and crop boxes with
``actionlab.data.views``. Rules that draw at random in the original (VoV3D's multi-view frames,
SRTG's validation clip) are compared by their support and by determinism: every drawn index must
be one the original can draw, all of them are reached, and the same video always gets the same.
The last tests feed the same decoded video to ``MultiViewDataset`` and to the transcriptions.
"""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from actionlab.data.datasets.base import VideoRecord
from actionlab.data.datasets.synthetic import render_clip, write_mp4
from actionlab.data.readers import DecordReader
from actionlab.data.transforms import crop_boxes, resize_short_side, resized_shape
from actionlab.data.views import (
    MultiViewDataset,
    resolve_protocol,
    spatial_views,
    temporal_views,
    video_key,
)

LENGTHS = range(1, 401)
# (height, width) of decoded frames: SSv2 240p, Kinetics 340x256 / 320x240 / 16:9, portrait
# phone video, square, odd sizes, sizes at or below the test short side.
SIZES = [
    (240, 320), (256, 340), (240, 427), (256, 455), (360, 640), (331, 589), (320, 240),
    (427, 240), (640, 360), (480, 272), (256, 256), (300, 300), (257, 401), (401, 257),
    (224, 298), (298, 224), (225, 226), (480, 854), (720, 1280), (1280, 720),
]


def protocol(name, **data_and_eval):
    data = {"num_frames": 8, "crop_size": 224, "scale_size": 256, "sampling": "segment"}
    evals = {"protocol": name}
    for key, value in data_and_eval.items():
        (evals if key.startswith("eval_") else data)[key.removeprefix("eval_")] = value
    return resolve_protocol(OmegaConf.create(evals), OmegaConf.create(data))


def boxes_after_resize(h, w, p):
    """Our boxes on the frame as our pipeline resizes it."""
    return resized_shape(h, w, p.scale_size, p.resize), spatial_views(
        *resized_shape(h, w, p.scale_size, p.resize), p
    )


# --------------------------------------------------------------------------------------------
# TSM / RubiksNet: mit-han-lab/temporal-shift-module @ 1f6a834 (RubiksNet's scripts/test_models.py
# uses the same TSNDataSet and transforms).


def original_tsm_indices(num_frames, num_segments, twice_sample):
    """``ops/dataset.py`` ``TSNDataSet._get_test_indices`` (lines 144-163), RGB
    (``new_length = 1``), minus the ``+ 1`` of 1-based file names."""
    tick = (num_frames - 1 + 1) / float(num_segments)
    offsets = [int(tick / 2.0 + tick * x) for x in range(num_segments)]
    if twice_sample:
        return [offsets, [int(tick * x) for x in range(num_segments)]]
    return [offsets]


def original_torchvision_resize(h, w, size):
    """``GroupScale`` (``ops/transforms.py`` 79-92) = torchvision ``Resize(size)``:
    ``functional.resize`` keeps the frame when the short side already is ``size``, else the short
    side becomes ``size`` and the long one ``int(size * long / short)``."""
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def original_tsm_crops(h, w, crop, crops):
    """1 crop: ``GroupCenterCrop`` = torchvision ``CenterCrop``: ``int(round((h - th) / 2.))``
    (lines 37-42). 3 crops: ``GroupFullResSample`` (lines 134-177): ``w_step = (W - c) // 4``,
    ``h_step = (H - c) // 4``, offsets left ``(0, 2 h_step)``, right ``(4 w_step, 2 h_step)``,
    centre ``(2 w_step, 2 h_step)`` as (x, y), in that order."""
    if crops == 1:
        return [(int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0)))]
    w_step, h_step = (w - crop) // 4, (h - crop) // 4
    offsets = [(0 * w_step, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 2 * h_step)]
    return [(y, x) for x, y in offsets]


@pytest.mark.parametrize("segments", [8, 16])
def test_tsm_1clip_and_2clip_indices(segments):
    one = protocol("1clip", num_frames=segments)
    two = protocol("2clip", num_frames=segments)
    for n in LENGTHS:
        assert [c.tolist() for c in temporal_views(n, one)] == original_tsm_indices(n, segments, False)
        assert [c.tolist() for c in temporal_views(n, two)] == original_tsm_indices(n, segments, True)


def test_tsm_resize_and_crops():
    one, two = protocol("1clip"), protocol("2clip")
    assert (one.aggregate, two.aggregate) == ("logits_mean", "logits_mean")  # rst.mean(1), no softmax
    for h, w in SIZES:
        rh, rw = original_torchvision_resize(h, w, 256)
        for p, crops in ((one, 1), (two, 3)):
            shape, boxes = boxes_after_resize(h, w, p)
            assert shape == (rh, rw), (h, w)
            assert boxes == original_tsm_crops(rh, rw, 224, crops), (h, w, crops)
    # Portrait video: TSM's three crops run across the (short) width, at one height; at full
    # resolution (crop = short side) they coincide.
    assert {y for y, _ in boxes_after_resize(427, 240, two)[1]} == {114}
    full = protocol("2clip", eval_crop_size=256)
    assert len(set(boxes_after_resize(427, 240, full)[1])) == 1


def test_tsm_full_res_crops_at_the_short_side():
    """TSM's Kinetics ``--full_res`` setting: crop = scale size (256)."""
    p = protocol("2clip", eval_crop_size=256)
    for h, w in SIZES:
        rh, rw = original_torchvision_resize(h, w, 256)
        assert boxes_after_resize(h, w, p)[1] == original_tsm_crops(rh, rw, 256, 3)


# --------------------------------------------------------------------------------------------
# PySlowFast (X3D): facebookresearch/SlowFast @ 287ec00, the whole video decoded
# (decode_all_video), DATA.USE_OFFSET_SAMPLING False (default), TEST.NUM_ENSEMBLE_VIEWS 10.


def original_pyslowfast_clip(num_frames, clip_idx, num_clips, rate, clip_len, fps, target_fps):
    """``slowfast/datasets/decoder.py``: ``decode`` (lines 552-555) sizes the clip
    ``np.maximum(1.0, sampling_rate * num_frames / target_fps * fps)``;
    ``get_multiple_start_end_idx`` (line 137, as ``get_start_end_idx`` line 73) starts it at
    ``max_start * clip_idx / num_clips_uniform`` with ``max_start = max(video_size - clip_size,
    0)`` and ends it at ``start + clip_size - 1``; ``temporal_sampling`` (lines 17-34) takes
    ``torch.linspace(start, end, num_samples)`` clamped to ``[0, T - 1]``, ``.long()``."""
    clip_size = np.maximum(1.0, rate * clip_len / target_fps * fps)
    max_start = max(num_frames - clip_size, 0)
    start_idx = max_start * clip_idx / num_clips
    end_idx = start_idx + clip_size - 1
    index = torch.linspace(start_idx, end_idx, clip_len)
    return torch.clamp(index, 0, num_frames - 1).long().tolist()


def original_short_side_scale(h, w, size):
    """``slowfast/datasets/transform.py`` ``random_short_side_scale_jitter`` (lines 48-98) at
    ``min_size = max_size``: unchanged if the short side is ``size``, else ``floor((float(long) /
    short) * size)``."""
    height, width = h, w
    if (width <= height and width == size) or (height <= width and height == size):
        return h, w
    new_width, new_height = size, size
    if width < height:
        new_height = int(math.floor((float(height) / width) * size))
    else:
        new_width = int(math.floor((float(width) / height) * size))
    return new_height, new_width


def original_uniform_crop(height, width, size, spatial_idx):
    """``transform.uniform_crop`` (lines 187-243): ``ceil`` centre, index 0/2 at the start/end
    of the long side (height when ``height > width``)."""
    y_offset = int(math.ceil((height - size) / 2))
    x_offset = int(math.ceil((width - size) / 2))
    if height > width:
        if spatial_idx == 0:
            y_offset = 0
        elif spatial_idx == 2:
            y_offset = height - size
    else:
        if spatial_idx == 0:
            x_offset = 0
        elif spatial_idx == 2:
            x_offset = width - size
    return y_offset, x_offset


@pytest.mark.parametrize(
    "clip_len, rate", [(16, 5), (4, 12), (13, 6), (32, 2)]  # X3D-M/L, XS, S; a 32-frame recipe
)
@pytest.mark.parametrize("fps", [30.0, 25.0, 29.97, 60.0])
def test_pyslowfast_10x3_indices(clip_len, rate, fps):
    p = protocol("pyslowfast_10x3", num_frames=clip_len, sampling_rate=rate, target_fps=30)
    for n in LENGTHS:
        ours = [c.tolist() for c in temporal_views(n, p, fps=fps)]
        assert ours == [original_pyslowfast_clip(n, i, 10, rate, clip_len, fps, 30) for i in range(10)], n


def test_pyslowfast_float_sampling_differs_from_integer_strides():
    """The issue's example: at 300 frames (30 fps) clip 0 of a 16 x 5 X3D clip ends at frame 79."""
    p = protocol("pyslowfast_10x3", num_frames=16, sampling_rate=5, target_fps=30)
    clips = temporal_views(300, p, fps=30.0)
    assert clips[0][-1] == 79 and clips[0][:3].tolist() == [0, 5, 10]
    assert clips[9][0] == int(220 * 9 / 10)  # 0.9 delta: the tail never starts a clip
    short = temporal_views(40, p, fps=30.0)[3]  # shorter than the clip: the last frame repeats
    assert short[0] == 0 and short[-1] == 39 and list(short[-4:]) == [39] * 4


def test_pyslowfast_3crop_and_1crop_geometry():
    three = protocol("pyslowfast_10x3", eval_crop_size=256, crop_size=224)
    assert (three.scale_size, three.crop_size, three.aggregate) == (256, 256, "sum")
    one = protocol("pyslowfast_10x3", eval_crops=1)  # TRAIN_JITTER_SCALES[0] 256, centre 224
    assert (one.scale_size, one.crop_size) == (256, 224)
    for h, w in SIZES:
        rh, rw = original_short_side_scale(h, w, 256)
        shape, boxes = boxes_after_resize(h, w, three)
        assert shape == (rh, rw) and boxes == [original_uniform_crop(rh, rw, 256, i) for i in range(3)]
        shape, boxes = boxes_after_resize(h, w, one)
        assert shape == (rh, rw) and boxes == [original_uniform_crop(rh, rw, 224, 1)]


# --------------------------------------------------------------------------------------------
# VoV3D on Something-Something: youngwanLEE/VoV3D @ df9cc7b, vov3d/datasets/ssv2.py.


def original_vov3d_segments(video_length, num_frames):
    """``ssv2.py`` ``__getitem__`` (lines 219-232): ``seg_size = float(video_length - 1) /
    num_frames``, ``start = int(np.round(seg_size * i))``, ``end = int(np.round(seg_size * (i +
    1)))``; ``(start + end) // 2`` for a single test view, else ``random.randint(start, end)``."""
    seg_size = float(video_length - 1) / num_frames
    bounds = []
    for i in range(num_frames):
        start = int(np.round(seg_size * i))
        end = int(np.round(seg_size * (i + 1)))
        bounds.append((start, end))
    return bounds


@pytest.mark.parametrize("segments", [8, 16, 32])
def test_vov3d_ssv2_single_view_is_exact(segments):
    p = protocol("ssv2_2x3", num_frames=segments, eval_clips=1, eval_crops=1)
    assert not p.frames_per_view
    for n in LENGTHS:  # videos shorter than the segment count included
        (ours,) = temporal_views(n, p)
        assert ours.tolist() == [(a + b) // 2 for a, b in original_vov3d_segments(n, segments)], n


@pytest.mark.parametrize("segments", [16, 32])
def test_vov3d_ssv2_multi_view_draws_inside_the_segments(segments):
    """VoV3D draws ``random.randint(start, end)`` per segment for each of the 2 x 3 views (its
    ``_num_clips > 1`` branch); ours draws the same way, seeded by the video."""
    p = protocol("ssv2_2x3", num_frames=segments)
    for n in LENGTHS:
        bounds = original_vov3d_segments(n, segments)
        views = temporal_views(n, p, key=n)
        assert len(views) == 6
        for v in views:
            assert all(a <= i <= b for i, (a, b) in zip(v.tolist(), bounds)), n
        again = temporal_views(n, p, key=n)
        assert all(np.array_equal(x, y) for x, y in zip(views, again))
    # Every frame of the closed ranges is drawn (both ends included, as randint).
    bounds = original_vov3d_segments(200, segments)
    seen = [set() for _ in bounds]
    for key in range(60):
        for v in temporal_views(200, p, key=key):
            for s, i in zip(seen, v.tolist()):
                s.add(i)
    assert all(s == set(range(a, b + 1)) for s, (a, b) in zip(seen, bounds))


def test_vov3d_ssv2_crops_at_the_test_crop():
    """``ssv2.py`` line 207: short side = crop = ``TEST_CROP_SIZE`` (256); the crop index is
    ``view % NUM_SPATIAL_CROPS`` (line 203), so a single crop is index 0 (left/top)."""
    three = protocol("ssv2_2x3", eval_crop_size=256)
    one = protocol("ssv2_2x3", eval_crop_size=256, eval_crops=1, eval_clips=1)
    for h, w in SIZES:
        rh, rw = original_short_side_scale(h, w, 256)
        shape, boxes = boxes_after_resize(h, w, three)
        assert shape == (rh, rw) and boxes == [original_uniform_crop(rh, rw, 256, i) for i in range(3)]
        assert boxes_after_resize(h, w, one)[1] == [original_uniform_crop(rh, rw, 256, 0)]


# --------------------------------------------------------------------------------------------
# TokShift: VideoNetworks/TokShift-Transformer @ a7abb7e.


def original_tokshift_clips(frame_cnt, t_size, t_step, sample_times):
    """``data/dataset.py`` ``read_clip`` (lines 141-163), 0-based (the original adds 1 for the
    ``img_{:05d}.jpg`` name)."""
    max_bound = max(frame_cnt - t_size * t_step + 1, 1)
    tick = 1.0 * frame_cnt / sample_times
    st_idxs = np.array([int(x * tick) for x in range(sample_times)])
    st_idxs = np.clip(st_idxs, 0, max_bound)
    clips = []
    for st_idx in st_idxs:
        st_idx = 0 if max_bound == 1 else st_idx
        clips.append([(idx * t_step + st_idx) % frame_cnt for idx in range(t_size)])
    return clips


def original_tokshift_resize(h, w, short_side):
    """``data/augmentation.py`` ``short_side_resize`` (lines 251-261), PIL ``BICUBIC``."""
    width, height = w, h
    if width > height:
        new_height = short_side
        new_width = int(math.floor(1.0 * width / height * new_height))
    else:
        new_width = short_side
        new_height = int(math.floor(1.0 * height / width * new_width))
    return new_height, new_width


def original_tokshift_crops(height, width, patch_size):
    """``Test_ClipAug`` (lines 296-394) with ``mode 3``: ``clip_center_crop`` (135-156), then
    ``clip_crop`` types 1 (left-centre) and 2 (right-centre) (162-205), in that order."""
    y_offset = int((height - patch_size) / 2.0) if height > patch_size else 0
    x_offset = int((width - patch_size) / 2.0) if width > patch_size else 0
    centre = (y_offset, x_offset)
    y = max(int((height - patch_size) / 2.0), 0)
    left = (y, 0)
    right = (y, max(width - patch_size, 0))
    return [centre, left, right]


@pytest.mark.parametrize("t_size, t_step", [(8, 32), (16, 32), (12, 32), (8, 4)])
def test_tokshift_10x3_indices(t_size, t_step):
    p = protocol("tokshift_10x3", num_frames=t_size, sampling_rate=t_step)
    one = protocol("tokshift_10x3", num_frames=t_size, sampling_rate=t_step, eval_clips=1)
    for n in LENGTHS:
        assert [c.tolist() for c in temporal_views(n, p)] == original_tokshift_clips(n, t_size, t_step, 10)
        # VAL_SAMPLE_TIMES 1 (the repository's 3-view validation): one clip from frame 0.
        assert [c.tolist() for c in temporal_views(n, one)] == original_tokshift_clips(n, t_size, t_step, 1)
    loop = temporal_views(t_size * t_step - 1, p)[0]  # one frame short of a clip: it loops
    assert loop.tolist() == [(t_step * i) % (t_size * t_step - 1) for i in range(t_size)]


@pytest.mark.parametrize("patch", [224, 256, 384])
def test_tokshift_resize_crops_and_aggregation(patch):
    p = protocol("tokshift_10x3", crop_size=patch, scale_size=patch)
    assert (p.scale_size, p.aggregate) == (patch, "logits_mean")  # validate(): output.mean(1)
    for h, w in SIZES:
        rh, rw = original_tokshift_resize(h, w, patch)
        shape, boxes = boxes_after_resize(h, w, p)
        assert shape == (rh, rw) and boxes == original_tokshift_crops(rh, rw, patch), (h, w)


# --------------------------------------------------------------------------------------------
# SRTG / MTNet: alexandrosstergiou/Squeeze-and-Recursion-Temporal-Gates @ 1c4dd7e; imgaug
# (aleju/imgaug @ 0101108d) for the resize and crops.


def original_srtg_candidates(range_max, num, interval):
    """``data/video_sampler.py`` ``SequentialSampling.sampling`` (lines 102-124) with
    ``fix_cursor=True, shuffle=True``: the clips ``range(0, range_max - (frame_range - 1),
    frame_range)`` are shuffled and the first is taken; none fit: ``[rng.choice(range(0,
    range_max))] * num``. Returns every clip it can return."""
    frame_range = (num - 1) * interval + 1
    clips = list(range(0, range_max - (frame_range - 1), frame_range))
    if not clips:
        return [[i] * num for i in range(range_max)]
    return [list(range(c, c + frame_range, interval)) for c in clips]


def original_imgaug_shorter_side(h, w, short):
    """imgaug ``Resize({"shorter-side": 294, "longer-side": "keep-aspect-ratio"})``
    (``augmenters/size.py`` ``_compute_height_width``, lines 1509-1547): size order short/long,
    the height is short when ``imh < imw``; the long side is ``int(np.round(short * ratio))``."""
    imh, imw = h, w
    if imh < imw:
        nh, nw = short, "keep-aspect-ratio"
    else:
        nw, nh = short, "keep-aspect-ratio"
    if nh == "keep-aspect-ratio":
        nh = int(np.round(nw * (imh / imw)))
    if nw == "keep-aspect-ratio":
        nw = int(np.round(nh * (imw / imh)))
    return nh, nw


def original_imgaug_centre_crop(height, width, size):
    """``CropToFixedSize(position="center")`` (``_calculate_crop_amounts``, lines 3198-3214,
    offsets ``1 - 0.5``): ``int(0.5 * (side - size))`` from the top/left when larger."""
    top = int(0.5 * (height - size)) if height > size else 0
    left = int(0.5 * (width - size)) if width > size else 0
    return top, left


@pytest.mark.parametrize("num, interval", [(16, 2), (16, 1), (8, 4)])
def test_srtg_validation_clip(num, interval):
    p = protocol("srtg_1x1", num_frames=num, sampling_rate=interval)
    for n in LENGTHS:
        candidates = original_srtg_candidates(n, num, interval)
        (ours,) = temporal_views(n, p, key=n)
        assert ours.tolist() in candidates, n
        assert np.array_equal(ours, temporal_views(n, p, key=n)[0])
    # Uniform over the candidates: all of them are reached.
    candidates = original_srtg_candidates(200, num, interval)
    drawn = {tuple(temporal_views(200, p, key=k)[0].tolist()) for k in range(40 * len(candidates))}
    assert drawn == {tuple(c) for c in candidates}


def test_srtg_resize_and_centre_crop():
    """``data/iterator_factory.py`` HACS/Kinetics validation (lines 563-569): shorter side 294,
    centre crop 294, centre crop 256 (the ``video_size`` 16 x 256 x 256)."""
    p = protocol("srtg_1x1", crop_size=284, eval_crop_size=256)
    assert (p.scale_size, p.crop_size, p.crops) == (294, 256, 1)
    odd = protocol("srtg_1x1", eval_crop_size=224, eval_scale_size=255)  # an odd difference
    for q in (p, odd):
        for h, w in SIZES:
            s, c = q.scale_size, q.crop_size
            rh, rw = original_imgaug_shorter_side(h, w, s)
            y1, x1 = original_imgaug_centre_crop(rh, rw, s)
            y2, x2 = original_imgaug_centre_crop(min(rh, s), min(rw, s), c)
            shape, boxes = boxes_after_resize(h, w, q)
            assert shape == (rh, rw) and boxes == [(y1 + y2, x1 + x2)], (h, w)


# --------------------------------------------------------------------------------------------
# The lab's own kinetics_10x3 keeps its documented rule, now padding as data.pad says.


def test_kinetics_10x3_pads_short_videos_as_data_pad():
    repeat = protocol("kinetics_10x3", sampling="dense", sampling_rate=4, pad="repeat")
    loop = protocol("kinetics_10x3", sampling="dense", sampling_rate=4, pad="loop")
    assert temporal_views(20, repeat)[0].tolist() == [0, 4, 8, 12, 16, 19, 19, 19]
    assert temporal_views(20, loop)[0].tolist() == [0, 4, 8, 12, 16, 0, 4, 8]


# --------------------------------------------------------------------------------------------
# The same decoded frames through MultiViewDataset and through the transcriptions.


@pytest.fixture(scope="module", params=[(48, 64), (96, 64)], ids=["landscape", "portrait"])
def video(request, tmp_path_factory):
    h, w = request.param
    path = tmp_path_factory.mktemp("exact") / f"clip_{h}x{w}.mp4"
    write_mp4(path, render_clip(1, np.random.default_rng(3), 45, h, w))
    frames = DecordReader().read(str(path), list(range(45)))
    return str(path), frames


def reference_views(frames, clips, boxes, scale, crop, resize, mean, std):
    """Views built from the transcribed indices and boxes (our resize kernels)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    x = resize_short_side(x, scale, resize)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x
    m, s = torch.tensor(mean).view(3, 1, 1, 1), torch.tensor(std).view(3, 1, 1, 1)
    views = []
    for clip in clips:
        for y0, x0 in boxes:
            v = x[clip].permute(1, 0, 2, 3)[..., y0 : y0 + crop, x0 : x0 + crop]
            views.append((v - m) / s)
    return torch.stack(views)


@pytest.mark.parametrize(
    "name, extra",
    [
        ("1clip", {}),
        ("2clip", {}),
        ("pyslowfast_10x3", {"sampling_rate": 2, "target_fps": 30}),
        ("ssv2_2x3", {"eval_clips": 1, "eval_crops": 3}),
        ("tokshift_10x3", {"sampling_rate": 8}),
        ("srtg_1x1", {"sampling_rate": 2, "eval_scale_size": 37}),
    ],
)
def test_multiview_items_equal_the_originals_views(video, name, extra):
    path, frames = video
    n, h, w = len(frames), *frames.shape[1:3]
    p = protocol(name, num_frames=4, crop_size=32, scale_size=36, **extra)
    mean, std = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
    record = VideoRecord(path, 0, "clip")
    views, _, _ = MultiViewDataset([record], DecordReader(), p, mean=mean, std=std)[0]
    fps = 12.0  # write_mp4's rate
    if name in ("1clip", "2clip"):
        clips = original_tsm_indices(n, 4, name == "2clip")
        rh, rw = original_torchvision_resize(h, w, 36)
        boxes = original_tsm_crops(rh, rw, 32, p.crops)
    elif name == "pyslowfast_10x3":
        clips = [original_pyslowfast_clip(n, i, 10, 2, 4, fps, 30) for i in range(10)]
        rh, rw = original_short_side_scale(h, w, 32)
        boxes = [original_uniform_crop(rh, rw, 32, i) for i in range(3)]
    elif name == "ssv2_2x3":  # 1 clip x 3 crops = 3 views, each drawing its own frames
        clips = None
        rh, rw = original_short_side_scale(h, w, 32)
        boxes = [original_uniform_crop(rh, rw, 32, i) for i in range(3)]
    elif name == "tokshift_10x3":
        clips = original_tokshift_clips(n, 4, 8, 10)
        rh, rw = original_tokshift_resize(h, w, 32)
        boxes = original_tokshift_crops(rh, rw, 32)
    else:
        clips = [temporal_views(n, p, key=video_key(record))[0].tolist()]
        assert clips[0] in original_srtg_candidates(n, 4, 2)
        rh, rw = original_imgaug_shorter_side(h, w, 37)
        y1, x1 = original_imgaug_centre_crop(rh, rw, 37)
        y2, x2 = original_imgaug_centre_crop(min(rh, 37), min(rw, 37), 32)
        boxes = [(y1 + y2, x1 + x2)]
    assert resized_shape(h, w, p.scale_size, p.resize) == (rh, rw)
    if clips is None:
        bounds = original_vov3d_segments(n, 4)
        drawn = temporal_views(n, p, key=video_key(record))
        assert all(a <= i <= b for v in drawn for i, (a, b) in zip(v.tolist(), bounds))
        expected = torch.cat(
            [reference_views(frames, [d.tolist()], [b], 32, 32, p.resize, mean, std)
             for d, b in zip(drawn, boxes)]
        )
    else:
        expected = reference_views(frames, clips, boxes, p.scale_size, 32, p.resize, mean, std)
    assert views.shape == expected.shape == (p.views, 3, 4, 32, 32)
    torch.testing.assert_close(views, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rule, pil", [("tsm", Image.BILINEAR), ("tokshift", Image.BICUBIC)])
def test_resize_kernels_match_pil_within_two_levels(rule, pil):
    """TSM and TokShift resize decoded PIL images (bilinear / bicubic); torch's antialiased
    kernels agree with PIL to 2 of 255 (rounding of the fixed-point PIL kernels)."""
    rng = np.random.default_rng(0)
    for h, w in [(240, 320), (320, 240), (360, 640)]:
        frame = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        nh, nw = resized_shape(h, w, 224, rule)
        ref = np.asarray(Image.fromarray(frame).resize((nw, nh), pil)).astype(int)
        ours = resize_short_side(torch.from_numpy(frame).permute(2, 0, 1)[None], 224, rule)
        assert np.abs(ours[0].permute(1, 2, 0).numpy().astype(int) - ref).max() <= 2


def test_crop_mode_layouts_are_named_in_errors():
    with pytest.raises(ValueError, match="no 3-crop layout"):
        crop_boxes(256, 300, 224, "srtg", 3)
    with pytest.raises(ValueError, match="eval.crops=1"):
        protocol("srtg_1x1", eval_crops=3)
    with pytest.raises(ValueError, match="smaller than the test crop"):
        protocol("1clip", eval_crop_size=300)
