"""Train-step throughput and peak memory per model at its paper input, next to its GMACs.

One training step = forward + cross-entropy + backward + SGD step on random clips. Every
(model, device) case runs in a fresh subprocess so its peak memory is its own: peak RSS of
the process on CPU (includes the ~0.3-0.5 GB PyTorch runtime; the increase during the steps is
reported too), ``torch.cuda.max_memory_allocated`` on GPU. CPU always (small batch), GPU when
available. Writes ``bench/results/train_step.json`` and prints a Markdown table.

The RubiksNet-Tiny rows compare ``shift_impl="reference"`` (pure PyTorch) with ``"auto"``
(the compiled op when it builds), and the summary line puts the RubiksNet-Tiny vs TSM-R50
train-step speed ratio next to their MAC ratio ("fewer FLOPs" vs wall-clock).

    python bench/train_step.py                # CPU (+ GPU if present), all cases
    python bench/train_step.py --models rubiks_tiny tsm_r50 --steps 2
    python bench/train_step.py --device cuda --gpu-batch 16
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
from dataclasses import asdict, dataclass
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


def _worker(spec: dict) -> dict:
    """Runs in the subprocess: build, profile MACs, time ``steps`` train steps."""
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from actionlab.profile import build_from_config, count_macs, count_params

    torch.manual_seed(0)
    case = Case(**spec["case"])
    device = torch.device(spec["device"])
    overrides = [
        f"model={case.model}",
        f"data.num_classes={case.classes}",
        f"data.num_frames={case.frames}",
        f"data.crop_size={case.crop}",
    ]
    if case.impl:
        overrides.append(f"+model.shift_impl={case.impl}")
    model, _ = build_from_config(overrides)
    macs = count_macs(model, torch.randn(1, 3, case.frames, case.crop, case.crop))
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = spec["batch"]
    x = torch.randn(batch, 3, case.frames, case.crop, case.crop, device=device)
    y = torch.randint(0, case.classes, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
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
        start = time.perf_counter()
        step()
        sync()
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


def run_case(case: Case, device: str, batch: int, warmup: int, steps: int) -> dict:
    spec = {"case": asdict(case), "device": device, "batch": batch, "warmup": warmup, "steps": steps}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{case} on {device} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| model | shift impl | device | batch | T x H x W | GMACs/clip | train clips/s | step (s) | peak mem (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    for r in rows:
        t, h, w = r["input_thw"]
        lines.append(
            f"| `{r['model']}` | {r['impl'] or '-'} | {r['device']} | {r['batch']} | {t}x{h}x{w} | "
            f"{r['gmacs_per_clip']:.2f} | {fmt(r['clips_per_s'], '.3g')} | "
            f"{fmt(r['step_s_median'], '.2f')} | {r['peak_mem_mb']:.0f} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict]) -> list[str]:
    """RubiksNet-Tiny (fastest impl) vs TSM-R50: speed ratio next to MAC ratio."""
    out = []
    for device in sorted({r["device"] for r in rows}):
        for thw in sorted({tuple(r["input_thw"]) for r in rows}):
            sel = [r for r in rows if r["device"] == device and tuple(r["input_thw"]) == thw]
            tsm = next((r for r in sel if r["model"] == "tsm_r50"), None)
            for rubiks in (r for r in sel if r["model"] == "rubiks_tiny"):
                if tsm is None:
                    continue
                speed = rubiks["clips_per_s"] / tsm["clips_per_s"]
                mac = tsm["gmacs_per_clip"] / rubiks["gmacs_per_clip"]
                out.append(
                    f"{device} {thw[0]}x{thw[1]}x{thw[2]}: RubiksNet-Tiny ({rubiks['impl']}) trains "
                    f"{speed:.2f}x as fast as TSM-R50 with {mac:.1f}x fewer MACs"
                )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--models", nargs="*", help="only these conf/model names")
    parser.add_argument("--cpu-batch", type=int, default=2)
    parser.add_argument("--gpu-batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
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
    rows = []
    for device in devices:
        batch = args.cpu_batch if device == "cpu" else args.gpu_batch
        for case in CASES:
            if args.models and case.model not in args.models:
                continue
            row = run_case(case, device, batch, args.warmup, args.steps)
            rows.append(row)
            t, h, w = row["input_thw"]
            print(
                f"{row['model']:12s} {row['impl'] or '-'!s:28s} {device} b{batch} {t}x{h}x{w}: "
                f"{row['clips_per_s']:.3g} clips/s, {row['peak_mem_mb']:.0f} MB, "
                f"{row['gmacs_per_clip']:.2f} GMACs/clip",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    def key(r: dict) -> tuple:
        return (r["model"], (r["impl"] or "").split(" ")[0], r["device"], tuple(r["input_thw"]))

    fresh = {key(r) for r in rows}
    keep = [r for r in previous.get("rows", []) if key(r) not in fresh]
    payload = {"rows": keep + rows, "summary": ratios(keep + rows)}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print()
    print(table(keep + rows))
    print()
    for line in payload["summary"]:
        print(line)


if __name__ == "__main__":
    main()
