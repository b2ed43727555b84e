"""Loader of the compiled RubiksShift operators (``cuda/`` sources, built with ninja on first use).

``load()`` compiles ``rubiks_shift.cpp`` (schema + CPU kernels) and, where CUDA is usable,
``rubiks_shift_cuda.cu`` with :func:`torch.utils.cpp_extension.load` into the torch extensions
cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), then loads the library
so ``torch.ops.actionlab.rubiks_shift`` exists. The result is cached per process.

Concurrency: several DDP ranks or Hydra multirun jobs may call ``load()`` at once. The build is
serialised by an OS-level file lock (``flock``; released by the kernel when its holder dies, so
it cannot go stale). Torch's own build "baton" (a plain ``lock`` file that a killed build leaves
behind and that makes every later ``load`` wait forever) is removed while we hold our lock,
because then nobody else can be building. Waiting for the lock is bounded
(``ACTIONLAB_BUILD_TIMEOUT`` seconds, default 1800); past it we fall back.

Failure is never fatal: without a compiler, without ninja, on a build error or when disabled
with ``ACTIONLAB_NO_EXTENSION=1``, ``load()`` returns ``None`` after one warning that says why,
and callers use the pure-PyTorch reference. On clusters pre-build once on a node with the
same software stack: ``python -m actionlab.ops.build``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = [
    "load", "is_loaded", "has_cuda_kernels", "unavailable_reason", "source_dir", "build_directory",
    "NAME",
]

NAME = "actionlab_rubiks_shift"
DISABLE_ENV = "ACTIONLAB_NO_EXTENSION"
TIMEOUT_ENV = "ACTIONLAB_BUILD_TIMEOUT"
ISA_ENV = "ACTIONLAB_CPU_ISA"  # "base" forces a build without AVX2
CUDA_ENV = "ACTIONLAB_EXTENSION_CUDA"  # "0" forces a CPU-only build, "1" forces CUDA sources
SOURCES_CPU = (
    "rubiks_shift.cpp", "rubiks_shift_channels_last.cpp", "fused_inference.cpp", "batch_norm_relu.cpp",
)
SOURCES_CUDA = ("rubiks_shift_cuda.cu",)
HEADERS = ("rubiks_shift.h", "rubiks_shift_args.h", "rubiks_shift_cpu.h")
HEADERS_CUDA = ("rubiks_shift_kernels.cuh",)

_library: str | None = None  # path of the loaded shared library
_with_cuda: bool = False  # whether the loaded library has the CUDA kernels
_reason: str | None = None  # why it is unavailable, once a load was attempted and failed


def source_dir() -> Path:
    """Folder with the C++/CUDA sources: ``actionlab/ops/csrc`` (a link to the repository's
    ``cuda/`` in editable installs, a copy inside wheels)."""
    here = Path(__file__).resolve().parent / "csrc"
    if (here / SOURCES_CPU[0]).is_file():
        return here
    repo = Path(__file__).resolve().parents[3] / "cuda"  # src/actionlab/ops -> repo root
    return repo


def want_cuda() -> bool:
    """CUDA sources are compiled only where a CUDA toolkit and a CUDA-enabled torch exist."""
    forced = os.environ.get(CUDA_ENV)
    if forced is not None:
        return forced == "1"
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None and torch.cuda.is_available()


def _torch_tag() -> str:
    # Part of the extension name: a cache built against another torch is never reused.
    return re.sub(r"[^0-9A-Za-z]+", "_", torch.__version__).strip("_")


def cpu_isa() -> str:
    """Vector instruction set the CPU kernels are compiled for: ``avx2`` (AVX2 + FMA, which
    every AVX-512 CPU has too) where this CPU has it, else ``base`` (the compiler's default);
    ``ACTIONLAB_CPU_ISA=avx512`` builds 16-wide AVX-512 code (for CPUs with AVX-512F/VL/BW/DQ).

    Part of the extension name, so a cache shared by machines with different CPUs (a cluster
    filesystem) never hands AVX2 code to a CPU without it. ``ACTIONLAB_CPU_ISA=base`` forces
    the portable build.
    """
    forced = os.environ.get(ISA_ENV, "")
    if forced not in ("", "base", "avx2", "avx512"):
        raise ValueError(f"{ISA_ENV}={forced!r} is not an instruction set the CPU kernels are built "
                         f"for: use base, avx2 or avx512, or unset it to choose from this CPU")
    x86 = sys.platform != "win32" and platform.machine().lower() in ("x86_64", "amd64")
    try:
        capability = torch.backends.cpu.get_cpu_capability() if x86 else "DEFAULT"
    except AttributeError:  # older torch
        capability = "DEFAULT"
    if forced == "avx512" and capability != "AVX512":
        # The library would die with SIGILL at its first AVX-512 instruction.
        raise ValueError(f"{ISA_ENV}=avx512 but this CPU's capability is {capability} (no AVX-512): "
                         f"use avx2 or base, or unset it")
    if forced:
        return forced
    return "avx2" if capability in ("AVX2", "AVX512") else "base"


def extension_name(with_cuda: bool) -> str:
    return f"{NAME}_{'cuda' if with_cuda else 'cpu'}_{cpu_isa()}_{_torch_tag()}"


def build_directory(with_cuda: bool) -> Path:
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(extension_name(with_cuda), verbose=False))


def is_loaded() -> bool:
    """True once the compiled operators are registered in this process (no I/O; safe to call
    while ``torch.compile`` traces)."""
    return _library is not None


def has_cuda_kernels() -> bool:
    """True if the loaded library was built with the CUDA kernels (no I/O)."""
    return _with_cuda


def unavailable_reason() -> str | None:
    """Why the last ``load()`` returned ``None`` (``None`` if it succeeded or never ran)."""
    return _reason


def ninja_dir() -> str | None:
    """The folder of the ninja this Python environment installed (the ``ninja`` package, a
    dependency of actionlab), or ``None`` where it has none (then ``PATH``'s ninja is used)."""
    try:
        import ninja
    except ImportError:
        return None
    folder = getattr(ninja, "BIN_DIR", "")
    return folder if folder and shutil.which("ninja", path=folder) else None


@contextlib.contextmanager
def _environment_ninja() -> Iterator[None]:
    """``PATH`` with the environment's ninja first while we check for and run a build.

    torch runs whichever ``ninja`` is first on ``PATH``. Two ninja versions (a system one and the
    venv's, e.g. with and without the venv activated) read each other's ``.ninja_log`` as foreign
    and rebuild every object, so processes that differ only in ``PATH`` would rebuild the same
    library back and forth (~1 min each time). The environment's ninja also builds where the
    venv's ``bin/`` is not on ``PATH`` at all (``.venv/bin/python train.py``).
    """
    folder = ninja_dir()
    old = os.environ.get("PATH")
    if folder is not None:
        os.environ["PATH"] = folder + (os.pathsep + old if old else "")
    try:
        yield
    finally:
        if folder is not None:
            if old is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = old


def _precheck(with_cuda: bool) -> str | None:
    if os.environ.get(DISABLE_ENV, "0") not in ("", "0"):
        return f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    try:
        cpu_isa()
    except ValueError as err:
        return str(err)
    src = source_dir()
    cuda_files = SOURCES_CUDA + HEADERS_CUDA if with_cuda else ()
    missing = [f for f in SOURCES_CPU + HEADERS + cuda_files if not (src / f).is_file()]
    if missing:
        return f"sources {missing} not found in {src} (broken install? reinstall actionlab)"
    from torch.utils.cpp_extension import is_ninja_available

    with _environment_ninja():
        ninja_found = is_ninja_available()
    if not ninja_found:
        return "ninja is not installed (pip install ninja)"
    cxx = os.environ.get("CXX", "c++" if sys.platform != "win32" else "cl")
    if shutil.which(cxx) is None:
        return f"no C++ compiler ({cxx!r} not on PATH; install g++ or set CXX)"
    return None


def _flags(with_cuda: bool) -> dict:
    if sys.platform == "win32":
        cflags, ldflags = ["/O2", "/openmp"], []
    else:
        # -fopenmp: ATen's parallel_for is an inline OpenMP region, compiled into our library.
        cflags, ldflags = ["-O3", "-fopenmp"], ["-fopenmp"]
        isa = cpu_isa()
        if isa in ("avx2", "avx512"):  # 8-wide float FMAs in the inner loops (4-wide SSE2 otherwise)
            cflags += ["-mavx2", "-mfma", "-mf16c"]
        if isa == "avx512":  # 16-wide, 32 vector registers
            cflags += ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mprefer-vector-width=512"]
    return {
        "extra_cflags": cflags,
        "extra_ldflags": ldflags,
        "extra_cuda_cflags": ["-O3", "-lineinfo"] if with_cuda else None,
        "extra_include_paths": [str(source_dir())],
    }


def _remove_stale_baton(build_dir: Path) -> bool:
    """Remove torch's build baton; only call while holding our lock for ``build_dir``."""
    baton = build_dir / "lock"
    if baton.exists():
        baton.unlink(missing_ok=True)
        return True
    return False


def _compile(with_cuda: bool, verbose: bool) -> str:
    from filelock import FileLock
    from torch.utils.cpp_extension import load as cpp_load

    build_dir = build_directory(with_cuda)
    build_dir.mkdir(parents=True, exist_ok=True)
    timeout = float(os.environ.get(TIMEOUT_ENV, "1800"))
    src = source_dir()
    sources = [str(src / f) for f in SOURCES_CPU + (SOURCES_CUDA if with_cuda else ())]
    with FileLock(str(build_dir / "actionlab_build.lock"), timeout=timeout), _environment_ninja():
        if _remove_stale_baton(build_dir):
            warnings.warn(
                f"actionlab: removed a stale build lock {build_dir / 'lock'} left by an "
                "interrupted build",
                RuntimeWarning,
                stacklevel=3,
            )
        return cpp_load(
            name=extension_name(with_cuda),
            sources=sources,
            build_directory=str(build_dir),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=verbose,
            **_flags(with_cuda),
        )


def load(verbose: bool = False, *, warn: bool = True, force: bool = False) -> str | None:
    """Build (if needed) and load the operators; the library path, or ``None`` after one warning.

    ``force`` retries after an earlier failure in this process.
    """
    global _library, _reason, _with_cuda
    if _library is not None:
        return _library
    if _reason is not None and not force:
        return None
    with_cuda = want_cuda()
    reason = _precheck(with_cuda)
    if reason is None:
        start = time.perf_counter()
        try:
            _library = _compile(with_cuda, verbose)
            _with_cuda = with_cuda
        except Exception as err:  # compiler errors, lock timeouts, loader errors
            lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
            # The first compiler errors say why; the last lines are ninja's summary.
            errors = [ln for ln in lines if "error" in ln.lower()][:3]
            detail = " | ".join(dict.fromkeys(lines[:1] + errors)) if lines else type(err).__name__
            reason = f"the build failed ({type(err).__name__}: {detail})"
        else:
            _reason = None
            if verbose:
                print(f"actionlab: RubiksShift kernels loaded from {_library} "
                      f"in {time.perf_counter() - start:.1f}s")
            return _library
    _reason = reason
    if warn:
        warnings.warn(
            f"actionlab: compiled RubiksShift kernels unavailable: {reason}. Falling back to the "
            "pure-PyTorch reference (correct but several times slower). To fix, install a C++ "
            "compiler and ninja (and nvcc for GPUs), then run `python -m actionlab.ops.build` "
            f"to see the full build log; set {DISABLE_ENV}=1 to always use the reference.",
            RuntimeWarning,
            stacklevel=2,
        )
    return None
