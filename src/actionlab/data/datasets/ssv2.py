"""Something-Something V2 annotations (Goyal et al., ICCV 2017), as distributed.

Layout under ``root``::

    labels.json          {"Approaching something with your camera": "0", ...}
    train.json           [{"id": "78687", "template": "Holding [something] next to [something]",
    validation.json        "label": "...", "placeholders": [...]}, ...]
    test.json            (optional; no templates, labels unknown)
    <video_dir>/<id>.<ext>   (20bn-something-something-v2/*.webm, or transcoded *.mp4)

A record's label is ``labels[template with the brackets removed]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from actionlab.data.datasets.base import DatasetLayoutError, VideoRecord

__all__ = ["SSv2Annotations", "parse_ssv2_labels", "parse_ssv2_split", "template_to_label"]

LAYOUT = (
    "expected Something-Something V2 layout under data.root:\n"
    "  labels.json, train.json, validation.json (from the official 'labels' archive)\n"
    "  <video_dir>/<id>.<ext> (e.g. 20bn-something-something-v2/12345.webm)"
)


def template_to_label(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise DatasetLayoutError(f"{what} not found: {path}\n{LAYOUT}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetLayoutError(f"{what} {path} is not valid JSON ({err}); re-extract it") from err


def parse_ssv2_labels(path: str | os.PathLike) -> dict[str, int]:
    """``labels.json``: template without brackets -> class id."""
    raw = _read_json(Path(path), "SSv2 labels file")
    return {name: int(idx) for name, idx in raw.items()}


def parse_ssv2_split(
    path: str | os.PathLike, label_ids: dict[str, int], video_dir: str | os.PathLike, ext: str
) -> list[VideoRecord]:
    """One split file into records; entries without a template (test set) get label -1."""
    items = _read_json(Path(path), "SSv2 split file")
    records = []
    for item in items:
        template = item.get("template")
        if template is None:
            label = -1
        else:
            name = template_to_label(template)
            if name not in label_ids:
                raise DatasetLayoutError(
                    f"{path}: video {item['id']} has template {template!r}, which is not in labels.json"
                )
            label = label_ids[name]
        vid = str(item["id"])
        records.append(VideoRecord(os.path.join(video_dir, f"{vid}.{ext}"), label, vid))
    return records


class SSv2Annotations:
    """Something-Something V2 (174 classes) rooted at ``root``.

    Args:
        root: dataset folder (``data.root``).
        video_dir: folder of the videos, relative to ``root`` unless absolute.
        ext: video file extension (``webm`` as distributed, ``mp4`` once transcoded).
        test_file: annotation file used for the ``test`` split (the validation set by default:
            the official test labels are not public).
    """

    labels_file = "labels.json"
    train_file = "train.json"
    val_file = "validation.json"

    def __init__(
        self,
        root: str,
        video_dir: str = "20bn-something-something-v2",
        ext: str = "webm",
        test_file: str = "validation.json",
    ) -> None:
        self.root = str(root)
        self.video_dir = video_dir
        self.ext = ext
        self.test_file = test_file
        self._label_ids: dict[str, int] | None = None

    @property
    def label_ids(self) -> dict[str, int]:
        if self._label_ids is None:
            self._check_root()
            self._label_ids = parse_ssv2_labels(Path(self.root) / self.labels_file)
        return self._label_ids

    @property
    def class_names(self) -> list[str]:
        ids = self.label_ids
        return sorted(ids, key=ids.__getitem__)

    def _check_root(self) -> None:
        if not Path(self.root).is_dir():
            raise DatasetLayoutError(
                f"dataset root not found: {self.root}. Set data.root=/path/to/ssv2.\n{LAYOUT}"
            )

    def records(self, split: str) -> list[VideoRecord]:
        files = {"train": self.train_file, "val": self.val_file, "test": self.test_file}
        if split not in files:
            raise ValueError(f"split must be one of {sorted(files)}, got {split!r}")
        video_dir = Path(self.root) / self.video_dir
        if not video_dir.is_dir():
            raise DatasetLayoutError(f"video folder not found: {video_dir}\n{LAYOUT}")
        return parse_ssv2_split(Path(self.root) / files[split], self.label_ids, str(video_dir), self.ext)
