"""Import PySlowFast X3D checkpoints (``x3d_{xs,s,m,l}.pyth``, ``model_state`` dicts).

``python -m actionlab.models.convert x3d x3d_m.pyth x3d_m.ckpt [--size m]``. XS, S and M
are the same network (they differ in input); the size is inferred as ``m`` or ``l`` from the
depth of res4 unless ``--size`` is given.
"""

from __future__ import annotations

from typing import Any

import torch

from actionlab.models.convert._pyslowfast import PYSLOWFAST_RULES, load_released, run_cli
from actionlab.models.x3d import SIZES, X3D

__all__ = ["infer_size", "load_x3d", "main"]


def infer_size(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """``(size, num_classes)`` from released weights (res4 has 11 blocks in M, 25 in L)."""
    blocks = {k.split(".")[1] for k in state if k.startswith("s4.")}
    size = "l" if len(blocks) > 11 else "m"
    return size, int(state["head.projection.weight"].shape[0])


def load_x3d(model: X3D, state: dict[str, torch.Tensor], source: str = "") -> None:
    load_released(model, state, PYSLOWFAST_RULES, source)


def _build(size: str, num_classes: int, num_frames: int) -> tuple[X3D, dict[str, Any]]:
    cfg = {"_target_": f"actionlab.models.x3d.x3d_{size}", "num_classes": num_classes, "num_frames": num_frames}
    return X3D(size, num_classes, num_frames), cfg


def main(argv: list[str]) -> None:
    run_cli("x3d", argv, list(SIZES), infer_size, _build, load_x3d, lambda s: SIZES[s].num_frames)
