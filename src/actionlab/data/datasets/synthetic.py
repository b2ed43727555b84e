"""The embedded dataset: short H.264 clips of moving shapes in Something-Something V2 format.

Every class is a motion whose direction only frame order reveals (left vs right, up vs down,
closer vs away, clockwise vs anticlockwise), so a model that ignores time cannot beat 50% within
a pair. Videos are generated deterministically (one RNG stream per video) on first use, written
atomically, and read back through the real SSv2 parser, decord reader, sampler and transforms.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from actionlab.data.datasets.ssv2 import SSv2Annotations, template_to_label

__all__ = ["SyntheticSSv2", "TEMPLATES", "render_clip", "write_mp4"]

TEMPLATES = (
    "Moving [something] from left to right",
    "Moving [something] from right to left",
    "Moving [something] up",
    "Moving [something] down",
    "Moving [something] closer to the camera",
    "Moving [something] away from the camera",
    "Turning [something] clockwise",
    "Turning [something] anticlockwise",
)
SHAPES = ("circle", "square", "diamond")
MARKER = ".complete.json"


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth coloured texture: coarse noise upsampled bilinearly, plus fine grain."""
    gh, gw = rng.integers(3, 8), rng.integers(3, 8)
    coarse = rng.uniform(0, 255, size=(gh, gw, 3))
    ys = np.linspace(0, gh - 1, height)
    xs = np.linspace(0, gw - 1, width)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x1] * fx
    bottom = coarse[y1][:, x0] * (1 - fx) + coarse[y1][:, x1] * fx
    img = top * (1 - fy) + bottom * fy
    img = 0.6 * img + 0.4 * rng.uniform(60, 200, size=3)
    img += rng.normal(0, 8, size=img.shape)
    return img


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float):
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if shape == "square":
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    return np.abs(yy - cy) + np.abs(xx - cx) <= r * 1.2


def _trajectory(label: int, rng: np.random.Generator, t: np.ndarray, h: int, w: int):
    """Centre ``(cy, cx)`` and radius per frame for class ``label``; ``t`` runs 0..1."""
    r0 = rng.uniform(0.11, 0.16) * h
    if label in (0, 1, 2, 3):
        along = rng.uniform(0.15, 0.3) + t * rng.uniform(0.45, 0.55)  # fraction of the axis
        across = rng.uniform(0.3, 0.7) + 0.03 * np.sin(2 * math.pi * t * rng.uniform(0.5, 1.5))
        if label in (1, 2):  # right-to-left, and up (image y grows downwards)
            along = 1.0 - along
        if label in (0, 1):
            cx, cy = along * w, across * h
        else:
            cy, cx = along * h, across * w
        return cy, cx, np.full_like(t, r0)
    if label in (4, 5):
        grow = 0.6 + t * rng.uniform(1.2, 1.6)
        if label == 5:
            grow = grow[::-1].copy()
        cy = np.full_like(t, rng.uniform(0.4, 0.6) * h)
        cx = np.full_like(t, rng.uniform(0.4, 0.6) * w)
        return cy, cx, r0 * grow
    # Orbits: with y pointing down, increasing angle is clockwise on screen.
    sign = 1.0 if label == 6 else -1.0
    theta = rng.uniform(0, 2 * math.pi) + sign * t * rng.uniform(1.2, 1.7) * math.pi
    radius = rng.uniform(0.22, 0.3) * h
    cy = 0.5 * h + radius * np.sin(theta)
    cx = 0.5 * w + radius * np.cos(theta)
    return cy, cx, np.full_like(t, r0)


def render_clip(
    label: int, rng: np.random.Generator, num_frames: int, height: int, width: int
) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of one clip of class ``label``."""
    bg = _background(rng, height, width)
    color = rng.uniform(0, 255, size=3)
    if np.abs(color - bg.mean(axis=(0, 1))).sum() < 150:  # keep the object visible
        color = 255.0 - color
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    t = np.linspace(0.0, 1.0, num_frames)
    cy, cx, r = _trajectory(label, rng, t, height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        img = bg.copy()
        img[_shape_mask(shape, yy, xx, cy[i], cx[i], r[i])] = color
        img += rng.normal(0, 3, size=img.shape)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = 12) -> None:
    """Encode ``(T, H, W, 3)`` uint8 frames as H.264 (yuv420p) to ``path``, atomically."""
    import av

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            # The same frames must always give the same bytes (tests train on these videos). One
            # thread is not enough: with x264's rate-control lookahead and macroblock tree, about
            # 1 encode in 10 of identical frames came out different (PyAV 18's x264), so both
            # are off; the decode-side workload (H.264, B-frames, GOP of 8) is unchanged.
            stream.options = {"crf": "17", "preset": "veryfast", "g": "8", "threads": "1",
                              "x264-params": "rc-lookahead=0:mbtree=0"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


class SyntheticSSv2(SSv2Annotations):
    """Generated SSv2-format dataset of 8 motion classes (``data=synthetic``, the default).

    Args:
        root: where the dataset lives (generated there on first use).
        num_train, num_val: videos per split (classes balanced, interleaved).
        min_frames, max_frames: frames per video, drawn per video.
        height, width: frame size (the short side is ``min(height, width)``).
        seed: generator seed; the same seed always gives the same dataset.
    """

    def __init__(
        self,
        root: str,
        num_train: int = 1600,
        num_val: int = 160,
        min_frames: int = 16,
        max_frames: int = 24,
        height: int = 64,
        width: int = 80,
        seed: int = 0,
    ) -> None:
        super().__init__(root, video_dir="videos", ext="mp4", test_file="validation.json")
        self.params = dict(
            num_train=num_train,
            num_val=num_val,
            min_frames=min_frames,
            max_frames=max_frames,
            height=height,
            width=width,
            seed=seed,
            version=1,
        )

    def is_complete(self) -> bool:
        marker = Path(self.root) / MARKER
        try:
            return json.loads(marker.read_text()) == self.params
        except (OSError, ValueError):
            return False

    def prepare(self) -> None:
        """Generate whatever is missing; safe to interrupt and to call again (idempotent)."""
        if self.is_complete():
            return
        from filelock import FileLock

        root = Path(self.root)
        (root / self.video_dir).mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".generate.lock")):
            if self.is_complete():
                return
            self._generate(root)

    def _generate(self, root: Path) -> None:
        p = self.params
        (root / MARKER).unlink(missing_ok=True)
        label_ids = {template_to_label(tpl): i for i, tpl in enumerate(TEMPLATES)}
        splits: dict[str, list[dict]] = {"train": [], "validation": []}
        total = p["num_train"] + p["num_val"]
        for vid in range(total):
            label = vid % len(TEMPLATES)
            split = "train" if vid < p["num_train"] else "validation"
            splits[split].append(
                {
                    "id": str(vid),
                    "label": template_to_label(TEMPLATES[label]).replace("something", "a shape"),
                    "template": TEMPLATES[label],
                    "placeholders": ["a shape"],
                }
            )
            path = root / self.video_dir / f"{vid}.mp4"
            if path.is_file() and path.stat().st_size > 0:
                continue
            rng = np.random.default_rng([p["seed"], vid])
            num_frames = int(rng.integers(p["min_frames"], p["max_frames"] + 1))
            write_mp4(path, render_clip(label, rng, num_frames, p["height"], p["width"]))
        _write_json(root / self.labels_file, {k: str(v) for k, v in label_ids.items()})
        _write_json(root / self.train_file, splits["train"])
        _write_json(root / self.val_file, splits["validation"])
        _write_json(root / MARKER, p)
