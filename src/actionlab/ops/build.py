"""Pre-build the compiled RubiksShift operators: ``python -m actionlab.ops.build``.

Run it once per software stack (python, torch, compiler, CUDA) before training, e.g. on a
cluster from the login node or as the first step of a SLURM job, so that DDP ranks and Hydra
multirun jobs find a finished build in the torch extensions cache instead of compiling (the
build is locked either way). The cache is ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``); point it at a shared filesystem so compute nodes reuse it.
Building the CUDA kernels on a machine without a GPU needs ``ACTIONLAB_EXTENSION_CUDA=1`` (or
``--cuda``) and ``TORCH_CUDA_ARCH_LIST`` (e.g. ``"8.0;9.0"``).

Exit status 0 when the operators load, 1 otherwise (the reason is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from actionlab.ops import _extension


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actionlab.ops.build", description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", action="store_true", help="do not print the compiler commands")
    cuda = parser.add_mutually_exclusive_group()
    cuda.add_argument("--cuda", action="store_true", help="compile the CUDA kernels even without a visible GPU")
    cuda.add_argument("--cpu", action="store_true", help="compile the CPU kernels only")
    args = parser.parse_args(argv)
    if args.cuda or args.cpu:
        os.environ[_extension.CUDA_ENV] = "1" if args.cuda else "0"
    with_cuda = _extension.want_cuda()
    try:
        _extension.cpu_isa()
    except ValueError as err:  # a bad ACTIONLAB_CPU_ISA
        print(f"actionlab: build FAILED: {err}", file=sys.stderr)
        return 1
    print(f"actionlab: building {_extension.extension_name(with_cuda)} from {_extension.source_dir()}")
    print(f"actionlab: build directory {_extension.build_directory(with_cuda)}")
    start = time.perf_counter()
    path = _extension.load(verbose=not args.quiet, warn=False)
    if path is None:
        print(f"actionlab: build FAILED: {_extension.unavailable_reason()}", file=sys.stderr)
        return 1
    print(f"actionlab: RubiksShift kernels ready ({'CPU+CUDA' if with_cuda else 'CPU'}) "
          f"in {time.perf_counter() - start:.1f}s: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
