"""CPU allocator setting for steady-state loops: keep freed activation buffers in the process.

glibc serves large allocations (activations of a video batch, 10-100 MB) with ``mmap`` and
returns them to the kernel on ``free``, so every forward page-faults its activations back in and
the kernel zeroes them first: one more pass over all activation memory per step, spent in the
kernel (measured on RubiksNet-Tiny batch-1 inference at 8x224 on one thread: ~21,000 page faults
and 30-75 ms of system time per forward of ~250 ms; none once retained, see bench/RESULTS.md).
jemalloc and tcmalloc (``LD_PRELOAD``) avoid it too; this does the same with glibc's own
``mallopt``, from Python, at run time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_applied = False


def retain_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Serve allocations up to ``limit_bytes`` from the heap and never trim it back, so freed
    activations are reused instead of page-faulted in again; glibc only (Linux). Process-wide
    and permanent: the process keeps its peak heap. Returns whether it applied."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Older glibc caps M_MMAP_THRESHOLD at 32 MiB on 64-bit (larger requests then keep mmap).
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, limit_bytes) == 1 or mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    trim_ok = mallopt(_M_TRIM_THRESHOLD, min(2 * limit_bytes, 2**31 - 1)) == 1
    _applied = mmap_ok and trim_ok
    return _applied
