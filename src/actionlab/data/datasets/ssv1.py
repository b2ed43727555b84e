"""Something-Something V1 annotations (Goyal et al., ICCV 2017), as distributed.

Layout under ``root``::

    something-something-v1-labels.csv        one class name per line
    something-something-v1-train.csv         "<id>;<class name>" per line
    something-something-v1-validation.csv    "<id>;<class name>"
    something-something-v1-test.csv          "<id>" (no labels)
    20bn-something-something-v1/<id>/00001.jpg ...   (JPEG frames, 1-based: data.backend=frames)

The annotation files may also sit under ``labels/``, or be named with
``data.annotations.{labels,train,val,test}_file``.

Class ids follow the sorted class names, as TSM's ``gen_label_sthv1.py``, so released TSM
checkpoints apply. The sorted ids of the left/right pairs a horizontal flip swaps are 86/87
("Pulling something from left to right"/"... right to left"), 93/94 ("Pushing ...") and
166/167 ("Turning the camera left/right while filming something"): ``conf/data/ssv1.yaml``'s
``flip_label_map``. (mmaction2's ``{2: 4, 30: 41, 52: 66}`` numbers the label file's lines,
not sorted names.)
"""

from __future__ import annotations

from pathlib import Path

from actionlab.data.datasets.base import (
    DatasetLayoutError,
    VideoRecord,
    check_split,
    read_csv_rows,
    find_annotation_file,
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
        labels_file, train_file, val_file: the other annotation files (looked up in ``root``,
            then in ``root/labels``).
    """

    def __init__(
        self,
        root: str,
        video_dir: str = "20bn-something-something-v1",
        ext: str = "",
        test_file: str = "something-something-v1-validation.csv",
        labels_file: str = "something-something-v1-labels.csv",
        train_file: str = "something-something-v1-train.csv",
        val_file: str = "something-something-v1-validation.csv",
    ) -> None:
        self.root = str(root)
        self.video_dir = video_dir
        self.ext = ext
        self.test_file = test_file
        self.labels_file, self.train_file, self.val_file = labels_file, train_file, val_file
        self._classes: list[str] | None = None

    def _file(self, name: str, key: str) -> Path:
        return find_annotation_file(Path(self.root), [name], f"SSv1 {key} ({name})", key, LAYOUT)

    @property
    def class_names(self) -> list[str]:
        if self._classes is None:
            require_dir(Path(self.root), "dataset root", LAYOUT)
            path = self._file(self.labels_file, "labels_file")
            self._classes = sorted(read_lines(path, "SSv1 labels file", LAYOUT))
        return self._classes

    def records(self, split: str) -> list[VideoRecord]:
        check_split(split)
        file, key = {
            "train": (self.train_file, "train_file"),
            "val": (self.val_file, "val_file"),
            "test": (self.test_file, "test_file"),
        }[split]
        ids = {name: i for i, name in enumerate(self.class_names)}
        video_dir = str(require_dir(Path(self.root) / self.video_dir, "frame folder", LAYOUT))
        records = []
        for row in read_csv_rows(self._file(file, key), "SSv1 split file", LAYOUT, delimiter=";"):
            vid = row[0]
            if len(row) > 1 and row[1] not in ids:
                raise DatasetLayoutError(f"{file}: video {vid} has class {row[1]!r}, not in {self.labels_file}")
            label = ids[row[1]] if len(row) > 1 else -1
            records.append(VideoRecord(video_path(video_dir, vid, self.ext), label, vid))
        return records
