"""Environment record of the machine the GPU kit runs on (bench/gpu/run.sh step 1).

    python bench/gpu/env.py --out setup.json [--expect-gpu]

GPU name, memory, multiprocessor count, L2, compute capability, driver (nvidia-smi), torch /
CUDA / cuDNN / Triton versions, nvcc, CUDA_HOME, Python, CPU count, memory, load, and the
installed distributions (name -> version). With ``--expect-gpu`` it exits 1 when torch sees no
CUDA device, so the GPU steps fail at once with the reason instead of one by one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

QUERY = ("--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,"
         "temperature.gpu,utilization.gpu")


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"failed: {err}"
    return (proc.stdout or proc.stderr).strip()


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def record() -> dict:
    import torch

    info: dict = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "mem_total_gib": _mem_total_gib(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "cuda_home": os.environ.get("CUDA_HOME"),
        "torch_cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST"),
        "nvcc": _run(["nvcc", "--version"]),
        "nvidia_smi": _run(["nvidia-smi", QUERY, "--format=csv"]),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": p.name, "count": torch.cuda.device_count(),
            "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "l2_mib": round(getattr(p, "L2_cache_size", 0) / 2**20, 1) or None,
        }
    info["packages"] = {d.metadata["Name"]: d.version for d in metadata.distributions() if d.metadata["Name"]}
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--expect-gpu", action="store_true")
    args = parser.parse_args(argv)
    info = record()
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    previous["env"] = info
    args.out.write_text(json.dumps(previous, indent=1) + "\n")
    gpu = info.get("gpu")
    print(f"env: Python {info['python']}, torch {info['torch']} (CUDA {info['torch_cuda']}, cuDNN {info['cudnn']}), "
          f"{info['cpus']} CPUs, {info['mem_total_gib']} GiB")
    if gpu:
        print(f"env: {gpu['name']} x{gpu['count']}, sm_{gpu['capability'].replace('.', '')}, {gpu['sms']} SMs, "
              f"{gpu['memory_gib']} GiB, L2 {gpu['l2_mib']} MiB")
    print(f"env: nvidia-smi: {(info['nvidia_smi'] or 'not found').splitlines()[-1]}")
    if args.expect_gpu and not gpu:
        print("env: torch sees no CUDA device (torch.cuda.is_available() is False): the GPU steps cannot run",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
