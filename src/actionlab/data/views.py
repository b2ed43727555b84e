"""Multi-view test protocols: which frames and which crops of a video the model sees.

A protocol is ``clips`` temporal views x ``crops`` spatial views per video, scored one view at a
time and aggregated over views (``actionlab.lit.module.aggregate_views``). The named protocols
reproduce the papers' evaluation (``docs/evaluation.md``):

========================  ======  =====  ===================================================
``eval.protocol``         clips   crops  frames / crops
========================  ======  =====  ===================================================
``1clip`` (TSM,           1       1      segment centres ``int(tick/2 + tick*k)``; short side
RubiksNet)                               ``data.scale_size`` (256), centre crop (224)
``2clip`` (TSM,           2       3      centres, then segment starts ``int(tick*k)``
RubiksNet "full res")                    (``twice_sample_indices``); short side 256, three
                                         224 crops at TSM's quarter-step offsets
                                         (``GroupFullResSample``: ``three_tsm``)
``kinetics_10x3``         10      3      10 dense clips (``data.num_frames`` x
(PySlowFast, TokShift)                   ``eval.sampling_rate``) with evenly spaced starts;
                                         short side = crop size, left/centre/right crops
                                         covering the frame (PySlowFast ``three``)
``ssv2_2x3`` (VoV3D)      2       3      segment centres and starts (deterministic, not
                                         VoV3D's random per-view offsets, and not stock
                                         PySlowFast's identical views); short side = crop
                                         size, PySlowFast three crops
========================  ======  =====  ===================================================

``eval.clips`` / ``eval.crops`` override the counts of the named protocol. Views are ordered
clip-major: view ``v`` is clip ``v // crops``, crop ``v % crops``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from actionlab.data.datamodule import VideoDataset
from actionlab.data.datasets.base import VideoRecord
from actionlab.data.readers import VideoReader
from actionlab.data.sampling import (
    dense_indices,
    fps_scaled_rate,
    segment_indices,
    twice_sample_indices,
)
from actionlab.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_boxes,
    crop_clip,
    normalize,
    resize_short_side,
)

__all__ = [
    "PROTOCOLS",
    "SAMPLINGS",
    "MultiViewDataset",
    "ViewProtocol",
    "resolve_protocol",
    "spatial_views",
    "temporal_views",
]

SAMPLINGS = ("segment", "dense")
SCALES = ("data", "crop")


@dataclass(frozen=True)
class ViewProtocol:
    """One evaluation protocol, fully resolved against the data config.

    Args:
        name: protocol name (for reports).
        clips: temporal views per video.
        crops: spatial views per clip, 1 (centre) or 3.
        sampling: ``segment`` (TSN segments over the whole video) or ``dense`` (consecutive
            frames ``sampling_rate`` apart).
        crop_mode: box layout for 3 crops: ``three`` (PySlowFast) or ``three_tsm`` (TSM).
        scale: short side before cropping: ``data`` = ``data.scale_size``, ``crop`` = the crop
            size itself (PySlowFast/TokShift testing).
        aggregate: default score aggregation over views.
        num_frames, crop_size, scale_size, sampling_rate, target_fps: filled in by
            :func:`resolve_protocol` from the data config.
    """

    name: str
    clips: int
    crops: int
    sampling: str
    crop_mode: str
    scale: str
    aggregate: str
    num_frames: int = 8
    crop_size: int = 224
    scale_size: int = 256
    sampling_rate: float = 1.0
    target_fps: float | None = None

    @property
    def views(self) -> int:
        return self.clips * self.crops

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "views": self.views}


# The papers' protocols (see the module docstring); sizes come from the data config.
PROTOCOLS: dict[str, ViewProtocol] = {
    p.name: p
    for p in (
        ViewProtocol("1clip", 1, 1, "segment", "three_tsm", "data", "logits_mean"),
        ViewProtocol("2clip", 2, 3, "segment", "three_tsm", "data", "logits_mean"),
        ViewProtocol("kinetics_10x3", 10, 3, "dense", "three", "crop", "softmax_mean"),
        ViewProtocol("ssv2_2x3", 2, 3, "segment", "three", "crop", "softmax_mean"),
    )
}


def resolve_protocol(eval_cfg: Any, data_cfg: Any) -> ViewProtocol:
    """The protocol named by ``eval.protocol`` with ``eval.*`` overrides and the data's sizes.

    ``eval`` keys read: ``protocol``, ``clips``, ``crops``, ``sampling``, ``sampling_rate``,
    ``aggregate`` (null keeps the protocol's); ``data`` keys: ``num_frames``, ``crop_size``,
    ``scale_size`` and, if present, ``sampling_rate`` and ``target_fps``.
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
    if proto.crops not in (1, 3):
        raise ValueError(f"eval.crops must be 1 or 3, got {proto.crops}")
    if proto.clips < 1:
        raise ValueError(f"eval.clips must be >= 1, got {proto.clips}")
    if proto.sampling not in SAMPLINGS:
        raise ValueError(f"eval.sampling must be one of {SAMPLINGS}, got {proto.sampling!r}")
    rate = eval_cfg.get("sampling_rate") or data_cfg.get("sampling_rate") or 1
    crop = int(data_cfg.get("crop_size"))
    scale = int(data_cfg.get("scale_size")) if proto.scale == "data" else crop
    return replace(
        proto,
        num_frames=int(data_cfg.get("num_frames")),
        crop_size=crop,
        scale_size=scale,
        sampling_rate=float(rate),
        target_fps=data_cfg.get("target_fps"),
    )


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
    num_frames: int, protocol: ViewProtocol, fps: float | None = None
) -> list[np.ndarray]:
    """``protocol.clips`` arrays of ``protocol.num_frames`` 0-based frame indices.

    Dense clips step ``sampling_rate`` frames of a ``target_fps`` video when both the protocol's
    ``target_fps`` and the video's ``fps`` are known (``fps_scaled_rate``).
    """
    if protocol.sampling == "segment":
        return _segment_clips(num_frames, protocol.num_frames, protocol.clips)
    rate = fps_scaled_rate(protocol.sampling_rate, fps, protocol.target_fps)
    return dense_indices(
        num_frames, protocol.num_frames, rate, train=False, num_clips=protocol.clips
    )


