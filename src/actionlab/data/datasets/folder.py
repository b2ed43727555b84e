"""Your own videos, one sub-folder per class: ``<root>/<split dir>/<class>/<video>``.

Layout under ``root``::

    train/<class>/<video>.mp4   (any extension decord reads; or frame folders <video>/)
    val/<class>/<video>.mp4

Classes are the sorted sub-folder names of the train folder; val/test must use the same names.
Set ``val_dir=train`` (and ``test_dir``) to reuse one folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from actionlab.data.datasets.base import DatasetLayoutError, VideoRecord, check_split, require_dir
from actionlab.data.readers import VIDEO_EXTENSIONS

__all__ = ["FolderAnnotations"]

LAYOUT = (
    "expected a folder dataset under data.root:\n"
    "  train/<class>/<video>.mp4, val/<class>/<video>.mp4 (one sub-folder per class)"
)


class FolderAnnotations:
    """A class-per-folder dataset.

    Args:
        root: dataset folder (``data.root``).
        train_dir, val_dir, test_dir: split folders relative to ``root`` (test: val by default).
        extensions: video file extensions to list; folders are listed as frame folders.
    """

    def __init__(self, root: str, train_dir: str = "train", val_dir: str = "val",
                 test_dir: str | None = None, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> None:
        self.root = str(root)
        self.dirs = {"train": train_dir, "val": val_dir, "test": test_dir or val_dir}
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)

    @property
    def class_names(self) -> list[str]:
        train = require_dir(Path(self.root) / self.dirs["train"], "train folder", LAYOUT)
        classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DatasetLayoutError(f"no class sub-folders in {train}\n{LAYOUT}")
        return classes

    def records(self, split: str) -> list[VideoRecord]:
        check_split(split)
        ids = {name: i for i, name in enumerate(self.class_names)}
        folder = require_dir(Path(self.root) / self.dirs[split], f"{split} folder", LAYOUT)
        records = []
        for cls in sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if cls not in ids:
                raise DatasetLayoutError(f"class folder {folder / cls} is not a class of {self.dirs['train']}/")
            for entry in sorted(os.scandir(folder / cls), key=lambda e: e.name):
                stem, ext = os.path.splitext(entry.name)
                if entry.name.startswith("."):
                    continue
                if entry.is_dir() or ext.lower() in self.extensions:
                    records.append(VideoRecord(entry.path, ids[cls], stem))
        return records
