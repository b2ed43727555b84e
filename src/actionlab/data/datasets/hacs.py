"""HACS Clips annotations (Zhao et al., ICCV 2019), as distributed.

``HACS_clips_v1.1.1.csv`` has the header ``classname,youtube_id,subset,start,end,label``;
``subset`` is training/validation/testing and ``label`` is ``1`` for a positive 2-second clip
of ``classname`` or ``-1`` for a negative (the action is absent). Negatives are excluded by
default; ``include_negatives`` maps them to an extra ``background`` class (201 classes).

Layouts under ``root`` (``layout``):

- ``videos`` (the official ``download_videos.py``): full videos
  ``videos/<classname with _>/v_<youtube_id>.mp4``; a record samples inside its
  ``[start, end]`` window (seconds).
- ``clips`` (pre-cut, SRTG/mmaction): ``videos/<classname with _>/<youtube_id>_<start:06d>_<end:06d>.mp4``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from actionlab.data.datasets.base import (
    DatasetLayoutError,
    VideoRecord,
    check_split,
    require_dir,
    require_file,
    video_path,
)
from actionlab.data.datasets.kinetics import kinetics_video_name

__all__ = ["BACKGROUND", "HACSAnnotations"]

BACKGROUND = "background"
SUBSETS = {"train": "training", "val": "validation", "test": "validation"}
LAYOUT = (
    "expected HACS Clips layout under data.root:\n"
    "  HACS_clips_v1.1.1.csv (classname,youtube_id,subset,start,end,label)\n"
    "  videos/<classname>/v_<youtube_id>.mp4 (layout=videos) or "
    "videos/<classname>/<youtube_id>_<start:06d>_<end:06d>.mp4 (layout=clips)"
)


class HACSAnnotations:
    """HACS Clips (200 action classes).

    Args:
        root: dataset folder (``data.root``).
        annotation_file: the clips csv, relative to ``root``.
        video_dir: folder of the per-class video folders.
        ext: video extension (empty for frame folders).
        layout: ``videos`` (full videos, sampled inside the clip window) or ``clips``.
        include_negatives: keep ``-1`` clips as a ``background`` class.
    """

    def __init__(
        self,
        root: str,
        annotation_file: str = "HACS_clips_v1.1.1.csv",
        video_dir: str = "videos",
        ext: str = "mp4",
        layout: str = "videos",
        include_negatives: bool = False,
    ) -> None:
        if layout not in ("videos", "clips"):
            raise ValueError(f"data.annotations.layout must be videos or clips, got {layout!r}")
        self.root = str(root)
        self.annotation_file = annotation_file
        self.video_dir = video_dir
        self.ext = ext
        self.layout = layout
        self.include_negatives = include_negatives
        self._rows: list[dict[str, str]] | None = None

    def rows(self) -> list[dict[str, str]]:
        if self._rows is None:
            require_dir(Path(self.root), "dataset root", LAYOUT)
            path = require_file(Path(self.root) / self.annotation_file, "HACS clips csv", LAYOUT)
            with open(path, newline="", encoding="utf-8") as f:
                self._rows = list(csv.DictReader(f))
            missing = {"classname", "youtube_id", "subset", "start", "end", "label"} - set(
                self._rows[0] if self._rows else {}
            )
            if missing:
                raise DatasetLayoutError(f"{path} lacks columns {sorted(missing)}\n{LAYOUT}")
        return self._rows

    @property
    def class_names(self) -> list[str]:
        names = sorted({r["classname"].strip() for r in self.rows()})
        return names + [BACKGROUND] if self.include_negatives else names

    def records(self, split: str) -> list[VideoRecord]:
        check_split(split)
        ids = {name: i for i, name in enumerate(self.class_names)}
        video_dir = require_dir(Path(self.root) / self.video_dir, "video folder", LAYOUT)
        records = []
        for row in self.rows():
            if row["subset"].strip() != SUBSETS[split]:
                continue
            positive = int(float(row["label"])) > 0
            if not positive and not self.include_negatives:
                continue
            cls = row["classname"].strip()
            folder = str(video_dir / cls.replace(" ", "_"))
            start, end = float(row["start"]), float(row["end"])
            yid = row["youtube_id"].strip()
            label = ids[cls] if positive else ids[BACKGROUND]
            if self.layout == "clips":
                name = kinetics_video_name(yid, start, end)
                records.append(VideoRecord(video_path(folder, name, self.ext), label, name))
            else:
                path = video_path(folder, f"v_{yid}", self.ext)
                records.append(VideoRecord(path, label, f"{yid}_{start:g}", start=start, end=end))
        return records
