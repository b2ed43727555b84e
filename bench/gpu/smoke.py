"""GPU smoke of every model family: one bf16-mixed training step and one eval step each, through
the lab's own LightningModule, optimizer, scheduler and Trainer (bench/gpu/run.sh step 3).

    python bench/gpu/smoke.py --device cuda --out smoke.json            # on the GPU machine
    python bench/gpu/smoke.py --device cpu --frames 4 --crop 48 --batch 2  # the CPU rehearsal

For each family (one model file each, plus RubiksNet-AQ's quantised shifts and R(2+1)D): the
model is composed from ``conf/`` (``model=<name>``, the default AdamW + cosine), fitted for one
step and validated on one batch of random clips by ``lightning.Trainer(precision="bf16-mixed")``,
in the memory format ``train.py``'s default ``memory_format=auto`` picks on the device (the
``MemoryFormat`` callback: channels-last frames for RubiksNet/TSM, ``channels_last_3d`` for the
3D models on a GPU). A family passes when the training loss and the validation loss
are finite, the step changed the weights and left them finite, and, on the trained weights in
eval mode, the bf16-autocast logits match the fp32 logits of the same clips within
``BF16_RTOL`` (relative L2 error): that is the eval step, and it catches a wrong bf16 kernel
(e.g. the RubiksShift CUDA kernel's bf16 path, cuDNN's channels-last 3D convolutions).
Writes one JSON (rows per family) and exits 1 if any family failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
# (conf/model name, frames, classes): the paper's frames; the crop is shared (--crop).
FAMILIES: tuple[tuple[str, int, int], ...] = (
    ("rubiks_tiny", 8, 174),      # RubiksNet: learnable 3D shift (compiled CUDA op)
    ("rubiks_tiny_aq", 8, 174),   # RubiksNet-AQ: attention-quantised integer shifts
    ("tsm_r50", 8, 174),          # TSM: temporal shift in a 2D ResNet-50
    ("x3d_xs", 4, 400),           # X3D: channel-wise 3D convs
    ("vov3d_m", 16, 174),         # VoV3D: T-OSA with depthwise spatiotemporal convs
    ("r2plus1d_34", 16, 400),     # 3D ResNets: (2+1)D factorised convs
    ("srtg_r3d_34", 16, 400),     # SRTG: LSTM gates on R3D
    ("mtnet_xs", 16, 400),        # MTNet: brief and prolonged paths, GRU alignment
    ("tokshift_base", 8, 400),    # ViT / TokShift: CLS-token shift in a ViT-B/16
)
BF16_RTOL = 5e-2


class RandomClips(torch.utils.data.Dataset):
    """``(clip, label, index)`` like the lab's datasets, float clips already normalised."""

    def __init__(self, n: int, frames: int, crop: int, classes: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.clips = torch.randn(n, 3, frames, crop, crop, generator=g)
        self.labels = torch.randint(0, classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.clips[i], self.labels[i], i


def _loader(dataset, batch: int):
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)


def smoke_one(name: str, frames: int, classes: int, crop: int, batch: int, device: str) -> dict:
    import lightning as L
    from hydra import compose, initialize_config_dir

    from actionlab.lit.callbacks import MemoryFormat
    from actionlab.profile import config_dir
    from actionlab.train import build_module

    torch.manual_seed(0)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[
            "logger=none", f"model={name}", f"data.num_frames={frames}", f"data.crop_size={crop}",
            f"data.num_classes={classes}",
            # outside a Hydra run nothing sets hydra:runtime; build_module resolves data paths
            f"paths.root_dir={ROOT}", f"paths.work_dir={ROOT}", f"paths.output_dir={ROOT / 'logs' / 'smoke'}"])
    module = build_module(cfg)
    three_d = any(p.ndim == 5 for p in module.parameters())
    before = {k: p.detach().clone() for k, p in module.model.named_parameters()}
    train = RandomClips(batch, frames, crop, classes, seed=1)
    val = RandomClips(batch, frames, crop, classes, seed=2)
    layout = MemoryFormat("auto")  # what train.py's default memory_format=auto does
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision="bf16-mixed",
        max_steps=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        benchmark=device == "cuda", callbacks=[layout],
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.fit(module, _loader(train, batch), _loader(val, batch))
    fit_s = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    after = dict(module.model.named_parameters())
    changed = max((after[k].detach().float().cpu() - v.float().cpu()).abs().max().item() for k, v in before.items())
    finite = all(torch.isfinite(p).all().item() for p in after.values())
    # The eval step: trained weights, eval mode, bf16 autocast against fp32 on the same clips.
    model = module.model.eval().to(device)
    clips = val.clips.to(device)  # the model puts them in its memory format itself
    with torch.no_grad():
        ref = model(clips).float()
        with torch.autocast(device, dtype=torch.bfloat16):
            low = model(clips).float()
    rel = ((low - ref).norm() / ref.norm().clamp_min(1e-12)).item()
    checks = {
        "train_loss_finite": bool(torch.isfinite(torch.tensor(metrics.get("train/loss_step", float("nan"))))),
        "val_loss_finite": bool(torch.isfinite(torch.tensor(metrics.get("val/loss", float("nan"))))),
        "weights_changed": changed > 0,
        "weights_finite": finite,
        "eval_logits_shape": list(ref.shape) == [batch, classes],
        "bf16_matches_fp32": rel <= BF16_RTOL,
    }
    return {
        "model": name, "frames": frames, "crop": crop, "batch": batch, "classes": classes,
        "memory_format": {"channels_last": "channels_last_3d" if three_d else "channels_last"}.get(
            layout.applied, layout.applied),
        "train_loss": metrics.get("train/loss_step"), "val_loss": metrics.get("val/loss"),
        "max_weight_change": changed, "bf16_vs_fp32_rel_l2": rel, "fit_s": round(fit_s, 2),
        "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "checks": checks, "ok": all(checks.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--frames", type=int, help="override every family's frames (rehearsal)")
    parser.add_argument("--crop", type=int, default=112, help="crop of every clip (MTNet needs >= 33)")
    parser.add_argument("--batch", type=int, default=4, help="clips per step (BatchNorm needs >= 2)")
    parser.add_argument("--models", nargs="*", help="only these conf/model names")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("smoke: --device cuda but torch sees no CUDA device (torch.cuda.is_available() is False)")
    rows: list[dict] = []

    def write() -> dict:
        """After every family, so a run stopped half-way keeps the families it finished."""
        payload = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                   "torch": torch.__version__, "precision": "bf16-mixed", "bf16_rtol": BF16_RTOL,
                   "rows": rows, "passed": sum(r["ok"] for r in rows), "total": len(rows)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
        tmp.replace(args.out)
        return payload

    for name, frames, classes in FAMILIES:
        if args.models and name not in args.models:
            continue
        start = time.perf_counter()
        try:
            row = smoke_one(name, args.frames or frames, classes, args.crop, args.batch, args.device)
        except Exception as err:  # noqa: BLE001  (one family's failure must not hide the others)
            row = {"model": name, "ok": False, "error": f"{type(err).__name__}: {err}"[:2000],
                   "traceback": traceback.format_exc()[-4000:]}
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        write()
        status = "ok" if row["ok"] else "FAILED " + (row.get("error") or ", ".join(
            k for k, v in row["checks"].items() if not v))
        detail = (f"loss {row['train_loss']:.3f}/{row['val_loss']:.3f}, bf16 vs fp32 {row['bf16_vs_fp32_rel_l2']:.1e}"
                  if "checks" in row else "")
        print(f"smoke {name:15s} {row['seconds']:6.1f}s {detail} {status}", flush=True)
        if "traceback" in row:
            print(row["traceback"], file=sys.stderr)
    payload = write()
    print(f"smoke: {payload['passed']} of {payload['total']} families passed")
    return 0 if payload["passed"] == payload["total"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
