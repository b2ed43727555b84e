"""Kinetics-400/600/700 annotations (Kay et al. 2017; Carreira et al. 2018, 2019), as distributed.

Layout under ``root`` (cvdfoundation/kinetics-dataset; the DeepMind csvs work too)::

    annotations/train.csv   label,youtube_id,time_start,time_end,split[,is_cc]
    annotations/val.csv     (test.csv has no label column)
    train/<youtube_id>_<start:06d>_<end:06d>.mp4
    val/...

With ``label_subdirs`` the videos sit in one folder per class, named as the ActivityNet
downloader writes it (the class name, spaces and all: ``passing American football (in game)/``)
or as mmaction2's ``rename_classnames.sh`` leaves it (spaces as ``_``); whichever exists is used. Class ids are the sorted class names of the train
csv (mmaction ``parse_kinetics_splits``); ``classes_file`` (one name per line) pins another
order, e.g. the one of a released checkpoint. The class count is the config's
(``data.num_classes`` 400, 600 or 700) and is checked against the csv.
"""

from __future__ import annotations

import csv
from pathlib import Path

from actionlab.data.datasets.base import (
    DatasetLayoutError,
    VideoRecord,
    check_split,
    read_lines,
    require_dir,
    require_file,
    video_path,
)

__all__ = ["KineticsAnnotations", "class_folder", "clean_label", "kinetics_video_name"]

LAYOUT = (
    "expected Kinetics layout under data.root:\n"
    "  annotations/{train,val}.csv with header label,youtube_id,time_start,time_end,split\n"
    "  train/<youtube_id>_<start:06d>_<end:06d>.mp4, val/... (or <class>/ sub-folders: "
    "data.annotations.label_subdirs=true)"
)


def clean_label(label: str) -> str:
    return label.strip().strip('"')


def kinetics_video_name(youtube_id: str, start: float, end: float) -> str:
    """``<id>_<start:06d>_<end:06d>``: the name the official downloaders give a clip."""
    return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}"


def class_folder(video_dir: str, label: str) -> str:
    """The folder of class ``label``: as named (ActivityNet downloader, with spaces) if it
    exists, else with spaces as ``_`` (mmaction2 ``rename_classnames.sh``, also used when
    neither exists: its videos then count as missing)."""
    spaced = Path(video_dir) / label
    return str(spaced if spaced.is_dir() else Path(video_dir) / label.replace(" ", "_"))


class KineticsAnnotations:
    """Kinetics-400/600/700 clips.

    Args:
        root: dataset folder (``data.root``).
        files: annotation csv per split, relative to ``root``.
        video_dirs: video folder per split, relative to ``root``.
        ext: video extension (``mp4``; empty for frame folders).
        label_subdirs: videos are under ``<video_dir>/<class>/``, the class folder named with
            spaces (ActivityNet downloader) or with ``_`` (mmaction2); both resolve.
        classes_file: optional class list (one per line) fixing the class ids.
    """

    def __init__(
        self,
        root: str,
        files: dict[str, str] | None = None,
        video_dirs: dict[str, str] | None = None,
        ext: str = "mp4",
        label_subdirs: bool = False,
        classes_file: str | None = None,
    ) -> None:
        self.root = str(root)
        self.files = dict(files or {"train": "annotations/train.csv", "val": "annotations/val.csv",
                                    "test": "annotations/val.csv"})
        self.video_dirs = dict(video_dirs or {"train": "train", "val": "val", "test": "val"})
        self.ext = ext
        self.label_subdirs = label_subdirs
        self.classes_file = classes_file
        self._classes: list[str] | None = None

    def _rows(self, split: str) -> list[dict[str, str]]:
        path = require_file(Path(self.root) / self.files[split], f"Kinetics {split} csv", LAYOUT)
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        missing = {"youtube_id", "time_start", "time_end"} - set(rows[0] if rows else {})
        if missing:
            raise DatasetLayoutError(f"{path} lacks columns {sorted(missing)}\n{LAYOUT}")
        return rows

    @property
    def class_names(self) -> list[str]:
        if self._classes is None:
            require_dir(Path(self.root), "dataset root", LAYOUT)
            if self.classes_file:
                lines = read_lines(Path(self.root) / self.classes_file, "class list", LAYOUT)
                self._classes = [clean_label(line) for line in lines]
            else:
                self._classes = sorted({clean_label(r["label"]) for r in self._rows("train")})
        return self._classes

    def records(self, split: str) -> list[VideoRecord]:
        check_split(split)
        ids = {name: i for i, name in enumerate(self.class_names)}
        video_dir = str(require_dir(Path(self.root) / self.video_dirs[split], f"{split} video folder", LAYOUT))
        records = []
        folders: dict[str, str] = {}
        for row in self._rows(split):
            label_name = clean_label(row.get("label") or "")
            if label_name and label_name not in ids:
                raise DatasetLayoutError(
                    f"{self.files[split]}: class {label_name!r} is not among the train classes"
                )
            name = kinetics_video_name(row["youtube_id"], row["time_start"], row["time_end"])
            folder = video_dir
            if self.label_subdirs and label_name:
                if label_name not in folders:
                    folders[label_name] = class_folder(video_dir, label_name)
                folder = folders[label_name]
            records.append(VideoRecord(video_path(folder, name, self.ext), ids.get(label_name, -1), name))
        return records
