"""Clip-consistent transforms: one set of random parameters for every frame of a clip.

Input frames ``(T, H, W, 3)`` uint8 as decoded; output ``(3, T, h, w)``, float normalised (or
uint8 when photometric augmentation and normalisation are deferred to the GPU, see
``ClipTransform.to_uint8`` and ``GpuClipAugment``).

Geometry runs per clip in the DataLoader workers (it sets the tensor size); resizing works on
uint8 (fast antialiased path of ``F.interpolate``) and only the crop is converted to float.
Training crops (``train_crop``):

- ``random``: short side drawn from ``[min, max]`` (scale jitter, PySlowFast/TokShift), then a
  random square crop.
- ``multiscale``: TSM ``GroupMultiScaleCrop(crop, [1, .875, .75, .66], max_distort=1,
  fix_crop, more_fix_crop)`` on the short-side-resized frame: crop width and height drawn from
  ``scales x short side`` at most ``max_distort`` steps apart, placed at one of 13 fixed
  positions, resized to ``crop``.
- ``resized``: Inception random-resized crop (area ``rrc_scale``, aspect ``rrc_ratio``).

Evaluation resizes and crops by the rules of the original test code (``resized_shape``,
``crop_boxes``); validation during training uses TSM's centre view (``CENTRE_VIEW_*``).

Photometric augmentation (kornia ``VideoSequential(same_on_frame=True)``): colour jitter and
the SRTG set (the SRTG repository's imgaug pipeline: Gaussian blur, per-channel add, hue/saturation,
linear contrast, one of perspective/rotation), behind flags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CENTRE_VIEW_CROP",
    "CENTRE_VIEW_RESIZE",
    "CROP_MODES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESIZES",
    "TRAIN_CROPS",
    "VIT_MEAN",
    "VIT_STD",
    "ClipTransform",
    "GpuClipAugment",
    "build_photometric",
    "crop_boxes",
    "crop_clip",
    "multiscale_crop_box",
    "normalize",
    "random_resized_crop_box",
    "resize_short_side",
    "resized_shape",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Google ViT / TokShift: pixels in [-1, 1].
VIT_MEAN = (0.5, 0.5, 0.5)
VIT_STD = (0.5, 0.5, 0.5)
TRAIN_CROPS = ("random", "multiscale", "resized")
TSM_SCALES = (1.0, 0.875, 0.75, 0.66)

CROP_MODES = ("center", "three", "three_ssv2", "three_tsm", "tokshift", "srtg")
RESIZES = ("lab", "tsm", "pyslowfast", "tokshift", "srtg")
# Resize rule and crop mode of validation during training, and of the ``1clip`` test view
# (``actionlab.data.views``): TSM's ``GroupScale`` + ``GroupCenterCrop``. One definition, so
# that the validation clip and the 1-clip view stay identical.
CENTRE_VIEW_RESIZE, CENTRE_VIEW_CROP = "tsm", "three_tsm"


def _centre(delta: int, rule: str) -> int:
    """Offset of a centred crop ``delta`` pixels smaller than the frame, by each original's
    rounding: ``ceil`` (PySlowFast ``uniform_crop``), ``half_even`` (torchvision
    ``CenterCrop``: ``int(round(delta / 2.))``, TSM), ``floor`` (TokShift ``int(delta / 2.0)``,
    imgaug ``int(0.5 * delta)``, SRTG)."""
    if rule == "ceil":
        return math.ceil(delta / 2)
    if rule == "half_even":
        return round(delta / 2.0)
    return int(delta / 2.0)


def crop_boxes(
    height: int, width: int, crop_size: int, mode: str, crops: int | None = None
) -> list[tuple[int, int]]:
    """Top-left corners ``(y0, x0)`` of the test crops of a ``height x width`` frame, in the
    original code's order.

    ``crops`` is 1 or 3 (None: 1 for ``center`` and ``srtg``, 3 otherwise). A frame is portrait
    when ``height > width``.

    - ``center``: one box at ``ceil((size - crop) / 2)`` on both axes (PySlowFast
      ``uniform_crop`` index 1; the lab's default).
    - ``three``: PySlowFast ``uniform_crop`` (``slowfast/datasets/transform.py``): 3 crops at
      ``0``, ``ceil((L - c) / 2)`` and ``L - c`` along the long side (left/centre/right, or
      top/centre/bottom on portrait frames), ``ceil`` centred across; together they cover the
      frame. 1 crop: the centre one.
    - ``three_ssv2``: the same 3 crops; 1 crop is spatial index 0 (left/top), because
      PySlowFast's and VoV3D's ``ssv2.py`` take ``view % NUM_SPATIAL_CROPS`` without the
      centre fallback of ``kinetics.py``.
    - ``three_tsm``: TSM ``GroupFullResSample`` (``ops/transforms.py``): quarter steps
      ``ws = (W - c) // 4``, ``hs = (H - c) // 4``; left ``(2hs, 0)``, right ``(2hs, 4ws)``,
      centre ``(2hs, 2ws)``, always across the width (on portrait frames all three coincide).
      1 crop: torchvision ``CenterCrop`` (``int(round(d / 2.))``, half to even).
    - ``tokshift``: TokShift ``Test_ClipAug`` (``data/augmentation.py``): centre, left, right,
      across the width, ``int(d / 2.0)`` centred (``y`` on every crop); 1 crop: the centre.
    - ``srtg``: SRTG's validation (``data/iterator_factory.py``: imgaug ``CropToFixedSize``
      centre, twice): the short-side square at ``int((L - S) / 2)``, then the crop at
      ``int((S - c) / 2)`` inside it.
    """
    if crop_size > min(height, width):
        raise ValueError(
            f"crop_size {crop_size} is larger than the frame ({height}x{width}); resize the short "
            f"side to at least {crop_size} first (data.scale_size)"
        )
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")
    crops = crops if crops is not None else (1 if mode in ("center", "srtg") else 3)
    if crops not in (1, 3) or (crops == 3 and mode in ("center", "srtg")):
        raise ValueError(f"crop mode {mode!r} has no {crops}-crop layout")
    dy, dx = height - crop_size, width - crop_size
    if mode == "three_tsm":
        if crops == 1:
            return [(_centre(dy, "half_even"), _centre(dx, "half_even"))]
        ws, hs = dx // 4, dy // 4
        return [(2 * hs, 0), (2 * hs, 4 * ws), (2 * hs, 2 * ws)]
    if mode == "tokshift":
        y, x = _centre(dy, "floor"), _centre(dx, "floor")
        return [(y, x)] if crops == 1 else [(y, x), (y, 0), (y, dx)]
    if mode == "srtg":  # a centred short-side square first, then the crop centred in it
        short = min(height, width)
        inner = _centre(short - crop_size, "floor")
        return [(_centre(height - short, "floor") + inner, _centre(width - short, "floor") + inner)]
    centre = (_centre(dy, "ceil"), _centre(dx, "ceil"))
    portrait = height > width
    along = (0, centre[0] if portrait else centre[1], dy if portrait else dx)
    across = centre[1] if portrait else centre[0]
    boxes = [(a, across) if portrait else (across, a) for a in along]
    if crops == 3:
        return boxes
    return [boxes[0]] if mode == "three_ssv2" else [centre]


def crop_clip(clip, box: tuple[int, int], crop_size: int):
    """``clip[..., y0:y0+c, x0:x0+c]`` for a tensor or array whose last two axes are ``(H, W)``."""
    y0, x0 = box
    h, w = clip.shape[-2:]
    if y0 < 0 or x0 < 0 or y0 + crop_size > h or x0 + crop_size > w:
        raise ValueError(f"crop box {box} of size {crop_size} does not fit a {h}x{w} frame")
    return clip[..., y0 : y0 + crop_size, x0 : x0 + crop_size]


def resized_shape(height: int, width: int, size: int, rule: str = "lab") -> tuple[int, int]:
    """``(new_h, new_w)`` with short side ``size`` as each original computes it.

    - ``lab``: long side ``round(long * size / short)``; unchanged if the short side is ``size``.
    - ``tsm``: torchvision ``Resize(int)`` (TSM ``GroupScale``): ``int(size * long / short)``;
      unchanged if the short side already is ``size``.
    - ``pyslowfast``: ``random_short_side_scale_jitter`` (``slowfast/datasets/transform.py``):
      ``floor(long / short * size)``; unchanged if the short side already is ``size``.
    - ``tokshift``: ``short_side_resize`` (``data/augmentation.py``): ``floor(long / short *
      size)``; the width is the long side only when strictly wider.
    - ``srtg``: imgaug ``Resize({"shorter-side": s, "longer-side": "keep-aspect-ratio"})``:
      ``np.round(size * long / short)`` (half to even); the height is short only when strictly
      smaller.
    """
    h, w = int(height), int(width)
    if rule not in RESIZES:
        raise ValueError(f"resize rule must be one of {RESIZES}, got {rule!r}")
    if rule == "lab":
        if min(h, w) == size:
            return h, w
        if h <= w:
            return size, max(size, round(w * size / h))
        return max(size, round(h * size / w)), size
    if rule in ("tsm", "pyslowfast") and ((w <= h and w == size) or (h <= w and h == size)):
        return h, w
    portrait = w < h
    if rule == "tsm":
        long = int(size * (h if portrait else w) / (w if portrait else h))
    elif rule == "pyslowfast":
        long = math.floor(float(h if portrait else w) / (w if portrait else h) * size)
    elif rule == "tokshift":
        portrait = not w > h
        long = math.floor(1.0 * (h if portrait else w) / (w if portrait else h) * size)
    else:
        portrait = not h < w
        long = int(np.round(size * ((h / w) if portrait else (w / h))))
    return (long, size) if portrait else (size, long)


def resize_short_side(frames: torch.Tensor, size: int, rule: str = "lab") -> torch.Tensor:
    """Resize ``(T, C, H, W)`` so that the short side is ``size`` (``resized_shape`` rounding).

    Interpolation follows the original: antialiased bilinear, PIL's ``BILINEAR`` (``lab``,
    ``tsm``); antialiased bicubic, PIL's ``BICUBIC`` (``tokshift``); plain bicubic, OpenCV's
    ``INTER_CUBIC`` under imgaug (``srtg``); plain bilinear on float pixels, PySlowFast's
    ``F.interpolate`` on normalised frames (``pyslowfast``: uint8 input comes back as float in
    ``[0, 1]``, unrounded, which ``normalize`` accepts). uint8 input otherwise stays uint8
    (torch's vectorised uint8 path, several times faster than float).
    """
    h, w = frames.shape[-2:]
    new_h, new_w = resized_shape(h, w, size, rule)
    if rule == "pyslowfast":
        if frames.dtype == torch.uint8:
            frames = frames.float().div_(255.0)
        if (new_h, new_w) == (h, w):
            return frames
        return F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False)
    if (new_h, new_w) == (h, w):  # PIL, torchvision and OpenCV return a same-size frame as is
        return frames
    if rule == "srtg":
        return F.interpolate(frames, size=(new_h, new_w), mode="bicubic", align_corners=False)
    if rule == "tokshift":
        return F.interpolate(
            frames, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
        )
    return _resize(frames, new_h, new_w)


def _resize(frames: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if frames.shape[-2:] == (h, w):
        return frames
    return F.interpolate(frames, size=(h, w), mode="bilinear", antialias=True, align_corners=False)


def multiscale_crop_box(
    height: int,
    width: int,
    crop_size: int,
    rng: np.random.Generator,
    scales: Sequence[float] = TSM_SCALES,
    max_distort: int = 1,
) -> tuple[int, int, int, int]:
    """TSM ``GroupMultiScaleCrop`` box ``(y0, x0, h, w)`` (fix_crop, more_fix_crop)."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    sizes = [crop_size if abs(s - crop_size) < 3 else s for s in sizes]
    pairs = [
        (hi, wi)
        for i, hi in enumerate(sizes)
        for j, wi in enumerate(sizes)
        if abs(i - j) <= max_distort
    ]
    ch, cw = pairs[int(rng.integers(len(pairs)))]
    hs, ws = (height - ch) // 4, (width - cw) // 4
    offsets = [
        (0, 0), (0, 4 * ws), (4 * hs, 0), (4 * hs, 4 * ws), (2 * hs, 2 * ws),  # corners, centre
        (2 * hs, 0), (2 * hs, 4 * ws), (4 * hs, 2 * ws), (0, 2 * ws),  # edge midpoints
        (hs, ws), (hs, 3 * ws), (3 * hs, ws), (3 * hs, 3 * ws),  # quarter points
    ]
    y0, x0 = offsets[int(rng.integers(len(offsets)))]
    return y0, x0, ch, cw


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Inception-style crop box ``(y0, x0, h, w)``: area fraction ``scale``, aspect ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    side = min(height, width)  # fallback: the central square
    return (height - side) // 2, (width - side) // 2, side, side


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float], channel_dim: int) -> torch.Tensor:
    """``(clip / 255 - mean) / std`` for uint8 input, ``(clip - mean) / std`` for float in [0, 1].

    One float copy and two in-place ops (``x * 1/(255 std) - mean/std``): this runs per clip in
    every DataLoader worker.
    """
    shape = [1] * clip.dim()
    shape[channel_dim] = 3
    std_t = torch.tensor(std, dtype=torch.float32, device=clip.device)
    scale = (1.0 / (std_t * 255.0) if clip.dtype == torch.uint8 else 1.0 / std_t).view(shape)
    shift = (torch.tensor(mean, dtype=torch.float32, device=clip.device) / std_t).view(shape)
    # A float32 input is copied too: the in-place ops must never reach the caller's tensor
    # (PySlowFast's float frames are shared by the crops of several views).
    out = clip.clone() if clip.dtype == torch.float32 else clip.float()
    return out.mul_(scale).sub_(shift)


