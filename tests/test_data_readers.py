"""Three frame backends return the same frames; the preparation CLI; the frame-count cache."""

import os
import shutil
import sqlite3

import numpy as np
import pytest

from actionlab.data.cache import VideoInfoCache
from actionlab.data.datasets.synthetic import render_clip, write_mp4
from actionlab.data.prepare import main as prepare
from actionlab.data.readers import (
    DecordReader,
    FrameFolderReader,
    SQLiteFrameReader,
    VideoInfo,
    VideoReadError,
    make_reader,
)

FRAMES = 20


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One generated H.264 video, extracted losslessly (PNG) to a frame folder and a SQLite DB."""
    root = tmp_path_factory.mktemp("backends")
    (root / "src" / "cls").mkdir(parents=True)
    write_mp4(root / "src" / "cls" / "v1.mp4", render_clip(2, np.random.default_rng(0), FRAMES, 48, 64))
    for fmt in ("frames", "sqlite"):
        code = prepare(["folder", "--src", str(root / "src"), "--dst", str(root / fmt), "--format", fmt,
                        "--short-side", "0", "--template", "{:05d}.png", "--workers", "1", "--no-progress"])
        assert code == 0
    return root


def test_three_backends_return_identical_frames(prepared):
    video = str(prepared / "src" / "cls" / "v1.mp4")
    # Frame backends are addressed by the annotation's video path (extension dropped).
    folder = str(prepared / "frames" / "cls" / "v1.mp4")
    db = str(prepared / "sqlite" / "cls" / "v1")
    indices = [0, 1, 7, 7, 13, FRAMES - 1]
    a = DecordReader().read(video, indices)
    b = FrameFolderReader().read(folder, indices)
    c = SQLiteFrameReader().read(db, indices)
    assert a.shape == (6, 48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(b, c)
    for reader, path in ((DecordReader(), video), (FrameFolderReader(), folder), (SQLiteFrameReader(), db)):
        assert reader.num_frames(path) == FRAMES
        frames, info = reader.read_sampled(path, lambda n, fps: [n - 1, n + 5])  # past the end: clamped
        assert info.num_frames == FRAMES and np.array_equal(frames[0], frames[1])
        assert np.array_equal(frames[0], a[-1])
    assert DecordReader().probe(video).fps == pytest.approx(12.0)


def test_bgr_channel_order_on_every_backend(prepared):
    """data.channel_order=bgr: every backend returns the RGB frames with channels reversed
    (OpenCV's order, what SRTG/MTNet releases were trained on), through read and read_sampled."""
    paths = {
        "video": str(prepared / "src" / "cls" / "v1.mp4"),
        "frames": str(prepared / "frames" / "cls" / "v1.mp4"),
        "sqlite": str(prepared / "sqlite" / "cls" / "v1"),
    }
    indices = [0, 3, 3, FRAMES - 1]
    for backend, path in paths.items():
        rgb = make_reader(backend).read(path, indices)
        bgr_reader = make_reader(backend, channel_order="bgr")
        bgr = bgr_reader.read(path, indices)
        assert np.array_equal(bgr, rgb[..., [2, 1, 0]]) and not np.array_equal(bgr, rgb)
        sampled, _ = bgr_reader.read_sampled(path, lambda n, fps: indices)
        assert np.array_equal(sampled, bgr)
    with pytest.raises(ValueError, match="data.channel_order must be one of"):
        make_reader("video", channel_order="rbg")


def test_sqlite_layout_is_srtg(prepared):
    folder = prepared / "sqlite" / "cls" / "v1"
    assert (folder / "n_frames").read_text().strip() == str(FRAMES)
    con = sqlite3.connect(folder / "frames.db")
    cols = [row[1] for row in con.execute("PRAGMA table_info(Images)")]
    ids = [row[0] for row in con.execute("SELECT ObjId FROM Images ORDER BY ObjId LIMIT 2")]
    size = con.execute("SELECT size FROM Images LIMIT 1").fetchone()[0]
    con.close()
    assert cols == ["ObjId", "frames", "size"] and ids == ["v1/frame_00001", "v1/frame_00002"] and size == 64


def test_frame_templates_are_detected(prepared, tmp_path):
    src = prepared / "frames" / "cls" / "v1"
    for template in ("img_{:05d}.png", "{:05d}.png"):
        dst = tmp_path / template[:3] / "v1"
        dst.mkdir(parents=True)
        for i in range(1, 6):
            shutil.copy(src / f"{i:05d}.png", dst / template.format(i))
        reader = FrameFolderReader()
        assert reader.num_frames(str(dst)) == 5
        assert np.array_equal(reader.read(str(dst), [4]), FrameFolderReader("{:05d}.png").read(str(src), [4]))
    with pytest.raises(VideoReadError, match="data.frame_template"):
        (tmp_path / "empty").mkdir()
        FrameFolderReader().num_frames(str(tmp_path / "empty"))
    with pytest.raises(VideoReadError, match="frame folder not found.*prepare"):
        FrameFolderReader().num_frames(str(tmp_path / "nothing.mp4"))
    with pytest.raises(VideoReadError, match="data.backend=frames"):
        DecordReader().num_frames(str(src) + ".mp4")
    with pytest.raises(ValueError, match="data.backend must be one of"):
        make_reader("lmdb")


def test_prepare_transcodes_resumes_and_lists_failures(tmp_path, prepared):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(prepared / "src" / "cls" / "v1.mp4", src / "a.mp4")
    (src / "broken.mp4").write_bytes(b"\x00" * 64)
    (src / "empty.mp4").write_bytes(b"")
    args = ["folder", "--src", str(src), "--dst", str(tmp_path / "out"), "--short-side", "32",
            "--workers", "2", "--no-progress"]
    assert prepare(args) == 1
    out = tmp_path / "out" / "a.mp4"
    reader = DecordReader()
    assert reader.num_frames(str(out)) == FRAMES
    assert reader.read(str(out), [0]).shape == (1, 32, 42, 3)  # 48x64 -> short side 32, even sides
    failures = (tmp_path / "out" / "prepare_failures.txt").read_text()
    assert "broken.mp4" in failures and "empty.mp4" in failures and "a.mp4" not in failures
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".")]  # no temporaries left
    mtime = out.stat().st_mtime_ns
    assert prepare(args) == 1  # resumes: a.mp4 is not redone
    assert out.stat().st_mtime_ns == mtime
    with pytest.raises(SystemExit):
        prepare(["folder", "--src", str(tmp_path / "none"), "--dst", str(tmp_path / "o2")])


