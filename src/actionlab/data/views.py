"""Multi-view test protocols: which frames and which crops of a video the model sees.

A protocol is ``clips`` temporal views x ``crops`` spatial views per video, scored one view at a
time and aggregated over views (``actionlab.lit.module.aggregate_views``). Each named protocol
reproduces one original test script: fed the same decoded frames, its frame indices, resized
frame size, crop boxes, interpolation and score aggregation are the original's (checked index
for index against a transcription of the original code in ``tests/test_views_exact.py``).

=====================  =====  =====  ============================================================
``eval.protocol``      clips  crops  rule (original code)
=====================  =====  =====  ============================================================
``1clip``              1      1      TSM / RubiksNet ``test_models.py --test_crops 1``: segment
                                     centres ``int(tick/2 + tick*k)`` (``data.sampling=dense``:
                                     the centred dense clip); short side ``data.scale_size``
                                     with ``int`` truncation, centre ``data.crop_size`` crop
                                     rounded half to even (torchvision ``CenterCrop``); logits
                                     averaged. Identical to validation during training.
``2clip``              2      3      TSM / RubiksNet ``--twice_sample --test_crops 3``: centres,
                                     then segment starts ``int(tick*k)``; 3 crops across the
                                     width at TSM's quarter steps (``GroupFullResSample``).
``pyslowfast_10x3``    10     3      PySlowFast (X3D; VoV3D on Kinetics): float clips of
                                     ``rate * frames / 30 * fps`` frames starting at
                                     ``delta * i / 10``, frames by float32 ``linspace``; short
                                     side = crop (``eval.crop_size``, 256 for the X3D-M
                                     release) with ``floor``, left/centre/right crops along the
                                     long side; softmax probabilities summed.
``ssv2_2x3``           2      3      VoV3D on Something-Something: segments ``[round(seg*i),
                                     round(seg*(i+1))]`` with ``seg = (N-1)/frames``, one
                                     uniform frame per segment drawn for every view (seeded
                                     per video; a single view takes ``(a+b)//2``); PySlowFast
                                     crops at short side = crop; probabilities summed.
``tokshift_10x3``      10     3      TokShift ``--evaluate``: starts ``int(x*N/10)`` clipped to
                                     ``N - frames*rate + 1`` (0 for short videos), frames
                                     looping ``% N``; bicubic short side = crop with ``floor``;
                                     centre/left/right crops; logits averaged.
``srtg_1x1``           1      1      SRTG / MTNet validation: one of the non-overlapping clips
                                     (seeded per video); bicubic short side 294 (``round``),
                                     centre crop (``floor``).
``kinetics_10x3``      10     3      The lab's own dense protocol (kept for existing runs; not an
                                     original's exact rule): integer steps, starts rounded
                                     from ``linspace(0, delta, 10)``, ``data.pad`` for short
                                     videos, short side = crop, PySlowFast crops, softmax mean.
=====================  =====  =====  ============================================================

``eval.clips`` / ``eval.crops`` / ``eval.sampling`` / ``eval.sampling_rate`` /
``eval.aggregate`` override the protocol's, ``eval.crop_size`` / ``eval.scale_size`` the test
crop and short side (null: from the data config and the protocol's rule). Views are ordered
clip-major: view ``v`` is clip ``v // crops``, crop ``v % crops``, crops in the original's order.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from actionlab.data.datamodule import VideoDataset, record_window
from actionlab.data.datasets.base import VideoRecord
from actionlab.data.readers import VideoReader
from actionlab.data.sampling import (
    PAD_MODES,
    dense_indices,
    fps_scaled_rate,
    pyslowfast_indices,
    segment_indices,
    srtg_indices,
    tokshift_indices,
    twice_sample_indices,
    vov3d_segment_indices,
)
from actionlab.data.transforms import (
    CENTRE_VIEW_CROP,
    CENTRE_VIEW_RESIZE,
    CROP_MODES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZES,
    crop_boxes,
    crop_clip,
    normalize,
    resize_short_side,
)

__all__ = [
    "PROTOCOLS",
    "SAMPLINGS",
    "SCALES",
    "SRTG_SCALE",
    "MultiViewDataset",
    "ViewProtocol",
    "resolve_protocol",
    "spatial_views",
    "temporal_views",
    "video_key",
]

SAMPLINGS = ("segment", "dense", "pyslowfast", "vov3d_segment", "tokshift", "srtg")
# Short side before cropping: data.scale_size, the crop itself, PySlowFast's (the crop with 3
# crops, else data.scale_size = TRAIN_JITTER_SCALES[0]), or SRTG's fixed 294.
SCALES = ("data", "crop", "pyslowfast", "srtg")
SRTG_SCALE = 294


@dataclass(frozen=True)
class ViewProtocol:
    """One evaluation protocol, fully resolved against the data and eval configs.

    Args:
        name: protocol name (for reports).
        clips: temporal views per video.
        crops: spatial views per clip, 1 or 3.
        sampling: temporal rule, one of ``SAMPLINGS``: ``segment`` (TSN/TSM), ``dense`` (the
            lab's), ``pyslowfast``, ``vov3d_segment``, ``tokshift``, ``srtg``; None in the
            table means ``data.sampling``.
        crop_mode: box layout (``actionlab.data.transforms.crop_boxes``).
        scale: short-side rule, one of ``SCALES``.
        aggregate: default score aggregation over views.
        resize: resize rounding and interpolation (``actionlab.data.transforms.resized_shape``).
        reference: the original code the protocol reproduces (reports, registry entries).
        pad: ``repeat`` or ``loop`` for videos shorter than a ``dense`` clip (``data.pad``);
            the other rules pad as their original does.
        num_frames, crop_size, scale_size, sampling_rate, target_fps: filled in by
            :func:`resolve_protocol` from the data and eval configs.
    """

    name: str
    clips: int
    crops: int
    sampling: str | None
    crop_mode: str
    scale: str
    aggregate: str
    resize: str = "lab"
    reference: str = ""
    pad: str = "repeat"
    num_frames: int = 8
    crop_size: int = 224
    scale_size: int = 256
    sampling_rate: float = 1.0
    target_fps: float | None = None

    @property
    def views(self) -> int:
        return self.clips * self.crops

    @property
    def frames_per_view(self) -> bool:
        """Whether every view draws its own frames (VoV3D's multi-view rule) rather than the
        crops of a clip sharing them."""
        return self.sampling == "vov3d_segment" and self.views > 1

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "views": self.views}


# The originals' protocols (see the module docstring); sizes come from the data/eval configs.
PROTOCOLS: dict[str, ViewProtocol] = {
    p.name: p
    for p in (
        ViewProtocol(
            "1clip", 1, 1, None, CENTRE_VIEW_CROP, "data", "logits_mean", CENTRE_VIEW_RESIZE,
            "TSM test_models.py --test_crops=1 (ops/dataset.py _get_test_indices, GroupScale, "
            "GroupCenterCrop); RubiksNet scripts/test_models.py",
        ),
        ViewProtocol(
            "2clip", 2, 3, "segment", "three_tsm", "data", "logits_mean", "tsm",
            "TSM test_models.py --twice_sample --test_crops=3 (ops/dataset.py "
            "_get_test_indices, ops/transforms.py GroupFullResSample); RubiksNet --two-clips",
        ),
        ViewProtocol(
            "pyslowfast_10x3", 10, 3, "pyslowfast", "three", "pyslowfast", "sum", "pyslowfast",
            "PySlowFast tools/test_net.py (datasets/kinetics.py, decoder.py get_start_end_idx + "
            "temporal_sampling, utils.spatial_sampling, transform.uniform_crop, TestMeter sum)",
        ),
        ViewProtocol(
            "ssv2_2x3", 2, 3, "vov3d_segment", "three_ssv2", "crop", "sum", "pyslowfast",
            "VoV3D tools/test_net.py (vov3d/datasets/ssv2.py, utils.spatial_sampling, "
            "transform.uniform_crop, TestMeter sum)",
        ),
        ViewProtocol(
            "tokshift_10x3", 10, 3, "tokshift", "tokshift", "crop", "logits_mean", "tokshift",
            "TokShift main_ddp_shift_v3.py --evaluate (data/dataset.py read_clip, "
            "data/augmentation.py Test_ClipAug, validate: mean of logits)",
        ),
        ViewProtocol(
            "srtg_1x1", 1, 1, "srtg", "srtg", "srtg", "logits_mean", "srtg",
            "SRTG/MTNet validation (data/video_sampler.py SequentialSampling, "
            "data/iterator_factory.py imgaug Resize shorter-side 294 + CropToFixedSize center)",
        ),
        ViewProtocol(
            "kinetics_10x3", 10, 3, "dense", "three", "crop", "softmax_mean", "lab",
            "actionlab's dense 10x3 (data.sampling_rate steps, starts over both ends, data.pad)",
        ),
    )
}


def _get(cfg: Any, key: str) -> Any:
    return cfg.get(key) if cfg is not None else None


def resolve_protocol(eval_cfg: Any, data_cfg: Any) -> ViewProtocol:
    """The protocol named by ``eval.protocol`` with ``eval.*`` overrides and the data's sizes.

    ``eval`` keys read: ``protocol``, ``clips``, ``crops``, ``sampling``, ``sampling_rate``,
    ``aggregate``, ``crop_size``, ``scale_size`` (null keeps the protocol's); ``data`` keys:
    ``num_frames``, ``crop_size``, ``scale_size`` and, if present, ``sampling``,
    ``sampling_rate``, ``target_fps`` and ``pad``.
    """
    name = eval_cfg.get("protocol")
    if name not in PROTOCOLS:
        raise ValueError(f"eval.protocol must be one of {sorted(PROTOCOLS)}, got {name!r}")
    proto = PROTOCOLS[name]
    changes: dict[str, Any] = {}
    for key in ("clips", "crops", "sampling", "aggregate"):
        if eval_cfg.get(key) is not None:
            changes[key] = eval_cfg.get(key)
    proto = replace(proto, **changes)
    if proto.sampling is None:
        proto = replace(proto, sampling=_get(data_cfg, "sampling") or "segment")
    if proto.crops not in (1, 3):
        raise ValueError(f"eval.crops must be 1 or 3, got {proto.crops}")
    if proto.crops == 3 and proto.crop_mode == "srtg":
        raise ValueError(f"eval.protocol={name} has a single centre crop; use eval.crops=1")
    if proto.clips < 1:
        raise ValueError(f"eval.clips must be >= 1, got {proto.clips}")
    if proto.sampling not in SAMPLINGS:
        raise ValueError(f"eval.sampling must be one of {SAMPLINGS}, got {proto.sampling!r}")
    assert proto.crop_mode in CROP_MODES and proto.resize in RESIZES and proto.scale in SCALES
    pad = _get(data_cfg, "pad") or "repeat"
    if pad not in PAD_MODES:
        raise ValueError(f"data.pad must be one of {PAD_MODES}, got {pad!r}")
    rate = eval_cfg.get("sampling_rate") or _get(data_cfg, "sampling_rate") or 1
    crop = int(eval_cfg.get("crop_size") or data_cfg.get("crop_size"))
    if eval_cfg.get("scale_size"):
        scale = int(eval_cfg.get("scale_size"))
    elif proto.scale == "crop" or (proto.scale == "pyslowfast" and proto.crops > 1):
        scale = crop
    elif proto.scale == "srtg":
        scale = SRTG_SCALE
    else:
        scale = int(data_cfg.get("scale_size"))
    if scale < crop:
        raise ValueError(
            f"the short side {scale} (eval.scale_size / data.scale_size) is smaller than the "
            f"test crop {crop} (eval.crop_size / data.crop_size); raise the short side"
        )
    return replace(
        proto,
        pad=pad,
        num_frames=int(data_cfg.get("num_frames")),
        crop_size=crop,
        scale_size=scale,
        sampling_rate=float(rate),
        target_fps=_get(data_cfg, "target_fps"),
    )


def video_key(record: VideoRecord) -> int:
    """A stable per-video seed for the protocols that draw frames (VoV3D's views, SRTG's clip):
    the same video gets the same views in every run, worker and rank."""
    return zlib.crc32((record.video_id or record.path).encode())


def _segment_clips(num_frames: int, num_segments: int, clips: int) -> list[np.ndarray]:
    if clips == 1:
        return [segment_indices(num_frames, num_segments, train=False)]
    if clips == 2:
        return twice_sample_indices(num_frames, num_segments)
    # K clips: offsets (1/2 + j/K) of a segment (mod 1); K = 1, 2 give centres, then starts.
    tick = num_frames / num_segments
    k = np.arange(num_segments)
    return [
        np.minimum((tick * (k + (0.5 + j / clips) % 1.0)).astype(np.int64), num_frames - 1)
        for j in range(clips)
    ]


def temporal_views(
    num_frames: int, protocol: ViewProtocol, fps: float | None = None, key: int = 0
) -> list[np.ndarray]:
    """``protocol.clips`` arrays of ``protocol.num_frames`` 0-based frame indices (or
    ``protocol.views`` arrays, one per view, when ``protocol.frames_per_view``).

    ``fps`` is the video's frame rate (dense rules step ``sampling_rate`` frames of a
    ``target_fps`` video when both are known); ``key`` seeds the rules that draw frames
    (``video_key``).
    """
    t, rate = protocol.num_frames, protocol.sampling_rate
    if protocol.sampling == "segment":
        return _segment_clips(num_frames, t, protocol.clips)
    if protocol.sampling == "pyslowfast":
        return pyslowfast_indices(num_frames, t, rate, protocol.clips, fps, protocol.target_fps)
    if protocol.sampling == "tokshift":
        return tokshift_indices(num_frames, t, int(rate), protocol.clips)
    if protocol.sampling == "vov3d_segment":
        if not protocol.frames_per_view:
            return [vov3d_segment_indices(num_frames, t)]
        return [
            vov3d_segment_indices(num_frames, t, np.random.default_rng([key, v]))
            for v in range(protocol.views)
        ]
    if protocol.sampling == "srtg":
        return [
            srtg_indices(num_frames, t, int(rate), np.random.default_rng([key, c]))
            for c in range(protocol.clips)
        ]
    step = fps_scaled_rate(rate, fps, protocol.target_fps)
    return dense_indices(
        num_frames, t, step, train=False, num_clips=protocol.clips, pad=protocol.pad
    )


def spatial_views(height: int, width: int, protocol: ViewProtocol) -> list[tuple[int, int]]:
    """Top-left ``(y0, x0)`` of the crops of a frame already resized to short side ``scale_size``."""
    return crop_boxes(height, width, protocol.crop_size, protocol.crop_mode, protocol.crops)


class MultiViewDataset(VideoDataset):
    """Every view of a video as one item ``(views (V, C, T, H, W), label, index)``.

    Frames shared by several views are decoded once. A record's ``[start, end]`` window (HACS
    clips inside full videos) is what the protocol samples, as in training. Frames come in the
    reader's channel order (``data.channel_order``). A video that cannot be read follows
    ``bad_video_policy`` (``skip`` returns another video under that video's index, which the
    evaluation's de-duplication then drops, so the bad one is simply absent and logged).
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        reader: VideoReader,
        protocol: ViewProtocol,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        bad_video_policy: str = "skip",
        max_retries: int = 10,
        min_video_frames: int = 1,
    ) -> None:
        super().__init__(
            records,
            reader,
            sampler=None,  # type: ignore[arg-type]  (views come from the protocol)
            transform=None,  # type: ignore[arg-type]
            train=False,
            bad_video_policy=bad_video_policy,
            max_retries=max_retries,
            min_video_frames=min_video_frames,
        )
        self.protocol = protocol
        self.mean, self.std = tuple(mean), tuple(std)

    def _needs_fps(self, record: VideoRecord) -> bool:
        p = self.protocol
        dense = p.sampling in ("dense", "pyslowfast") and p.target_fps is not None
        return dense or record.start is not None or record.end is not None

    def load(
        self, index: int, rng: np.random.Generator, crop_size: int | None = None
    ) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        key = video_key(record)
        clips: list[np.ndarray] = []

        def choose(num_frames: int, fps: float | None = None) -> np.ndarray:
            first, length = record_window(record, num_frames, fps, self.min_video_frames)
            clips[:] = [c + first for c in temporal_views(length, self.protocol, fps, key)]
            return np.unique(np.concatenate(clips))  # frames shared by views decode once

        if record.num_frames and not self._needs_fps(record):
            frames = self.reader.read(record.path, choose(record.num_frames))
        elif hasattr(self.reader, "read_sampled"):  # one open for length, fps and frames
            frames, _ = self.reader.read_sampled(record.path, choose)
        else:
            frames = self.reader.read(record.path, choose(self.reader.num_frames(record.path)))
        wanted = np.unique(np.concatenate(clips))
        # Resized as uint8 (float for PySlowFast, which resizes normalised frames), cropped,
        # then normalised: for 1clip the steps and order of the validation transform.
        frames = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        frames = resize_short_side(frames, self.protocol.scale_size, self.protocol.resize)
        boxes = spatial_views(frames.shape[-2], frames.shape[-1], self.protocol)
        crops = len(boxes)
        picked = [frames[np.searchsorted(wanted, c)].permute(1, 0, 2, 3) for c in clips]
        views = []
        for v in range(self.protocol.views):
            clip = picked[v if self.protocol.frames_per_view else v // crops]  # (3, T, H, W)
            view = crop_clip(clip, boxes[v % crops], self.protocol.crop_size)
            views.append(normalize(view, self.mean, self.std, channel_dim=0))
        return torch.stack(views), record.label
