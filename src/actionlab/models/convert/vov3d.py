"""Import VoV3D checkpoints (``youngwanLEE/VoV3D``, PySlowFast ``model_state`` dicts).

``python -m actionlab.models.convert vov3d vov3d_L_k400.pyth vov3d_l.ckpt``; the size is
inferred from the stem width (M: 20, L: 24).
"""

from __future__ import annotations

from typing import Any

import torch

from actionlab.models.convert._pyslowfast import PYSLOWFAST_RULES, load_released, run_cli
from actionlab.models.vov3d import SIZES, VoV3D

__all__ = ["infer_size", "load_vov3d", "main"]


def infer_size(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """``(size, num_classes)`` from released weights (stem width = inner / 2)."""
    stem = int(state["s1.pathway0_stem.conv_xy.weight"].shape[0])
    by_stem = {cfg.inner // 2: name for name, cfg in SIZES.items()}
    if stem not in by_stem:
        raise SystemExit(f"VoV3D stem width {stem} matches no size {sorted(SIZES)}; pass --size")
    return by_stem[stem], int(state["head.projection.weight"].shape[0])


def load_vov3d(model: VoV3D, state: dict[str, torch.Tensor], source: str = "") -> None:
    load_released(model, state, PYSLOWFAST_RULES, source)


def _build(size: str, num_classes: int, num_frames: int) -> tuple[VoV3D, dict[str, Any]]:
    cfg = {"_target_": f"actionlab.models.vov3d.vov3d_{size}", "num_classes": num_classes, "num_frames": num_frames}
    return VoV3D(size, num_classes, num_frames), cfg


def main(argv: list[str]) -> None:
    run_cli("vov3d", argv, list(SIZES), infer_size, _build, load_vov3d, lambda s: 16)
