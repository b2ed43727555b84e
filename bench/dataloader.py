"""Data loading throughput: raw decode vs the full datamodule, per backend and worker count.

    python bench/dataloader.py [--videos 12] [--seconds 6] [--workers 1 2] [--repeats 3]

Generates realistic videos once (H.264, 30 fps, ``--seconds`` long, 256 x 340 after
``python -m actionlab.data.prepare`` with its defaults: short side 256, keyframe every 16 frames)
and extracts them to JPEG frame folders and SQLite databases with the same tool. Then, for
each backend (video / frames / sqlite) and worker count, clips/s of:

(a) ``raw``: a DataLoader over a dataset that only decodes the sampled frames (8 TSN segments,
    reader opened per sample) and stacks them as uint8 - the ceiling;
(b) ``datamodule``: ``VideoDataModule.train_dataloader()`` as training on a GPU uses it (the
    default ``gpu_augment=auto`` under a trainer): decode, short side jitter [256, 320], random
    224 crop, uint8 clips collated; ``on_after_batch_transfer`` normalises on the device, which
    is GPU work, not loader work, so it is not timed here;
(c) ``float``: ``gpu_augment=false``: the workers also normalise and ship float clips (4x the
    bytes through shared memory);
(d) ``uint8 + CPU finish``: (b) with the normalisation timed in the main process on the CPU,
    what a CPU-only run pays (it shares the 2 cores with the workers here).

Steady state only (the first batches, worker start-up, are not timed); best of ``--repeats``.
Prints a table and writes ``bench/results/dataloader.json``. Targets (issue 6): datamodule >=
90% of raw, and >= 1.7x from 1 to 2 workers - meaningful only on an otherwise idle machine with
at least 2 free cores (the load average is recorded with the results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from actionlab.data.datamodule import VideoDataModule
from actionlab.data.datasets.filelist import ListAnnotations
from actionlab.data.datasets.synthetic import render_clip, write_mp4
from actionlab.data.prepare import main as prepare
from actionlab.data.readers import make_reader
from actionlab.data.sampling import SegmentSampler

COLUMNS = ("datamodule", "float", "uint8_cpu_finish")
BACKENDS = {"video": ("mp4", "videos_mp4"), "frames": ("frames", "frames"), "sqlite": ("sqlite", "sqlite")}


def make_data(root: Path, videos: int, seconds: float, height: int, width: int) -> None:
    """Raw videos, then the three prepared forms (resumable: existing outputs are kept)."""
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for i in range(videos):
        path = raw / f"v{i:03d}.mp4"
        if not path.exists():
            frames = render_clip(i % 8, np.random.default_rng(i), int(seconds * 30), height, width)
            write_mp4(path, frames, fps=30)
    for fmt, folder in BACKENDS.values():
        prepare(["folder", "--src", str(raw), "--dst", str(root / folder), "--format", fmt,
                 "--workers", str(os.cpu_count() or 1), "--no-progress"])


class RawDecode(Dataset):
    """Decode the sampled frames only: the reader's ceiling for the same sampling."""

    def __init__(self, paths: list[str], backend: str, num_frames: int) -> None:
        self.paths, self.reader = paths, make_reader(backend)
        self.sampler = SegmentSampler(num_frames)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng([torch.initial_seed() % 2**32, i])
        frames, _ = self.reader.read_sampled(self.paths[i], lambda n, fps: self.sampler(n, True, rng))
        return torch.from_numpy(frames)


