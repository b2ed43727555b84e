"""Clip samplers: which frame indices (0-based) of a video make a clip.

Two families, both returning sorted indices that never point past the last frame:

- TSN/TSM **segments** (TSM's ``_sample_indices`` / ``_get_test_indices``): the whole video is
  cut into ``num_segments`` equal segments; training takes a random frame in each, evaluation the
  segment centres ``int(tick / 2 + tick * k)``, and the TSM "twice sample" 2-clip protocol adds
  the segment starts ``int(tick * k)``.
- **Dense** clips (I3D/SlowFast/X3D, PySlowFast's Kinetics loader): ``clip_len``
  frames ``sampling_rate`` apart; training draws the start uniformly, evaluation takes
  ``num_clips`` evenly spaced starts. With ``target_fps`` the rate is in frames of a
  ``target_fps`` video (PySlowFast ``TARGET_FPS``), so a 60 fps video steps twice as far.

Short videos are padded by ``pad="repeat"`` (the last frame repeats: clamping, as PySlowFast)
or ``pad="loop"`` (the video restarts from frame 0).

The test-time rules of the original code bases, each written from the original (file named in
its docstring) and checked index for index against a transcription in ``tests/test_views_exact.py``:
``pyslowfast_indices`` (X3D/PySlowFast Kinetics), ``vov3d_segment_indices`` (VoV3D and
PySlowFast Something-Something), ``tokshift_indices`` (TokShift) and ``srtg_indices`` (SRTG/MTNet
validation). TSM/RubiksNet's are ``segment_indices`` and ``twice_sample_indices``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "PAD_MODES",
    "DenseSampler",
    "SegmentSampler",
    "dense_indices",
    "fps_scaled_rate",
    "pad_indices",
    "pyslowfast_indices",
    "segment_indices",
    "srtg_indices",
    "tokshift_indices",
    "twice_sample_indices",
    "vov3d_segment_indices",
]

PAD_MODES = ("repeat", "loop")


def _check_length(num_frames: int) -> None:
    if num_frames <= 0:
        raise ValueError(f"cannot sample a clip from a video with {num_frames} frames")


def pad_indices(indices: np.ndarray, num_frames: int, pad: str = "repeat") -> np.ndarray:
    """Map indices at or past the end back into ``[0, num_frames)``.

    ``repeat`` clamps to the last frame; ``loop`` wraps around (``i % num_frames``), which keeps
    motion going instead of freezing but is no longer sorted when it wraps.
    """
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    indices = np.maximum(np.asarray(indices, dtype=np.int64), 0)
    if pad == "loop":
        return indices % num_frames
    return np.minimum(indices, num_frames - 1)


def segment_indices(
    num_frames: int, num_segments: int, train: bool, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``num_segments`` sorted frame indices in ``[0, num_frames)``.

    Videos shorter than the clip repeat frames (evenly) instead of reading past the end.
    """
    _check_length(num_frames)
    k = np.arange(num_segments)
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        avg = num_frames // num_segments
        if avg > 0:
            return k * avg + rng.integers(0, avg, size=num_segments)
        return np.sort(rng.integers(0, num_frames, size=num_segments))
    tick = num_frames / num_segments
    return np.minimum((tick / 2.0 + tick * k).astype(np.int64), num_frames - 1)


def twice_sample_indices(num_frames: int, num_segments: int) -> list[np.ndarray]:
    """TSM ``--twice_sample`` test views: ``[segment centres, segment starts]``, 0-based.

    ``tick = num_frames / num_segments``; clip 1 is ``int(tick / 2 + tick * k)``, clip 2
    ``int(tick * k)`` for ``k = 0 .. num_segments - 1`` (TSM ``_get_test_indices`` without its
    ``+ 1``). Both are sorted and inside ``[0, num_frames)``.
    """
    _check_length(num_frames)
    tick = num_frames / num_segments
    k = np.arange(num_segments)
    last = num_frames - 1
    centres = np.minimum((tick / 2.0 + tick * k).astype(np.int64), last)
    starts = np.minimum((tick * k).astype(np.int64), last)
    return [centres, starts]


