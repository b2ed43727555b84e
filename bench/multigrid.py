"""Multigrid vs baseline on the synthetic dataset: optimizer steps, wall-clock, final accuracy.

Both runs train the same model for the same *base* epochs: the baseline with a stepwise LR
(x0.1 at the same step epochs), multigrid (``schedule=multigrid``: long + short cycle, 1.5x
epochs, relative LRs) from the same base ``(B, T, S)``. Also prints the iteration ratio of the
default PySlowFast schedule (K400 SlowFast: 3.42x fewer iterations; the note's 69.8 vs 239).

    python bench/multigrid.py [--epochs 12] [--model x3d_xs] [--batch 4] [--frames 8] [--crop 56]

Writes ``bench/results/multigrid.json``. Wall-clock is this machine's (CPU unless CUDA); the
multigrid speed-up in wall-clock needs a loader fast enough for its larger batches.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import actionlab  # noqa: E402,F401
from actionlab import train  # noqa: E402
from actionlab.schedules.multigrid import MultigridSchedule  # noqa: E402


def _cfg(args, root: Path, out: Path, multigrid: bool):
    steps = [0, args.epochs // 2, (3 * args.epochs) // 4]
    overrides = [
        f"model={args.model}", "logger=none", "callbacks=minimal", f"data.root={args.data_root}",
        f"data.num_frames={args.frames}", f"data.crop_size={args.crop}", f"data.scale_size={args.crop + args.crop // 7}",
        f"data.train_scale_size=[{args.crop + args.crop // 14},{args.crop + args.crop // 4}]",
        f"data.batch_size={args.batch}", f"data.num_workers={args.workers}", f"trainer.max_epochs={args.epochs}",
        f"optimizer.lr={args.lr}", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
        f"trainer.accelerator={'gpu' if torch.cuda.is_available() else 'cpu'}", "trainer.precision=32-true",
        f"seed={args.seed}", f"data.annotations.num_train={args.num_train}",
        f"data.annotations.num_val={args.num_val}",
    ]
    if multigrid:
        overrides += ["schedule=multigrid", f"schedule.steps=[{','.join(map(str, steps))}]"]
    else:
        overrides += ["scheduler=multistep", f"scheduler.milestones=[{steps[1]},{steps[2]}]"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.log_dir = str(root / "logs")
        cfg.paths.output_dir = str(out)
        cfg.paths.work_dir = str(root)
    return cfg, steps


def _run(cfg) -> dict:
    start = time.perf_counter()
    metrics = train.run(cfg)
    wall = time.perf_counter() - start
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {"steps": int(ckpt["global_step"]), "epochs": int(ckpt["epoch"]) + 1, "wall_s": round(wall, 1),
            "val_acc": round(metrics.get("val/acc", float("nan")), 4),
            "val_acc_best": round(metrics.get("val/acc_best", float("nan")), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--model", default="x3d_xs")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--crop", type=int, default=56)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=96)
    parser.add_argument("--data-root", default=None, help="synthetic data folder (default: a new one per size)")
    parser.add_argument("--schedule-only", action="store_true", help="print the iteration ratios only")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "multigrid.json"))
    args = parser.parse_args(argv)
    if args.data_root is None:
        args.data_root = str(REPO / "data" / f"synthetic_bench_{args.num_train}_{args.num_val}")

    k400 = MultigridSchedule(64, 32, 224, 239, [0, 94, 154, 196])
    paper_ratio = k400.baseline_iterations(1) / k400.iterations(1)
    print(f"default schedule (K400 SlowFast 8x8, 239 -> {k400.total_epochs} epochs): "
          f"{paper_ratio:.2f}x fewer iterations")
    result: dict = {"default_schedule_iteration_ratio": round(paper_ratio, 3)}
    if not args.schedule_only:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            base_cfg, steps = _cfg(args, root, root / "baseline", multigrid=False)
            mg_cfg, _ = _cfg(args, root, root / "multigrid", multigrid=True)
            sched = MultigridSchedule(args.batch, args.frames, args.crop, args.epochs, steps)
            print(sched.table())
            baseline = _run(base_cfg)
            multigrid = _run(mg_cfg)
        rows = [("baseline", baseline), ("multigrid", multigrid)]
        print(f"\n{'run':<10} {'epochs':>6} {'steps':>6} {'wall s':>8} {'val acc':>8} {'best':>6}")
        for name, r in rows:
            print(f"{name:<10} {r['epochs']:>6} {r['steps']:>6} {r['wall_s']:>8} {r['val_acc']:>8} {r['val_acc_best']:>6}")
        ratio = baseline["steps"] / max(1, multigrid["steps"])
        speed = baseline["wall_s"] / max(1e-9, multigrid["wall_s"])
        print(f"iterations: {ratio:.2f}x fewer with multigrid; wall-clock {speed:.2f}x")
        result.update(
            setup={"model": args.model, "base_epochs": args.epochs, "steps": steps, "batch": args.batch,
                   "frames": args.frames, "crop": args.crop, "lr": args.lr, "dataset": f"synthetic ({args.num_train} train, {args.num_val} val)",
                   "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
                   "torch_threads": torch.get_num_threads()},
            baseline=baseline, multigrid=multigrid, iteration_ratio=round(ratio, 3), wall_clock_ratio=round(speed, 3),
            schedule_iteration_ratio=round(sched.baseline_iterations(400) / sched.iterations(400), 3),
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
