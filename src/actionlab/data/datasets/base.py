"""What every dataset parser produces: ``VideoRecord`` lists and class names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["VideoRecord", "Annotations", "DatasetLayoutError", "SPLITS"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video. ``num_frames``/``start``/``end`` are known from annotations or None."""

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
