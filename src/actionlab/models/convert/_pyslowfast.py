"""Shared importer pieces for Zoo-I families: unwrap PySlowFast/VoV3D/TSM checkpoint dicts,
rename keys by ordered regex rules, and the common command line.

PySlowFast (X3D) and VoV3D save ``{"model_state": ..., "optimizer_state": ..., "cfg": str}``;
TSM saves ``{"state_dict": ...}`` with ``module.`` prefixes (DataParallel). Caffe2 ``.pkl``
files are not supported.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from actionlab.models.convert.common import (
    CheckpointMismatchError,
    load_state_dict_strict,
    read_checkpoint,
    save_lab_checkpoint,
    strip_prefix,
)

Rules = Sequence[tuple[str, str]]

# PySlowFast -> actionlab names, shared by X3D and VoV3D (same stem, ResBlock and head code).
PYSLOWFAST_RULES: Rules = (
    (r"^s1\.pathway0_stem\.conv_xy\.", "stem.conv_xy."),
    (r"^s1\.pathway0_stem\.conv\.", "stem.conv_t.conv."),
    (r"^s1\.pathway0_stem\.bn\.", "stem.conv_t.bn."),
    (r"^s(\d)\.pathway0_res(\d+)\.", r"s\1.\2."),
    (r"\.branch1\.weight$", ".branch1.conv.weight"),
    (r"\.branch1_bn\.", ".branch1.bn."),
    # X3D transform and the T-OSA aggregation: direct children a/b/c of branch2.
    (r"\.branch2\.(a|b|c)\.weight$", r".branch2.\1.conv.weight"),
    (r"\.branch2\.(a|b|c)_bn\.", r".branch2.\1.bn."),
    # VoV3D D(2+1)D units keep a/c as nn.Sequential(conv, bn[, relu]).
    (r"\.layers\.(\d+)\.(a|c)\.0\.", r".layers.\1.\2.conv."),
    (r"\.layers\.(\d+)\.(a|c)\.1\.", r".layers.\1.\2.bn."),
    (r"^head\.conv_5\.weight$", "head.conv_5.conv.weight"),
    (r"^head\.conv_5_bn\.", "head.conv_5.bn."),
)


def unwrap_state(ckpt: Any, source: str = "") -> dict[str, torch.Tensor]:
    """The weights of a released checkpoint: ``model_state`` / ``state_dict`` / ``model`` entry
    or the dict itself, without ``module.`` prefixes."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointMismatchError(
            f"{source or 'checkpoint'} holds a {type(ckpt).__name__}, not a dict of weights; "
            "pass a PySlowFast/VoV3D .pyth or a TSM/torchvision .pth(.tar) file"
        )
    for key in ("model_state", "state_dict", "model"):
        if key in ckpt and isinstance(ckpt[key], Mapping):
            ckpt = ckpt[key]
            break
    state = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointMismatchError(
            f"{source or 'checkpoint'} has no tensors under model_state/state_dict/model; "
            f"top-level keys: {sorted(map(str, ckpt))[:10]}"
        )
    return strip_prefix(state, "module.")


def rename(state: Mapping[str, torch.Tensor], rules: Rules) -> dict[str, torch.Tensor]:
    """Apply every ``(pattern, replacement)`` in order to each key."""
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def fill_bn_counters(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Add BN ``num_batches_tracked`` counters that older checkpoints lack (bookkeeping only,
    not weights); returns the names added."""
    added = []
    for name, buf in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = torch.zeros_like(buf)
            added.append(name)
    return added


def load_released(
    model: nn.Module, state: Mapping[str, torch.Tensor], rules: Rules, source: str = ""
) -> None:
    """Rename ``state`` by ``rules`` and load it into ``model`` with strict key accounting."""
    renamed = rename(state, rules)
    fill_bn_counters(model, renamed)
    load_state_dict_strict(model, renamed, source)


def run_cli(
    family: str,
    argv: list[str],
    sizes: Sequence[str],
    infer: Callable[[dict[str, torch.Tensor]], tuple[str, int]],
    build: Callable[[str, int, int], tuple[nn.Module, dict[str, Any]]],
    load: Callable[[nn.Module, dict[str, torch.Tensor], str], None],
    default_frames: Callable[[str], int],
) -> None:
    """``python -m actionlab.models.convert <family> IN OUT [--size S] [--num-classes N]
    [--num-frames T] [--class-names FILE]``: convert, load strictly, write a lab checkpoint.

    ``infer(state) -> (size, num_classes)`` reads the architecture from the weights;
    ``build(size, num_classes, num_frames) -> (model, model_cfg)``;
    ``load(model, state, source)`` raises on any key mismatch.
    """
    parser = argparse.ArgumentParser(prog=f"python -m actionlab.models.convert {family}")
    parser.add_argument("input", help="released checkpoint (.pyth/.pth/.pth.tar)")
    parser.add_argument("output", help="lab checkpoint to write (.ckpt)")
    parser.add_argument("--size", choices=list(sizes), help="model size (default: inferred)")
    parser.add_argument("--num-classes", type=int, help="classes (default: from the classifier)")
    parser.add_argument("--num-frames", type=int, help="frames per clip the model was trained on")
    parser.add_argument("--class-names", help="text file with one class name per line")
    args = parser.parse_args(argv)
    state = unwrap_state(read_checkpoint(args.input), args.input)
    size, num_classes = infer(state)
    size = args.size or size
    num_classes = args.num_classes or num_classes
    frames = args.num_frames or default_frames(size)
    model, model_cfg = build(size, num_classes, frames)
    load(model, state, args.input)
    names = None
    if args.class_names:
        names = [ln.strip() for ln in Path(args.class_names).read_text().splitlines() if ln.strip()]
        if len(names) != num_classes:
            raise SystemExit(
                f"--class-names lists {len(names)} names but the model has {num_classes} classes"
            )
    save_lab_checkpoint(args.output, model, model_cfg, names, None, source=str(args.input))
    print(f"wrote {args.output}: {family} {size}, {num_classes} classes, {frames} frames")
