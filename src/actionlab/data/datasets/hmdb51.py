"""HMDB51 annotations (Kuehne et al., ICCV 2011), as distributed, with the three official splits.

Layout under ``root``::

    testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt   "<video>.avi <0|1|2>"
    hmdb51/<class>/<video>.avi

In a split file 1 marks a training video, 2 a test video, 0 an unused one. Classes are the
sorted class names (mmaction's generated ``classInd``). ``val`` and ``test`` are the test videos.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from actionlab.data.datasets.base import (
    DatasetLayoutError,
    VideoRecord,
    check_split,
    read_lines,
    require_dir,
)
from actionlab.data.datasets.ucf101 import check_official_split

__all__ = ["HMDB51Annotations"]

LAYOUT = (
    "expected HMDB51 layout under data.root:\n"
    "  testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt\n"
    "  hmdb51/<class>/<video>.avi"
)
SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>[123])\.txt$")


class HMDB51Annotations:
    """HMDB51 (51 classes), official split ``split`` (``data.split``).

    Args:
        root: dataset folder (``data.root``).
        split: 1, 2 or 3.
        split_dir: folder of the ``<class>_test_split<k>.txt`` files.
        video_dir: folder of the class folders.
        ext: replaces ``.avi`` (e.g. ``mp4``; empty for frame folders).
    """

    def __init__(self, root: str, split: int = 1, split_dir: str = "testTrainMulti_7030_splits",
                 video_dir: str = "hmdb51", ext: str = "avi") -> None:
        self.root = str(root)
        self.split = check_official_split(split)
        self.split_dir = split_dir
        self.video_dir = video_dir
        self.ext = ext

    def _split_files(self) -> dict[str, Path]:
        folder = require_dir(Path(self.root) / self.split_dir, "split folder", LAYOUT)
        files = {}
        for name in os.listdir(folder):
            m = SPLIT_FILE.match(name)
            if m and int(m["k"]) == self.split:
                files[m["cls"]] = folder / name
        if not files:
            raise DatasetLayoutError(f"no *_test_split{self.split}.txt in {folder}\n{LAYOUT}")
        return files

    @property
    def class_names(self) -> list[str]:
        return sorted(self._split_files())

    def records(self, split: str) -> list[VideoRecord]:
        check_split(split)
        wanted = "1" if split == "train" else "2"
        video_dir = require_dir(Path(self.root) / self.video_dir, "video folder", LAYOUT)
        records = []
        for label, (cls, path) in enumerate(sorted(self._split_files().items())):
            for line in read_lines(path, path.name, LAYOUT):
                name, flag = line.split()[:2]
                if flag != wanted:
                    continue
                stem = os.path.splitext(name)[0]
                file = str(video_dir / cls / (f"{stem}.{self.ext}" if self.ext else stem))
                records.append(VideoRecord(file, label, stem))
        return records
