"""Importer of Google's ImageNet-21k ViT ``.npz`` files into ViT / TokShift video models.

Files: ``vit_models/imagenet21k/ViT-{B,L}_16.npz`` (the TokShift README's ``ViT-{B,L}_16_Img21.npz``
are copies). Key table (the release's ``load_from``; ``D`` hidden,
``h`` heads, ``d = D/h``, block ``i``):

==================================================================  ==================================
``embedding/kernel`` [16,16,3,D] (HWIO)                              ``...patch_embeddings.weight`` (OIHW)
``embedding/bias``, ``cls``                                          ``...patch_embeddings.bias``, ``...cls_token``
``Transformer/posembed_input/pos_embedding`` [1,197,D]               ``...position_embeddings`` (resized)
``Transformer/encoder_norm/{scale,bias}``                            ``...encoder.encoder_norm``
``Transformer/encoderblock_i/LayerNorm_{0,2}/{scale,bias}``          ``layer.i.{attention_norm,ffn_norm}``
``.../MultiHeadDotProductAttention_1/{query,key,value}/kernel`` [D,h,d]  ``attn.{query,key,value}.weight`` = view(D,D).T
``.../MultiHeadDotProductAttention_1/{query,key,value}/bias`` [h,d]  ``...bias`` = view(-1)
``.../MultiHeadDotProductAttention_1/out/kernel`` [h,d,D], ``bias``  ``attn.out.weight`` = view(D,D).T
``.../MlpBlock_3/Dense_{0,1}/{kernel,bias}``                         ``ffn.fc{1,2}`` (kernel transposed)
``head/*``, ``pre_logits/*``                                         not loaded: the head starts at zero
==================================================================  ==================================

Position embeddings are resized to the model's input size (bilinear, corners aligned, as the
released ``scipy.ndimage.zoom(order=1)``), so the 224 file serves 256 and 384 models.

    python -m actionlab.models.convert vit ViT-B_16.npz OUT.ckpt --model tokshift_base \
        --num-classes 400 [--num-frames 8] [--img-size 224] [--partial]

``.npz`` files are read with ``allow_pickle=False`` (no code runs while loading). Strict by
default: every array must be used (or be a known head) and every model weight filled. The lab
file records TokShift's Kinetics-400 protocol at the model's frames and size (the recipes these
weights start), with the registry entry (``vit_b16_in21k`` / ``vit_l16_in21k``) when the file is
one; ``--release`` checks B vs L against it.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from actionlab.models.convert.common import (
    CheckpointMismatchError,
    check_release,
    describe_protocol,
    lab_protocol,
    load_state_dict_partial,
    load_state_dict_strict,
    release_of,
    save_lab_checkpoint,
)
from actionlab.models.convert.srtg import format_report
from actionlab.models.vit import VideoViT, resize_pos_embed

__all__ = ["IGNORED_PREFIXES", "MODELS", "convert_npz", "main", "npz_to_state", "read_npz"]

MODELS = ("tokshift_base", "tokshift_large", "vit_base", "vit_large")
IGNORED_PREFIXES = ("head/", "pre_logits/")
HEAD_KEYS = ("head.weight", "head.bias")


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a ``.npz`` file, without unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ViT weights not found: {path} (check the path you passed)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as err:  # numpy raises several types for foreign or corrupt files
        raise CheckpointMismatchError(
            f"cannot read {path} as a numpy .npz of arrays: {err}. Is it Google's ViT-*.npz?"
        ) from err


def _t(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def npz_to_state(
    weights: Mapping[str, np.ndarray], model: VideoViT
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """Map Google ViT arrays to ``model``'s state-dict names.

    Returns ``(state, used_keys, ignored_keys)``; keys neither used nor ignored are the caller's
    "unexpected" ones. Arrays absent from ``weights`` are simply not produced.
    """
    dim = model.dims.hidden
    state: dict[str, Tensor] = {}
    used: list[str] = []

    def put(src: str, dst: str, fn=lambda a: _t(a)) -> None:
        if src in weights:
            state[dst] = fn(weights[src])
            used.append(src)

    emb, enc = "transformer.embeddings.", "transformer.encoder."
    put("embedding/kernel", emb + "patch_embeddings.weight", lambda a: _t(a.transpose(3, 2, 0, 1)))
    put("embedding/bias", emb + "patch_embeddings.bias")
    put("cls", emb + "cls_token")
    grid = model.transformer.embeddings.grid
    put(
        "Transformer/posembed_input/pos_embedding",
        emb + "position_embeddings",
        lambda a: resize_pos_embed(_t(a), (grid, grid)),
    )
    put("Transformer/encoder_norm/scale", enc + "encoder_norm.weight")
    put("Transformer/encoder_norm/bias", enc + "encoder_norm.bias")
    for i in range(model.dims.layers):
        root, dst = f"Transformer/encoderblock_{i}/", f"{enc}layer.{i}."
        for norm, ours in (("LayerNorm_0", "attention_norm"), ("LayerNorm_2", "ffn_norm")):
            put(f"{root}{norm}/scale", f"{dst}{ours}.weight")
            put(f"{root}{norm}/bias", f"{dst}{ours}.bias")
        attn = root + "MultiHeadDotProductAttention_1/"
        for proj in ("query", "key", "value", "out"):
            put(
                f"{attn}{proj}/kernel",
                f"{dst}attn.{proj}.weight",
                lambda a: _t(a.reshape(dim, dim).T),
            )
            put(f"{attn}{proj}/bias", f"{dst}attn.{proj}.bias", lambda a: _t(a.reshape(-1)))
        for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            put(f"{root}MlpBlock_3/{dense}/kernel", f"{dst}ffn.{fc}.weight", lambda a: _t(a.T))
            put(f"{root}MlpBlock_3/{dense}/bias", f"{dst}ffn.{fc}.bias")
    ignored = sorted(k for k in weights if k.startswith(IGNORED_PREFIXES))
    return state, used, ignored


def convert_npz(
    path: str | Path,
    model: str | VideoViT,
    num_classes: int = 400,
    num_frames: int = 8,
    img_size: int = 224,
    partial: bool = False,
) -> tuple[VideoViT, dict[str, Any], dict[str, list[str]]]:
    """Build ``model`` (a factory name of :data:`MODELS`, or a ready :class:`VideoViT`) and load
    the ``.npz`` into it. Returns the model, its config and the load report; the head always
    stays zero (reported under ``missing``) and the 21k head arrays under ``ignored``."""
    if isinstance(model, str):
        if model not in MODELS:
            raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
        cfg = {
            "_target_": f"actionlab.models.vit.{model}",
            "num_classes": num_classes,
            "num_frames": num_frames,
            "img_size": img_size,
        }
        net = getattr(importlib.import_module("actionlab.models.vit"), model)(
            num_classes=num_classes, num_frames=num_frames, img_size=img_size
        )
    else:
        net, cfg = model, {}
    weights = read_npz(path)
    state, used, ignored = npz_to_state(weights, net)
    unexpected = sorted(set(weights) - set(used) - set(ignored))
    # The classifier is never imported: it starts at zero (released zero_head=True).
    state.update({k: v for k, v in net.state_dict().items() if k in HEAD_KEYS})
    if partial:
        report = load_state_dict_partial(net, state)
        report["unexpected"] = sorted(set(report["unexpected"]) | set(unexpected))
    else:
        if unexpected:
            raise CheckpointMismatchError(
                f"{path}: arrays with no place in {type(net).__name__} "
                f"({net.dims.layers} blocks, hidden {net.dims.hidden}): {', '.join(unexpected[:20])}"
                f"{' ...' if len(unexpected) > 20 else ''}. Wrong --model (B vs L)? "
                "Or pass --partial to load what fits."
            )
        load_state_dict_strict(net, state, str(path))
        report = {"missing": [], "unexpected": [], "shape": []}
    report["missing"] = sorted(set(report["missing"]) | set(HEAD_KEYS))
    report["ignored"] = ignored
    return net, cfg, report


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m actionlab.models.convert vit",
        description="Convert Google's ImageNet-21k ViT .npz into an actionlab ViT/TokShift checkpoint.",
    )
    parser.add_argument("src", help="ViT-B_16.npz / ViT-L_16.npz")
    parser.add_argument("dst", help="output lab checkpoint (.ckpt)")
    parser.add_argument("--model", default="tokshift_base", choices=MODELS)
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224, help="224, 256 or 384")
    parser.add_argument("--partial", action="store_true", help="load what fits, list the rest")
    parser.add_argument("--release", help="registry entry the file is (python -m actionlab.pretrained list)")
    args = parser.parse_args(argv)
    release, strong = release_of(args.src, args.release)
    release = check_release(
        args.src, release, strong, {"config": (args.model, "--model")},
        same_config=lambda want, got: want.split("_")[1] == got.split("_")[1],  # B vs L only
    )
    net, cfg, report = convert_npz(
        args.src, args.model, args.num_classes, args.num_frames, args.img_size, args.partial
    )
    from actionlab.pretrained.families import tokshift_kinetics

    protocol = lab_protocol(
        args.src, None, tokshift_kinetics(args.num_frames, args.img_size),
        f"TokShift's Kinetics-400 protocol at {args.num_frames} x {args.img_size} (ImageNet-21k init)",
    )
    protocol["registry"] = release.name if release else None
    save_lab_checkpoint(args.dst, net, cfg, None, None, source=str(args.src), protocol=protocol)
    print(f"wrote {args.dst} ({cfg['_target_']}, {args.img_size}px, {args.num_classes} classes)")
    print(describe_protocol(protocol))
    print(format_report(report))
