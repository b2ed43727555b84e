"""Importer of the released TokShift / ViT video ``.pth`` checkpoints.

``VideoNetworks/TokShift-Transformer`` saves ``{'epoch', 'state_dict', 'best_acc1', 'optimizer',
'scheduler'}`` from DDP; weights sit under ``module.base_model.`` with the jeonsworld ViT names
that :mod:`actionlab.models.vit` keeps, so only the prefix goes. The input size is read off the
position embeddings (``1 + (size/16)^2`` tokens), so 224/256/384 files rebuild at their size,
and B vs L off the hidden width.

ViT and TokShift files have the same keys (the token shift has no parameters), and a ViT file
run as TokShift (or back) gives wrong outputs without any error. So the choice comes from the
evidence: ``--model``, ``--release NAME`` (the registry entry's config), the file name
(``best_vit_B8x32x224_k400.pth``; TokShift's run names start with ``TokShift_``) and a training
config stored in the file (its ``NET`` / ``IS_SHIFT``). Evidence that disagrees is an error, and
no evidence at all is an error too: nothing is chosen by default. Frames come from the same
places (``B8x32x224``: 8 frames 32 apart at 224; ``T_SIZE``).

    python -m actionlab.models.convert tokshift IN.pth OUT.ckpt [--model tokshift_base] \
        [--num-frames 8] [--num-classes N --partial] [--release NAME]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from actionlab.models.convert.common import CheckpointMismatchError, decide
from actionlab.models.convert.srtg import ReleasedFormat, make_main

__all__ = ["FORMAT", "kind_evidence", "main", "name_facts"]

POS_KEY = "transformer.embeddings.position_embeddings"
PATCH_KEY = "transformer.embeddings.patch_embeddings.weight"
PATCH = 16
HIDDEN = {768: "base", 1024: "large"}
NAME_GEOMETRY = re.compile(r"(?:^|[^A-Za-z])([BL])(\d+)x(\d+)x(\d+)")
STORE_SEGMENTS = re.compile(r"segs(\d+)x(\d+)")


def _img_size(state: Mapping[str, Tensor]) -> dict[str, Any]:
    if POS_KEY not in state:
        return {}
    return {"img_size": math.isqrt(state[POS_KEY].shape[1] - 1) * PATCH}


def training_config(ckpt: Any) -> dict[str, Any] | None:
    """A TokShift-style training config stored in the file (``cfg``/``config`` with ``NET``)."""
    if not isinstance(ckpt, Mapping):
        return None
    for key in ("cfg", "config"):
        cfg = ckpt.get(key)
        if isinstance(cfg, str):
            import yaml

            try:
                cfg = yaml.safe_load(cfg)
            except yaml.YAMLError:
                cfg = None
        if isinstance(cfg, Mapping) and ("NET" in cfg or "IS_SHIFT" in cfg):
            return dict(cfg)
    return None


def name_facts(path: str) -> dict[str, Any]:
    """What a TokShift file or run name says: ``kind`` (vit | tokshift), ``size`` (base |
    large), ``frames``, ``img_size``."""
    name = Path(path).name
    facts: dict[str, Any] = {}
    if re.search(r"tokshift", name, re.IGNORECASE):
        facts["kind"] = "tokshift"
    elif re.search(r"(?:^|[^a-z])vit(?:[^a-z]|$)", name, re.IGNORECASE):
        facts["kind"] = "vit"
    if match := NAME_GEOMETRY.search(name):
        facts.update(size={"B": "base", "L": "large"}[match.group(1)], frames=int(match.group(2)),
                     img_size=int(match.group(4)))
    elif match := STORE_SEGMENTS.search(name):
        facts["frames"] = int(match.group(1))
    return facts


def kind_evidence(ckpt: Any, path: str, model: str | None, release: Any) -> list[tuple[str, str]]:
    """Every statement of ViT vs TokShift about a file: ``(kind, where)``."""
    evidence = []
    if model:
        evidence.append(("tokshift" if model.startswith("tokshift") else "vit", f"--model {model}"))
    if release is not None:
        kind = "tokshift" if release.config.startswith("tokshift") else "vit"
        evidence.append((kind, f"registry entry {release.name}"))
    if "kind" in (facts := name_facts(path)):
        evidence.append((facts["kind"], f"file name {Path(path).name}"))
    cfg = training_config(ckpt)
    if cfg is not None:
        shift = cfg.get("IS_SHIFT")
        net = str(cfg.get("NET", "")).lower()
        kind = "tokshift" if (shift or net == "tokshift") else "vit"
        evidence.append((kind, f"training config NET {cfg.get('NET')!r} IS_SHIFT {shift!r}"))
    return evidence


def _choose(state, ckpt, path: str, model: str | None, release) -> tuple[str, list[str]]:
    evidence = kind_evidence(ckpt, path, model, release)
    kinds = {k for k, _ in evidence}
    listed = "; ".join(f"{k} ({w})" for k, w in evidence)
    if len(kinds) > 1:
        raise CheckpointMismatchError(
            f"{Path(path).name}: ViT and TokShift checkpoints have the same keys and the evidence "
            f"disagrees on which this is: {listed}. Loaded into the wrong one it runs without an "
            "error and predicts wrongly; make --model / --release agree with the file"
        )
    if not kinds:
        raise CheckpointMismatchError(
            f"{Path(path).name}: ViT and TokShift checkpoints have the same keys (the token shift "
            "has no parameters), and neither the file name nor a config inside it says which this "
            "is. Pass --model vit_base|tokshift_base (_large for ViT-L) or --release NAME "
            "(python -m actionlab.pretrained list --family tokshift)"
        )
    kind = kinds.pop()
    named_size, pos_size = name_facts(path).get("img_size"), _img_size(state).get("img_size")
    if named_size and pos_size and named_size != pos_size:
        raise CheckpointMismatchError(
            f"{Path(path).name}: the name says {named_size} px but the position embeddings are "
            f"those of {pos_size} px"
        )
    hidden = int(state[PATCH_KEY].shape[0]) if PATCH_KEY in state else None
    size = decide(
        "ViT size",
        path,
        [
            (model.split("_", 1)[1] if model else None, f"--model {model}"),
            (release.config.split("_", 1)[1] if release is not None else None, "registry entry"),
            (name_facts(path).get("size"), "file name"),
            (HIDDEN.get(hidden), f"hidden width {hidden}"),
        ],
    )
    if size is None:
        raise CheckpointMismatchError(
            f"{Path(path).name}: hidden width {hidden} is neither ViT-B (768) nor ViT-L (1024); pass --model"
        )
    return f"{kind}_{size}", []


def _frames(path: str, ckpt: Any) -> list[tuple[Any, str]]:
    cfg = training_config(ckpt) or {}
    return [(name_facts(path).get("frames"), "file name"), (cfg.get("T_SIZE"), "training config T_SIZE")]


def _protocol(name: str, frames: int, state: Mapping[str, Tensor]) -> tuple[Any, str]:
    from actionlab.pretrained.families import tokshift_kinetics

    size = _img_size(state).get("img_size", 224)
    return tokshift_kinetics(frames, size), f"TokShift's Kinetics-400 test protocol ({frames} x 32 at {size})"


FORMAT = ReleasedFormat(
    family="tokshift",
    module="actionlab.models.vit",
    models=("tokshift_base", "tokshift_large", "vit_base", "vit_large"),
    prefixes=("module.", "base_model."),
    renames=(),
    head="head",
    num_frames=8,
    model_kwargs=_img_size,
    choose=_choose,
    frames_from=_frames,
    protocol=_protocol,
    foreign=((".sar.", "srtg"), (".sr_short.", "mtnet")),
)

main = make_main(FORMAT)
