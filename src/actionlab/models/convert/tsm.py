"""Import TSM checkpoints (``mit-han-lab/temporal-shift-module``) and torchvision ResNets.

* TSM ``.pth(.tar)``: ``{"state_dict": {"module.base_model.layer1.0.conv1.net.weight", ...,
  "module.new_fc.weight"}}`` (``.net`` is the shift wrapper around ``conv1``) -> our TSM. A file
  trained with ``--dropout 0`` has its classifier at ``base_model.fc`` (TSN puts the new FC in
  place of the ResNet's when there is no dropout): it loads, with the model's dropout 0.
* torchvision ImageNet ResNet state dict (``conv1.weight`` ... ``fc.bias``) -> the TSM
  backbone; the ImageNet ``fc`` is dropped (reported) and the new head keeps its init.

Refused, with what the file is: a TSN checkpoint (no ``.net.`` shift wrappers: TSM's 2D
baseline, e.g. ``TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth``), in-place ``block`` shift
files. The segment count comes from the file name (``segment16``), the registry entry or
``--num-frames``, each a check on the others.

``python -m actionlab.models.convert tsm TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth out.ckpt``
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from actionlab.models.convert._pyslowfast import Rules, base_parser, rename, unwrap_state
from actionlab.models.convert.common import (
    CheckpointMismatchError,
    check_release,
    decide,
    fill_bn_counters,
    load_state_dict_strict,
    read_checkpoint,
    release_of,
    write_converted,
)
from actionlab.models.resnet import DEPTHS, ResNet
from actionlab.models.tsm import SIZES, TSM

__all__ = ["TSM_RULES", "describe_file", "infer_size", "load_torchvision_resnet", "load_tsm", "main"]

TSM_RULES: Rules = (
    (r"^base_model\.fc\.", "head.fc."),  # --dropout 0: TSN's new FC replaces the ResNet's fc
    (r"^base_model\.", "backbone."),
    (r"\.conv1\.net\.", ".conv1."),
    (r"^new_fc\.", "head.fc."),
)
IMAGENET_FC = ("fc.weight", "fc.bias")
NAME_PATTERN = re.compile(
    r"TSM_(?P<dataset>[a-z0-9]+)_(?P<modality>RGB|Flow)_(?P<arch>[a-z0-9]+)"
    r"(?:_shift(?P<div>\d+)_(?P<place>blockres|block))?_(?P<consensus>avg)_segment(?P<segments>\d+)"
)
DATASETS = {"somethingv2": "ssv2", "something": "ssv1", "kinetics": "kinetics400"}


def _is_torchvision(state: Mapping[str, torch.Tensor]) -> bool:
    return "conv1.weight" in state and not any(k.startswith("base_model.") for k in state)


def _classifier(state: Mapping[str, torch.Tensor]) -> str | None:
    """Where a TSM file keeps its classifier: ``new_fc`` or ``base_model.fc`` (dropout 0)."""
    if "new_fc.weight" in state:
        if "base_model.fc.weight" in state:
            raise CheckpointMismatchError(
                "the file has both new_fc and base_model.fc classifiers; TSN keeps one"
            )
        return "new_fc"
    return "base_model.fc" if "base_model.fc.weight" in state else None


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """What a TSM release's file name says (``TSM_<dataset>_RGB_<arch>_shift8_blockres_avg_segment8``)."""
    match = NAME_PATTERN.search(Path(path).name)
    return match.groupdict() if match else {}


def _refuse_tsn(state: Mapping[str, torch.Tensor], source: str) -> None:
    """A TSN checkpoint has the same ResNet without TSM's shift wrappers (``.net``)."""
    if any(".net." in k for k in state) or not any(k.startswith("base_model.layer") for k in state):
        return
    raise CheckpointMismatchError(
        f"{source} is a TSN checkpoint (no temporal shift): its bottlenecks' conv1 has no '.net.' "
        "shift wrapper (base_model.layer1.0.conv1.weight, where TSM files have "
        "base_model.layer1.0.conv1.net.weight). Loading it into TSM would shift features the "
        "weights never saw shifted; actionlab has no TSN model to load it into"
    )


