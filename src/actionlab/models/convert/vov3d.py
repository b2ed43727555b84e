"""Import VoV3D checkpoints (``youngwanLEE/VoV3D``, PySlowFast ``model_state`` dicts).

``python -m actionlab.models.convert vov3d vov3d_L_k400.pth vov3d_l.ckpt [--release NAME]``.

The size is read off the keys: the stem width (inner / 2), the D(2+1)D units per T-OSA and the
blocks per stage must be one of the lab's sizes, or the file is refused with its structure.
Frames come from the file's ``cfg`` (``DATA.NUM_FRAMES``), the registry entry or the file name
(``_f32`` / ``_F32``), each a check on the others. The protocol recorded is the registry
entry's, else the one the ``cfg`` describes, else VoV3D's test protocol for the class count
(174: Something-Something 2 x 3 views at 256; otherwise Kinetics 10 x 3).
"""

from __future__ import annotations

import re
from pathlib import Path

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
from actionlab.models.vov3d import NUM_UNITS, SIZES, VoV3D

__all__ = ["infer_size", "load_vov3d", "main", "structure"]


def structure(state: dict[str, torch.Tensor], source: str = "") -> tuple[int, int, tuple[int, ...]]:
    """``(inner width, D(2+1)D units per T-OSA, blocks per stage)`` of released VoV3D weights."""
    stem = "s1.pathway0_stem.conv_xy.weight"
    if stem not in state:
        raise CheckpointMismatchError(f"{source} has no {stem}: not a PySlowFast/VoV3D checkpoint")
    if not any(".branch2.layers." in k for k in state):
        raise CheckpointMismatchError(
            f"{source} is an X3D checkpoint (no T-OSA units under branch2.layers): convert it "
            "with python -m actionlab.models.convert x3d"
        )
    inner = 2 * int(state[stem].shape[0])
    units = len({m.group(1) for k in state if (m := re.match(r"s2\.pathway0_res0\.branch2\.layers\.(\d+)\.", k))})
    blocks = tuple(
        len({k.split(".")[1] for k in state if k.startswith(f"s{s}.pathway0_res")}) for s in (2, 3, 4, 5)
    )
    return inner, units, blocks


def infer_size(state: dict[str, torch.Tensor], source: str = "") -> tuple[str, int]:
    """``(size, num_classes)`` from released weights, or a refusal naming the file's structure."""
    inner, units, blocks = structure(state, source)
    for name, cfg in SIZES.items():
        if cfg.inner == inner and cfg.blocks == blocks and units == NUM_UNITS:
            return name, int(state["head.projection.weight"].shape[0])
    known = "; ".join(f"{n.upper()}: inner {c.inner}, {NUM_UNITS} units, blocks {c.blocks}" for n, c in SIZES.items())
    raise CheckpointMismatchError(
        f"{source}: VoV3D with inner width {inner}, {units} D(2+1)D units per T-OSA and blocks "
        f"{blocks} matches no lab VoV3D size ({known})"
    )


def load_vov3d(model: VoV3D, state: dict[str, torch.Tensor], source: str = "") -> None:
    load_released(model, state, PYSLOWFAST_RULES, source)


def _frames_from_name(path: str) -> int | None:
    match = re.search(r"[_-]f(\d+)(?![0-9])", Path(path).name, re.IGNORECASE)
    return int(match.group(1)) if match else None


def main(argv: list[str]) -> None:
    parser = base_parser("vov3d", ".pyth/.pth")
    parser.add_argument("--size", choices=list(SIZES), help="model size (a check; default: inferred)")
    args = parser.parse_args(argv)
    src = args.input
    ckpt = read_checkpoint(src)
    state = unwrap_state(ckpt, src)
    cfg = pyslowfast_cfg(ckpt, src)
    if cfg_get(cfg, "DATA") is None:
        cfg = None
    arch = cfg_get(cfg, "MODEL.ARCH")
    if arch and str(arch).lower() != "vov3d":
        raise CheckpointMismatchError(f"{src}: its cfg says MODEL.ARCH {arch}, not vov3d")
    size, num_classes = infer_size(state, src)
    if args.size and args.size != size:
        raise CheckpointMismatchError(
            f"{src} has the VoV3D-{size.upper()} structure but --size {args.size} was given"
        )
    facts = {
        **cfg_facts(cfg),
        "num_classes": (num_classes, "the classifier"),
        "config": (f"vov3d_{size}", "the keys"),
    }
    name_frames = _frames_from_name(src)
    if name_frames:
        facts.setdefault("num_frames", (name_frames, "file name"))
    release, strong = release_of(src, args.release)
    release = check_release(src, release, strong, facts)
    frames = decide(
        "frames per clip",
        src,
        [
            (args.num_frames, "--num-frames"),
            (cfg_get(cfg, "DATA.NUM_FRAMES"), "cfg DATA.NUM_FRAMES"),
            (name_frames, "file name"),
            (release.protocol.num_frames if release else None, "registry entry"),
        ],
        default=16,
        default_note=f"{Path(src).name}: no cfg, registry entry or _f<frames> name: 16 frames assumed",
    )
    from actionlab.pretrained.families import pyslowfast_kinetics, vov3d_something

    if cfg is not None:
        defaults = {"jitter": (256, 320), "train_crop": 224, "test_crop": 256, "mean": (0.45,) * 3,
                    "std": (0.225,) * 3, "clips": 10, "crops": 3, "sampling_rate": 5, "target_fps": 30}
        protocol = cfg_protocol(cfg, frames, defaults, src)
        origin = f"the PySlowFast cfg inside {Path(src).name}"
    elif num_classes == 174:
        protocol = vov3d_something(frames)
        origin = "VoV3D's Something-Something protocol (174 classes, no cfg in the file)"
    else:
        protocol = pyslowfast_kinetics(frames, 5, 224, 256, (256, 320))
        origin = "VoV3D's Kinetics protocol (no cfg in the file)"
    num_classes = args.num_classes or num_classes
    cfg_model = {"_target_": f"actionlab.models.vov3d.vov3d_{size}", "num_classes": num_classes, "num_frames": frames}
    model = VoV3D(size, num_classes, frames)
    load_vov3d(model, state, src)
    write_converted(args, model, cfg_model, release, protocol, origin, f"vov3d {size}, {num_classes} classes, {frames} frames")
