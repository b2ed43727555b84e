"""Train-step throughput and peak memory per model at its paper input, next to its GMACs.

One training step = forward + cross-entropy + backward + SGD step on random clips. Every
(model, device) case runs in a fresh subprocess so its peak memory is its own: peak RSS of
the process on CPU (includes the ~0.3-0.5 GB PyTorch runtime; the increase during the steps is
reported too), ``torch.cuda.max_memory_allocated`` on GPU. CPU always (small batch), GPU when
available. Writes ``bench/results/train_step.json`` and prints a Markdown table. GMACs are
counted on the meta device (no CPU forward at the paper input).

The RubiksNet-Tiny rows compare ``shift_impl="reference"`` (pure PyTorch) with ``"auto"``
(the compiled op when it builds), and the summary line puts the RubiksNet-Tiny vs TSM-R50
train-step speed ratio next to their MAC ratio ("fewer FLOPs" vs wall-clock).

On the GPU (``--device cuda``) the cases are ``GPU_CASES``: RubiksNet Tiny..Large, TSM-R50,
X3D-M, VoV3D-M, SRTG-R3D-34 and TokShift-B at their paper inputs, bf16-mixed (autocast, as
``trainer.precision=bf16-mixed``), channels-last 3D for 3D models (``apply_memory_format``),
cuDNN autotuning on (as ``trainer=gpu``), the batch of ``GPU_BATCH`` (sized for an 80 GB card;
halved and retried on out-of-memory), steps timed with CUDA events after a warm-up, median.

    python bench/train_step.py                # CPU (+ GPU if present), all cases
    python bench/train_step.py --models rubiks_tiny tsm_r50 --steps 2
    python bench/train_step.py --device cuda  # the GPU set (bench/gpu/run.sh step 5)
    python bench/train_step.py --device cpu --cases gpu --frames 4 --crop 32 --cpu-batch 1  # its CPU rehearsal
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "train_step.json"


@dataclass(frozen=True)
class Case:
    model: str  # conf/model name
    frames: int
    crop: int
    classes: int = 174
    impl: str | None = None  # RubiksNet shift_impl override


# Paper inputs (frames x crop): TSM/RubiksNet 8x224, X3D XS 4x160, S 13x160, M 16x224,
# L 16x312, VoV3D 16x224; RubiksNet-Tiny and TSM also at 8x112 (cheap CPU comparison).
CASES: tuple[Case, ...] = (
    Case("rubiks_tiny", 8, 112, impl="reference"),
    Case("rubiks_tiny", 8, 112, impl="auto"),
    Case("tsm_r50", 8, 112),
    Case("rubiks_tiny", 8, 224, impl="reference"),
    Case("rubiks_tiny", 8, 224, impl="auto"),
    Case("tsm_r50", 8, 224),
    Case("x3d_xs", 4, 160, 400),
    Case("x3d_s", 13, 160, 400),
    Case("x3d_m", 16, 224, 400),
    Case("x3d_l", 16, 312, 400),
    Case("vov3d_m", 16, 224),
    Case("vov3d_l", 16, 224),
)
# The GPU set (issue 14): every RubiksNet size, the TSM-R50 it is compared with, and one model of
# each 3D/transformer family, at the paper inputs and class counts.
GPU_CASES: tuple[Case, ...] = (
    Case("rubiks_tiny", 8, 224, impl="auto"),
    Case("rubiks_small", 8, 224, impl="auto"),
    Case("rubiks_medium", 8, 224, impl="auto"),
    Case("rubiks_large", 8, 224, impl="auto"),
    Case("tsm_r50", 8, 224),
    Case("x3d_m", 16, 224, 400),
    Case("vov3d_m", 16, 224),
    Case("srtg_r3d_34", 16, 224, 400),
    Case("tokshift_base", 8, 224, 400),
)
# Clips per GPU step: RubiksNet and TSM at one batch so their ratio compares like with like;
# bf16 activations at these sizes stay well inside 80 GB (an out-of-memory halves and retries).
GPU_BATCH = {"rubiks_tiny": 32, "rubiks_small": 32, "rubiks_medium": 32, "rubiks_large": 32, "tsm_r50": 32,
             "x3d_m": 32, "vov3d_m": 32, "srtg_r3d_34": 16, "tokshift_base": 16}
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


def apply_memory_format(model, clips, fmt: str):
    """``(model, clips, layout)`` in the memory format ``fmt``, decided by the lab's own
    :func:`actionlab.models.memory_format.apply_memory_format` (what ``memory_format=`` does in
    training), for the clips' device: ``auto`` is channels-last for the time-folded 2D models
    (RubiksNet, TSM) everywhere and for the 3D models on GPUs. ``layout`` names what the
    convolutions see (``channels_last`` frames or ``channels_last_3d`` clips, else ``contiguous``).
    """
    import torch

    from actionlab.models.memory_format import FORMATS, model_kind
    from actionlab.models.memory_format import apply_memory_format as apply

    if fmt not in FORMATS:
        raise ValueError(f"memory format must be one of {FORMATS}, got {fmt!r}")
    if apply(model, fmt, clips.device) != "channels_last":
        return model, clips, "contiguous"
    if model_kind(model) == "frames":  # the model lays its frames out itself
        return model, clips, "channels_last"
    return model, clips.contiguous(memory_format=torch.channels_last_3d), "channels_last_3d"


def _worker(spec: dict) -> dict:
    """Runs in the subprocess: build, profile MACs, time ``steps`` train steps."""
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from actionlab.profile import build_from_config, count_macs, count_params

    torch.manual_seed(0)
    case = Case(**spec["case"])
    device = torch.device(spec["device"])
    precision = spec.get("precision", "32")
    overrides = [
        f"model={case.model}",
        f"data.num_classes={case.classes}",
        f"data.num_frames={case.frames}",
        f"data.crop_size={case.crop}",
    ]
    if case.impl:
        overrides.append(f"+model.shift_impl={case.impl}")
    with torch.device("meta"):  # MACs without a forward at the paper input on the CPU
        meta_model, _ = build_from_config(overrides)
    macs = count_macs(meta_model, torch.empty(1, 3, case.frames, case.crop, case.crop, device="meta"))
    del meta_model
    model, _ = build_from_config(overrides)
    model.to(device).train()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as trainer=gpu (benchmark: true)
    elif precision.startswith("bf16"):
        from actionlab.models.cpu_bf16 import guard_cpu_bf16_conv3d

        guard_cpu_bf16_conv3d(model)  # what VideoClassifier does for CPU bf16 fits
    batch = spec["batch"]
    x = torch.randn(batch, 3, case.frames, case.crop, case.crop, device=device)
    y = torch.randint(0, case.classes, (batch,), device=device)
    model, x, layout = apply_memory_format(model, x, spec.get("memory_format", "contiguous"))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(spec["warmup"]):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(spec["steps"]):
        if device.type == "cuda":  # device time of the step, from events around it
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        name = torch.cuda.get_device_name()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        name = platform.processor() or platform.machine()
    impl = case.impl
    if case.impl == "auto":
        from actionlab.ops.rubiks_shift import kernel_available

        impl = "auto (compiled op)" if kernel_available(build=False) else "auto (fell back to reference)"
    median = statistics.median(times)
    return {
        "model": case.model,
        "impl": impl,
        "device": device.type,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "memory_format": layout,
        "warmup": spec["warmup"],
        "batch": batch,
        "input_thw": [case.frames, case.crop, case.crop],
        "classes": case.classes,
        "params": count_params(model),
        "gmacs_per_clip": macs / 1e9,
        "step_s_median": median,
        "step_s_all": times,
        "clips_per_s": batch / median,
        "peak_mem_mb": peak,
        "cpu_rss_increase_mb": None if device.type == "cuda" else peak - rss_before,
        "torch": torch.__version__,
    }


def run_case(case: Case, device: str, batch: int, warmup: int, steps: int, precision: str = "32",
             memory_format: str = "contiguous") -> dict:
    """One case in a fresh subprocess; on a CUDA out-of-memory the batch is halved and retried."""
    first = batch
    while True:
        spec = {"case": asdict(case), "device": device, "batch": batch, "warmup": warmup, "steps": steps,
                "precision": precision, "memory_format": memory_format}
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if proc.returncode == 0:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["batch_note"] = None if batch == first else f"halved from {first} after out-of-memory"
            return row
        if "OutOfMemoryError" in proc.stderr and batch > 1:
            print(f"{case.model}: out of memory at batch {batch}, retrying at {batch // 2}", flush=True)
            batch //= 2
            continue
        raise RuntimeError(f"{case} on {device} failed:\n{proc.stderr[-3000:]}")


def table(rows: list[dict]) -> str:
    lines = [
        "| model | shift impl | device | precision | layout | batch | T x H x W | GMACs/clip | train clips/s | step (s) | peak mem (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    for r in rows:
        t, h, w = r["input_thw"]
        lines.append(
            f"| `{r['model']}` | {r['impl'] or '-'} | {r['device']} | {r.get('precision', '32')} | "
            f"{r.get('memory_format', 'contiguous')} | {r['batch']} | {t}x{h}x{w} | "
            f"{r['gmacs_per_clip']:.2f} | {fmt(r['clips_per_s'], '.3g')} | "
            f"{fmt(r['step_s_median'], '.3g')} | {r['peak_mem_mb']:.0f} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict]) -> list[str]:
    """RubiksNet-Tiny (fastest impl) vs TSM-R50: speed ratio next to MAC ratio."""
    out = []
    for device, precision in sorted({(r["device"], r.get("precision", "32")) for r in rows}):
        for thw in sorted({tuple(r["input_thw"]) for r in rows}):
            sel = [r for r in rows if r["device"] == device and tuple(r["input_thw"]) == thw
                   and r.get("precision", "32") == precision]
            tsm = next((r for r in sel if r["model"] == "tsm_r50"), None)
            for rubiks in (r for r in sel if r["model"] == "rubiks_tiny"):
                if tsm is None:
                    continue
                speed = rubiks["clips_per_s"] / tsm["clips_per_s"]
                mac = tsm["gmacs_per_clip"] / rubiks["gmacs_per_clip"]
                out.append(
                    f"{device} {precision} {thw[0]}x{thw[1]}x{thw[2]}: RubiksNet-Tiny ({rubiks['impl']}) trains "
                    f"{speed:.2f}x as fast as TSM-R50 with {mac:.1f}x fewer MACs"
                )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--models", nargs="*", help="only these conf/model names")
    parser.add_argument("--cases", choices=["cpu", "gpu"], help="case set (default: gpu on cuda, cpu on cpu)")
    parser.add_argument("--frames", type=int, help="override every case's frames (rehearsals)")
    parser.add_argument("--crop", type=int, help="override every case's crop (rehearsals)")
    parser.add_argument("--cpu-batch", type=int, default=2)
    parser.add_argument("--gpu-batch", type=int, help="clips per GPU step for every case (default GPU_BATCH)")
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], help="default: bf16-mixed on cuda, 32 on cpu")
    parser.add_argument("--memory-format", choices=MEMORY_FORMATS,
                        help="default: auto (the lab's memory_format=auto) on cuda, contiguous on cpu")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 1 on cpu, 5 on cuda)")
    parser.add_argument("--steps", type=int, help="timed steps, median reported (default 3 on cpu, 10 on cuda)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--table-only", action="store_true", help="print the table of --out")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    if args.table_only:
        payload = json.loads(args.out.read_text())
        print(table(payload["rows"]))
        print("\n".join(["", *ratios(payload["rows"])]))
        return

    import torch

    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu", "cuda"]
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA device: GPU cases skipped")
        devices = [d for d in devices if d != "cuda"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}

    def key(r: dict) -> tuple:
        return (r["model"], (r["impl"] or "").split(" ")[0], r["device"], tuple(r["input_thw"]),
                r.get("precision", "32"))

    rows: list[dict] = []
    failed: list[dict] = []

    def write() -> list[dict]:
        """After every case, so a run stopped half-way keeps the cases it finished."""
        fresh = {key(r) for r in rows}
        merged = [r for r in previous.get("rows", []) if key(r) not in fresh] + rows
        payload = {"rows": merged, "summary": ratios(merged), "failed": failed}
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(args.out)
        return merged

    for device in devices:
        gpu = device == "cuda"
        cases = GPU_CASES if (args.cases or ("gpu" if gpu else "cpu")) == "gpu" else CASES
        precision = args.precision or ("bf16-mixed" if gpu else "32")
        memory_format = args.memory_format or ("auto" if gpu else "contiguous")
        warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
        steps = args.steps if args.steps is not None else (10 if gpu else 3)
        for case in cases:
            if args.models and case.model not in args.models:
                continue
            if args.frames or args.crop:
                case = replace(case, frames=args.frames or case.frames, crop=args.crop or case.crop)
            batch = (args.gpu_batch or GPU_BATCH.get(case.model, 8)) if gpu else args.cpu_batch
            try:
                row = run_case(case, device, batch, warmup, steps, precision, memory_format)
            except RuntimeError as err:  # one model's failure must not cost the others' figures
                print(err, file=sys.stderr, flush=True)
                failed.append({"case": asdict(case), "device": device, "error": str(err)[-3000:]})
                write()
                continue
            rows.append(row)
            write()
            t, h, w = row["input_thw"]
            print(
                f"{row['model']:14s} {row['impl'] or '-'!s:20s} {device} {precision} {row['memory_format']} "
                f"b{row['batch']} {t}x{h}x{w}: {row['clips_per_s']:.4g} clips/s, {row['peak_mem_mb']:.0f} MB, "
                f"{row['gmacs_per_clip']:.2f} GMACs/clip",
                flush=True,
            )
    merged = write()
    print()
    print(table(merged))
    print()
    for line in ratios(merged):
        print(line)
    if failed:
        raise SystemExit(f"{len(failed)} case(s) failed: " + ", ".join(f["case"]["model"] for f in failed))

if __name__ == "__main__":
    main()