class _RandomChannelAdd(nn.Module):
    """imgaug ``Add(lo..hi, per_channel=True)`` on ``(B, C, T, H, W)`` in [0, 1], one draw per clip."""

    def __init__(self, low: float, high: float, p: float) -> None:
        super().__init__()
        self.low, self.high, self.p = low / 255.0, high / 255.0, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        offset = torch.empty(b, c, 1, 1, 1, device=x.device).uniform_(self.low, self.high)
        apply = (torch.rand(b, 1, 1, 1, 1, device=x.device) < self.p).float()
        return (x + offset * apply).clamp_(0.0, 1.0)


class _Photometric(nn.Module):
    """Clip-consistent photometric augmentation of ``(B, C, T, H, W)`` float clips in [0, 1].

    ``ops`` run in order; then one of ``one_of`` (imgaug ``OneOf``), chosen per call. Each is a
    kornia ``VideoSequential(same_on_frame=True)``: one parameter draw per clip.
    """

    def __init__(self, ops: list[nn.Module], add: nn.Module | None, p: float,
                 one_of: list[nn.Module] | None = None) -> None:
        super().__init__()
        import kornia.augmentation as K

        def video(*modules: nn.Module) -> nn.Module:
            return K.VideoSequential(*modules, data_format="BCTHW", same_on_frame=True)

        self.video = video(*ops) if ops else None
        self.one_of = nn.ModuleList([video(op) for op in one_of or []])
        self.add = add
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p < 1.0 and torch.rand(()) >= self.p:
            return x
        if self.add is not None:
            x = self.add(x)
        if self.video is not None:
            x = self.video(x)
        if len(self.one_of):
            x = self.one_of[int(torch.randint(len(self.one_of), ()))](x)
        return x.clamp(0.0, 1.0)


