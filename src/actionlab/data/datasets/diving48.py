"""Diving48 annotations (Li et al., ECCV 2018), as distributed (V2 labels by default).

Layout under ``root``::

    Diving48_vocab.json        48 x [takeoff, somersault, twist, flight]
    Diving48_V2_train.json     [{"vid_name": "-mmq0PT-u8k_00155", "label": 0,
    Diving48_V2_test.json        "start_frame": 0, "end_frame": 66}, ...]
    rgb/<vid_name>.mp4

``val`` and ``test`` are the test set. Class names join the four vocabulary fields.
"""

from __future__ import annotations

import json
from pathlib import Path

from actionlab.data.datasets.base import (
    DatasetLayoutError,
    VideoRecord,
    check_split,
    require_dir,
    require_file,
    video_path,
)

__all__ = ["Diving48Annotations"]

LAYOUT = (
    "expected Diving48 layout under data.root:\n"
    "  Diving48_vocab.json, Diving48_V2_train.json, Diving48_V2_test.json\n"
    "  rgb/<vid_name>.mp4"
)


def _load(path: Path, what: str):
    require_file(path, what, LAYOUT)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetLayoutError(f"{what} {path} is not valid JSON ({err}); re-download it") from err


class Diving48Annotations:
    """Diving48 (48 dive classes).

    Args:
        root: dataset folder (``data.root``).
        train_file, test_file, vocab_file: annotation files relative to ``root``
            (``Diving48_train.json``/``Diving48_test.json`` for the V1 labels).
        video_dir: folder of the videos.
        ext: video extension (empty for frame folders).
    """

    def __init__(self, root: str, train_file: str = "Diving48_V2_train.json",
                 test_file: str = "Diving48_V2_test.json", vocab_file: str = "Diving48_vocab.json",
                 video_dir: str = "rgb", ext: str = "mp4") -> None:
        self.root = str(root)
        self.train_file, self.test_file, self.vocab_file = train_file, test_file, vocab_file
        self.video_dir = video_dir
        self.ext = ext

    @property
    def class_names(self) -> list[str]:
        require_dir(Path(self.root), "dataset root", LAYOUT)
        vocab = _load(Path(self.root) / self.vocab_file, "Diving48 vocabulary")
        return [" ".join(entry) if isinstance(entry, list) else str(entry) for entry in vocab]

    def records(self, split: str) -> list[VideoRecord]:
        check_split(split)
        file = self.train_file if split == "train" else self.test_file
        video_dir = str(require_dir(Path(self.root) / self.video_dir, "video folder", LAYOUT))
        num_classes = len(self.class_names)
        records = []
        for item in _load(Path(self.root) / file, "Diving48 split file"):
            label = int(item["label"])
            if not 0 <= label < num_classes:
                raise DatasetLayoutError(f"{file}: {item['vid_name']} has label {label}, outside the vocabulary")
            records.append(VideoRecord(video_path(video_dir, item["vid_name"], self.ext), label, item["vid_name"]))
        return records