def fps_scaled_rate(sampling_rate: float, video_fps: float | None, target_fps: float | None) -> float:
    """Source-frame step for ``sampling_rate`` frames of a ``target_fps`` video.

    A 16x5 X3D clip means every 5th frame *at 30 fps*; on a 60 fps video that is every 10th.
    Without either fps the rate is used as given.
    """
    if not target_fps or not video_fps or video_fps <= 0:
        return float(sampling_rate)
    return float(sampling_rate) * float(video_fps) / float(target_fps)


def dense_indices(
    num_frames: int,
    clip_len: int,
    sampling_rate: float,
    train: bool,
    rng: np.random.Generator | None = None,
    num_clips: int = 1,
    pad: str = "repeat",
) -> list[np.ndarray]:
    """``num_clips`` clips of ``clip_len`` frames, ``sampling_rate`` frames apart.

    The clip spans ``clip_len * sampling_rate`` source frames; ``delta = max(0, num_frames -
    span)`` is the range of valid starts. Training draws each start uniformly in ``[0, delta]``.
    Evaluation spaces the starts evenly over ``[0, delta]``: both ends are covered
    (``linspace(0, delta, num_clips)``, PySlowFast ``USE_OFFSET_SAMPLING``), and a single clip
    is the centre one (``delta // 2``). A fractional rate (see ``fps_scaled_rate``) is rounded
    per frame. Indices past the end (videos shorter than the span) are padded by ``pad``.
    """
    _check_length(num_frames)
    if clip_len <= 0 or sampling_rate <= 0 or num_clips <= 0:
        raise ValueError(
            f"clip_len ({clip_len}), sampling_rate ({sampling_rate}) and num_clips ({num_clips}) "
            "must be positive"
        )
    span = clip_len * sampling_rate
    delta = max(0, int(np.floor(num_frames - span)))
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        starts = rng.integers(0, delta + 1, size=num_clips)
    elif num_clips == 1:
        starts = np.array([delta // 2])
    else:
        starts = np.round(np.linspace(0, delta, num_clips)).astype(np.int64)
    offsets = np.floor(np.arange(clip_len) * sampling_rate + 1e-6).astype(np.int64)
    return [pad_indices(int(s) + offsets, num_frames, pad) for s in starts]


def pyslowfast_indices(
    num_frames: int,
    clip_len: int,
    sampling_rate: float,
    num_clips: int,
    fps: float | None = None,
    target_fps: float | None = None,
) -> list[np.ndarray]:
    """PySlowFast's test clips of a decoded video (``slowfast/datasets/decoder.py``: ``decode``
    with the whole video decoded, ``get_start_end_idx`` and ``temporal_sampling``).

    A clip spans ``clip_size = max(1, sampling_rate * clip_len / target_fps * fps)`` source
    frames (``sampling_rate * clip_len`` when either fps is unknown); ``delta = max(N -
    clip_size, 0)``; clip ``i`` starts at the float ``delta * i / num_clips`` (the default
    ``USE_OFFSET_SAMPLING False``: the last start is ``0.9 delta`` for 10 clips, one clip
    starts at 0) and its frames are ``torch.linspace(start, start + clip_size - 1, clip_len)``
    in float32, clamped to ``[0, N - 1]`` and truncated (``.long()``): short videos repeat
    their last frame.
    """
    _check_length(num_frames)
    if fps and target_fps and fps > 0:
        clip_size = max(1.0, sampling_rate * clip_len / target_fps * fps)
    else:
        clip_size = max(1.0, float(sampling_rate * clip_len))
    delta = max(num_frames - clip_size, 0)
    clips = []
    for i in range(num_clips):
        start = delta * i / num_clips
        index = torch.linspace(start, start + clip_size - 1, clip_len)
        clips.append(torch.clamp(index, 0, num_frames - 1).long().numpy())
    return clips


def vov3d_segment_indices(
    num_frames: int, num_segments: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """VoV3D's (and PySlowFast's) Something-Something segments (``vov3d/datasets/ssv2.py``,
    ``slowfast/datasets/ssv2.py`` ``get_seq_frames``).

    ``seg = (N - 1) / num_segments``; segment ``i`` spans ``[round(seg * i), round(seg * (i +
    1))]`` (numpy rounding, half to even). Without ``rng`` each segment gives ``(start + end)
    // 2`` (a single test view); with ``rng`` a uniform frame of the closed range, as VoV3D
    draws for every view when a video has several (``random.randint``). Any length works,
    videos shorter than ``num_segments`` included.
    """
    _check_length(num_frames)
    seg = float(num_frames - 1) / num_segments
    bounds = [(int(np.round(seg * i)), int(np.round(seg * (i + 1)))) for i in range(num_segments)]
    if rng is None:
        return np.array([(a + b) // 2 for a, b in bounds], dtype=np.int64)
    return np.array([int(rng.integers(a, b + 1)) for a, b in bounds], dtype=np.int64)


def tokshift_indices(num_frames: int, clip_len: int, step: int, num_clips: int) -> list[np.ndarray]:
    """TokShift's test clips (``data/dataset.py`` ``read_clip``; 0-based).

    Starts ``int(x * N / num_clips)`` for ``x < num_clips``, clipped to ``[0, max_bound]`` with
    ``max_bound = max(N - clip_len * step + 1, 1)``, and 0 when ``max_bound`` is 1 (videos not
    longer than a clip); frames ``(i * step + start) % N``: short videos loop. One clip (the
    repository's 3-view validation) starts at 0.
    """
    _check_length(num_frames)
    step = int(step)
    max_bound = max(num_frames - clip_len * step + 1, 1)
    tick = 1.0 * num_frames / num_clips
    starts = np.clip(np.array([int(x * tick) for x in range(num_clips)]), 0, max_bound)
    offsets = np.arange(clip_len, dtype=np.int64) * step
    return [(offsets + (0 if max_bound == 1 else int(s))) % num_frames for s in starts]


def srtg_indices(
    num_frames: int, clip_len: int, interval: int, rng: np.random.Generator
) -> np.ndarray:
    """SRTG/MTNet's validation clip (``data/video_sampler.py`` ``SequentialSampling`` with
    ``fix_cursor=True, shuffle=True``; 0-based).

    The video is cut into non-overlapping clips starting at multiples of ``frame_range = (clip_len
    - 1) * interval + 1`` that fit in it; one of them, uniformly, gives ``clip_len`` frames
    ``interval`` apart. A video shorter than ``frame_range`` gives one uniform frame repeated.
    The original draws with one ``RandomState`` shared by the whole validation set, so its pick
    depends on the loading order; ``rng`` (seeded per video by the caller) has the same
    distribution.
    """
    _check_length(num_frames)
    interval = int(interval)
    frame_range = (clip_len - 1) * interval + 1
    starts = range(0, num_frames - (frame_range - 1), frame_range)
    if len(starts) == 0:
        return np.full(clip_len, int(rng.integers(num_frames)), dtype=np.int64)
    start = starts[int(rng.integers(len(starts)))]
    return start + interval * np.arange(clip_len, dtype=np.int64)


class SegmentSampler:
    """TSN segment sampler: random offset per segment for training, centres for evaluation."""

    def __init__(self, num_segments: int) -> None:
        self.num_segments = num_segments

    def __call__(
        self, num_frames: int, train: bool, rng: np.random.Generator, fps: float | None = None
    ) -> np.ndarray:
        return segment_indices(num_frames, self.num_segments, train, rng)


class DenseSampler:
    """One dense clip per sample (``dense_indices`` with ``num_clips=1``).

    Args:
        clip_len: frames per clip (``data.num_frames``).
        sampling_rate: step between frames, in frames of a ``target_fps`` video if given.
        target_fps: the frame rate ``sampling_rate`` refers to (30 for Kinetics X3D recipes);
            None uses source frames whatever the video's frame rate.
        pad: ``repeat`` or ``loop`` for videos shorter than the clip.
    """

    needs_fps = True

    def __init__(
        self, clip_len: int, sampling_rate: int = 1, target_fps: float | None = None, pad: str = "repeat"
    ) -> None:
        if pad not in PAD_MODES:
            raise ValueError(f"data.pad must be one of {PAD_MODES}, got {pad!r}")
        self.clip_len = clip_len
        self.sampling_rate = sampling_rate
        self.target_fps = target_fps
        self.pad = pad
        self.needs_fps = target_fps is not None

    def __call__(
        self, num_frames: int, train: bool, rng: np.random.Generator, fps: float | None = None
    ) -> np.ndarray:
        rate = fps_scaled_rate(self.sampling_rate, fps, self.target_fps)
        return dense_indices(num_frames, self.clip_len, rate, train, rng, pad=self.pad)[0]
