"""Frame readers: open a video, return the frames at given indices as ``(T, H, W, 3)`` uint8.

A reader is opened per sample inside ``__getitem__`` (never shared with DataLoader workers) and
released right after, which avoids decord's worker deadlocks and background-decoding memory
growth (practices.md section 2.4).
"""

from __future__ import annotations

import os
from typing import Protocol, Sequence

import numpy as np
import torch  # noqa: F401  (must be imported before decord: OpenMP clash / worker freezes)

__all__ = ["VideoReader", "VideoReadError", "DecordReader"]


class VideoReadError(RuntimeError):
    """A video is missing, empty, truncated or cannot be decoded."""


class VideoReader(Protocol):
    def num_frames(self, path: str) -> int: ...

    def read(self, path: str, indices: Sequence[int]) -> np.ndarray: ...


class DecordReader:
    """decord ``VideoReader`` per call, ``num_threads=1`` (one decoder thread per worker).

    Indices are clamped to ``[0, len - 1]``: containers that over-report their length make
    decord spin near end-of-file (decord #373).
    """

    def __init__(self, num_threads: int = 1, fault_tol: int = -1) -> None:
        self.num_threads = num_threads
        self.fault_tol = fault_tol

    def _open(self, path: str):
        import decord

        if not os.path.isfile(path):
            raise VideoReadError(f"video file not found: {path}")
        if os.path.getsize(path) == 0:
            raise VideoReadError(f"video file is empty (0 bytes): {path}")
        try:
            return decord.VideoReader(path, num_threads=self.num_threads, fault_tol=self.fault_tol)
        except Exception as err:  # decord raises DECORDError / RuntimeError
            raise VideoReadError(f"cannot open video {path}: {err}") from err

    def num_frames(self, path: str) -> int:
        vr = self._open(path)
        try:
            return len(vr)
        finally:
            del vr

    def read(self, path: str, indices: Sequence[int]) -> np.ndarray:
        vr = self._open(path)
        try:
            length = len(vr)
            if length <= 0:
                raise VideoReadError(f"video has no frames: {path}")
            wanted = np.clip(np.asarray(indices, dtype=np.int64), 0, length - 1)
            unique, inverse = np.unique(wanted, return_inverse=True)
            frames = vr.get_batch(unique.tolist()).asnumpy()
        except VideoReadError:
            raise
        except Exception as err:
            raise VideoReadError(f"cannot decode frames {list(indices)} of {path}: {err}") from err
        finally:
            del vr
        return frames[inverse]
