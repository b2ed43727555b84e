"""Something-Something V2 annotations (Goyal et al., ICCV 2017), as distributed.

Layout under ``root``::

    labels.json          {"Approaching something with your camera": "0", ...}
    train.json           [{"id": "78687", "template": "Holding [something] next to [something]",
    validation.json        "label": "...", "placeholders": [...]}, ...]
    test.json            (optional; no templates, labels unknown)
    <video_dir>/<id>.<ext>   (20bn-something-something-v2/*.webm, or transcoded *.mp4)

The annotation files may also carry the original 20BN release names
(``something-something-v2-{labels,train,validation,test}.json``, what PySlowFast and VoV3D read)
and may sit under ``labels/`` (newer packages); each is found in that order, or named with
``data.annotations.{labels,train,val,test}_file``. A record's label is ``labels[template with the
brackets removed]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from actionlab.data.datasets.base import DatasetLayoutError, VideoRecord, find_annotation_file

__all__ = ["SSv2Annotations", "parse_ssv2_labels", "parse_ssv2_split", "template_to_label"]

LAYOUT = (
    "expected Something-Something V2 layout under data.root:\n"
    "  labels.json, train.json, validation.json (from the official 'labels' archive; also as\n"
    "  something-something-v2-{labels,train,validation}.json, at the top or under labels/)\n"
    "  <video_dir>/<id>.<ext> (e.g. 20bn-something-something-v2/12345.webm)"
)
RELEASE_PREFIX = "something-something-v2-"
SHORT_NAMES = ("labels.json", "train.json", "validation.json", "test.json")


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
        labels_file, train_file, val_file: the other annotation files. A short name
            (``labels.json`` ...) also matches its 20BN release name
            (``something-something-v2-labels.json`` ...); each is looked up in ``root``, then
            in ``root/labels``.
    """

    # The names the synthetic dataset writes and the defaults looked up (with their aliases).
    labels_file = "labels.json"
    train_file = "train.json"
    val_file = "validation.json"

    def __init__(
        self,
        root: str,
        video_dir: str = "20bn-something-something-v2",
        ext: str = "webm",
        test_file: str = "validation.json",
        labels_file: str | None = None,
        train_file: str | None = None,
        val_file: str | None = None,
    ) -> None:
        self.root = str(root)
        self.video_dir = video_dir
        self.ext = ext
        self.test_file = test_file
        self.labels_file = labels_file or type(self).labels_file
        self.train_file = train_file or type(self).train_file
        self.val_file = val_file or type(self).val_file
        self._label_ids: dict[str, int] | None = None

    def annotation_path(self, name: str, key: str) -> Path:
        """Where the annotation file ``name`` is (``data.annotations.<key>`` names it)."""
        names = [name] + ([RELEASE_PREFIX + name] if name in SHORT_NAMES else [])
        return find_annotation_file(Path(self.root), names, f"SSv2 {key} ({name})", key, LAYOUT)

    @property
    def label_ids(self) -> dict[str, int]:
        if self._label_ids is None:
            self._check_root()
            self._label_ids = parse_ssv2_labels(self.annotation_path(self.labels_file, "labels_file"))
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
        files = {
            "train": (self.train_file, "train_file"),
            "val": (self.val_file, "val_file"),
            "test": (self.test_file, "test_file"),
        }
        if split not in files:
            raise ValueError(f"split must be one of {sorted(files)}, got {split!r}")
        video_dir = Path(self.root) / self.video_dir
        if not video_dir.is_dir():
            raise DatasetLayoutError(f"video folder not found: {video_dir}\n{LAYOUT}")
        path = self.annotation_path(*files[split])
        return parse_ssv2_split(path, self.label_ids, str(video_dir), self.ext)
