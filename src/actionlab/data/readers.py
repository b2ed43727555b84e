"""Frame readers: open a video, return the frames at given indices as ``(T, H, W, 3)`` uint8,
RGB or, with ``channel_order="bgr"`` (``data.channel_order``), BGR: the order of OpenCV-decoded
frames that SRTG/MTNet were trained on. Every backend returns the same order for the same
setting, so training, validation, evaluation and prediction feed a model what it expects.

Three backends behind one interface (``data.backend``):

- ``video``: ``DecordReader``, any container FFmpeg reads (mp4/webm/avi/mkv).
- ``frames``: ``FrameFolderReader``, one image per frame in a folder per video, 1-based names
  (TSM ``{:05d}.jpg``, TokShift/mmaction ``img_{:05d}.jpg``; the template is detected).
- ``sqlite``: ``SQLiteFrameReader``, SRTG's per-video ``frames.db`` (table
  ``Images(ObjId, frames, size)``, ``ObjId = <video>/frame_%05d``, 1-based) plus ``n_frames``.

A reader is opened per sample inside ``__getitem__`` (never shared with DataLoader workers) and
released right after, which avoids decord's worker deadlocks and background-decoding memory
growth (decord issues #294, #157/#208). For the frame backends the record path may be the video file
the annotations name (``.../abc.mp4``): the reader looks in the folder of the same name
(``.../abc/``), which is what ``python -m actionlab.data.prepare`` writes.
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch  # noqa: F401  (must be imported before decord: OpenMP clash / worker freezes)

__all__ = [
    "BACKENDS",
    "CHANNEL_ORDERS",
    "FRAME_TEMPLATES",
    "VIDEO_EXTENSIONS",
    "DecordReader",
    "FrameFolderReader",
    "SQLiteFrameReader",
    "VideoInfo",
    "VideoReadError",
    "VideoReader",
    "check_channel_order",
    "frames_dir",
    "make_reader",
]

BACKENDS = ("video", "frames", "sqlite")
CHANNEL_ORDERS = ("rgb", "bgr")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
# TSM (somethingv1, ucf/hmdb), TokShift/mmaction (kinetics), TSM sthv2 extraction, SRTG jpgs.
FRAME_TEMPLATES = (
    "{:05d}.jpg", "img_{:05d}.jpg", "{:06d}.jpg", "frame_{:05d}.jpg", "{:05d}.png", "img_{:05d}.png"
)
SQLITE_DB = "frames.db"
SQLITE_COUNT = "n_frames"

Chooser = Callable[[int, "float | None"], Sequence[int]]


class VideoReadError(RuntimeError):
    """A video is missing, empty, truncated or cannot be decoded."""


@dataclass(frozen=True)
class VideoInfo:
    """What a sampler needs to know about a video: frame count and (if known) frame rate."""

    num_frames: int
    fps: float | None = None


class VideoReader(Protocol):
    def num_frames(self, path: str) -> int: ...

    def read(self, path: str, indices: Sequence[int]) -> np.ndarray: ...


def _clamp(indices: Sequence[int], length: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique indices clamped to ``[0, length)`` and the inverse map back to the request."""
    if length <= 0:
        raise VideoReadError(f"video has no frames: {path}")
    wanted = np.clip(np.asarray(indices, dtype=np.int64), 0, length - 1)
    return np.unique(wanted, return_inverse=True)