def spatial_views(height: int, width: int, protocol: ViewProtocol) -> list[tuple[int, int]]:
    """Top-left ``(y0, x0)`` of the crops of a frame already resized to short side ``scale_size``."""
    mode = "center" if protocol.crops == 1 else protocol.crop_mode
    return crop_boxes(height, width, protocol.crop_size, mode)


class MultiViewDataset(VideoDataset):
    """Every view of a video as one item ``(views (V, C, T, H, W), label, index)``.

    Frames shared by several clips are decoded once. A video that cannot be read follows
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
    ) -> None:
        super().__init__(
            records,
            reader,
            sampler=None,  # type: ignore[arg-type]  (views come from the protocol)
            transform=None,  # type: ignore[arg-type]
            train=False,
            bad_video_policy=bad_video_policy,
            max_retries=max_retries,
        )
        self.protocol = protocol
        self.mean, self.std = tuple(mean), tuple(std)

    def load(
        self, index: int, rng: np.random.Generator, crop_size: int | None = None
    ) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        clips: list[np.ndarray] = []

        def choose(num_frames: int, fps: float | None = None) -> np.ndarray:
            clips[:] = temporal_views(num_frames, self.protocol, fps)
            return np.unique(np.concatenate(clips))  # frames shared by clips decode once

        if record.num_frames:
            frames = self.reader.read(record.path, choose(record.num_frames))
        elif hasattr(self.reader, "read_sampled"):  # one open for length, fps and frames
            frames, _ = self.reader.read_sampled(record.path, choose)
        else:
            frames = self.reader.read(record.path, choose(self.reader.num_frames(record.path)))
        wanted = np.unique(np.concatenate(clips))
        # Resized as uint8, cropped, then normalised (``normalize``): the steps and order of the
        # validation transform (ClipTransform), so the 1-clip view equals the validation clip.
        frames = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        frames = resize_short_side(frames, self.protocol.scale_size)
        boxes = spatial_views(frames.shape[-2], frames.shape[-1], self.protocol)
        views = []
        for clip in clips:
            picked = frames[np.searchsorted(wanted, clip)].permute(1, 0, 2, 3)  # (3, T, H, W)
            for box in boxes:
                view = crop_clip(picked, box, self.protocol.crop_size)
                views.append(normalize(view, self.mean, self.std, channel_dim=0))
        return torch.stack(views), record.label
