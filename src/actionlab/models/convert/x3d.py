"""Import PySlowFast X3D checkpoints (``x3d_{xs,s,m,l}.pyth``, ``model_state`` dicts) and the
X3D baselines of the VoV3D repository (``x3d_M_ssv2.pth`` ...).

``python -m actionlab.models.convert x3d x3d_m.pyth x3d_m.ckpt [--size m] [--release NAME]``.

XS, S and M are the same network (they differ in input); the network (M-type or L) comes from
the depth of res4 and the size from the training config inside the file (``cfg``: frames and
crop), the registry entry, or the file name; ``--size`` is a check, and contradicting evidence
is an error. The lab file records the input protocol: the registry entry's, else the one the
file's ``cfg`` describes (frames, rate, crops, mean/std, test views), else the size's paper
protocol; with the released head (``release_head``) that the 256-pixel test needs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from actionlab.models.convert._pyslowfast import (
    PYSLOWFAST_RULES,
    base_parser,
    cfg_facts,
    cfg_get,
    cfg_protocol,
    load_released,
    pyslowfast_cfg,
    unwrap_state,
)
from actionlab.models.convert.common import (
    CheckpointMismatchError,
    check_release,
    decide,
    read_checkpoint,
    release_of,
    write_converted,
)
from actionlab.models.x3d import SIZES, X3D

__all__ = ["GEOMETRY", "infer_size", "load_x3d", "main", "network_of"]

# PySlowFast configs/Kinetics/X3D_*.yaml: frames, rate, train crop, 3-crop test crop, jitter.
GEOMETRY: dict[str, dict[str, Any]] = {
    "xs": {"frames": 4, "rate": 12, "train_crop": 160, "test_crop": 182, "jitter": (182, 228)},
    "s": {"frames": 13, "rate": 6, "train_crop": 160, "test_crop": 182, "jitter": (182, 228)},
    "m": {"frames": 16, "rate": 5, "train_crop": 224, "test_crop": 256, "jitter": (256, 320)},
    "l": {"frames": 16, "rate": 5, "train_crop": 312, "test_crop": 356, "jitter": (356, 446)},
}
SAME_NETWORK = {"xs": "m", "s": "m", "m": "m", "l": "l"}


def network_of(state: dict[str, torch.Tensor], source: str = "") -> str:
    """``m`` (the XS/S/M network: 11 res4 blocks) or ``l`` (25)."""
    if any(".branch2.layers." in k for k in state):
        raise CheckpointMismatchError(
            f"{source} is a VoV3D checkpoint (T-OSA units under branch2.layers): convert it with "
            "python -m actionlab.models.convert vov3d"
        )
    blocks = {k.split(".")[1] for k in state if k.startswith("s4.")}
    if len(blocks) not in (11, 25):
        raise CheckpointMismatchError(
            f"{source}: res4 has {len(blocks)} blocks; X3D-XS/S/M have 11 and X3D-L 25"
        )
    return "l" if len(blocks) == 25 else "m"


def infer_size(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """``(network, num_classes)`` from released weights (res4 has 11 blocks in M, 25 in L)."""
    return network_of(state), int(state["head.projection.weight"].shape[0])


def load_x3d(model: X3D, state: dict[str, torch.Tensor], source: str = "") -> None:
    load_released(model, state, PYSLOWFAST_RULES, source)


def _size_from_cfg(cfg: dict | None) -> str | None:
    frames, crop = cfg_get(cfg, "DATA.NUM_FRAMES"), cfg_get(cfg, "DATA.TRAIN_CROP_SIZE")
    depth = cfg_get(cfg, "X3D.DEPTH_FACTOR")
    if depth is not None and float(depth) == 5.0:
        return "l"
    for size, g in GEOMETRY.items():
        if (frames, crop) == (g["frames"], g["train_crop"]):
            return size
    return None


def _size_from_name(path: str) -> str | None:
    match = re.search(r"x3d[_-](xs|s|m|l)(?![a-z])", Path(path).name, re.IGNORECASE)
    return match.group(1).lower() if match else None


def main(argv: list[str]) -> None:
    parser = base_parser("x3d", ".pyth/.pth")
    parser.add_argument("--size", choices=list(SIZES), help="model size (a check; default: inferred)")
    args = parser.parse_args(argv)
    src = args.input
    ckpt = read_checkpoint(src)
    state = unwrap_state(ckpt, src)
    cfg = pyslowfast_cfg(ckpt, src)
    if cfg_get(cfg, "DATA") is None:
        cfg = None  # a stub without the data section says nothing about the input
    network = network_of(state, src)
    num_classes = int(state["head.projection.weight"].shape[0]) if "head.projection.weight" in state else None
    arch = cfg_get(cfg, "MODEL.ARCH")
    if arch and str(arch).lower() != "x3d":
        raise CheckpointMismatchError(
            f"{src}: its cfg says MODEL.ARCH {arch}, not x3d; use the importer of that family"
        )
    facts = {**cfg_facts(cfg), "num_classes": (num_classes, "the classifier")}
    if args.num_frames:
        facts.setdefault("num_frames", (args.num_frames, "--num-frames"))
    release, strong = release_of(src, args.release)
    file_size = decide(
        "X3D size",
        src,
        [(_size_from_cfg(cfg), "cfg frames/crop"), (_size_from_name(src), "file name")],
    )
    if file_size:
        facts["config"] = (f"x3d_{file_size}", "cfg / file name")
    release = check_release(src, release, strong, facts)
    release_size = release.config.split("_", 1)[1] if release else None
    size = decide(
        "X3D size",
        src,
        [(args.size, "--size"), (file_size, "cfg / file name"), (release_size, "registry entry")],
        default=network,
        default_note=(
            f"{Path(src).name} has the X3D-{network.upper()} network and nothing (cfg, registry "
            f"entry, file name) tells its input size: recorded as x3d_{network}; pass --size"
        ),
    )
    if SAME_NETWORK[size] != network:
        raise CheckpointMismatchError(
            f"{src} has the X3D-{network.upper()} network ({'25' if network == 'l' else '11'} res4 "
            f"blocks) but the size is {size} ({'--size' if args.size == size else 'cfg / name'})"
        )
    geometry = GEOMETRY[size]
    frames = decide(
        "frames per clip",
        src,
        [
            (args.num_frames, "--num-frames"),
            (cfg_get(cfg, "DATA.NUM_FRAMES"), "cfg DATA.NUM_FRAMES"),
            (release.protocol.num_frames if release else None, "registry entry"),
        ],
        default=geometry["frames"],
    )
    if cfg is not None:
        protocol = cfg_protocol(
            cfg, frames, {**geometry, "sampling_rate": geometry["rate"], "mean": (0.45,) * 3,
                          "std": (0.225,) * 3, "clips": 10, "crops": 3, "target_fps": 30}, src,
        )
        origin = f"the PySlowFast cfg inside {Path(src).name}"
    else:
        from actionlab.pretrained.families import pyslowfast_kinetics, vov3d_something

        if num_classes == 174:
            protocol = vov3d_something(frames, geometry["train_crop"])
            origin = "VoV3D's Something-Something protocol (174 classes, no cfg in the file)"
        else:
            protocol = pyslowfast_kinetics(
                frames, geometry["rate"], geometry["train_crop"], geometry["test_crop"], geometry["jitter"]
            )
            origin = f"PySlowFast's Kinetics protocol of X3D-{size.upper()} (no cfg in the file)"
    num_classes = args.num_classes or num_classes
    cfg_model = {"_target_": f"actionlab.models.x3d.x3d_{size}", "num_classes": num_classes, "num_frames": frames}
    model = X3D(size, num_classes, frames)
    load_x3d(model, state, src)
    write_converted(args, model, cfg_model, release, protocol, origin, f"x3d {size}, {num_classes} classes, {frames} frames")
