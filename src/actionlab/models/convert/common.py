"""Shared pieces of the checkpoint importers: safe reading, strict key accounting, lab files.

A *lab checkpoint* is a Lightning-style ``.ckpt`` dict with ``state_dict`` (the backbone's
weights under the ``model.`` prefix, as ``VideoClassifier`` holds them) and an ``actionlab``
entry with the model config (``_target_`` + kwargs), the data config and the class names, so
``eval.py`` and ``predict`` can rebuild everything from the file alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

LAB_KEY = "actionlab"
MODEL_PREFIX = "model."


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model: lists missing and unexpected keys and bad shapes."""


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (check the path you passed)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or corrupt files
        raise CheckpointMismatchError(
            f"cannot read {path} as a PyTorch checkpoint with weights_only=True: {err}. "
            "Is it a complete, uncorrupted file saved by torch.save?"
        ) from err


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Remove ``prefix`` (e.g. ``module.`` from DataParallel) from every key that has it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Load ``state`` into ``model`` or raise listing every missing, unexpected and misshapen key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        where = f" from {source}" if source else ""
        lines = [f"checkpoint{where} does not match {type(model).__name__}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
                lines.append(f"  {title} keys: {shown}")
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def load_state_dict_partial(
    model: nn.Module, state: Mapping[str, torch.Tensor]
) -> dict[str, list[str]]:
    """Load what fits (same key and shape) and return what was skipped, for fine-tuning."""
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    report = {
        "missing": sorted(set(own) - set(fitting)),
        "unexpected": sorted(set(state) - set(own)),
        "shape": sorted(k for k in set(state) & set(own) if k not in fitting),
    }
    model.load_state_dict(fitting, strict=False)
    return report


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_lab_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    model_cfg: Mapping[str, Any],
    class_names: list[str] | None = None,
    data_cfg: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> None:
    """Write ``model`` as a lab checkpoint that ``eval.py ckpt_path=...`` can evaluate."""
    import lightning

    state = {MODEL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {
            "state_dict": state,
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": lightning.__version__,
            LAB_KEY: {
                "model": dict(model_cfg),
                "data": dict(data_cfg) if data_cfg is not None else None,
                "class_names": list(class_names) if class_names is not None else None,
                "source": source,
            },
        },
        path,
    )


def read_lab_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Backbone state dict (prefix removed) and the ``actionlab`` metadata of a lab checkpoint."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or LAB_KEY not in ckpt:
        raise CheckpointMismatchError(
            f"{path} is not an actionlab checkpoint (no 'state_dict'/'{LAB_KEY}' entries). "
            "Convert released weights first: python -m actionlab.models.convert <family> IN OUT.ckpt"
        )
    state = {
        k[len(MODEL_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)
    }
    return state, ckpt[LAB_KEY]
