"""On-disk cache of frame counts and frame rates, so each video is probed once, ever.

Keyed by path, size and modification time (a re-encoded file is probed again). SQLite handles
concurrent writers (DataLoader workers, DDP ranks); each process opens its own connection.
"""

from __future__ import annotations

import logging
import os
import sqlite3

from actionlab.data.readers import VideoInfo

__all__ = ["VideoInfoCache", "default_cache_path"]

log = logging.getLogger(__name__)


def default_cache_path(root: str, backend: str) -> str:
    """``<root>/.actionlab/<backend>_info.sqlite``, or under ``~/.cache`` if root is read-only."""
    folder = os.path.join(root, ".actionlab")
    try:
        os.makedirs(folder, exist_ok=True)
        if os.access(folder, os.W_OK):
            return os.path.join(folder, f"{backend}_info.sqlite")
    except OSError:
        pass
    safe = os.path.abspath(root).strip(os.sep).replace(os.sep, "_")
    folder = os.path.join(os.path.expanduser("~"), ".cache", "actionlab", safe)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{backend}_info.sqlite")


class VideoInfoCache:
    """``get(path)`` / ``put(path, info)``; failures to read or write the cache are not fatal."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self._con: sqlite3.Connection | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {"db_path": self.db_path, "_con": None, "_pid": -1}

    def _connection(self) -> sqlite3.Connection:
        if self._con is None or self._pid != os.getpid():  # never reuse a forked connection
            con = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            con.execute(
                "CREATE TABLE IF NOT EXISTS info (path TEXT PRIMARY KEY, size INTEGER, "
                "mtime INTEGER, num_frames INTEGER, fps REAL)"
            )
            self._con, self._pid = con, os.getpid()
        return self._con

    @staticmethod
    def _stamp(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def get(self, path: str) -> VideoInfo | None:
        stamp = self._stamp(path)
        if stamp is None:
            return None
        try:
            row = self._connection().execute(
                "SELECT size, mtime, num_frames, fps FROM info WHERE path = ?", (path,)
            ).fetchone()
        except sqlite3.Error as err:
            log.debug("frame-count cache %s unreadable: %s", self.db_path, err)
            return None
        if row is None or (row[0], row[1]) != stamp:
            return None
        return VideoInfo(int(row[2]), row[3])

    def put(self, path: str, info: VideoInfo) -> None:
        stamp = self._stamp(path)
        if stamp is None:
            return
        try:
            self._connection().execute(
                "INSERT OR REPLACE INTO info VALUES (?, ?, ?, ?, ?)",
                (path, stamp[0], stamp[1], info.num_frames, info.fps),
            )
        except sqlite3.Error as err:
            log.debug("frame-count cache %s not writable: %s", self.db_path, err)