def build_photometric(
    color_jitter: float | Sequence[float] | None = None,
    srtg: Mapping[str, bool | float] | None = None,
) -> nn.Module | None:
    """The photometric augmentation, or None when every flag is off.

    Args:
        color_jitter: ``s`` (brightness, contrast, saturation ``s``, hue ``s / 4``) or the four
            values ``[b, c, s, h]``, applied with p = 0.8.
        srtg: SRTG/imgaug set (A.6), each op a flag: ``blur`` (Gaussian sigma 0.1..0.3),
            ``add`` (per-channel -5..15 of 255), ``hue_saturation`` (hue +-16/255 of the
            circle, saturation x0.94..1.06), ``contrast`` (linear 0.85..1.115), ``perspective``
            (corners up to 5%) and ``rotation`` (+-10 deg), the last two as one-of; ``p`` (0.8)
            for the whole set and ``p_op`` (0.4) for each op.
    """
    import kornia.augmentation as K

    ops: list[nn.Module] = []
    if color_jitter:
        b, c, s, h = (
            (color_jitter, color_jitter, color_jitter, color_jitter / 4)
            if isinstance(color_jitter, (int, float))
            else tuple(color_jitter)
        )
        ops.append(K.ColorJitter(b, c, s, h, p=0.8))
    srtg = dict(srtg or {})
    p_all, p_op = float(srtg.pop("p", 0.8)), float(srtg.pop("p_op", 0.4))
    unknown = set(srtg) - {"blur", "add", "hue_saturation", "contrast", "perspective", "rotation"}
    if unknown:
        raise ValueError(
            f"unknown data.augment.srtg flags {sorted(unknown)}; use blur, add, hue_saturation, "
            "contrast, perspective, rotation, p, p_op"
        )
    add = _RandomChannelAdd(-5.0, 15.0, p_op) if srtg.get("add") else None
    srtg_ops: list[nn.Module] = []
    if srtg.get("blur"):
        srtg_ops.append(K.RandomGaussianBlur((3, 3), (0.1, 0.3), p=p_op))
    if srtg.get("hue_saturation"):
        srtg_ops += [K.RandomHue((-16 / 255 / 2, 16 / 255 / 2), p=p_op),
                     K.RandomSaturation((0.94, 1.06), p=p_op)]
    if srtg.get("contrast"):
        srtg_ops.append(K.RandomContrast((0.85, 1.115), p=p_op))
    geometric = []
    if srtg.get("perspective"):
        geometric.append(K.RandomPerspective(0.1, p=p_op))
    if srtg.get("rotation"):
        geometric.append(K.RandomRotation(10.0, p=p_op))
    if not ops and not srtg_ops and not geometric and add is None:
        return None
    colour = _Photometric(ops, None, 1.0) if ops else None
    # imgaug OneOf[perspective, rotation] after the others, the whole set with p = p_all.
    srtg_set = _Photometric(srtg_ops, add, p_all, geometric) if srtg_ops or geometric or add else None
    return nn.Sequential(*(m for m in (colour, srtg_set) if m is not None))


