"""Shared pieces of the released-weights tests: small datasets in each benchmark's own layout
(videos of one known colour), and ``eval.py`` run exactly as a user types it, in-process so
that a test can see what reaches the backbone.

The videos are one flat colour, R 200 / G 120 / B 40: after decoding, resizing and cropping
every input value is ``(c / 255 - mean) / std`` of that channel in the protocol's channel
order, so the probe's per-channel means show the colour order, mean and std that were used.
"""

from __future__ import annotations

import csv
import http.server
import json
import os
import re
import runpy
import sys
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import REPO

COLOUR = (200, 120, 40)  # R, G, B


def flat_frames(num_frames: int, height: int = 40, width: int = 56) -> np.ndarray:
    return np.broadcast_to(np.array(COLOUR, np.uint8), (num_frames, height, width, 3)).copy()


def encode(path: Path, frames: np.ndarray, fps: int = 30) -> Path:
    """H.264 for ``.mp4``, VP8 for ``.webm`` (Something-Something V2 as distributed)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libvpx" if path.suffix == ".webm" else "libx264"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def ssv2_layout(root: Path, frames: int = 24) -> Path:
    """20BN's SSv2 release: labels/something-something-v2-{labels,train,validation}.json (174
    templates) and 20bn-something-something-v2/<id>.webm."""
    templates = [f"Doing thing {i:03d} with [something]" for i in range(174)]
    labels = root / "labels"
    labels.mkdir(parents=True)
    (labels / "something-something-v2-labels.json").write_text(
        json.dumps({t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(templates)})
    )
    item = {"id": "1001", "label": "doing thing 005 with a cup", "template": templates[5], "placeholders": ["a cup"]}
    for split in ("train", "validation"):
        (labels / f"something-something-v2-{split}.json").write_text(json.dumps([item]))
    encode(root / "20bn-something-something-v2" / "1001.webm", flat_frames(frames), fps=12)
    return root


def ssv1_layout(root: Path, frames: int = 20) -> Path:
    """20BN's SSv1 files: the label/split csvs and one JPEG frame folder."""
    from PIL import Image

    names = [f"Doing thing {i:03d}" for i in range(174)]
    root.mkdir(parents=True)
    (root / "something-something-v1-labels.csv").write_text("\n".join(names) + "\n")
    for split in ("train", "validation"):
        (root / f"something-something-v1-{split}.csv").write_text(f"2002;{names[7]}\n")
    folder = root / "20bn-something-something-v1" / "2002"
    folder.mkdir(parents=True)
    for i, frame in enumerate(flat_frames(frames, 100, 176), 1):
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    return root


def kinetics_layout(root: Path, frames: int = 60) -> Path:
    """The Kinetics-400 csvs (400 classes) and one validation clip."""
    classes = [f"action {i:03d}" for i in range(400)]
    header = ["label", "youtube_id", "time_start", "time_end", "split"]
    (root / "annotations").mkdir(parents=True)
    with open(root / "annotations" / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([c, f"train{i:04d}", 0, 10, "train"] for i, c in enumerate(classes))
    with open(root / "annotations" / "val.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerow([classes[3], "abcdefghijk", 4, 14, "val"])
    encode(root / "val" / "abcdefghijk_000004_000014.mp4", flat_frames(frames), fps=30)
    (root / "train").mkdir()
    return root


def hacs_layout(root: Path, seconds: float = 3.0, fps: int = 12) -> Path:
    """HACS Clips v1.1.1: the clips csv (200 classes) and one full validation video."""
    classes = [f"Sport {i:03d}" for i in range(200)]
    root.mkdir(parents=True)
    with open(root / "HACS_clips_v1.1.1.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["classname", "youtube_id", "subset", "start", "end", "label"])
        writer.writerows([c, f"t{i:04d}", "training", 0.0, 2.0, 1] for i, c in enumerate(classes))
        writer.writerow([classes[11], "valvideo001", "validation", 0.5, 2.5, 1])
    encode(root / "videos" / classes[11].replace(" ", "_") / "v_valvideo001.mp4",
           flat_frames(int(seconds * fps)), fps=fps)
    return root


def expected_input(mean, std, channel_order: str = "rgb") -> list[float]:
    """The normalised value of each input channel for the test colour."""
    colour = COLOUR if channel_order == "rgb" else COLOUR[::-1]
    return [(c / 255 - m) / s for c, m, s in zip(colour, mean, std)]


class ViewProbe:
    """Stands in for the backbone's forward in an eval run: records each batch of views and
    returns scores that depend on the input (so aggregation and metrics run for real). The
    model itself is still built from the checkpoint and loaded strictly."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.channel_means: list[torch.Tensor] = []
        self.model: torch.nn.Module | None = None
        self.model_config: dict | None = None

    def install(self, monkeypatch) -> None:
        from actionlab import evaluate

        real = evaluate.load_classifier

        def load(*args, **kwargs):
            module, info = real(*args, **kwargs)
            self.model, self.model_config = module.model, module.model_config
            weights = torch.linspace(-1.0, 1.0, module.num_classes)

            def forward(x: torch.Tensor) -> torch.Tensor:
                if x.any():  # not the cost profile's zero clip
                    self.shapes.append(tuple(x.shape))
                    self.channel_means.append(x.detach().mean(dim=(0, 2, 3, 4)))
                return x.detach().flatten(1).mean(1, keepdim=True) * weights

            module.model.forward = forward
            return module, info

        monkeypatch.setattr(evaluate, "load_classifier", load)

    def channels(self) -> list[float]:
        return torch.stack(self.channel_means).mean(0).tolist()


def run_eval_py(monkeypatch, args: list[str], run_dir: Path | None = None) -> dict:
    """``python eval.py ARGS`` in this process (its Hydra app, its command line), the run
    directory pinned to ``run_dir`` (None: where eval.py puts it, under ``$ACTIONLAB_ROOT/logs``);
    returns ``metrics.json`` with the log and the report under ``"log"`` and ``"report"``."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    pinned = [f"hydra.run.dir={run_dir}"] if run_dir is not None else []
    monkeypatch.setattr(sys, "argv", [str(REPO / "eval.py"), *args, *pinned])
    cwd = os.getcwd()
    try:
        runpy.run_path(str(REPO / "eval.py"), run_name="__main__")
    finally:
        os.chdir(cwd)
        GlobalHydra.instance().clear()
    if run_dir is None:
        runs = Path(os.environ["ACTIONLAB_ROOT"]) / "logs" / "eval" / "runs"
        run_dir = max(runs.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["log"] = (run_dir / "eval.log").read_text()
    metrics["report"] = (run_dir / "report.md").read_text()
    return metrics


# A release server on 127.0.0.1


class ReleaseServer(http.server.BaseHTTPRequestHandler):
    """Serves ``payload`` with Range support; ``drop_after`` cuts the first response short."""

    payload: ClassVar[bytes] = b""
    drop_after: ClassVar[int | None] = None
    ranges: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        cls = type(self)
        cls.ranges.append(self.headers.get("Range"))
        data, start = cls.payload, 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if cls.drop_after is not None:
            body, cls.drop_after = body[: cls.drop_after], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def release_server(tmp_path):
    """A loopback server holding a RubiksNet-Tiny release file in the released dict layout."""
    from test_rubiksnet_convert import write_official

    src = tmp_path / "served.pth.tar"
    write_official(src, "tiny", "rubiks3d", num_classes=174)
    ReleaseServer.payload, ReleaseServer.drop_after, ReleaseServer.ranges = src.read_bytes(), None, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ReleaseServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/ssv2_tiny.pth.tar"
    httpd.shutdown()
    httpd.server_close()