def test_jpeg_backends_agree_with_each_other_and_the_video(prepared, tmp_path):
    for fmt in ("frames", "sqlite"):
        assert prepare(["folder", "--src", str(prepared / "src"), "--dst", str(tmp_path / fmt), "--format",
                        fmt, "--short-side", "0", "--workers", "1", "--no-progress"]) == 0
    idx = [0, 9, 19]
    b = FrameFolderReader().read(str(tmp_path / "frames" / "cls" / "v1"), idx)
    c = SQLiteFrameReader().read(str(tmp_path / "sqlite" / "cls" / "v1"), idx)
    a = DecordReader().read(str(prepared / "src" / "cls" / "v1.mp4"), idx)
    assert np.array_equal(b, c)  # same JPEG bytes
    def err(x, y):
        return np.abs(x.astype(float) - y.astype(float)).mean()

    # JPEG q95 of grainy frames vs the decoded video: close, and the same pictures in order.
    assert err(a, b) < 6.0
    assert [int(np.argmin([err(x, y) for y in b])) for x in a] == [0, 1, 2]


def test_info_cache_survives_processes_and_invalidates_on_change(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x" * 10)
    cache = VideoInfoCache(str(tmp_path / "info.sqlite"))
    assert cache.get(str(video)) is None
    cache.put(str(video), VideoInfo(42, 29.97))
    again = VideoInfoCache(str(tmp_path / "info.sqlite"))  # another process would do this
    assert again.get(str(video)) == VideoInfo(42, 29.97)
    import pickle

    assert pickle.loads(pickle.dumps(again)).get(str(video)) == VideoInfo(42, 29.97)
    video.write_bytes(b"y" * 11)  # re-encoded: probed again
    assert again.get(str(video)) is None
