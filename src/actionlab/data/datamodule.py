"""``VideoDataModule``: annotations -> reader -> sampler -> transform -> batches.

A batch is ``(clips, labels, index)``: clips ``(B, C, T, H, W)`` float, normalised. Under a
trainer (``gpu_augment=auto``) workers send uint8 crops instead, 4x fewer bytes to write to
shared memory and copy to the device, and ``on_after_batch_transfer`` normalises them there:
the model always sees float clips.
``batch_size`` is global; each device gets ``batch_size // world_size``.

Multigrid (issue 7) hooks: ``num_frames``, ``crop_size``, ``scale_size``/``train_scale_size``
and ``batch_size`` may change between epochs (the next ``train_dataloader()`` rebuilds the
dataset); ``batch_sampler_factory(sampler, batch_size_per_device, drop_last)`` replaces the
train batch sampler; ``VideoDataset[(index, crop_size)]`` crops that sample at ``crop_size``.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from actionlab.data.cache import VideoInfoCache, default_cache_path
from actionlab.data.datasets.base import Annotations, VideoRecord
from actionlab.data.readers import (
    BACKENDS,
    VideoInfo,
    VideoReader,
    VideoReadError,
    check_channel_order,
    make_reader,
)
from actionlab.data.sampling import PAD_MODES, DenseSampler, SegmentSampler
from actionlab.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipTransform,
    GpuClipAugment,
    build_photometric,
)
from actionlab.data.workers import worker_init_fn
from actionlab.utils.stderr import captured_stderr

__all__ = [
    "BAD_VIDEO_POLICIES",
    "SAMPLINGS",
    "VideoDataModule",
    "VideoDataset",
    "excluded_index",
    "read_bad_video_reports",
    "record_window",
]

log = logging.getLogger(__name__)
BAD_VIDEO_POLICIES = ("skip", "fail")
GPU_AUGMENT = ("auto", True, False)
SAMPLINGS = ("segment", "dense")
# Frame rate assumed for time windows when the backend does not know it (frame folders).
DEFAULT_FPS = 30.0
BatchSamplerFactory = Callable[[Sampler, int, bool], BatchSampler]


def excluded_index(index: int) -> int:
    """The index an evaluation item carries when it stands in for bad video ``index``: negative,
    so metrics leave it out (``-(index + 1)``; ``-1 - i`` maps back)."""
    return -1 - index


def read_bad_video_reports(report_dir: str | None) -> dict[str, str]:
    """``{path: reason}`` of every bad video any process (worker, rank) reported in ``report_dir``."""
    found: dict[str, str] = {}
    if not report_dir or not os.path.isdir(report_dir):
        return found
    for name in sorted(os.listdir(report_dir)):
        if not name.endswith(".bad"):
            continue
        try:
            with open(os.path.join(report_dir, name)) as f:
                path, _, reason = f.read().partition("\t")
        except OSError:
            continue
        if path:
            found[path] = reason.strip()
    return found


def record_window(
    record: VideoRecord, num_frames: int, fps: float | None, min_frames: int = 1
) -> tuple[int, int]:
    """``(first frame, length)`` of the part of a video a record stands for.

    The whole video, or the ``[start, end]`` seconds window of a clip inside a longer video
    (HACS), in frames at the video's fps (``DEFAULT_FPS`` when unknown). Shorter than
    ``min_frames`` (``data.min_video_frames``) is bad data.
    """
    first, length = 0, num_frames
    if record.start is not None or record.end is not None:
        rate = fps or DEFAULT_FPS
        first = min(num_frames - 1, max(0, int(round((record.start or 0.0) * rate))))
        last = num_frames if record.end is None else min(num_frames, math.ceil(record.end * rate))
        length = max(1, last - first)
    if length < min_frames:
        raise VideoReadError(
            f"video has {length} frames, fewer than data.min_video_frames={min_frames}: "
            f"{record.path}"
        )
    return first, length


class VideoDataset(Dataset):
    """Decodes one clip per item; a video that cannot be read is replaced by another one.

    With ``bad_video_policy="skip"`` a bad video is logged once with its path, remembered in
    ``bad_videos`` and another index is tried (at most ``max_retries`` times); ``"fail"`` raises.
    "Once" holds across DataLoader workers and epochs when ``report_dir`` is set: the first
    process to see a bad video creates ``<report_dir>/<sha1(path)>.bad`` (atomically) and only
    that process logs it; ``read_bad_video_reports`` collects them for the epoch-end report.
    A process never opens a video it already found bad again, and what decord/FFmpeg print
    about it goes into that one log line instead of the console (``utils.stderr``).

    Training batches need full batches, so the replacement trains in the bad video's place.
    Evaluation must not count a substitute: outside training the item carries the negative
    index ``-(index + 1)`` of the bad video (``excluded_index``), and ``VideoClassifier`` leaves
    such items out of the validation/test metrics and counts them (``val/excluded_videos``).

    An item is an ``int`` or ``(index, crop_size)`` (multigrid short cycle): the latter crops
    at ``crop_size`` with the training short-side range scaled by ``crop_size / crop_size``.

    Args:
        min_video_frames: videos with fewer frames are bad (policy applies); shorter videos
            that pass are padded by the sampler (``repeat`` or ``loop``).
        info_cache: on-disk frame counts, so a video without one in its annotations is
            probed once, ever.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        reader: VideoReader,
        sampler: Callable[..., np.ndarray],
        transform: ClipTransform,
        train: bool,
        bad_video_policy: str = "skip",
        max_retries: int = 10,
        min_video_frames: int = 1,
        info_cache: VideoInfoCache | None = None,
        report_dir: str | None = None,
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
        self.min_video_frames = max(1, int(min_video_frames))
        self.info_cache = info_cache
        self.report_dir = report_dir
        self.bad_videos: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.records)

    def _rng(self, index: int, attempt: int) -> np.random.Generator:
        # Training draws differ per epoch and worker (torch seeds each worker per epoch);
        # evaluation is deterministic.
        base = torch.initial_seed() % (2**32) if self.train else 0
        return np.random.default_rng([base, index, attempt])

    def _choose(self, record: VideoRecord, rng: np.random.Generator) -> Callable[[int, float | None], np.ndarray]:
        def choose(num_frames: int, fps: float | None) -> np.ndarray:
            first, length = record_window(record, num_frames, fps, self.min_video_frames)
            if getattr(self.sampler, "needs_fps", False):
                indices = self.sampler(length, self.train, rng, fps=fps)
            else:
                indices = self.sampler(length, self.train, rng)
            return np.asarray(indices) + first

        return choose

    def _known_info(self, record: VideoRecord) -> VideoInfo | None:
        needs_fps = getattr(self.sampler, "needs_fps", False) or record.start is not None
        if record.num_frames and not needs_fps:
            return VideoInfo(int(record.num_frames))
        if self.info_cache is None:
            return None
        return self.info_cache.get(self._source(record.path))

    def _source(self, path: str) -> str:
        source = getattr(self.reader, "source", None)
        return source(path) if source is not None else path

    def load(
        self, index: int, rng: np.random.Generator, crop_size: int | None = None
    ) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        choose = self._choose(record, rng)
        info = self._known_info(record)
        if info is not None:
            frames = self.reader.read(record.path, choose(info.num_frames, info.fps))
        elif hasattr(self.reader, "read_sampled"):
            frames, info = self.reader.read_sampled(record.path, choose)
            if self.info_cache is not None:
                self.info_cache.put(self._source(record.path), info)
        else:  # a minimal reader (the VideoReader protocol)
            frames = self.reader.read(record.path, choose(self.reader.num_frames(record.path), None))
        if crop_size is None:
            return self.transform(frames, record.label, rng)
        return self.transform(frames, record.label, rng, crop_size=crop_size)

    def _load_quietly(
        self, index: int, rng: np.random.Generator, crop_size: int | None
    ) -> tuple[torch.Tensor, int]:
        """``load`` with decord/FFmpeg's stderr lines moved into the ``VideoReadError``."""
        try:
            with captured_stderr() as native:
                return self.load(index, rng, crop_size)
        except VideoReadError as err:
            if not native.text:  # filled in when the block is left
                raise
            decoder = " | ".join(line.strip() for line in native.text.splitlines() if line.strip())
            raise VideoReadError(f"{err} [decoder: {decoder}]") from err

    def _report(self, path: str, err: Exception) -> None:
        if path in self.bad_videos:
            return
        reason = str(err).replace("\n", " ")
        self.bad_videos[path] = reason
        first = True
        if self.report_dir:
            name = hashlib.sha1(path.encode()).hexdigest() + ".bad"
            try:
                os.makedirs(self.report_dir, exist_ok=True)
                fd = os.open(os.path.join(self.report_dir, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with os.fdopen(fd, "w") as f:
                    f.write(f"{path}\t{reason}\n")
            except FileExistsError:
                first = False
            except OSError as io_err:
                log.debug("cannot record bad video in %s: %s", self.report_dir, io_err)
        if first:
            log.warning("bad video %s skipped (data.bad_video_policy=skip): %s", path, reason)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        if isinstance(item, (tuple, list)):
            index, crop_size = int(item[0]), int(item[1])
        else:
            index, crop_size = int(item), None
        current = index
        for attempt in range(self.max_retries + 1):
            rng = self._rng(current, attempt)
            path = self.records[current].path
            if path not in self.bad_videos:
                try:
                    clip, label = self._load_quietly(current, rng, crop_size)
                    return clip, label, current if current == index or self.train else excluded_index(index)
                except VideoReadError as err:
                    if self.bad_video_policy == "fail":
                        raise
                    self._report(path, err)
            current = int(rng.integers(len(self.records)))
        raise VideoReadError(
            f"{self.max_retries + 1} videos in a row failed to load, starting at "
            f"{self.records[index].path}; check data.root and the video files (see bad_videos.txt)"
        )


class VideoDataModule(L.LightningDataModule):
    """Video classification data for any benchmark, configured from ``conf/data/<name>.yaml``.

    Args:
        root: dataset folder (``data.root``).
        annotations: callable ``root -> Annotations`` (a Hydra ``_partial_`` of a dataset
            class); it also gets ``split=`` when it accepts one (UCF101/HMDB51).
        num_classes: classes the model predicts; must equal the dataset's class count.
        num_frames: frames per clip (TSN segments or dense clip length).
        crop_size, scale_size: final square crop and short side before cropping; training may
            use ``train_scale_size`` (an int or a ``[min, max]`` jitter range).
        batch_size: global batch size, divided by the world size per device.
        num_workers: DataLoader workers per device.
        backend: frame source: ``video`` (decord), ``frames`` (JPEG folders) or ``sqlite``.
        split: official split number for datasets that have several (UCF101/HMDB51).
        mean, std: normalisation of ``[0, 1]`` pixels.
        flip, flip_label_map: training horizontal flip and the label swaps it implies.
        bad_video_policy: ``skip`` (log, count, use another video) or ``fail``.
        max_retries: other videos tried in a row before giving up on a batch item.
        pin_memory: pin batches when CUDA is available.
        name: dataset name (logs, checkpoints).
        sampling: ``segment`` (TSN, whole video) or ``dense`` (``num_frames x sampling_rate``).
        sampling_rate, target_fps: dense step, in frames of a ``target_fps`` video if given.
        pad: ``repeat`` (last frame) or ``loop`` for videos shorter than a dense clip.
        min_video_frames: shorter videos are bad data (policy applies).
        frame_template: frame file name for ``backend=frames`` (None: detect).
        channel_order: ``rgb`` or ``bgr``: the channel order the model was trained on (BGR:
            SRTG/MTNet releases, trained on OpenCV-decoded frames); ``mean``/``std`` are given
            in that same order. Every backend honours it.
        cache_video_info: cache probed frame counts/fps under ``<root>/.actionlab``.
        augment: training augmentation (``ClipTransform`` keywords): ``train_crop``
            (random|multiscale|resized), ``scales``, ``max_distort``, ``rrc_scale``,
            ``rrc_ratio``, ``color_jitter``, ``srtg`` (flag dict).
        gpu_augment: ``True``: workers decode and crop to uint8, photometric augmentation and
            normalisation run batched on the device (``on_after_batch_transfer``). ``False``:
            all of it in the workers (float batches, 4x the bytes). ``auto``: ``True`` under a
            trainer, except on CPU with photometric augmentation on (kornia would then run
            serially in the main process instead of in parallel workers); ``False`` without a
            trainer (nothing would finish the batches).
        report_bad_videos: attach a ``BadVideoReport`` callback (epoch-end report and
            ``bad_videos.txt`` in the run directory) when the trainer has none.
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
        sampling: str = "segment",
        sampling_rate: int = 1,
        target_fps: float | None = None,
        pad: str = "repeat",
        min_video_frames: int = 1,
        frame_template: str | None = None,
        channel_order: str = "rgb",
        cache_video_info: bool = True,
        augment: Mapping[str, Any] | None = None,
        gpu_augment: bool | str = "auto",
        report_bad_videos: bool = True,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"data.backend must be one of {BACKENDS}, got {backend!r}")
        if bad_video_policy not in BAD_VIDEO_POLICIES:
            raise ValueError(
                f"data.bad_video_policy must be one of {BAD_VIDEO_POLICIES}, got {bad_video_policy!r}"
            )
        if sampling not in SAMPLINGS:
            raise ValueError(f"data.sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if pad not in PAD_MODES:
            raise ValueError(f"data.pad must be one of {PAD_MODES}, got {pad!r}")
        if not any(gpu_augment is v or gpu_augment == v for v in GPU_AUGMENT):
            raise ValueError(f"data.gpu_augment must be auto, true or false, got {gpu_augment!r}")
        self.root = str(root)
        kwargs = {"root": self.root}
        try:
            if "split" in inspect.signature(annotations).parameters:
                kwargs["split"] = split
        except (TypeError, ValueError):
            pass
        self.annotations = annotations(**kwargs)
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
        self.sampling = sampling
        self.sampling_rate = sampling_rate
        self.target_fps = target_fps
        self.pad = pad
        self.min_video_frames = min_video_frames
        self.frame_template = frame_template
        self.channel_order = check_channel_order(channel_order)
        self.cache_video_info = cache_video_info
        self.augment = dict(augment or {})
        self.gpu_augment = gpu_augment
        self.report_bad_videos = report_bad_videos
        self.batch_sampler_factory: BatchSamplerFactory | None = None
        self.report_dir: str | None = None
        self.datasets: dict[str, VideoDataset] = {}
        self._built_shape: dict[str, tuple] = {}
        self._gpu_finish: GpuClipAugment | None = None
        self._photometric = build_photometric(self.augment.get("color_jitter"), self.augment.get("srtg")) is not None

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

    @property
    def uint8_batches(self) -> bool:
        """Whether workers send uint8 crops that ``on_after_batch_transfer`` finishes."""
        if self.gpu_augment != "auto":
            return bool(self.gpu_augment)
        trainer = self.trainer
        if trainer is None:
            return False
        return trainer.strategy.root_device.type != "cpu" or not self._photometric

    def _shape(self, split: str) -> tuple:
        scale = self.train_scale_size if split == "train" else self.scale_size
        scale = tuple(scale) if isinstance(scale, Sequence) and not isinstance(scale, str) else scale
        return (self.num_frames, self.crop_size, scale, self.sampling_rate, self.uint8_batches)

    def _sampler(self) -> Callable[..., np.ndarray]:
        if self.sampling == "dense":
            return DenseSampler(self.num_frames, self.sampling_rate, self.target_fps, self.pad)
        return SegmentSampler(self.num_frames)

    def _report_dir(self) -> str:
        if self.report_dir is None:
            trainer = self.trainer
            if trainer is not None and trainer.default_root_dir:
                self.report_dir = os.path.join(trainer.default_root_dir, ".bad_videos")
            else:
                self.report_dir = tempfile.mkdtemp(prefix="actionlab-bad-videos-")
        return self.report_dir

    def build_dataset(self, split: str) -> VideoDataset:
        train = split == "train"
        scale = self._shape(split)[2]
        uint8 = self.uint8_batches
        if uint8 and self._gpu_finish is None:
            self._gpu_finish = GpuClipAugment(
                self.mean, self.std, self.augment.get("color_jitter"), self.augment.get("srtg")
            )
        transform = ClipTransform(
            self.crop_size,
            scale,
            train=train,
            mean=self.mean,
            std=self.std,
            flip=self.flip,
            flip_label_map=self.flip_label_map,
            to_uint8=uint8,
            **self.augment,
        )
        cache = (
            VideoInfoCache(default_cache_path(self.root, self.backend)) if self.cache_video_info else None
        )
        self._built_shape[split] = self._shape(split)
        return VideoDataset(
            self.annotations.records(split),
            make_reader(self.backend, self.frame_template, self.channel_order),
            self._sampler(),
            transform,
            train=train,
            bad_video_policy=self.bad_video_policy,
            max_retries=self.max_retries,
            min_video_frames=self.min_video_frames,
            info_cache=cache,
            report_dir=self._report_dir(),
        )

    def setup(self, stage: str | None = None) -> None:
        found = len(self.class_names)
        if found != self.num_classes:
            raise ValueError(
                f"data.num_classes={self.num_classes} but {self.root} has {found} classes; "
                f"set data.num_classes={found}"
            )
        self._attach_report()
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in wanted.get(stage or "", ("train", "val", "test")):
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)

    def _attach_report(self) -> None:
        trainer = self.trainer
        if not self.report_bad_videos or trainer is None:
            return
        from actionlab.data.report import BadVideoReport

        if not any(isinstance(cb, BadVideoReport) for cb in trainer.callbacks):
            trainer.callbacks.append(BadVideoReport())

    def dataset(self, split: str) -> VideoDataset:
        """The dataset of ``split``, rebuilt when the clip shape changed (multigrid)."""
        if split not in self.datasets or self._built_shape.get(split) != self._shape(split):
            self.datasets[split] = self.build_dataset(split)
        return self.datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        common = dict(
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            worker_init_fn=worker_init_fn(getattr(self.trainer, "global_rank", 0) or 0),
        )
        if shuffle and self.batch_sampler_factory is not None:
            batch_sampler = self.batch_sampler_factory(
                RandomSampler(dataset), self.batch_size_per_device, True
            )
            return DataLoader(dataset, batch_sampler=batch_sampler, **common)
        return DataLoader(
            dataset, batch_size=self.batch_size_per_device, shuffle=shuffle, drop_last=shuffle, **common
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self._gpu_finish is None or not isinstance(batch, (tuple, list)):
            return batch
        trainer = self.trainer
        training = bool(trainer is not None and trainer.training)
        clips = self._gpu_finish(batch[0], train=training)
        return (clips, *batch[1:])

    def bad_videos(self) -> dict[str, str]:
        """Every bad video seen so far by this process, its workers and (shared dir) ranks."""
        found = read_bad_video_reports(self.report_dir)
        for dataset in self.datasets.values():
            for path, reason in dataset.bad_videos.items():
                found.setdefault(path, reason)
        return found

    def state_dict(self) -> dict[str, Any]:
        return {}
