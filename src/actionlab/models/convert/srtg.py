"""Importer of the released SRTG / 3D-ResNet / R(2+1)D ``.pth`` checkpoints.

Released files (``alexandrosstergiou/Squeeze-and-Recursion-Temporal-Gates``) are
``{'epoch', 'state_dict', 'optimizer'}`` saved from ``nn.DataParallel``, so every key carries
``module.``. Our modules keep the released names except the SR cell (``sar.lstm`` -> ``sar.rnn``).

    python -m actionlab.models.convert srtg IN.pth OUT.ckpt --model srtg_r3d_34 \
        [--num-classes N --partial] [--num-frames 16]

Strict by default: every checkpoint key must land and every model key must be filled, or a
:class:`~actionlab.models.convert.common.CheckpointMismatchError` lists what did not fit.
``--partial`` (fine-tuning on another label set) loads what fits and prints what was skipped.

The generic machinery here (:class:`ReleasedFormat`, :func:`convert_released`,
:func:`make_main`) also serves the MTNet and TokShift importers.
"""

from __future__ import annotations

import argparse
import collections
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from actionlab.models.convert.common import (
    CheckpointMismatchError,
    load_state_dict_partial,
    load_state_dict_strict,
    read_checkpoint,
    save_lab_checkpoint,
    strip_prefix,
)

__all__ = ["FORMAT", "ReleasedFormat", "convert_released", "format_report", "main", "make_main"]


@dataclass(frozen=True)
class ReleasedFormat:
    """How one family's released ``.pth`` maps onto our factories."""

    family: str
    module: str  # where the factories live
    models: tuple[str, ...]  # factory names accepted by --model
    prefixes: tuple[str, ...]  # stripped in order (DataParallel / wrapper prefixes)
    renames: tuple[tuple[str, str], ...]  # substring renames applied to every key
    head: str  # classifier module name, for the class count
    num_frames: int  # default clip length written to the model config
    model_kwargs: Callable[[Mapping[str, Tensor]], dict[str, Any]] = field(
        default=lambda state: {}
    )  # extra factory kwargs read off the state dict (e.g. the ViT input size)


def released_state(ckpt: Any, fmt: ReleasedFormat, source: str = "") -> dict[str, Tensor]:
    """The model weights of a released checkpoint, prefixes stripped and keys renamed."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointMismatchError(
            f"{source or 'checkpoint'} holds a {type(ckpt).__name__}, not a dict of weights; "
            f"pass a released {fmt.family} .pth file"
        )
    state = ckpt.get("state_dict", ckpt)
    for prefix in fmt.prefixes:
        state = strip_prefix(state, prefix)
    renamed = {}
    for key, value in state.items():
        for old, new in fmt.renames:
            key = key.replace(old, new)
        renamed[key] = value
    return renamed


def format_report(report: Mapping[str, list[str]]) -> str:
    """Human-readable summary of a partial load (what was skipped and why)."""
    lines = []
    for title, why in (
        ("missing", "left at initialisation"),
        ("unexpected", "in the checkpoint, not in the model"),
        ("shape", "shape differs, left at initialisation"),
        ("ignored", "not used by design"),
    ):
        items = report.get(title, [])
        if items:
            lines.append(f"{title} ({why}): {', '.join(items)}")
    return "\n".join(lines) or "every key loaded"


def convert_released(
    path: str | Path,
    fmt: ReleasedFormat,
    model: str,
    num_classes: int | None = None,
    num_frames: int | None = None,
    partial: bool = False,
) -> tuple[nn.Module, dict[str, Any], dict[str, list[str]]]:
    """Build ``model`` and load a released checkpoint into it.

    Returns the model, its config (``_target_`` + kwargs, as a lab checkpoint stores it) and the
    load report (empty lists in strict mode, which raises on any mismatch instead).
    """
    if model not in fmt.models:
        raise ValueError(
            f"--model must be one of {', '.join(fmt.models)} for {fmt.family}, got {model!r}"
        )
    # Released training files may pickle a MultiStepLR whose milestones are a Counter (a dict).
    with torch.serialization.safe_globals([collections.Counter]):
        ckpt = read_checkpoint(path)
    state = released_state(ckpt, fmt, str(path))
    head_key = f"{fmt.head}.weight"
    if head_key not in state:
        raise CheckpointMismatchError(
            f"{path} has no '{head_key}' after removing {fmt.prefixes}: not a released {fmt.family} "
            f"checkpoint? First keys: {', '.join(list(state)[:5])}"
        )
    ckpt_classes = int(state[head_key].shape[0])
    num_classes = ckpt_classes if num_classes is None else num_classes
    if num_classes != ckpt_classes and not partial:
        raise CheckpointMismatchError(
            f"{path} has {ckpt_classes} classes but --num-classes {num_classes} was asked; add "
            "--partial to load everything but the classifier (fine-tuning)"
        )
    cfg = {
        "_target_": f"{fmt.module}.{model}",
        "num_classes": num_classes,
        "num_frames": num_frames or fmt.num_frames,
        **fmt.model_kwargs(state),
    }
    factory = getattr(importlib.import_module(fmt.module), model)
    net = factory(**{k: v for k, v in cfg.items() if k != "_target_"})
    if partial:
        report = load_state_dict_partial(net, state)
    else:
        load_state_dict_strict(net, state, str(path))
        report = {"missing": [], "unexpected": [], "shape": []}
    return net, cfg, report


def make_main(fmt: ReleasedFormat) -> Callable[[list[str]], None]:
    """The ``python -m actionlab.models.convert <family>`` entry point for ``fmt``."""

    def main(argv: list[str]) -> None:
        parser = argparse.ArgumentParser(
            prog=f"python -m actionlab.models.convert {fmt.family}",
            description=f"Convert a released {fmt.family} .pth into an actionlab checkpoint.",
        )
        parser.add_argument("src", help="released .pth file")
        parser.add_argument("dst", help="output lab checkpoint (.ckpt)")
        parser.add_argument("--model", required=True, choices=fmt.models)
        parser.add_argument(
            "--num-classes", type=int, default=None, help="default: the checkpoint's"
        )
        parser.add_argument(
            "--num-frames", type=int, default=None, help=f"default: {fmt.num_frames}"
        )
        parser.add_argument("--partial", action="store_true", help="load what fits, list the rest")
        parser.add_argument(
            "--class-names", default=None, help="text file, one class name per line"
        )
        args = parser.parse_args(argv)
        net, cfg, report = convert_released(
            args.src, fmt, args.model, args.num_classes, args.num_frames, args.partial
        )
        names = None
        if args.class_names:
            names = Path(args.class_names).read_text().splitlines()
        save_lab_checkpoint(args.dst, net, cfg, names, None, source=str(args.src))
        print(f"wrote {args.dst} ({cfg['_target_']}, {cfg['num_classes']} classes)")
        if args.partial:
            print(format_report(report))

    return main


FORMAT = ReleasedFormat(
    family="srtg",
    module="actionlab.models.srtg",
    models=(
        "srtg_r3d_34",
        "srtg_r3d_50",
        "srtg_r3d_101",
        "srtg_r2plus1d_34",
        "srtg_r2plus1d_50",
        "srtg_r2plus1d_101",
        "r3d_34",
        "r3d_50",
        "r3d_101",
        "r2plus1d_34",
        "r2plus1d_50",
        "r2plus1d_101",
    ),
    prefixes=("module.",),
    renames=((".sar.lstm.", ".sar.rnn."),),
    head="fc",
    num_frames=16,
)

main = make_main(FORMAT)
