"""Input protocols: how a checkpoint's clips were made, in training and at test.

Weights only reproduce their paper's number when they see clips made the way the authors made
them: the colour order and value range of the pixels, the mean/std, the temporal sampling (TSN
segments over the whole video, or a dense clip of frames ``sampling_rate`` apart at
``target_fps``), the frames per clip, the training short side and crop, the test short side,
crop, clips x crops, and how the views' scores are combined.

:class:`InputProtocol` is that record, typed, as the registry of released weights holds it
(``actionlab.pretrained.registry``). A lab checkpoint stores it as a plain dict under
``actionlab.protocol`` (:func:`to_checkpoint`): the ``data.*`` fields it fixes, the ``eval.*``
fields, the model-side options (the X3D/VoV3D release head) and where it came from. Converters
write it from the registry entry or the file's own training config, and training writes its
data config (:func:`training_protocol`).

``eval.py`` and ``actionlab.predict`` apply a checkpoint's protocol over the data group's
defaults; what the user typed on the command line wins and is logged once as a change from
the checkpoint's protocol (:func:`apply_protocol`, :func:`typed_keys`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "DATA_KEYS",
    "EVAL_KEYS",
    "PROTOCOL_KEY",
    "InputProtocol",
    "apply_protocol",
    "describe_changes",
    "plain",
    "to_checkpoint",
    "training_protocol",
    "typed_keys",
]

PROTOCOL_KEY = "protocol"
# The data-config fields an input protocol fixes (conf/data_base/video.yaml).
DATA_KEYS = (
    "channel_order",
    "mean",
    "std",
    "num_frames",
    "sampling",
    "sampling_rate",
    "target_fps",
    "crop_size",
    "scale_size",
    "train_scale_size",
    "pad",
)
# The eval-config fields it fixes (conf/eval.yaml ``eval``).
EVAL_KEYS = ("protocol", "clips", "crops", "sampling", "sampling_rate", "crop_size", "scale_size", "aggregate")
COLOUR_ORDERS = ("rgb", "bgr")
SAMPLINGS = ("segment", "dense")
AGGREGATIONS = ("logits_mean", "softmax_mean", "sum")


@dataclass(frozen=True)
class InputProtocol:
    """The input a set of weights was trained and tested with.

    Args:
        channel_order: ``rgb`` or ``bgr`` (OpenCV-decoded frames: SRTG/MTNet).
        mean, std: per channel, in ``channel_order``, applied to pixels in ``value_range``.
        sampling: ``segment`` (TSN: ``num_frames`` segments over the whole video) or ``dense``
            (``num_frames`` frames ``sampling_rate`` apart).
        num_frames: frames per clip.
        sampling_rate: step between dense frames (None for segments).
        target_fps: frame rate the step refers to (PySlowFast 30); None: the source frames.
        train_scale: short-side range of training (lo, hi); lo == hi for a fixed side.
        train_crop: training crop (the model's input size; the X3D release head pools from it).
        test_scale: short side before the test crops.
        test_crop: test crop.
        clips, crops: test views per video.
        aggregate: how view scores combine (``logits_mean`` | ``softmax_mean`` | ``sum``).
        eval_protocol: the ``actionlab.data.views.PROTOCOLS`` name that reproduces the original
            test code (frame indices, crop boxes, resize rounding).
        pad: ``repeat`` or ``loop``: short videos in dense sampling.
        value_range: pixel values before mean/std (the lab scales uint8 to [0, 1]).
        model_options: model-config keywords the protocol needs (``release_head``...).
        reference: where in the original code these values come from.
    """

    channel_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    sampling: str
    num_frames: int
    sampling_rate: int | None
    target_fps: float | None
    train_scale: tuple[int, int]
    train_crop: int
    test_scale: int
    test_crop: int
    clips: int
    crops: int
    aggregate: str
    eval_protocol: str
    pad: str = "repeat"
    value_range: tuple[float, float] = (0.0, 1.0)
    model_options: Mapping[str, Any] = field(default_factory=dict)
    reference: str = ""

    def __post_init__(self) -> None:
        if self.channel_order not in COLOUR_ORDERS:
            raise ValueError(f"channel_order must be one of {COLOUR_ORDERS}, got {self.channel_order!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {self.aggregate!r}")
        if self.sampling == "dense" and not self.sampling_rate:
            raise ValueError("a dense protocol needs its sampling_rate")

    @property
    def views(self) -> int:
        return self.clips * self.crops

    @property
    def normalised_range(self) -> tuple[float, float]:
        """Range of the network's input values (worst case over channels)."""
        lo, hi = self.value_range
        return (
            min((lo - m) / s for m, s in zip(self.mean, self.std)),
            max((hi - m) / s for m, s in zip(self.mean, self.std)),
        )

    def data_fields(self) -> dict[str, Any]:
        """The ``data.*`` values this protocol fixes (``data.scale_size`` is the short side of
        the centre view, the test short side for the protocols that scale from it)."""
        return {
            "channel_order": self.channel_order,
            "mean": list(self.mean),
            "std": list(self.std),
            "num_frames": self.num_frames,
            "sampling": self.sampling,
            "sampling_rate": self.sampling_rate or 1,
            "target_fps": self.target_fps,
            "crop_size": self.train_crop,
            "scale_size": self._data_scale(),
            "train_scale_size": list(self.train_scale),
            "pad": self.pad,
        }

    def _data_scale(self) -> int:
        # PySlowFast's single-crop test scales to TRAIN_JITTER_SCALES[0]; its 3-crop test and the
        # other rules scale to test_scale.
        return self.train_scale[0] if self.eval_protocol.startswith("pyslowfast") else self.test_scale

    def eval_fields(self) -> dict[str, Any]:
        """The ``eval.*`` values: the protocol name, the test crop, and counts or aggregation
        only where they differ from the named protocol's."""
        from actionlab.data.views import PROTOCOLS

        named = PROTOCOLS[self.eval_protocol]
        fields: dict[str, Any] = {"protocol": self.eval_protocol, "crop_size": self.test_crop}
        if self.clips != named.clips:
            fields["clips"] = self.clips
        if self.crops != named.crops:
            fields["crops"] = self.crops
        if self.aggregate != named.aggregate:
            fields["aggregate"] = self.aggregate
        return fields

    def check(self) -> None:
        """Raise if the lab's views (``resolve_protocol``) would not be this protocol."""
        from actionlab.data.views import resolve_protocol

        view = resolve_protocol(self.eval_fields(), self.data_fields())
        got = {
            "clips": view.clips,
            "crops": view.crops,
            "aggregate": view.aggregate,
            "num_frames": view.num_frames,
            "test_crop": view.crop_size,
            "test_scale": view.scale_size,
        }
        want = {
            "clips": self.clips,
            "crops": self.crops,
            "aggregate": self.aggregate,
            "num_frames": self.num_frames,
            "test_crop": self.test_crop,
            "test_scale": self.test_scale,
        }
        wrong = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
        if wrong:
            raise ValueError(f"eval.protocol={self.eval_protocol} does not give this protocol: {wrong}")
        if self.sampling == "dense" and view.sampling in ("segment", "vov3d_segment"):
            raise ValueError(f"{self.eval_protocol} samples segments but the protocol is dense")
        if self.sampling == "segment" and view.sampling in ("dense", "pyslowfast", "tokshift", "srtg"):
            raise ValueError(f"{self.eval_protocol} samples dense clips but the protocol is segments")

    def summary(self) -> str:
        """One line: frames, sampling, crop, views, normalisation."""
        rate = f"x{self.sampling_rate}" if self.sampling == "dense" else " segments"
        fps = f" @{self.target_fps:g} fps" if self.target_fps else ""
        return (
            f"{self.num_frames}{rate}{fps}, {self.channel_order.upper()} "
            f"mean {_short(self.mean)} std {_short(self.std)}, train {self.train_crop} "
            f"(short side {self.train_scale[0]}-{self.train_scale[1]}), test {self.clips}x"
            f"{self.crops} views of {self.test_crop} at short side {self.test_scale}, "
            f"{self.aggregate} (eval.protocol={self.eval_protocol})"
        )

    def as_dict(self) -> dict[str, Any]:
        return plain(asdict(self))


def _short(values: Sequence[float]) -> str:
    values = [round(float(v), 4) for v in values]
    return f"{values[0]:g}" if len(set(values)) == 1 else "/".join(f"{v:g}" for v in values)


def to_checkpoint(
    protocol: InputProtocol,
    origin: str,
    registry: str | None = None,
    paper: Mapping[str, Any] | None = None,
    source_file: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict a lab checkpoint stores under ``actionlab.protocol``."""
    return {
        "data": protocol.data_fields(),
        "eval": protocol.eval_fields(),
        "model": dict(protocol.model_options),
        "origin": origin,
        "reference": protocol.reference,
        "registry": registry,
        "paper": dict(paper) if paper else None,
        "file": dict(source_file) if source_file else None,
        "input": protocol.as_dict(),
    }


def training_protocol(data_cfg: Mapping[str, Any], eval_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The protocol of a lab-trained checkpoint: the fields of its own data config (and the
    ``eval.*`` fields of its run, if it declared any)."""
    data = {k: plain(data_cfg[k]) for k in DATA_KEYS if k in data_cfg}
    evals = {k: plain(v) for k, v in (eval_cfg or {}).items() if k in EVAL_KEYS and v is not None}
    name = data_cfg.get("name") or "the training data"
    return {
        "data": data,
        "eval": evals,
        "model": {},
        "origin": f"training run ({name} data config)",
        "reference": "",
        "registry": None,
        "paper": None,
        "file": None,
    }


def plain(value: Any) -> Any:
    """OmegaConf containers, tuples and numpy scalars as plain JSON-like Python values."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = plain(a), plain(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def typed_keys(overrides: Iterable[str]) -> set[str]:
    """The config keys a list of Hydra overrides sets (``data.mean=[...]`` -> ``data.mean``,
    ``+model_overrides.release_head=false`` -> ``model_overrides.release_head``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {o.key_or_group for o in parsed}


def apply_protocol(
    protocol: Mapping[str, Any] | None,
    sections: Mapping[str, dict[str, Any]],
    typed: Collection[str],
) -> list[tuple[str, Any, Any]]:
    """Write a checkpoint's protocol into config dicts, except where the user typed a value.

    ``sections`` maps a protocol section (``data``, ``eval``, ``model``) to the dict it fills,
    ``typed`` holds the dotted keys given on the command line (``data.mean``); the section name
    of a typed key is its first component, with ``model_overrides.*`` standing for ``model``.
    Returns ``(key, checkpoint value, value used)`` for every typed key that differs from the
    checkpoint's protocol; the caller logs them once.
    """
    changes: list[tuple[str, Any, Any]] = []
    if not protocol:
        return changes
    aliases = {"model": "model_overrides"}
    for section, target in sections.items():
        prefix = aliases.get(section, section)
        for key, value in (protocol.get(section) or {}).items():
            dotted = f"{prefix}.{key}"
            if dotted in typed:
                if not _same(target.get(key), value):
                    changes.append((f"{section}.{key}", plain(value), plain(target.get(key))))
            else:
                target[key] = plain(value)
    return changes


def describe_changes(protocol: Mapping[str, Any], changes: Sequence[tuple[str, Any, Any]]) -> str:
    """The one log line naming each command-line value that replaces the checkpoint's."""
    origin = protocol.get("registry") and f"registry {protocol['registry']}" or protocol.get("origin", "")
    parts = "; ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes)
    return f"the command line overrides the checkpoint's input protocol ({origin}): {parts}"
