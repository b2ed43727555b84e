"""Multigrid vs baseline on the synthetic dataset: optimizer steps, wall-clock, final accuracy.

Both arms train the same model for the same *base* epochs: the baseline with a stepwise LR
(x0.1 at the same step epochs), multigrid (``schedule=multigrid``: long + short cycle, 1.5x
epochs, relative LRs) from the same base ``(B, T, S)``. The multigrid arm runs once per
``--lr-scaling`` value (how a stage's LR follows its batch factor), side by side with one
baseline, so the rows compare within one run. Also prints the iteration ratio of the default
PySlowFast schedule (K400 SlowFast: 3.42x fewer iterations: 69.8 vs 239 baseline-epoch equivalents).

    python bench/multigrid.py [--epochs 12] [--model rubiks_tiny] [--batch 16] [--frames 8] [--crop 56]
                              [--lr-scaling linear sqrt] [--warmup 0]

Defaults: RubiksNet-Tiny (the lab's default model, time- and size-agnostic) on the embedded
synthetic set (1,600 train / 160 val, what ``make train`` uses), SGD as in PySlowFast (its
relative LRs scale the LR linearly with the batch, a rule for SGD, not AdamW). X3D-XS does not
learn this task from scratch within a CPU-sized budget (chance accuracy after 400 steps).
Split BN groups ``--bn-base-size`` clips (default ``--batch``): the base shape then normalises
over the same 16 clips as the baseline, and the coarse stages keep 16 clips per BN group.

Writes ``bench/results/multigrid.json`` (per-epoch validation accuracy included). Wall-clock is
this machine's (CPU unless CUDA); the multigrid speed-up in wall-clock needs a loader fast
enough for its larger batches.
"""

from __future__ import annotations

import argparse
import csv
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
from actionlab.schedules.multigrid import LR_SCALINGS, MultigridSchedule  # noqa: E402


