"""What every dataset parser produces: ``VideoRecord`` lists and class names."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "SPLITS",
    "Annotations",
    "DatasetLayoutError",
    "VideoRecord",
    "check_split",
    "find_annotation_file",
    "read_csv_rows",
    "read_lines",
    "require_dir",
    "require_file",
    "video_path",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video. ``num_frames``/``start``/``end`` are known from annotations or None.

    ``start``/``end`` (seconds) restrict sampling to that window of the video (HACS clips cut
    from full videos); None means the whole video.
    """

    path: str
    label: int
    video_id: str = ""
    num_frames: int | None = None
    start: float | None = None
    end: float | None = None


class DatasetLayoutError(FileNotFoundError):
    """An annotation file or video folder is missing or malformed; the message shows the layout."""


class Annotations(Protocol):
    """A benchmark's annotations rooted at ``root``."""

    root: str

    @property
    def class_names(self) -> list[str]: ...

    def records(self, split: str) -> list[VideoRecord]: ...


def video_path(video_dir: str, name: str, ext: str) -> str:
    """``<video_dir>/<name>.<ext>``; an empty ``ext`` names a frame folder ``<video_dir>/<name>``."""
    return os.path.join(video_dir, f"{name}.{ext.lstrip('.')}" if ext else name)


def require_dir(path: Path, what: str, layout: str) -> Path:
    """``path`` if it is a folder, else a ``DatasetLayoutError`` that shows the layout."""
    if not path.is_dir():
        raise DatasetLayoutError(f"{what} not found: {path}. Set data.root=/path/to/dataset.\n{layout}")
    return path


def require_file(path: Path, what: str, layout: str) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(f"{what} not found: {path}\n{layout}")
    return path


def read_csv_rows(path: Path, what: str, layout: str, delimiter: str = ",") -> list[list[str]]:
    """Rows of a csv/txt annotation file (blank lines dropped, cells stripped)."""
    require_file(path, what, layout)
    with open(path, newline="", encoding="utf-8") as f:
        return [[c.strip() for c in row] for row in csv.reader(f, delimiter=delimiter) if any(c.strip() for c in row)]


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


def read_lines(path: Path, what: str, layout: str) -> list[str]:
    """Non-empty stripped lines of a text annotation file."""
    require_file(path, what, layout)
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def find_annotation_file(
    root: Path, names: list[str], what: str, key: str, layout: str, subdirs: tuple[str, ...] = ("labels",)
) -> Path:
    """The first of ``names`` that exists under ``root`` or one of its ``subdirs`` (releases put
    annotations at the top or under ``labels/``); the error lists every path tried and the
    config key (``data.annotations.<key>``) that names the file."""
    tried = []
    for base in (root, *(root / d for d in subdirs)):
        for name in names:
            path = base / name
            if path.is_file():
                return path
            tried.append(str(path))
    raise DatasetLayoutError(
        f"{what} not found; tried {', '.join(tried)}. Name it with data.annotations.{key}=FILE "
        f"(relative to data.root, or absolute).\n{layout}"
    )
