"""Importer of the released RubiksNet checkpoints (``StanfordVL/RubiksNet``, ``pretrained/``).

A released file (``ssv2_{tiny,small,medium,large}.pth.tar``, ``ssv2_large_aq_budget0.125.pth.tar``,
``kinetics_*.pth.tar``) is a dict with ``tier``, ``num_classes``, ``num_frames``, ``variant``
(``rubiks3d`` or ``rubiks3d-aq``; old logs call AQ ``attention``) and ``model``, the state dict
of ``RubiksNet``, whose key names ours reproduce one to one (``docs/models/rubiksnet.md``).

Command line::

    python -m actionlab.models.convert rubiksnet ssv2_tiny.pth.tar rubiks_tiny_ssv2.ckpt \\
        [--class-names category.txt] [--shift-impl auto]

writes a lab checkpoint that records its input protocol (the registry entry's with
``--release NAME`` or when the file keeps its published name; else TSM's test protocol: 2 clips
x 3 crops for the 174 SSv2 classes, 1 centre clip otherwise); evaluate it the authors' way with
``python eval.py ckpt_path=rubiks_tiny_ssv2.ckpt data=ssv2 data.root=...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from actionlab.models.convert.common import (
    CheckpointMismatchError,
    check_release,
    describe_protocol,
    fill_bn_counters,
    lab_protocol,
    load_state_dict_strict,
    read_checkpoint,
    read_class_names,
    release_of,
    save_lab_checkpoint,
    strip_prefix,
)
from actionlab.models.rubiksnet import TIERS, VARIANTS, RubiksNet

META_KEYS = ("tier", "num_classes", "num_frames", "variant", "model")
VARIANT_ALIASES = {"attention": "rubiks3d-aq"}


def read_official(path: str | Path) -> dict[str, Any]:
    """The released dict, validated: known tier and variant, a state dict under ``model``."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in META_KEYS):
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointMismatchError(
            f"{path} is not a released RubiksNet checkpoint: expected a dict with keys "
            f"{list(META_KEYS)}, found {found}. Lab checkpoints (.ckpt) load with eval.py instead."
        )
    variant = VARIANT_ALIASES.get(ckpt["variant"], ckpt["variant"])
    if ckpt["tier"] not in TIERS or variant not in VARIANTS:
        raise CheckpointMismatchError(
            f"{path}: unknown RubiksNet tier {ckpt['tier']!r} or variant {ckpt['variant']!r} "
            f"(known tiers {sorted(TIERS)}, variants {list(VARIANTS)})"
        )
    if not isinstance(ckpt["model"], dict):
        raise CheckpointMismatchError(f"{path}: 'model' is not a state dict")
    return {**ckpt, "variant": variant}


def load_official(path: str | Path, cls: type[RubiksNet] = RubiksNet, **kwargs) -> RubiksNet:
    """Build the checkpoint's RubiksNet and load its weights strictly (see ``RubiksNet.load_pretrained``)."""
    ckpt = read_official(path)
    model = cls(
        tier=ckpt["tier"],
        num_classes=int(ckpt["num_classes"]),
        num_frames=int(ckpt["num_frames"]),
        variant=ckpt["variant"],
        **kwargs,
    )
    state = strip_prefix(ckpt["model"], "module.")  # files saved from DataParallel
    # BatchNorm counters are absent from files written by torch < 0.4.1; they are not weights.
    fill_bn_counters(model, state)
    load_state_dict_strict(model, state, source=str(path))
    return model


def model_config(model: RubiksNet, shift_impl: str = "auto") -> dict[str, Any]:
    """The Hydra node (``_target_`` + kwargs) that rebuilds ``model``, as in ``conf/model/``."""
    suffix = "_aq" if model.variant == "rubiks3d-aq" else ""
    cfg: dict[str, Any] = {
        "_target_": f"actionlab.models.rubiksnet.rubiksnet_{model.tier}{suffix}",
        "num_classes": model.num_classes,
        "num_frames": model.num_frames,
        "shift_lr_mult": model.shift_lr_mult,
        "shift_impl": shift_impl,
    }
    if suffix:
        cfg.update(aq_budget=model.aq_budget, aq_budget_weight=model.aq_budget_weight)
    return cfg


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m actionlab.models.convert rubiksnet",
        description="Convert a released RubiksNet .pth.tar into an actionlab checkpoint.",
    )
    parser.add_argument("input", type=Path, help="released file, e.g. ssv2_tiny.pth.tar")
    parser.add_argument("output", type=Path, help="lab checkpoint to write (.ckpt)")
    parser.add_argument("--class-names", type=Path, default=None,
                        help="text file with one class name per line in label order (category.txt)")
    parser.add_argument("--shift-impl", default="auto", choices=("auto", "kernel", "reference"))
    parser.add_argument("--release", help="registry entry the file is (python -m actionlab.pretrained list)")
    args = parser.parse_args(argv)
    model = load_official(args.input, shift_impl=args.shift_impl)
    class_names = read_class_names(args.class_names, model.num_classes)
    cfg = model_config(model, args.shift_impl)
    config = cfg["_target_"].rsplit(".", 1)[1].replace("rubiksnet_", "rubiks_")
    release, strong = release_of(args.input, args.release)
    release = check_release(
        args.input, release, strong,
        {
            "config": (config, "the file's tier/variant"),
            "num_classes": (model.num_classes, "the file's num_classes"),
            "num_frames": (model.num_frames, "the file's num_frames"),
        },
    )
    from actionlab.pretrained.families import RUBIKSNET_REFERENCE, tsn_segments

    view = "2clip" if model.num_classes == 174 else "1clip"
    protocol = lab_protocol(
        args.input, release, tsn_segments(model.num_frames, view, RUBIKSNET_REFERENCE),
        f"RubiksNet's test protocol ({view}, {model.num_classes} classes)",
    )
    save_lab_checkpoint(
        args.output, model, cfg, class_names=class_names,
        data_cfg=None, source=f"StanfordVL/RubiksNet release: {args.input.name}", protocol=protocol,
    )
    print(f"wrote {args.output}: RubiksNet-{model.tier} ({model.variant}), "
          f"{model.num_classes} classes, {model.num_frames} frames")
    print(describe_protocol(protocol))
