"""Moments in Time annotations (Monfort et al., TPAMI 2019), as distributed.

Layout under ``root`` (``Moments_in_Time_Raw``)::

    moments_categories.txt   "<category>,<id>" per line (339 categories in v1)
    trainingSet.csv          "<category>/<file>.mp4,<category>,<agreement>,<disagreement>"
    validationSet.csv
    training/<category>/<file>.mp4
    validation/<category>/<file>.mp4

``test`` is the validation set (test labels are not public).
"""

from __future__ import annotations

import os
from pathlib import Path

from actionlab.data.datasets.base import (
    DatasetLayoutError,
    VideoRecord,
    check_split,
    read_csv_rows,
    require_dir,
)

__all__ = ["MomentsInTimeAnnotations"]

LAYOUT = (
    "expected Moments in Time layout under data.root:\n"
    "  moments_categories.txt, trainingSet.csv, validationSet.csv\n"
    "  training/<category>/<file>.mp4, validation/<category>/<file>.mp4"
)


class MomentsInTimeAnnotations:
    """Moments in Time (339 classes in v1).

    Args:
        root: dataset folder (``data.root``).
        categories_file, train_file, val_file: annotation files relative to ``root``.
        video_dirs: video folder per split.
        ext: replaces the listed extension (empty for frame folders, None keeps it).
    """

    def __init__(self, root: str, categories_file: str = "moments_categories.txt",
                 train_file: str = "trainingSet.csv", val_file: str = "validationSet.csv",
                 video_dirs: dict[str, str] | None = None, ext: str | None = None) -> None:
        self.root = str(root)
        self.categories_file, self.train_file, self.val_file = categories_file, train_file, val_file
        self.video_dirs = dict(video_dirs or {"train": "training", "val": "validation", "test": "validation"})
        self.ext = ext
        self._ids: dict[str, int] | None = None

    @property
    def label_ids(self) -> dict[str, int]:
        if self._ids is None:
            root = require_dir(Path(self.root), "dataset root", LAYOUT)
            rows = read_csv_rows(root / self.categories_file, "categories file", LAYOUT)
            self._ids = {row[0]: int(row[1]) for row in rows}
        return self._ids

    @property
    def class_names(self) -> list[str]:
        ids = self.label_ids
        return sorted(ids, key=ids.__getitem__)

    def records(self, split: str) -> list[VideoRecord]:
        check_split(split)
        file = self.train_file if split == "train" else self.val_file
        video_dir = require_dir(Path(self.root) / self.video_dirs[split], f"{split} video folder", LAYOUT)
        ids = self.label_ids
        records = []
        for row in read_csv_rows(Path(self.root) / file, "split file", LAYOUT):
            rel, category = row[0], row[1]
            if category not in ids:
                raise DatasetLayoutError(f"{file}: {rel} has category {category!r}, not in {self.categories_file}")
            if self.ext is not None:
                stem = os.path.splitext(rel)[0]
                rel = f"{stem}.{self.ext}" if self.ext else stem
            records.append(VideoRecord(str(video_dir / rel), ids[category], os.path.splitext(os.path.basename(rel))[0]))
        return records