def clips_per_second(loader: DataLoader, warmup: int = 2, finish=None) -> float:
    """Steady-state clips/s; ``finish(batch)`` runs on each batch in the main process."""
    it = iter(loader)
    for _ in range(min(warmup, len(loader) - 1)):
        next(it)
    clips, start = 0, time.perf_counter()
    for batch in it:
        if finish is not None:
            batch = finish(batch)
        clips += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
    return clips / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "actionlab-bench-data"))
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=340)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epoch", type=int, default=96, help="clips per measured pass")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dataloader.json"))
    args = parser.parse_args(argv)

    root = Path(args.root)
    make_data(root, args.videos, args.seconds, args.height, args.width)
    names = [f"v{i % args.videos:03d}" for i in range(args.epoch)]
    rows = []
    for backend in args.backends:
        folder = root / BACKENDS[backend][1]
        paths = [str(folder / (f"{n}.mp4" if backend == "video" else n)) for n in names]
        (root / f"{backend}.txt").write_text("".join(f"{p} {i % 8}\n" for i, p in enumerate(paths)))
        for workers in args.workers:
            raw_loader = partial(DataLoader, RawDecode(paths, backend, args.frames), batch_size=args.batch,
                                 shuffle=True, num_workers=workers, drop_last=True)
            def datamodule(gpu_augment: bool, workers: int = workers, backend: str = backend):
                return VideoDataModule(
                    str(root), partial(ListAnnotations, train_list=f"{backend}.txt", val_list=f"{backend}.txt"),
                    num_classes=8, num_frames=args.frames, crop_size=args.crop, scale_size=256,
                    train_scale_size=[256, 320], batch_size=args.batch, num_workers=workers, backend=backend,
                    pin_memory=False, cache_video_info=True, gpu_augment=gpu_augment)

            dmf, dm8 = datamodule(False), datamodule(True)
            best = {"raw": 0.0, "datamodule": 0.0, "float": 0.0, "uint8_cpu_finish": 0.0}
            loaders = {  # name: (loader factory, work the main process does per batch)
                "raw": (raw_loader, None),
                "datamodule": (dm8.train_dataloader, None),
                "float": (dmf.train_dataloader, None),
                "uint8_cpu_finish": (dm8.train_dataloader, partial(dm8.on_after_batch_transfer, dataloader_idx=0)),
            }
            for _ in range(args.repeats):  # interleaved, so all see the same machine load
                for key, (make, finish) in loaders.items():
                    best[key] = max(best[key], clips_per_second(make(), finish=finish))
            row = {"backend": backend, "workers": workers}
            for key, value in best.items():
                row[f"{key}_clips_s"] = round(value, 2)
                if key != "raw":
                    row[f"{key}_vs_raw"] = round(value / best["raw"], 3)
            rows.append(row)
            print(f"{backend:7s} workers={workers}: raw {best['raw']:7.2f} clips/s, "
                  + ", ".join(f"{k} {best[k]:7.2f} ({100 * best[k] / best['raw']:5.1f}%)" for k in COLUMNS),
                  flush=True)
    scaling = {}
    for backend in args.backends:
        by = {r["workers"]: r for r in rows if r["backend"] == backend}
        if 1 in by and 2 in by:
            scaling[backend] = {k: round(by[2][f"{k}_clips_s"] / by[1][f"{k}_clips_s"], 3)
                                for k in ("raw", *COLUMNS)}
    result = {
        "setup": {
            "videos": args.videos, "seconds": args.seconds, "fps": 30, "size": [args.height, args.width],
            "codec": "H.264 yuv420p crf 18, keyframe every 16 frames (prepare defaults)",
            "clip": f"{args.frames} TSN segments, train scale [256, 320], crop {args.crop}",
            "columns": "datamodule = uint8 loader (gpu_augment=auto under a trainer; normalised on the device, untimed); float = gpu_augment=false; uint8_cpu_finish = datamodule + normalisation in the main process on CPU",
            "batch": args.batch, "clips_per_pass": args.epoch, "repeats": args.repeats,
        },
        "machine": {"cpus": os.cpu_count(), "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "torch": torch.__version__},
        "rows": rows,
        "scaling_1_to_2_workers": scaling,
    }
    print("\n| backend | workers | raw clips/s | datamodule (uint8, default) | float batches | uint8 + CPU finish |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['workers']} | {r['raw_clips_s']} | "
              + " | ".join(f"{r[f'{k}_clips_s']} ({100 * r[f'{k}_vs_raw']:.0f}%)" for k in COLUMNS) + " |")
    for backend, s in scaling.items():
        print(f"{backend}: 1 -> 2 workers " + ", ".join(f"x{v} ({k})" for k, v in s.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
