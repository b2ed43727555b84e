"""Something-Something V1 annotations (Goyal et al., ICCV 2017), as distributed.

Layout under ``root``::

    something-something-v1-labels.csv        one class name per line
    something-something-v1-train.csv         "<id>;<class name>" per line
    something-something-v1-validation.csv    "<id>;<class name>"
    something-something-v1-test.csv          "<id>" (no labels)
    20bn-something-something-v1/<id>/00001.jpg ...   (JPEG frames, 1-based: data.backend=frames)

Class ids follow the sorted class names, as TSM's ``gen_label_sthv1.py`` (so released TSM
checkpoints and mmaction's SSv1 flip map ``{2: 4, 30: 41, 52: 66}`` apply).
"""

from __future__ import annotations

from pathlib import Path

from actionlab.data.datasets.base import (
    DatasetLayoutError,
    VideoRecord,
    check_split,
    read_csv_rows,
    read_lines,
    require_dir,
    video_path,
)

__all__ = ["SSv1Annotations"]

LAYOUT = (
    "expected Something-Something V1 layout under data.root:\n"
    "  something-something-v1-{labels,train,validation}.csv\n"
    "  20bn-something-something-v1/<id>/00001.jpg ... (frame folders; data.backend=frames)"
)


class SSv1Annotations:
    """Something-Something V1 (174 classes).

    Args:
        root: dataset folder (``data.root``).
        video_dir: folder of the frame folders (or videos), relative to ``root``.
        ext: empty for frame folders; a video extension if the frames were re-encoded.
        test_file: annotation file of the ``test`` split (validation: test labels are private).
    """

    labels_file = "something-something-v1-labels.csv"
    train_file = "something-something-v1-train.csv"
    val_file = "something-something-v1-validation.csv"

    def __init__(
        self,
        root: str,
        video_dir: str = "20bn-something-something-v1",
        ext: str = "",
        test_file: str = "something-something-v1-validation.csv",
    ) -> None:
        self.root = str(root)
        self.video_dir = video_dir
        self.ext = ext
        self.test_file = test_file
        self._classes: list[str] | None = None

    @property
    def class_names(self) -> list[str]:
        if self._classes is None:
            root = require_dir(Path(self.root), "dataset root", LAYOUT)
            self._classes = sorted(read_lines(root / self.labels_file, "SSv1 labels file", LAYOUT))
        return self._classes

    def records(self, split: str) -> list[VideoRecord]:
        check_split(split)
        file = {"train": self.train_file, "val": self.val_file, "test": self.test_file}[split]
        ids = {name: i for i, name in enumerate(self.class_names)}
        video_dir = str(require_dir(Path(self.root) / self.video_dir, "frame folder", LAYOUT))
        records = []
        for row in read_csv_rows(Path(self.root) / file, "SSv1 split file", LAYOUT, delimiter=";"):
            vid = row[0]
            if len(row) > 1 and row[1] not in ids:
                raise DatasetLayoutError(f"{file}: video {vid} has class {row[1]!r}, not in {self.labels_file}")
            label = ids[row[1]] if len(row) > 1 else -1
            records.append(VideoRecord(video_path(video_dir, vid, self.ext), label, vid))
        return records
