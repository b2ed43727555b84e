"""RubiksShift speed: pure-PyTorch reference vs the compiled op, each relative to ``x.clone()``.

Shapes are RubiksNet-Tiny's at 8x224 with batch 8 (N*T = 64): the stage widths and
resolutions C x H x W = 54x56x56, 216x28x28 (here with stride 1), 432x14x14, plus a stride-2
shift 108x56x56 -> 28x28. For every shape and implementation it times the forward, the
backward alone (input and shift gradients) and forward+backward, and each over a plain copy of
the input (``x.clone()``), which is the floor for any shift. Runs on CPU always and on the GPU
when one is visible (fp32, and fp16/bf16 for the kernel).

On the GPU the batch is 32 clips (``--batch``), so every fp32 input is larger than the 50-60 MB
L2 cache of an H100/H200 and the clone measures memory, not cache; times are CUDA-event medians
of 50 runs after a warm-up, and each kernel row is judged against the targets of issue 14:
forward <= 1.3x and forward+backward <= 3x a clone (``meets_targets`` in the JSON).

    python bench/rubiks_shift.py [--device cpu|cuda|all] [--repeats 5] [--batch N] [--quick]

Writes ``bench/results/rubiks_shift.json`` (the section of each device measured; other devices'
sections already in the file are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from actionlab.ops import _extension
from actionlab.ops.rubiks_shift import kernel_available, rubiks_shift_kernel, rubiks_shift_reference

RESULTS = Path(__file__).resolve().parent / "results" / "rubiks_shift.json"
# (N, T, C, H, W), stride (T, H, W)
SHAPES = [
    ((8, 8, 54, 56, 56), (1, 1, 1)),
    ((8, 8, 108, 56, 56), (1, 2, 2)),
    ((8, 8, 216, 28, 28), (1, 1, 1)),
    ((8, 8, 432, 14, 14), (1, 1, 1)),
]
QUICK_SHAPES = [((2, 8, 54, 28, 28), (1, 1, 1)), ((2, 8, 108, 28, 28), (1, 2, 2))]
IMPLS = {"reference": rubiks_shift_reference, "kernel": rubiks_shift_kernel}
# GPU targets (issue 14), as multiples of x.clone() of the same tensor.
TARGET_FORWARD, TARGET_FORWARD_BACKWARD = 1.3, 3.0
GPU_BATCH, GPU_REPEATS = 32, 50


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: str, repeats: int, setup=None) -> float:
    """Median milliseconds of ``fn()`` (after ``setup()``, untimed), one warm-up run; CUDA events
    around the call on the GPU, the host clock between synchronisations on the CPU."""
    samples = []
    for i in range(repeats + 1):
        arg = setup() if setup is not None else None
        _sync(device)
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(arg)
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end)
        else:
            start = time.perf_counter()
            fn(arg)
            elapsed = (time.perf_counter() - start) * 1e3
        if i:
            samples.append(elapsed)
    return statistics.median(samples)


def bench_case(shape, stride, impl: str, dtype: torch.dtype, device: str, repeats: int) -> dict:
    fn = IMPLS[impl]
    g = torch.Generator(device).manual_seed(0)  # drawn on the device: GPU inputs are 100s of MB
    x = torch.randn(shape, generator=g, device=device).to(dtype)
    shift = torch.rand(3, shape[2], generator=g, device=device) * 2 - 1  # fp32 shifts, as in AMP
    out_shape = fn(x, shift, stride).shape
    grad = torch.randn(out_shape, device=device, dtype=dtype)
    xg = x.clone().requires_grad_()
    sg = shift.clone().requires_grad_()

    def forward(_):
        with torch.no_grad():
            fn(x, shift, stride)

    def make_graph():
        xg.grad = sg.grad = None
        return fn(xg, sg, stride)

    def backward(out):
        out.backward(grad)

    def forward_backward(_):
        xg.grad = sg.grad = None
        fn(xg, sg, stride).backward(grad)

    clone = _time(lambda _: x.clone(), device, repeats)
    fwd = _time(forward, device, repeats)
    bwd = _time(backward, device, repeats, setup=make_graph)
    fwd_bwd = _time(forward_backward, device, repeats)
    row = {
        "shape": list(shape), "stride": list(stride), "impl": impl,
        "dtype": str(dtype).replace("torch.", ""), "clone_ms": clone, "forward_ms": fwd,
        "backward_ms": bwd, "forward_backward_ms": fwd_bwd, "forward_vs_clone": fwd / clone,
        "backward_vs_clone": bwd / clone, "forward_backward_vs_clone": fwd_bwd / clone,
    }
    if device == "cuda" and impl == "kernel":
        row["meets_targets"] = (row["forward_vs_clone"] <= TARGET_FORWARD
                                and row["forward_backward_vs_clone"] <= TARGET_FORWARD_BACKWARD)
    return row


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_device(device: str, repeats: int, quick: bool, batch: int | None = None) -> dict:
    shapes = QUICK_SHAPES if quick else SHAPES
    if batch:
        shapes = [((batch, *shape[1:]), stride) for shape, stride in shapes]
    rows = []
    cases = [("reference", torch.float32), ("kernel", torch.float32)]
    if device == "cuda":
        cases += [("kernel", torch.float16), ("kernel", torch.bfloat16)]
    for shape, stride in shapes:
        for impl, dtype in cases:
            reps = max(2, repeats // 2) if impl == "reference" and device == "cpu" else repeats
            rows.append(bench_case(shape, stride, impl, dtype, device, reps))
            print_row(rows[-1])
    speedups = []
    for shape, stride in shapes:
        ref, ker = (
            next(r for r in rows if r["shape"] == list(shape) and r["stride"] == list(stride)
                 and r["impl"] == impl and r["dtype"] == "float32")
            for impl in ("reference", "kernel")
        )
        speedups.append({
            "shape": list(shape), "stride": list(stride),
            **{f"{k}_speedup": ref[f"{k}_ms"] / ker[f"{k}_ms"] for k in ("forward", "backward", "forward_backward")},
        })
    info = {
        "device": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device == "cuda" else None,
        "threads": torch.get_num_threads(),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "repeats": repeats,
        "quick": quick,
        "batch": shapes[0][0][0],
    }
    result = {"info": info, "rows": rows, "speedup_kernel_over_reference": speedups}
    judged = [r for r in rows if "meets_targets" in r]
    if judged:
        result["targets"] = {"forward_vs_clone_max": TARGET_FORWARD,
                             "forward_backward_vs_clone_max": TARGET_FORWARD_BACKWARD,
                             "kernel_rows_meeting": sum(r["meets_targets"] for r in judged),
                             "kernel_rows": len(judged)}
    return result


def print_row(r: dict) -> None:
    shape = "x".join(map(str, r["shape"]))
    print(f"{shape:>16} s{''.join(map(str, r['stride']))} {r['impl']:>9} {r['dtype']:>8} | "
          f"clone {r['clone_ms']:8.2f} ms | fwd {r['forward_ms']:9.2f} ms ({r['forward_vs_clone']:6.2f}x) | "
          f"bwd {r['backward_ms']:9.2f} ms ({r['backward_vs_clone']:6.2f}x) | "
          f"fwd+bwd {r['forward_backward_ms']:9.2f} ms ({r['forward_backward_vs_clone']:6.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--repeats", type=int, help=f"timed runs per figure (default 5 on cpu, {GPU_REPEATS} on cuda)")
    parser.add_argument("--batch", type=int, help=f"clips N of every shape (default 8 on cpu, {GPU_BATCH} on cuda)")
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not kernel_available():
        raise SystemExit(f"the compiled RubiksShift op is unavailable: {_extension.unavailable_reason()}")
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        devices.remove("cuda")
        print("no CUDA device: GPU rows skipped")
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for device in devices:
        print(f"== {device} (times are medians; (Nx) = relative to x.clone() of the input) ==")
        repeats = args.repeats or (GPU_REPEATS if device == "cuda" else 5)
        batch = args.batch or (GPU_BATCH if device == "cuda" and not args.quick else None)
        results[device] = run_device(device, repeats, args.quick, batch)
        if "targets" in results[device]:
            t = results[device]["targets"]
            print(f"   targets (fwd <= {TARGET_FORWARD}x, fwd+bwd <= {TARGET_FORWARD_BACKWARD}x a clone): "
                  f"{t['kernel_rows_meeting']} of {t['kernel_rows']} kernel rows meet both")
        for s in results[device]["speedup_kernel_over_reference"]:
            print(f"   speedup kernel/reference {'x'.join(map(str, s['shape']))} s{''.join(map(str, s['stride']))}: "
                  f"fwd {s['forward_speedup']:.1f}x, bwd {s['backward_speedup']:.1f}x, "
                  f"fwd+bwd {s['forward_backward_speedup']:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
