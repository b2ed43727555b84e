"""Clip samplers: which frame indices (0-based) of a video make a clip.

TSN/TSM segment sampling (``shared/design/papers/rubiksnet.md`` section 4.2): the video is cut
into ``num_segments`` equal segments; training takes a random frame in each, evaluation the
segment centres ``int(tick / 2 + tick * k)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["segment_indices", "SegmentSampler"]


def segment_indices(
    num_frames: int, num_segments: int, train: bool, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``num_segments`` sorted frame indices in ``[0, num_frames)``.

    Videos shorter than the clip repeat frames (evenly) instead of reading past the end.
    """
    if num_frames <= 0:
        raise ValueError(f"cannot sample a clip from a video with {num_frames} frames")
    k = np.arange(num_segments)
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        avg = num_frames // num_segments
        if avg > 0:
            return k * avg + rng.integers(0, avg, size=num_segments)
        return np.sort(rng.integers(0, num_frames, size=num_segments))
    tick = num_frames / num_segments
    return np.minimum((tick / 2.0 + tick * k).astype(np.int64), num_frames - 1)


class SegmentSampler:
    """TSN segment sampler: random offset per segment for training, centres for evaluation."""

    def __init__(self, num_segments: int) -> None:
        self.num_segments = num_segments

    def __call__(self, num_frames: int, train: bool, rng: np.random.Generator) -> np.ndarray:
        return segment_indices(num_frames, self.num_segments, train, rng)
