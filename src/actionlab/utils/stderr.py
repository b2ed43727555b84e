"""Native libraries' stderr folded into our own error messages.

decord and FFmpeg print their reasons for rejecting a video (``moov atom not found``,
``ERROR opening: ... Invalid data found``) straight to file descriptor 2, once per attempt and
process, besides the ``VideoReadError`` we raise and log. :func:`captured_stderr` redirects fd 2
to a temporary file for the duration of a read; the caller appends the text to its error, and
whatever was captured is written back to stderr when the read succeeds (nothing is lost, e.g.
another thread's output in that window).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["CapturedStderr", "captured_stderr"]


class CapturedStderr:
    text: str = ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[CapturedStderr]:
    """Capture fd 2 (C libraries and Python alike) until the block ends; ``.text`` holds it.

    On an exception the text stays with the caller (it usually goes into the error message);
    otherwise it is written back to stderr.
    """
    result = CapturedStderr()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded, closed)
        yield result
        return
    failed = False
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield result
        except BaseException:
            failed = True
            raise
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            data = tmp.read()
            result.text = data.decode(errors="replace").strip()
            if data and not failed:
                os.write(2, data)
