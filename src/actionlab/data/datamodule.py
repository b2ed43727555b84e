"""``VideoDataModule``: annotations -> reader -> sampler -> transform -> batches.

A batch is ``(clips, labels, index)``: clips ``(B, C, T, H, W)`` float, normalised.
``batch_size`` is global; each device gets ``batch_size // world_size``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from actionlab.data.datasets.base import Annotations, VideoRecord
from actionlab.data.readers import DecordReader, VideoReader, VideoReadError
from actionlab.data.sampling import SegmentSampler
from actionlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform

__all__ = ["VideoDataModule", "VideoDataset", "BAD_VIDEO_POLICIES"]

log = logging.getLogger(__name__)
BAD_VIDEO_POLICIES = ("skip", "fail")


class VideoDataset(Dataset):
    """Decodes one clip per item; a video that cannot be read is replaced by another one.

    With ``bad_video_policy="skip"`` a bad video is logged once with its path, remembered in
    ``bad_videos`` and another index is tried (at most ``max_retries`` times); ``"fail"`` raises.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        reader: VideoReader,
        sampler: Callable[[int, bool, np.random.Generator], np.ndarray],
        transform: ClipTransform,
        train: bool,
        bad_video_policy: str = "skip",
        max_retries: int = 10,
    ) -> None:
        if bad_video_policy not in BAD_VIDEO_POLICIES:
            raise ValueError(
                f"data.bad_video_policy must be one of {BAD_VIDEO_POLICIES}, got {bad_video_policy!r}"
            )
        self.records = list(records)
        self.reader = reader
        self.sampler = sampler
        self.transform = transform
        self.train = train
        self.bad_video_policy = bad_video_policy
        self.max_retries = max_retries
        self.bad_videos: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.records)

    def _rng(self, index: int, attempt: int) -> np.random.Generator:
        # Training draws differ per epoch and worker (torch seeds each worker per epoch);
        # evaluation is deterministic.
        base = torch.initial_seed() % (2**32) if self.train else 0
        return np.random.default_rng([base, index, attempt])

    def load(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        num_frames = record.num_frames or self.reader.num_frames(record.path)
        indices = self.sampler(num_frames, self.train, rng)
        frames = self.reader.read(record.path, indices)
        return self.transform(frames, record.label, rng)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        current = index
        for attempt in range(self.max_retries + 1):
            rng = self._rng(current, attempt)
            try:
                clip, label = self.load(current, rng)
                return clip, label, current
            except VideoReadError as err:
                path = self.records[current].path
                if self.bad_video_policy == "fail":
                    raise
                if path not in self.bad_videos:
                    self.bad_videos[path] = str(err)
                    log.warning("skipping bad video (%s); data.bad_video_policy=skip", err)
                current = int(rng.integers(len(self.records)))
        raise VideoReadError(
            f"{self.max_retries + 1} videos in a row failed to load, starting at "
            f"{self.records[index].path}; check data.root and the video files"
        )


class VideoDataModule(L.LightningDataModule):
    """Video classification data for any benchmark, configured from ``conf/data/<name>.yaml``.

    Args:
        root: dataset folder (``data.root``).
        annotations: callable ``root -> Annotations`` (a Hydra ``_partial_`` of a dataset class).
        num_classes: classes the model predicts; must equal the dataset's class count.
        num_frames: frames per clip (TSN segments).
        crop_size, scale_size: final square crop and short side before cropping; training may
            use ``train_scale_size`` (an int or a ``[min, max]`` jitter range).
        batch_size: global batch size, divided by the world size per device.
        num_workers: DataLoader workers per device.
        backend: frame source, ``video`` (decord).
        split: official split number for datasets that have several (UCF101/HMDB51).
        mean, std: normalisation of ``[0, 1]`` pixels.
        flip, flip_label_map: training horizontal flip and the label swaps it implies.
        bad_video_policy: ``skip`` (log, count, use another video) or ``fail``.
    """

    def __init__(
        self,
        root: str,
        annotations: Callable[..., Annotations],
        num_classes: int,
        num_frames: int = 8,
        crop_size: int = 224,
        scale_size: int = 256,
        train_scale_size: int | Sequence[int] | None = None,
        batch_size: int = 64,
        num_workers: int = 4,
        backend: str = "video",
        split: int = 1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        flip: bool = False,
        flip_label_map: Mapping[int, int] | None = None,
        bad_video_policy: str = "skip",
        max_retries: int = 10,
        pin_memory: bool = True,
        name: str = "",
    ) -> None:
        super().__init__()
        if backend != "video":
            raise ValueError(f"data.backend={backend!r} is not available; use data.backend=video")
        if bad_video_policy not in BAD_VIDEO_POLICIES:
            raise ValueError(
                f"data.bad_video_policy must be one of {BAD_VIDEO_POLICIES}, got {bad_video_policy!r}"
            )
        self.root = str(root)
        self.annotations = annotations(root=self.root)
        self.num_classes = num_classes
        self.num_frames = num_frames
        self.crop_size = crop_size
        self.scale_size = scale_size
        self.train_scale_size = train_scale_size if train_scale_size is not None else scale_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.backend = backend
        self.split = split
        self.mean, self.std = tuple(mean), tuple(std)
        self.flip = flip
        self.flip_label_map = dict(flip_label_map or {})
        self.bad_video_policy = bad_video_policy
        self.max_retries = max_retries
        self.pin_memory = pin_memory
        self.name = name
        self.datasets: dict[str, VideoDataset] = {}

    @property
    def class_names(self) -> list[str]:
        return self.annotations.class_names

    @property
    def batch_size_per_device(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise ValueError(
                f"data.batch_size={self.batch_size} (global) is not divisible by the "
                f"world size {world}; choose a multiple of {world}"
            )
        return self.batch_size // world

    def prepare_data(self) -> None:
        prepare = getattr(self.annotations, "prepare", None)
        if prepare is not None:
            prepare()

    def build_dataset(self, split: str) -> VideoDataset:
        train = split == "train"
        transform = ClipTransform(
            self.crop_size,
            self.train_scale_size if train else self.scale_size,
            train=train,
            mean=self.mean,
            std=self.std,
            flip=self.flip,
            flip_label_map=self.flip_label_map,
        )
        return VideoDataset(
            self.annotations.records(split),
            DecordReader(),
            SegmentSampler(self.num_frames),
            transform,
            train=train,
            bad_video_policy=self.bad_video_policy,
            max_retries=self.max_retries,
        )

    def setup(self, stage: str | None = None) -> None:
        found = len(self.class_names)
        if found != self.num_classes:
            raise ValueError(
                f"data.num_classes={self.num_classes} but {self.root} has {found} classes; "
                f"set data.num_classes={found}"
            )
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in wanted.get(stage or "", ("train", "val", "test")):
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.datasets[split] = self.build_dataset(split)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size_per_device,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        return {}
