"""Your own videos listed in text files: ``<path> <label>`` (or TSM ``<path> <num_frames> <label>``).

Layout under ``root``::

    train.txt     "videos/abc.mp4 3" or "frames/abc 120 3" per line
    val.txt
    classes.txt   (optional) one class name per line, line i = label i
    <paths relative to root/video_dir, or absolute>

With three columns the middle one is the frame count, so frame folders need no probing.
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

__all__ = ["ListAnnotations"]

LAYOUT = (
    "expected list files under data.root:\n"
    "  train.txt, val.txt with '<path> <label>' or '<path> <num_frames> <label>' lines\n"
    "  classes.txt (optional, one class name per line)"
)


class ListAnnotations:
    """Videos and labels from list files.

    Args:
        root: dataset folder (``data.root``).
        train_list, val_list, test_list: list files relative to ``root`` (test: val by default).
        classes_file: class names, one per line; without it classes are ``"0" .. "max label"``.
        video_dir: prefix of relative paths in the lists.
    """

    def __init__(self, root: str, train_list: str = "train.txt", val_list: str = "val.txt",
                 test_list: str | None = None, classes_file: str | None = None, video_dir: str = "") -> None:
        self.root = str(root)
        self.lists = {"train": train_list, "val": val_list, "test": test_list or val_list}
        self.classes_file = classes_file
        self.video_dir = video_dir
        self._cache: dict[str, list[VideoRecord]] = {}

    def _parse(self, split: str) -> list[VideoRecord]:
        if split not in self._cache:
            require_dir(Path(self.root), "dataset root", LAYOUT)
            file = self.lists[split]
            base = Path(self.root) / self.video_dir
            records = []
            for n, line in enumerate(read_lines(Path(self.root) / file, f"{split} list", LAYOUT), start=1):
                parts = line.rsplit(maxsplit=2)
                try:
                    if len(parts) == 3 and parts[1].isdigit():
                        path, frames, label = parts[0], int(parts[1]), int(parts[2])
                    else:
                        path, label_text = line.rsplit(maxsplit=1)
                        frames, label = None, int(label_text)
                except ValueError as err:
                    raise DatasetLayoutError(f"{file} line {n}: {line!r} is not '<path> <label>'") from err
                full = path if os.path.isabs(path) else str(base / path)
                records.append(VideoRecord(full, label, os.path.splitext(os.path.basename(path))[0], frames))
            self._cache[split] = records
        return self._cache[split]

    @property
    def class_names(self) -> list[str]:
        if self.classes_file:
            return read_lines(Path(self.root) / self.classes_file, "classes file", LAYOUT)
        labels = [r.label for r in self._parse("train")]
        return [str(i) for i in range(max(labels) + 1)] if labels else []

    def records(self, split: str) -> list[VideoRecord]:
        check_split(split)
        records = self._parse(split)
        num_classes = len(self.class_names)
        bad = [r for r in records if not 0 <= r.label < num_classes]
        if bad:
            raise DatasetLayoutError(
                f"{self.lists[split]}: label {bad[0].label} of {bad[0].path} is outside 0..{num_classes - 1}"
            )
        return records