def infer_size(state: Mapping[str, torch.Tensor]) -> tuple[str, int]:
    """``(size, num_classes)``: depth from the number of layer3 blocks; classes from the
    classifier (``new_fc`` or ``base_model.fc``) or 174 for an ImageNet trunk (override with
    ``--num-classes``)."""
    prefix = "layer3." if _is_torchvision(state) else "base_model.layer3."
    blocks = len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})
    depth = next((d for d, reps in DEPTHS.items() if reps[2] == blocks), None)
    size = next((n for n, cfg in SIZES.items() if cfg.depth == depth), None)
    if size is None:
        raise SystemExit(f"a ResNet with {blocks} layer3 blocks matches no TSM size {sorted(SIZES)}")
    if _is_torchvision(state):
        return size, 174
    head = _classifier(state)
    if head is None:
        raise CheckpointMismatchError(
            "no classifier: a TSM file has new_fc.weight (or base_model.fc.weight when trained "
            f"with --dropout 0); first keys: {', '.join(list(state)[:5])}"
        )
    return size, int(state[f"{head}.weight"].shape[0])


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
    _refuse_tsn(state, source or "the checkpoint")
    renamed = rename(state, TSM_RULES)
    fill_bn_counters(model, renamed)
    load_state_dict_strict(model, renamed, source)


def main(argv: list[str]) -> None:
    parser = base_parser("tsm", ".pth/.pth.tar")
    parser.add_argument("--size", choices=list(SIZES), help="model size (a check; default: inferred)")
    args = parser.parse_args(argv)
    src = args.input
    state = unwrap_state(read_checkpoint(src), src)
    torchvision = _is_torchvision(state)
    if not torchvision:
        _refuse_tsn(state, src)
    size, num_classes = infer_size(state)
    if args.size and args.size != size:
        raise CheckpointMismatchError(f"{src} is a TSM-{size.upper()} but --size {args.size} was given")
    named = describe_file(src)
    if named.get("place") == "block" or any(re.match(r"base_model\.layer\d\.\d+\.net\.", k) for k in state):
        raise CheckpointMismatchError(
            f"{src} shifts whole blocks in place (shift_place 'block'); the lab's TSM shifts the "
            "residual branch ('blockres') only"
        )
    name_frames = int(named["segments"]) if named else None
    facts = {
        "num_classes": (num_classes, "the classifier") if not torchvision else (None, ""),
        "config": (f"tsm_{size}", "the keys"),
        "num_frames": (name_frames, "file name segment<N>"),
    }
    release, strong = release_of(src, args.release)
    release = check_release(src, release, strong, facts)
    frames = decide(
        "segments per clip",
        src,
        [
            (args.num_frames, "--num-frames"),
            (name_frames, "file name segment<N>"),
            (release.protocol.num_frames if release else None, "registry entry"),
        ],
        default=8,
    )
    dataset = DATASETS.get(named.get("dataset", "")) if named else None
    dataset = dataset or (release.dataset if release else None)
    from actionlab.pretrained.families import tsn_segments

    view = "1clip" if dataset == "kinetics400" or torchvision or dataset is None else "2clip"
    protocol = tsn_segments(frames, view)
    origin = f"TSM's test protocol for {dataset or 'an unknown dataset'} ({view})"
    num_classes = args.num_classes or num_classes
    cfg: dict[str, Any] = {"_target_": f"actionlab.models.tsm.tsm_{size}", "num_classes": num_classes, "num_frames": frames}
    if named.get("div") and int(named["div"]) != 8:
        cfg["shift_div"] = int(named["div"])
    if not torchvision and _classifier(state) == "base_model.fc":
        cfg["dropout"] = 0.0
        print(f"{Path(src).name} was trained with --dropout 0 (classifier at base_model.fc)")
    model = TSM(**{k: v for k, v in cfg.items() if k != "_target_" and k != "size"}, size=size)
    load_tsm(model, state, src)
    write_converted(args, model, cfg, release, protocol, origin, f"tsm {size}, {num_classes} classes, {frames} frames")