class ClipTransform:
    """Resize, crop (random/multiscale/resized for training, centre otherwise), flip, normalise.

    Args:
        crop_size: side of the square crop.
        scale_size: short side after resizing (256 for 224 crops in the papers). For training a
            ``(min, max)`` pair draws the short side per clip (scale jitter).
        train: random crop/flip/photometric when True, centre crop otherwise.
        mean, std: per-channel normalisation of ``[0, 1]`` pixels (ImageNet, or ViT's 0.5/0.5).
        flip: random horizontal flip in training. Datasets with left/right classes must pass
            ``flip_label_map`` (swaps labels on flip) or keep ``flip=False``.
        flip_label_map: ``{label: flipped_label}`` applied when a clip is flipped.
        train_crop: ``random`` | ``multiscale`` (TSM) | ``resized`` (random-resized crop).
        scales, max_distort: TSM multi-scale crop parameters.
        rrc_scale, rrc_ratio: random-resized crop area fraction and aspect range.
        color_jitter, srtg: photometric augmentation (``build_photometric``), training only.
        to_uint8: return the cropped clip as uint8 ``(3, T, c, c)`` without photometric
            augmentation or normalisation; ``GpuClipAugment`` finishes it batched on the GPU.
    """

    def __init__(
        self,
        crop_size: int,
        scale_size: int | Sequence[int],
        train: bool,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        flip: bool = False,
        flip_label_map: Mapping[int, int] | None = None,
        train_crop: str = "random",
        scales: Sequence[float] = TSM_SCALES,
        max_distort: int = 1,
        rrc_scale: Sequence[float] = (0.08, 1.0),
        rrc_ratio: Sequence[float] = (3 / 4, 4 / 3),
        color_jitter: float | Sequence[float] | None = None,
        srtg: Mapping[str, bool | float] | None = None,
        to_uint8: bool = False,
    ) -> None:
        self.crop_size = crop_size
        self.scale_range = (
            (int(scale_size), int(scale_size))
            if isinstance(scale_size, (int, np.integer))
            else (int(scale_size[0]), int(scale_size[-1]))
        )
        if self.scale_range[0] < crop_size:
            raise ValueError(f"scale_size {scale_size} must be >= crop_size {crop_size}")
        if train_crop not in TRAIN_CROPS:
            raise ValueError(f"data.augment.train_crop must be one of {TRAIN_CROPS}, got {train_crop!r}")
        self.train = train
        self.mean, self.std = tuple(mean), tuple(std)
        self.flip = flip
        self.flip_label_map = {int(k): int(v) for k, v in dict(flip_label_map or {}).items()}
        self.train_crop = train_crop
        self.scales = tuple(scales)
        self.max_distort = max_distort
        self.rrc_scale, self.rrc_ratio = tuple(rrc_scale), tuple(rrc_ratio)
        self.to_uint8 = to_uint8
        self.photometric = build_photometric(color_jitter, srtg) if train and not to_uint8 else None

    def scale_range_for(self, crop_size: int) -> tuple[int, int]:
        """The short-side range for another crop size (multigrid short cycle): scaled by
        ``crop_size / self.crop_size``, never below the crop."""
        if crop_size == self.crop_size:
            return self.scale_range
        f = crop_size / self.crop_size
        lo, hi = self.scale_range
        return max(crop_size, round(lo * f)), max(crop_size, round(hi * f))

    def _geometry(self, clip: torch.Tensor, rng: np.random.Generator, c: int) -> torch.Tensor:
        lo, hi = self.scale_range_for(c)
        if not self.train:
            clip = resize_short_side(clip, (lo + hi) // 2, CENTRE_VIEW_RESIZE)
            return crop_clip(clip, crop_boxes(*clip.shape[-2:], c, CENTRE_VIEW_CROP, 1)[0], c)
        h, w = clip.shape[-2:]
        if self.train_crop == "resized":  # scale-free: area fraction of the frame itself
            return _resize(_slice(clip, random_resized_crop_box(h, w, rng, self.rrc_scale, self.rrc_ratio)), c, c)
        # The box is drawn on the frame resized to a random short side, then only that region of
        # the source is resized: the same crop as resize-then-crop at a fraction of the pixels.
        size = int(rng.integers(lo, hi + 1)) if hi > lo else lo
        vh, vw = (size, max(size, round(w * size / h))) if h <= w else (max(size, round(h * size / w)), size)
        if self.train_crop == "random":
            box = (int(rng.integers(0, vh - c + 1)), int(rng.integers(0, vw - c + 1)), c, c)
        else:
            box = multiscale_crop_box(vh, vw, c, rng, self.scales, self.max_distort)
        return _resize(_slice(clip, _map_box(box, (vh, vw), (h, w))), c, c)

    def __call__(
        self, frames: np.ndarray, label: int, rng: np.random.Generator, crop_size: int | None = None
    ) -> tuple[torch.Tensor, int]:
        c = int(crop_size or self.crop_size)
        # (T, H, W, 3) -> (T, 3, H, W) view: channels-last memory, what the uint8 resize wants.
        clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        clip = self._geometry(clip, rng, c)
        if self.train and self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
            label = self.flip_label_map.get(int(label), label)
        clip = clip.permute(1, 0, 2, 3).contiguous()  # (3, T, c, c) uint8: a cheap copy
        if self.to_uint8:
            return clip, label
        if self.photometric is not None:
            with torch.no_grad():
                clip = self.photometric(clip.float().div_(255.0).unsqueeze(0))[0]
        return normalize(clip, self.mean, self.std, channel_dim=0), label


def _slice(clip: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    y0, x0, h, w = box
    return clip[..., y0 : y0 + h, x0 : x0 + w]


def _map_box(
    box: tuple[int, int, int, int], virtual: tuple[int, int], source: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A ``(y0, x0, h, w)`` box on a ``virtual``-size resize of the frame, in ``source`` pixels."""
    fy, fx = source[0] / virtual[0], source[1] / virtual[1]
    y0, x0 = min(int(round(box[0] * fy)), source[0] - 1), min(int(round(box[1] * fx)), source[1] - 1)
    h = max(1, min(int(round(box[2] * fy)), source[0] - y0))
    w = max(1, min(int(round(box[3] * fx)), source[1] - x0))
    return y0, x0, h, w


class GpuClipAugment:
    """Finishes uint8 batches ``(B, 3, T, H, W)`` on their device: photometric augmentation
    (training only, each clip its own parameters, all its frames the same) and normalisation.
    Float batches pass unchanged (already normalised)."""

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        color_jitter: float | Sequence[float] | None = None,
        srtg: Mapping[str, bool | float] | None = None,
    ) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self.photometric = build_photometric(color_jitter, srtg)

    def __call__(self, clips: torch.Tensor, train: bool) -> torch.Tensor:
        if clips.dtype != torch.uint8:
            return clips
        if train and self.photometric is not None:
            self.photometric.to(clips.device)
            with torch.no_grad():
                x = self.photometric(clips.float().div_(255.0))
            return normalize(x, self.mean, self.std, channel_dim=1)
        return normalize(clips, self.mean, self.std, channel_dim=1)
