"""UCF101 annotations (Soomro et al. 2012), as distributed, with the three official splits.

Layout under ``root``::

    ucfTrainTestlist/classInd.txt            "1 ApplyEyeMakeup" (1-based)
    ucfTrainTestlist/trainlist0{1,2,3}.txt   "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    ucfTrainTestlist/testlist0{1,2,3}.txt    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi

``val`` and ``test`` are the split's test list (UCF101 has no separate validation set); labels
come from the class folder of each entry (test lists carry none).
"""

from __future__ import annotations

import os
from pathlib import Path

from actionlab.data.datasets.base import (
    DatasetLayoutError,
    VideoRecord,
    check_split,
    read_lines,
    require_dir,
)

__all__ = ["OFFICIAL_SPLITS", "UCF101Annotations"]

OFFICIAL_SPLITS = (1, 2, 3)
LAYOUT = (
    "expected UCF101 layout under data.root:\n"
    "  ucfTrainTestlist/{classInd.txt,trainlist01.txt,testlist01.txt,...}\n"
    "  UCF-101/<Class>/v_<Class>_gXX_cYY.avi"
)


def check_official_split(split: int) -> int:
    if int(split) not in OFFICIAL_SPLITS:
        raise ValueError(f"data.split must be 1, 2 or 3 (the official splits), got {split!r}")
    return int(split)


class UCF101Annotations:
    """UCF101 (101 classes), official split ``split`` (``data.split``).

    Args:
        root: dataset folder (``data.root``).
        split: 1, 2 or 3.
        list_dir: folder of classInd/trainlist/testlist.
        video_dir: folder of the class folders.
        ext: replaces ``.avi`` (e.g. ``mp4`` after transcoding; empty for frame folders).
    """

    def __init__(self, root: str, split: int = 1, list_dir: str = "ucfTrainTestlist",
                 video_dir: str = "UCF-101", ext: str = "avi") -> None:
        self.root = str(root)
        self.split = check_official_split(split)
        self.list_dir = list_dir
        self.video_dir = video_dir
        self.ext = ext
        self._classes: list[str] | None = None

    @property
    def class_names(self) -> list[str]:
        if self._classes is None:
            lists = require_dir(Path(self.root) / self.list_dir, "split list folder", LAYOUT)
            pairs = [line.split() for line in read_lines(lists / "classInd.txt", "classInd.txt", LAYOUT)]
            self._classes = [name for _, name in sorted(pairs, key=lambda p: int(p[0]))]
        return self._classes

    def records(self, split: str) -> list[VideoRecord]:
        check_split(split)
        ids = {name: i for i, name in enumerate(self.class_names)}
        file = f"{'trainlist' if split == 'train' else 'testlist'}{self.split:02d}.txt"
        video_dir = require_dir(Path(self.root) / self.video_dir, "video folder", LAYOUT)
        records = []
        for line in read_lines(Path(self.root) / self.list_dir / file, file, LAYOUT):
            rel = line.split()[0]
            cls = rel.split("/")[0]
            if cls not in ids:
                raise DatasetLayoutError(f"{file}: {rel} is in class {cls!r}, not in classInd.txt")
            if len(line.split()) > 1 and int(line.split()[1]) - 1 != ids[cls]:
                raise DatasetLayoutError(f"{file}: {rel} has label {line.split()[1]}, classInd says {ids[cls] + 1}")
            stem = os.path.splitext(rel)[0]
            path = str(video_dir / (f"{stem}.{self.ext}" if self.ext else stem))
            records.append(VideoRecord(path, ids[cls], os.path.basename(stem)))
        return records
