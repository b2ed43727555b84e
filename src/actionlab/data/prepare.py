"""Prepare a dataset's videos for fast loading: transcode, or extract frame folders / SQLite DBs.

    python -m actionlab.data.prepare ssv2 --src $SSV2/20bn-something-something-v2 \\
        --dst $SSV2/videos_mp4 --format mp4            # then data.annotations.video_dir=videos_mp4
    python -m actionlab.data.prepare kinetics400 --src $K400/train --dst $K400/frames --format frames
    python -m actionlab.data.prepare ucf101 --src $UCF/UCF-101 --dst $UCF/sqlite --format sqlite

Every video file under ``--src`` (recursively) becomes, at the same relative path under
``--dst``:

- ``mp4``: H.264 (yuv420p, ``--crf``, keyframe every ``--gop`` frames) with short side
  ``--short-side`` (256; 0 keeps the size). SSv2 ships VP8/VP9 webm, on which decord seeks
  wrongly (decord #91); transcoding fixes that and makes clips cheaper to decode.
- ``frames``: a folder ``<name>/`` of 1-based ``{:05d}.jpg`` (TSM layout, ``--template``).
- ``sqlite``: a folder ``<name>/`` with ``frames.db`` (SRTG ``Images(ObjId, frames, size)``,
  ``ObjId = <name>/frame_%05d``) and ``n_frames``.

Work runs in ``--workers`` processes with a progress bar. Each output is written under a
temporary name, verified by decoding it with the reader the datamodule uses (frame count and
first/last frame), then renamed, so an existing output is complete: re-running resumes.
Sources that fail are listed in ``<dst>/prepare_failures.txt``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import torch  # noqa: F401  (before decord, which the verification imports)

from actionlab.data.readers import (
    SQLITE_COUNT,
    SQLITE_DB,
    VIDEO_EXTENSIONS,
    DecordReader,
    FrameFolderReader,
    SQLiteFrameReader,
    VideoReadError,
)

__all__ = ["DATASET_EXTENSIONS", "FORMATS", "Job", "find_videos", "main", "prepare_one"]

FORMATS = ("mp4", "frames", "sqlite")
# Extensions as distributed; anything in VIDEO_EXTENSIONS is accepted with --ext any.
DATASET_EXTENSIONS = {
    "ssv2": (".webm",),
    "kinetics400": (".mp4", ".webm", ".mkv"),
    "kinetics600": (".mp4", ".webm", ".mkv"),
    "kinetics700": (".mp4", ".webm", ".mkv"),
    "hacs": (".mp4", ".webm", ".mkv"),
    "ucf101": (".avi",),
    "hmdb51": (".avi",),
    "diving48": (".mp4",),
    "mit": (".mp4",),
    "folder": VIDEO_EXTENSIONS,
    "list": VIDEO_EXTENSIONS,
}


@dataclass(frozen=True)
class Job:
    src: str
    dst: str
    fmt: str
    short_side: int = 256
    crf: int = 18
    gop: int = 16
    quality: int = 95
    template: str = "{:05d}.jpg"


def find_videos(src: str, extensions: tuple[str, ...]) -> list[str]:
    """Video files under ``src`` (recursive, sorted), by extension (case-insensitive)."""
    found = []
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in extensions:
                found.append(os.path.join(folder, name))
    return found


def output_path(src_file: str, src_root: str, dst_root: str, fmt: str) -> str:
    rel = os.path.relpath(src_file, src_root)
    stem = os.path.splitext(rel)[0]
    return os.path.join(dst_root, stem + ".mp4" if fmt == "mp4" else stem)


def _target_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Short side to ``short_side`` keeping the aspect; even sides (yuv420p)."""
    if short_side <= 0:
        h, w = height, width
    elif height <= width:
        h, w = short_side, round(width * short_side / height)
    else:
        h, w = round(height * short_side / width), short_side
    return h - h % 2, w - w % 2


def iter_frames(path: str, short_side: int) -> Iterator[np.ndarray]:
    """Decode every frame of ``path`` with PyAV as RGB, resized (area filter) to ``short_side``."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = 1
        size = None
        for frame in container.decode(stream):
            if size is None:
                size = _target_size(frame.height, frame.width, short_side)
            yield frame.reformat(width=size[1], height=size[0], format="rgb24",
                                 interpolation="AREA").to_ndarray()


def _encode_image(frame: np.ndarray, template: str, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if template.lower().endswith(".png"):
        Image.fromarray(frame).save(buf, format="PNG")
    else:
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _write_mp4(job: Job, tmp: str) -> int:
    import av

    count = 0
    with av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = None
        for frame in iter_frames(job.src, job.short_side):
            if stream is None:
                fps = _source_fps(job.src)
                stream = out.add_stream("libx264", rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(job.crf), "preset": "fast", "g": str(job.gop),
                                  "threads": "1"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return count


def _source_fps(path: str):
    """The source frame rate as a Fraction (30 when the container does not say)."""
    from fractions import Fraction

    import av

    with av.open(path) as container:
        rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
    return Fraction(rate).limit_denominator(1001) if rate else Fraction(30)


def _write_frames(job: Job, tmp: str) -> int:
    os.makedirs(tmp)
    count = 0
    for i, frame in enumerate(iter_frames(job.src, job.short_side), start=1):
        with open(os.path.join(tmp, job.template.format(i)), "wb") as f:
            f.write(_encode_image(frame, job.template, job.quality))
        count = i
    return count


def _write_sqlite(job: Job, tmp: str) -> int:
    os.makedirs(tmp)
    name = os.path.basename(job.dst)
    con = sqlite3.connect(os.path.join(tmp, SQLITE_DB))
    count = 0
    try:
        con.execute("CREATE TABLE Images (ObjId TEXT PRIMARY KEY, frames BLOB, size INT)")
        for i, frame in enumerate(iter_frames(job.src, job.short_side), start=1):
            blob = _encode_image(frame, job.template, job.quality)
            con.execute("INSERT INTO Images VALUES (?, ?, ?)", (f"{name}/frame_{i:05d}", blob, frame.shape[1]))
            count = i
        con.commit()
    finally:
        con.close()
    with open(os.path.join(tmp, SQLITE_COUNT), "w") as f:
        f.write(f"{count}\n")
    return count


def verify(path: str, fmt: str, expected: int, template: str = "{:05d}.jpg", name: str | None = None) -> None:
    """Decode ``path`` with the datamodule's reader: frame count and first/last frames."""
    if fmt == "mp4":
        reader = DecordReader()
    elif fmt == "frames":
        reader = FrameFolderReader(template)
    else:
        reader = SQLiteFrameReader()
    if fmt == "sqlite" and name is not None:
        # The database names frames after the final folder, not the temporary one.
        reader = _RenamedSQLiteReader(name)
    found = reader.num_frames(path)
    if found != expected:
        raise VideoReadError(f"{path}: reader sees {found} frames, {expected} were written")
    frames = reader.read(path, [0, expected - 1])
    if frames.shape[0] != 2 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoReadError(f"{path}: decoded frames have shape {frames.shape}")