def _expand(frames: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """``frames[inverse]`` (repeated or reordered indices), without a copy when it is the identity."""
    if len(inverse) == len(frames) and np.array_equal(inverse, np.arange(len(frames))):
        return frames
    return frames[inverse]


def _decode_image(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            # convert() copies even when the mode already is RGB (JPEG frames are).
            return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError (truncated), ...
        raise VideoReadError(f"cannot decode frame image {where}: {err}") from err


def _stack(frames: list[np.ndarray], path: str) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoReadError(f"frames of {path} differ in size ({sorted(shapes)}); re-extract it")
    return np.stack(frames)


def check_channel_order(channel_order: str) -> str:
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(
            f"data.channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r} "
            "(bgr for models trained on OpenCV-decoded frames: SRTG/MTNet releases)"
        )
    return channel_order


class _Reader:
    """Shared logic: ``probe`` + ``read``, and ``read_sampled`` that opens the video once.

    ``channel_order``: ``rgb`` or ``bgr``; frames are decoded as RGB and, for ``bgr``, returned
    as a reversed-channel view (no copy: the transforms copy them once anyway).
    """

    channel_order = "rgb"

    def _ordered(self, frames: np.ndarray) -> np.ndarray:
        return frames[..., ::-1] if self.channel_order == "bgr" else frames

    def probe(self, path: str) -> VideoInfo:
        raise NotImplementedError

    def source(self, path: str) -> str:
        """The file or folder that holds the frames of ``path`` (cache key)."""
        return path

    def num_frames(self, path: str) -> int:
        return self.probe(path).num_frames

    def read(self, path: str, indices: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def read_sampled(self, path: str, choose: Chooser) -> tuple[np.ndarray, VideoInfo]:
        """Frames at ``choose(num_frames, fps)`` and the info it was given (one open if possible)."""
        info = self.probe(path)
        return self.read(path, choose(info.num_frames, info.fps)), info


class DecordReader(_Reader):
    """decord ``VideoReader`` per call, ``num_threads=1`` (one decoder thread per worker).

    Indices are clamped to ``[0, len - 1]``: containers that over-report their length make
    decord spin near end-of-file (decord #373).
    """

    def __init__(
        self, num_threads: int = 1, fault_tol: int = -1, channel_order: str = "rgb"
    ) -> None:
        self.num_threads = num_threads
        self.fault_tol = fault_tol
        self.channel_order = check_channel_order(channel_order)

    def _open(self, path: str):
        import decord

        if not os.path.isfile(path):
            if os.path.isdir(path) or os.path.isdir(os.path.splitext(path)[0]):
                raise VideoReadError(
                    f"{path} is a frame folder, not a video file; use data.backend=frames or sqlite"
                )
            raise VideoReadError(f"video file not found: {path}")
        if os.path.getsize(path) == 0:
            raise VideoReadError(f"video file is empty (0 bytes): {path}")
        try:
            return decord.VideoReader(path, num_threads=self.num_threads, fault_tol=self.fault_tol)
        except Exception as err:  # decord raises DECORDError / RuntimeError
            raise VideoReadError(f"cannot open video {path}: {err}") from err

    @staticmethod
    def _fps(vr) -> float | None:
        try:
            fps = float(vr.get_avg_fps())
        except Exception:
            return None
        return fps if np.isfinite(fps) and fps > 0 else None

    def probe(self, path: str) -> VideoInfo:
        vr = self._open(path)
        try:
            return VideoInfo(len(vr), self._fps(vr))
        finally:
            del vr

    def _get(self, vr, path: str, indices: Sequence[int]) -> np.ndarray:
        try:
            unique, inverse = _clamp(indices, len(vr), path)
            frames = vr.get_batch(unique.tolist()).asnumpy()
        except VideoReadError:
            raise
        except Exception as err:
            raise VideoReadError(f"cannot decode frames {list(indices)} of {path}: {err}") from err
        if frames.ndim != 4 or len(frames) != len(unique):
            raise VideoReadError(f"decoded {len(frames)} of {len(unique)} frames of {path}")
        return self._ordered(_expand(frames, inverse))

    def read(self, path: str, indices: Sequence[int]) -> np.ndarray:
        vr = self._open(path)
        try:
            return self._get(vr, path, indices)
        finally:
            del vr

    def read_sampled(self, path: str, choose: Chooser) -> tuple[np.ndarray, VideoInfo]:
        vr = self._open(path)
        try:
            info = VideoInfo(len(vr), self._fps(vr))
            if info.num_frames <= 0:
                raise VideoReadError(f"video has no frames: {path}")
            return self._get(vr, path, choose(info.num_frames, info.fps)), info
        finally:
            del vr


def frames_dir(path: str) -> str:
    """The frame folder of a record: ``path`` itself, or ``path`` without its video extension."""
    if os.path.isdir(path):
        return path
    stem, ext = os.path.splitext(path)
    if ext.lower() in VIDEO_EXTENSIONS and os.path.isdir(stem):
        return stem
    raise VideoReadError(
        f"frame folder not found: {stem if ext.lower() in VIDEO_EXTENSIONS else path} "
        "(extract frames with python -m actionlab.data.prepare ... --format frames|sqlite, "
        "or use data.backend=video)"
    )


class FrameFolderReader(_Reader):
    """One image file per frame, 1-based: ``<video>/{:05d}.jpg`` (TSM) or ``img_{:05d}.jpg``.

    Args:
        template: file name of frame ``i`` (``template.format(i)``); None detects it from the
            first folder among ``FRAME_TEMPLATES``.
        start_index: number of the first frame (1 in TSM/TokShift/ffmpeg extractions).
    """

    def __init__(
        self, template: str | None = None, start_index: int = 1, channel_order: str = "rgb"
    ) -> None:
        self.template = template
        self.start_index = start_index
        self.channel_order = check_channel_order(channel_order)

    def source(self, path: str) -> str:
        return frames_dir(path)

    def _template(self, folder: str) -> str:
        if self.template is not None:
            return self.template
        for template in FRAME_TEMPLATES:
            if os.path.isfile(os.path.join(folder, template.format(self.start_index))):
                return template
        raise VideoReadError(
            f"no first frame in {folder} matching any of {FRAME_TEMPLATES} (numbered from "
            f"{self.start_index}); set data.frame_template"
        )

    def probe(self, path: str) -> VideoInfo:
        folder = frames_dir(path)
        prefix, rest = self._template(folder).split("{", 1)
        pattern = re.compile(re.escape(prefix) + r"\d+" + re.escape(rest.split("}", 1)[1]) + "$")
        count = sum(1 for name in os.listdir(folder) if pattern.match(name))
        if count == 0:
            raise VideoReadError(f"frame folder is empty: {folder}")
        return VideoInfo(count)

    def read(self, path: str, indices: Sequence[int]) -> np.ndarray:
        folder = frames_dir(path)
        template = self._template(folder)
        # Unlike a container, a folder has no frame count to clamp to; missing frames are errors.
        wanted = np.maximum(np.asarray(indices, dtype=np.int64), 0)
        unique, inverse = np.unique(wanted, return_inverse=True)
        frames = []
        for i in unique.tolist():
            name = os.path.join(folder, template.format(i + self.start_index))
            try:
                with open(name, "rb") as f:
                    data = f.read()
            except OSError as err:
                raise VideoReadError(f"frame {i} of {folder} is missing ({name}): {err}") from err
            frames.append(_decode_image(data, name))
        return self._ordered(_expand(_stack(frames, folder), inverse))

    def read_sampled(self, path: str, choose: Chooser) -> tuple[np.ndarray, VideoInfo]:
        info = self.probe(path)
        unique, inverse = _clamp(choose(info.num_frames, info.fps), info.num_frames, path)
        return _expand(self.read(path, unique), inverse), info


class SQLiteFrameReader(_Reader):
    """SRTG per-video SQLite frame database (``stergiou`` ``dataset2database`` layout).

    ``<video>/frames.db`` holds ``Images(ObjId TEXT, frames BLOB, size INT)`` with
    ``ObjId = "<video folder name>/frame_%05d"`` (1-based) and the encoded image bytes;
    ``<video>/n_frames`` holds the frame count. One query fetches all frames of a clip.
    """

    def __init__(self, channel_order: str = "rgb") -> None:
        self.channel_order = check_channel_order(channel_order)

    def source(self, path: str) -> str:
        return frames_dir(path)

    def _paths(self, path: str) -> tuple[str, str, str]:
        folder = frames_dir(path)
        db = os.path.join(folder, SQLITE_DB)
        if not os.path.isfile(db):
            raise VideoReadError(f"frame database not found: {db}")
        if os.path.getsize(db) == 0:
            raise VideoReadError(f"frame database is empty (0 bytes): {db}")
        return folder, db, os.path.basename(os.path.normpath(folder))

    def probe(self, path: str) -> VideoInfo:
        folder, db, _ = self._paths(path)
        count_file = os.path.join(folder, SQLITE_COUNT)
        try:
            with open(count_file) as f:
                count = int(f.read().strip())
        except (OSError, ValueError):
            with self._connect(db) as con:
                count = int(con.execute("SELECT COUNT(*) FROM Images").fetchone()[0])
        if count <= 0:
            raise VideoReadError(f"frame database has no frames: {db}")
        return VideoInfo(count)

    @staticmethod
    def _connect(db: str) -> sqlite3.Connection:
        try:
            return sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        except sqlite3.Error as err:
            raise VideoReadError(f"cannot open frame database {db}: {err}") from err

    def read(self, path: str, indices: Sequence[int]) -> np.ndarray:
        _, db, name = self._paths(path)
        wanted = np.maximum(np.asarray(indices, dtype=np.int64), 0)
        unique, inverse = np.unique(wanted, return_inverse=True)
        keys = [f"{name}/frame_{i + 1:05d}" for i in unique.tolist()]
        con = self._connect(db)
        try:
            rows = con.execute(
                f"SELECT ObjId, frames FROM Images WHERE ObjId IN ({','.join('?' * len(keys))})", keys
            ).fetchall()
        except sqlite3.Error as err:
            raise VideoReadError(f"cannot read frame database {db}: {err}") from err
        finally:
            con.close()
        blobs = dict(rows)
        missing = [k for k in keys if k not in blobs]
        if missing:
            raise VideoReadError(f"frames {missing[:3]} missing from {db}")
        frames = _stack([_decode_image(blobs[k], f"{db}:{k}") for k in keys], db)
        return self._ordered(_expand(frames, inverse))

    def read_sampled(self, path: str, choose: Chooser) -> tuple[np.ndarray, VideoInfo]:
        info = self.probe(path)
        unique, inverse = _clamp(choose(info.num_frames, info.fps), info.num_frames, path)
        return _expand(self.read(path, unique), inverse), info


def make_reader(
    backend: str, frame_template: str | None = None, channel_order: str = "rgb"
) -> _Reader:
    """The reader for ``data.backend`` returning ``data.channel_order`` frames."""
    if backend == "video":
        return DecordReader(channel_order=channel_order)
    if backend == "frames":
        return FrameFolderReader(frame_template, channel_order=channel_order)
    if backend == "sqlite":
        return SQLiteFrameReader(channel_order=channel_order)
    raise ValueError(f"data.backend must be one of {BACKENDS}, got {backend!r}")