def _cfg(args, root: Path, out: Path, lr_scaling: str | None):
    """The run's config: the baseline when ``lr_scaling`` is None, else multigrid with it."""
    steps = [0, args.epochs // 2, (3 * args.epochs) // 4]
    overrides = [
        f"model={args.model}", "logger=csv", "callbacks=minimal", f"data.root={args.data_root}",
        f"data.num_frames={args.frames}", f"data.crop_size={args.crop}", f"data.scale_size={args.crop + args.crop // 7}",
        f"data.train_scale_size=[{args.crop + args.crop // 14},{args.crop + args.crop // 4}]",
        f"data.batch_size={args.batch}", f"data.num_workers={args.workers}", f"trainer.max_epochs={args.epochs}",
        f"optimizer={args.optimizer}", f"optimizer.lr={args.lr}", f"module.weight_decay={args.weight_decay}",
        "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
        f"trainer.accelerator={'gpu' if torch.cuda.is_available() else 'cpu'}", "trainer.precision=32-true",
        f"seed={args.seed}", f"data.annotations.num_train={args.num_train}",
        f"data.annotations.num_val={args.num_val}",
    ]
    if lr_scaling is not None:
        overrides += ["schedule=multigrid", f"schedule.steps=[{','.join(map(str, steps))}]",
                      f"schedule.lr_scaling={lr_scaling}", f"schedule.warmup_epochs={args.warmup}",
                      f"schedule.bn_base_size={args.bn_base_size or args.batch}"]
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


def _val_curve(out: Path) -> list[float]:
    """Validation top-1 after each epoch, from the run's CSV log."""
    curve = []
    for path in sorted(out.rglob("metrics.csv")):
        with open(path, newline="") as f:
            curve += [round(float(row["val/acc"]), 4) for row in csv.DictReader(f) if row.get("val/acc")]
    return curve


def _run(cfg) -> dict:
    start = time.perf_counter()
    metrics = train.run(cfg)
    wall = time.perf_counter() - start
    out = Path(cfg.paths.output_dir)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {"steps": int(ckpt["global_step"]), "epochs": int(ckpt["epoch"]) + 1, "wall_s": round(wall, 1),
            "val_acc": round(metrics.get("val/acc", float("nan")), 4),
            "val_acc_best": round(metrics.get("val/acc_best", float("nan")), 4),
            "val_acc_per_epoch": _val_curve(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--model", default="rubiks_tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--crop", type=int, default=56)
    parser.add_argument("--optimizer", default="sgd", help="conf/optimizer group (X3D/PySlowFast: SGD)")
    parser.add_argument("--lr", type=float, default=0.05, help="base LR at the base batch size")
    parser.add_argument("--weight-decay", type=float, default=5e-5)
    parser.add_argument("--lr-scaling", nargs="+", default=["linear", "sqrt"], choices=sorted(LR_SCALINGS),
                        help="one multigrid run per value: stage LR vs batch factor (PySlowFast: linear)")
    parser.add_argument("--warmup", type=float, default=0.0, help="multigrid LR warmup epochs")
    parser.add_argument("--bn-base-size", type=int, default=None,
                        help="clips per split-BN group (default: --batch, so the base shape normalises "
                             "over the same clips as the baseline)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=1600)
    parser.add_argument("--num-val", type=int, default=160)
    parser.add_argument("--data-root", default=None, help="synthetic data folder (default: a new one per size)")
    parser.add_argument("--schedule-only", action="store_true", help="print the iteration ratios only")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "multigrid.json"))
    args = parser.parse_args(argv)
    if args.data_root is None:  # the make-train dataset when the sizes match, else a new one
        default = (args.num_train, args.num_val) == (1600, 160)
        args.data_root = str(REPO / "data" / ("synthetic" if default else f"synthetic_bench_{args.num_train}_{args.num_val}"))

    k400 = MultigridSchedule(64, 32, 224, 239, [0, 94, 154, 196])
    paper_ratio = k400.baseline_iterations(1) / k400.iterations(1)
    print(f"default schedule (K400 SlowFast 8x8, 239 -> {k400.total_epochs} epochs): "
          f"{paper_ratio:.2f}x fewer iterations")
    result: dict = {"default_schedule_iteration_ratio": round(paper_ratio, 3)}
    if not args.schedule_only:
        runs: dict[str, dict] = {}
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            base_cfg, steps = _cfg(args, root, root / "baseline", None)
            sched = MultigridSchedule(args.batch, args.frames, args.crop, args.epochs, steps)
            print(sched.table())
            runs["baseline"] = _run(base_cfg)
            for scaling in args.lr_scaling:
                cfg, _ = _cfg(args, root, root / f"multigrid_{scaling}", scaling)
                runs[f"multigrid_{scaling}"] = _run(cfg)
        baseline = runs["baseline"]
        print(f"\n{'run':<18} {'epochs':>6} {'steps':>6} {'wall s':>8} {'val acc':>8} {'best':>6} "
              f"{'steps ratio':>11} {'wall ratio':>10}")
        for name, r in runs.items():
            r["iteration_ratio"] = round(baseline["steps"] / max(1, r["steps"]), 3)
            r["wall_clock_ratio"] = round(baseline["wall_s"] / max(1e-9, r["wall_s"]), 3)
            print(f"{name:<18} {r['epochs']:>6} {r['steps']:>6} {r['wall_s']:>8} {r['val_acc']:>8} "
                  f"{r['val_acc_best']:>6} {r['iteration_ratio']:>10}x {r['wall_clock_ratio']:>9}x")
            print(f"{'':<18} val acc per epoch: {r['val_acc_per_epoch']}")
        result.update(
            setup={"model": args.model, "base_epochs": args.epochs, "steps": steps, "batch": args.batch,
                   "frames": args.frames, "crop": args.crop, "optimizer": args.optimizer, "lr": args.lr,
                   "weight_decay": args.weight_decay, "lr_scalings": args.lr_scaling,
                   "warmup_epochs": args.warmup, "bn_base_size": args.bn_base_size or args.batch,
                   "dataset": f"synthetic ({args.num_train} train, {args.num_val} val)",
                   "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
                   "torch_threads": torch.get_num_threads()},
            runs=runs,
            schedule_iteration_ratio=round(sched.baseline_iterations(400) / sched.iterations(400), 3),
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