class _RenamedSQLiteReader(SQLiteFrameReader):
    def __init__(self, name: str) -> None:
        self.name = name

    def _paths(self, path: str) -> tuple[str, str, str]:
        folder, db, _ = super()._paths(path)
        return folder, db, self.name


def prepare_one(job: Job) -> tuple[str, str, str]:
    """Convert one video; returns ``(src, status, message)``, status ``done|skipped|failed``."""
    if os.path.exists(job.dst):
        return job.src, "skipped", ""
    os.makedirs(os.path.dirname(job.dst) or ".", exist_ok=True)
    base = os.path.basename(job.dst)
    tmp = os.path.join(os.path.dirname(job.dst), f".{base}.tmp{os.getpid()}" + (".mp4" if job.fmt == "mp4" else ""))
    try:
        if os.path.getsize(job.src) == 0:
            raise VideoReadError("source is empty (0 bytes)")
        writer = {"mp4": _write_mp4, "frames": _write_frames, "sqlite": _write_sqlite}[job.fmt]
        count = writer(job, tmp)
        if count == 0:
            raise VideoReadError("no frame could be decoded")
        verify(tmp, job.fmt, count, job.template, name=base)
        os.replace(tmp, job.dst)
        return job.src, "done", f"{count} frames"
    except Exception as err:  # a bad source must not stop the others
        return job.src, "failed", f"{type(err).__name__}: {err}".replace("\n", " ")
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def run(jobs: list[Job], workers: int, progress: bool = True) -> dict[str, list[tuple[str, str]]]:
    """Run ``jobs`` in ``workers`` processes; ``{status: [(src, message)]}``."""
    results: dict[str, list[tuple[str, str]]] = {"done": [], "skipped": [], "failed": []}

    def record(item: tuple[str, str, str]) -> None:
        results[item[1]].append((item[0], item[2]))

    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), transient=False)
        bar.start()
        task = bar.add_task("preparing", total=len(jobs))
    try:
        if workers <= 1:
            for job in jobs:
                record(prepare_one(job))
                if bar is not None:
                    bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for future in as_completed([pool.submit(prepare_one, job) for job in jobs]):
                    record(future.result())
                    if bar is not None:
                        bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m actionlab.data.prepare", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=sorted(DATASET_EXTENSIONS), help="source layout (file extensions)")
    parser.add_argument("--src", required=True, help="folder of the source videos (searched recursively)")
    parser.add_argument("--dst", required=True, help="output folder (same relative paths)")
    parser.add_argument("--format", default="mp4", choices=FORMATS)
    parser.add_argument("--short-side", type=int, default=256, help="0 keeps the size")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality (mp4)")
    parser.add_argument("--gop", type=int, default=16, help="keyframe interval (mp4): shorter seeks faster")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (frames, sqlite)")
    parser.add_argument("--template", default="{:05d}.jpg", help="frame file name; .png is lossless")
    parser.add_argument("--ext", nargs="*", help="source extensions instead of the dataset's (e.g. .mp4 .avi)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if not os.path.isdir(args.src):
        parser.error(f"--src {args.src} is not a folder; point it at the folder of the videos")
    extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in args.ext) if args.ext \
        else DATASET_EXTENSIONS[args.dataset]
    sources = find_videos(args.src, extensions)
    if not sources:
        parser.error(f"no {'/'.join(extensions)} files under {args.src}; check --src or pass --ext")
    jobs = [
        Job(s, output_path(s, args.src, args.dst, args.format), args.format, args.short_side, args.crf,
            args.gop, args.quality, args.template)
        for s in sources
    ]
    results = run(jobs, args.workers, progress=not args.no_progress)
    print(f"{len(results['done'])} prepared, {len(results['skipped'])} already done, "
          f"{len(results['failed'])} failed -> {args.dst}")
    if results["failed"]:
        failures = os.path.join(args.dst, "prepare_failures.txt")
        os.makedirs(args.dst, exist_ok=True)
        with open(failures, "w") as f:
            f.writelines(f"{src}\t{message}\n" for src, message in sorted(results["failed"]))
        print(f"failed sources (the datamodule will skip them) listed in {failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
