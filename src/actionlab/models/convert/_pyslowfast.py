"""Shared importer pieces for Zoo-I families: unwrap PySlowFast/VoV3D/TSM checkpoint dicts,
rename keys by ordered regex rules, read the training config PySlowFast stores, the common
command line.

PySlowFast (X3D) and VoV3D save ``{"epoch", "model_state", "optimizer_state", "cfg"}`` where
``cfg`` is the training config dumped as YAML (``slowfast/utils/checkpoint.py``
``save_checkpoint``: ``cfg.dump()``); TSM saves ``{"state_dict": ...}`` with ``module.``
prefixes (DataParallel). Caffe2 ``.pkl`` files are not supported.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from actionlab.models.convert.common import (
    CheckpointMismatchError,
    fill_bn_counters,
    load_state_dict_strict,
    strip_prefix,
)

__all__ = [
    "PYSLOWFAST_RULES",
    "Rules",
    "base_parser",
    "cfg_get",
    "cfg_protocol",
    "load_released",
    "pyslowfast_cfg",
    "rename",
    "unwrap_state",
]

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


def load_released(
    model: nn.Module, state: Mapping[str, torch.Tensor], rules: Rules, source: str = ""
) -> None:
    """Rename ``state`` by ``rules`` and load it into ``model`` with strict key accounting."""
    renamed = rename(state, rules)
    fill_bn_counters(model, renamed)
    load_state_dict_strict(model, renamed, source)


# ----------------------------------------------------------------------------------------------
# The training config inside PySlowFast / VoV3D checkpoints


def pyslowfast_cfg(ckpt: Any, source: str = "") -> dict[str, Any] | None:
    """The ``cfg`` a PySlowFast checkpoint stores (a YAML dump, or a dict), or None."""
    raw = ckpt.get("cfg") if isinstance(ckpt, Mapping) else None
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, str):
        import yaml

        try:
            parsed = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise CheckpointMismatchError(
                f"{source}: its 'cfg' entry is not the YAML PySlowFast writes ({err})"
            ) from err
        return parsed if isinstance(parsed, dict) else None
    return None


def cfg_get(cfg: Mapping[str, Any] | None, dotted: str) -> Any:
    """``cfg_get(cfg, "DATA.NUM_FRAMES")``; None where the key is absent."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def cfg_facts(cfg: Mapping[str, Any] | None) -> dict[str, tuple[Any, str]]:
    """What the stored training config says, as ``name -> (value, where)`` facts."""
    keys = {
        "num_classes": "MODEL.NUM_CLASSES",
        "num_frames": "DATA.NUM_FRAMES",
        "sampling_rate": "DATA.SAMPLING_RATE",
        "train_crop": "DATA.TRAIN_CROP_SIZE",
        "mean": "DATA.MEAN",
        "std": "DATA.STD",
    }
    facts = {}
    for name, dotted in keys.items():
        value = cfg_get(cfg, dotted)
        if value is not None:
            facts[name] = (list(value) if isinstance(value, (list, tuple)) else value, f"cfg {dotted}")
    return facts


def cfg_dataset(cfg: Mapping[str, Any] | None) -> str | None:
    name = cfg_get(cfg, "TRAIN.DATASET") or cfg_get(cfg, "TEST.DATASET")
    return str(name).lower() if name else None


def cfg_protocol(cfg: Mapping[str, Any], num_frames: int, defaults: Mapping[str, Any], source: str):
    """The input protocol the stored config describes (its dataset's test script), with
    ``defaults`` for what the config leaves out (an older PySlowFast without the key)."""
    from actionlab.pretrained.families import pyslowfast_kinetics, vov3d_something

    def get(dotted: str, key: str):
        value = cfg_get(cfg, dotted)
        return defaults[key] if value is None else value

    dataset = cfg_dataset(cfg) or "kinetics"
    jitter = tuple(int(v) for v in get("DATA.TRAIN_JITTER_SCALES", "jitter"))
    common = {
        "num_frames": num_frames,
        "train_crop": int(get("DATA.TRAIN_CROP_SIZE", "train_crop")),
        "test_crop": int(get("DATA.TEST_CROP_SIZE", "test_crop")),
        "jitter": jitter,
        "mean": tuple(float(v) for v in get("DATA.MEAN", "mean")),
        "std": tuple(float(v) for v in get("DATA.STD", "std")),
        "clips": int(get("TEST.NUM_ENSEMBLE_VIEWS", "clips")),
        "crops": int(get("TEST.NUM_SPATIAL_CROPS", "crops")),
    }
    if dataset.startswith("ssv") or "something" in dataset:
        protocol = vov3d_something(**common)
        # OpenCV frames stay BGR unless the config reverses them (REVERSE_INPUT_CHANNEL).
        bgr = not cfg_get(cfg, "DATA.REVERSE_INPUT_CHANNEL")
    elif dataset == "kinetics":
        protocol = pyslowfast_kinetics(
            sampling_rate=int(get("DATA.SAMPLING_RATE", "sampling_rate")),
            target_fps=float(get("DATA.TARGET_FPS", "target_fps")),
            **common,
        )
        bgr = bool(cfg_get(cfg, "DATA.REVERSE_INPUT_CHANNEL"))
    else:
        raise CheckpointMismatchError(
            f"{source}: cfg TRAIN.DATASET is {dataset!r}; the lab knows the test protocols of "
            "PySlowFast's kinetics and VoV3D's ssv1/ssv2 only. Pass --release NAME for a "
            "registry entry"
        )
    if bgr:
        from dataclasses import replace

        protocol = replace(protocol, channel_order="bgr")
    return protocol


def base_parser(family: str, what: str) -> argparse.ArgumentParser:
    """The options every Zoo-I importer takes."""
    parser = argparse.ArgumentParser(prog=f"python -m actionlab.models.convert {family}")
    parser.add_argument("input", help=f"released checkpoint ({what})")
    parser.add_argument("output", help="lab checkpoint to write (.ckpt)")
    parser.add_argument("--num-classes", type=int, help="classes (default: from the classifier)")
    parser.add_argument("--num-frames", type=int, help="frames per clip the model was trained on (a check)")
    parser.add_argument("--class-names", help="text file with one class name per line")
    parser.add_argument(
        "--release", help="registry entry the file is (python -m actionlab.pretrained list)"
    )
    return parser
