"""Downloads that resume and never leave a torn file under the final name.

Bytes go to ``<file>.part``; an interrupted transfer keeps it and the next call asks the server
for the rest (HTTP ``Range``), a server that ignores the range restarts it. Only a complete file
whose size matches what the registry (or the server) says is renamed into place; its size and
sha256 go to ``<file>.json`` next to it, and a later call checks the file against that record.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["DownloadError", "FileRecord", "download", "file_record", "sha256_of"]

CHUNK = 1 << 20
USER_AGENT = "actionlab-pretrained/1"


class DownloadError(RuntimeError):
    """A download that failed, was interrupted or does not match what was expected."""


@dataclass(frozen=True)
class FileRecord:
    """What a fetched (or given) file is: its name, size in bytes and sha256."""

    name: str
    size: int
    sha256: str
    url: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | os.PathLike, url: str | None = None) -> FileRecord:
    path = Path(path)
    return FileRecord(path.name, path.stat().st_size, sha256_of(path), url)


def _progress(total: int | None, initial: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with lightning
        return None
    return tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
        file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
    )


def _content_range_total(value: str | None) -> tuple[int, int | None] | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if not match:
        return None
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".json")


def _check_existing(dest: Path, expected_size: int | None, expected_sha256: str | None) -> FileRecord | None:
    """A file already at ``dest`` that still matches its record (or the registry) is reused."""
    if not dest.is_file():
        return None
    record_file = _record_path(dest)
    known = json.loads(record_file.read_text()) if record_file.is_file() else {}
    size = expected_size or known.get("size")
    digest = expected_sha256 or known.get("sha256")
    record = file_record(dest, known.get("url"))
    if (size and record.size != size) or (digest and record.sha256 != digest):
        raise DownloadError(
            f"{dest} exists but is not the file that was fetched: {record.size} bytes, sha256 "
            f"{record.sha256[:12]}... (expected {size} bytes, sha256 {str(digest)[:12]}...). "
            "Delete it and fetch again."
        )
    if not size and not digest:
        raise DownloadError(
            f"{dest} exists but has no record of a completed fetch ({record_file.name}); delete it "
            "and fetch again, or pass it with --file"
        )
    return record


def _interrupted(dest: Path, part: Path, total: int | None) -> DownloadError:
    size = part.stat().st_size if part.is_file() else 0
    return DownloadError(
        f"download of {dest.name} interrupted after {size} of "
        f"{total if total is not None else '?'} bytes; run the same command again to resume "
        f"from {part}"
    )


def download(
    url: str,
    dest: str | os.PathLike,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> FileRecord:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``); returns the file's record.

    Raises :class:`DownloadError` naming the file and the fix when the transfer breaks (the
    partial file stays for the next call to resume) or when the result's size or sha256 differs
    from the expected one (the partial file is removed: it can never become right).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    reused = _check_existing(dest, expected_size, expected_sha256)
    if reused is not None:
        return reused
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the partial file may be whole
            response, total = None, have
        else:
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}; is the link still valid?") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"cannot reach {url}: {err}; check the network (or use --file)") from err

    if response is not None:
        with response:
            resumed = have and response.status == 206
            if resumed:
                start, total = _content_range_total(response.headers.get("Content-Range")) or (have, None)
                if start != have:
                    resumed, have = False, 0
            if not resumed:
                have = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length is not None else None
            if expected_size is not None and total is not None and total != expected_size:
                part.unlink(missing_ok=True)
                raise DownloadError(
                    f"size mismatch for {dest.name}: the registry says {expected_size} bytes but "
                    f"{url} sends {total}; nothing was kept. The file on the server changed or the "
                    "link points elsewhere"
                )
            bar = _progress(total, have, dest.name) if progress else None
            try:
                with open(part, "ab" if resumed else "wb") as f:
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        f.write(block)
                        have += len(block)
                        if bar is not None:
                            bar.update(len(block))
                    f.flush()
                    os.fsync(f.fileno())
            except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as err:
                raise _interrupted(dest, part, total) from err
            finally:
                if bar is not None:
                    bar.close()
        if total is not None and have < total:  # the server closed before the announced end
            raise _interrupted(dest, part, total)
    size = part.stat().st_size
    if (expected_size is not None and size != expected_size) or (total is not None and size != total):
        part.unlink()
        raise DownloadError(
            f"size mismatch for {dest.name}: got {size} bytes, expected "
            f"{expected_size if expected_size is not None else total}; nothing was kept"
        )
    digest = sha256_of(part)
    if expected_sha256 is not None and digest != expected_sha256:
        part.unlink()
        raise DownloadError(
            f"sha256 mismatch for {dest.name}: got {digest}, the registry says {expected_sha256}; "
            "nothing was kept"
        )
    os.replace(part, dest)
    record = FileRecord(dest.name, size, digest, url)
    _record_path(dest).write_text(
        json.dumps({**record.as_dict(), "fetched": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2)
    )
    return record
