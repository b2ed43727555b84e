"""Import TSM checkpoints (``mit-han-lab/temporal-shift-module``) and torchvision ResNets.

* TSM ``.pth(.tar)``: ``{"state_dict": {"module.base_model.layer1.0.conv1.net.weight", ...,
  "module.new_fc.weight"}}`` (``.net`` is the shift wrapper around ``conv1``) -> our TSM.
* torchvision ImageNet ResNet state dict (``conv1.weight`` ... ``fc.bias``) -> the TSM
  backbone; the ImageNet ``fc`` is dropped (reported) and the new head keeps its init.

``python -m actionlab.models.convert tsm TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth out.ckpt``
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from actionlab.models.convert._pyslowfast import (
    Rules,
    fill_bn_counters,
    rename,
    run_cli,
    unwrap_state,
)
from actionlab.models.convert.common import load_state_dict_strict, read_checkpoint
from actionlab.models.resnet import DEPTHS, ResNet
from actionlab.models.tsm import SIZES, TSM

__all__ = ["TSM_RULES", "infer_size", "load_torchvision_resnet", "load_tsm", "main"]

TSM_RULES: Rules = (
    (r"^base_model\.", "backbone."),
    (r"\.conv1\.net\.", ".conv1."),
    (r"^new_fc\.", "head.fc."),
)
IMAGENET_FC = ("fc.weight", "fc.bias")


def _is_torchvision(state: Mapping[str, torch.Tensor]) -> bool:
    return "conv1.weight" in state and not any(k.startswith("base_model.") for k in state)


def infer_size(state: Mapping[str, torch.Tensor]) -> tuple[str, int]:
    """``(size, num_classes)``: depth from the number of layer3 blocks; classes from ``new_fc``
    (TSM) or 174 for an ImageNet trunk (override with ``--num-classes``)."""
    prefix = "layer3." if _is_torchvision(state) else "base_model.layer3."
    blocks = len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})
    depth = next((d for d, reps in DEPTHS.items() if reps[2] == blocks), None)
    size = next((n for n, cfg in SIZES.items() if cfg.depth == depth), None)
    if size is None:
        raise SystemExit(f"a ResNet with {blocks} layer3 blocks matches no TSM size {sorted(SIZES)}")
    classes = 174 if _is_torchvision(state) else int(state["new_fc.weight"].shape[0])
    return size, classes


def load_torchvision_resnet(
    backbone: ResNet, weights: str | os.PathLike | Mapping[str, torch.Tensor]
) -> list[str]:
    """Load an ImageNet ResNet state dict (or file) into ``backbone`` strictly, except the
    classifier ``fc.*``, whose names are returned."""
    state = weights if isinstance(weights, Mapping) else unwrap_state(read_checkpoint(weights), str(weights))
    state = dict(state)
    dropped = [k for k in IMAGENET_FC if state.pop(k, None) is not None]
    fill_bn_counters(backbone, state)
    load_state_dict_strict(backbone, state, str(weights) if not isinstance(weights, Mapping) else "")
    return dropped


def load_tsm(model: TSM, state: Mapping[str, torch.Tensor], source: str = "") -> None:
    """A TSM checkpoint into ``model``, or an ImageNet ResNet into its backbone."""
    if _is_torchvision(state):
        dropped = load_torchvision_resnet(model.backbone, state)
        print(f"loaded ImageNet ResNet into the backbone; dropped {dropped}; head.fc is new")
        return
    renamed = rename(state, TSM_RULES)
    fill_bn_counters(model, renamed)
    load_state_dict_strict(model, renamed, source)


def _build(size: str, num_classes: int, num_frames: int) -> tuple[TSM, dict[str, Any]]:
    cfg = {"_target_": f"actionlab.models.tsm.tsm_{size}", "num_classes": num_classes, "num_frames": num_frames}
    return TSM(size, num_classes, num_frames), cfg


def main(argv: list[str]) -> None:
    run_cli("tsm", argv, list(SIZES), infer_size, _build, load_tsm, lambda s: 8)
