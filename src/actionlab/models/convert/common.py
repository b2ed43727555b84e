"""Shared pieces of the checkpoint importers: safe reading, strict key accounting, lab files,
the registry entry a file belongs to and the input protocol a lab file records.

A *lab checkpoint* is a Lightning-style ``.ckpt`` dict with ``state_dict`` (the backbone's
weights under the ``model.`` prefix, as ``VideoClassifier`` holds them) and an ``actionlab``
entry with the model config (``_target_`` + kwargs), the data config, the class names and the
input protocol (``actionlab.pretrained.protocol``), so ``eval.py`` and ``predict`` can rebuild
everything from the file alone and evaluate it the way its authors did.

A converted file belongs to a registry entry (``actionlab.pretrained``) when ``--release NAME``
names one (then any contradiction between the file and the entry is an error) or when its file
name is the entry's published name (weak evidence: a contradiction only drops the entry, with a
note).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from actionlab.pretrained import InputProtocol, Release

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
    protocol: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model`` as a lab checkpoint that ``eval.py ckpt_path=...`` can evaluate.

    ``protocol`` is the input protocol dict (``actionlab.pretrained.protocol.to_checkpoint``)
    that ``eval.py`` and ``predict`` apply unless the command line says otherwise.
    """
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
                "protocol": dict(protocol) if protocol is not None else None,
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


# ----------------------------------------------------------------------------------------------
# Registry entries and protocols of converted files


def fill_bn_counters(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Add BN ``num_batches_tracked`` counters that older checkpoints lack (bookkeeping only,
    not weights); returns the names added."""
    added = []
    for name, buf in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = torch.zeros_like(buf)
            added.append(name)
    return added


def release_of(path: str | os.PathLike, name: str | None) -> tuple[Release | None, bool]:
    """The registry entry of a file: ``(entry, strong)``; ``strong`` when ``--release`` named it,
    weak when only the file name matched a published name."""
    from actionlab.pretrained import find_by_file, get

    if name:
        try:
            return get(name), True
        except KeyError as err:
            raise SystemExit(str(err.args[0])) from err
    match = find_by_file(path)
    if match is not None:
        print(f"{Path(path).name} is the published file of registry entry {match.name}")
    return match, False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def release_facts(release: Release) -> dict[str, Any]:
    """What an entry says about its file, in the names converters report facts by."""
    p = release.protocol
    facts = {
        "family": release.family,
        "config": release.config,
        "num_classes": release.num_classes,
        "num_frames": p.num_frames,
        "train_crop": p.train_crop,
        "test_crop": p.test_crop,
        "mean": list(p.mean),
        "std": list(p.std),
        "img_size": p.train_crop,
    }
    if p.sampling == "dense":  # segment samplers ignore the step (PySlowFast keeps a default)
        facts["sampling_rate"] = p.sampling_rate
    return facts


def check_release(
    source: str | os.PathLike,
    release: Release | None,
    strong: bool,
    facts: Mapping[str, tuple[Any, str]],
    same_config: Callable[[str, str], bool] | None = None,
) -> Release | None:
    """Compare what the file says (``facts``: name -> (value, where it was read)) with the entry.

    A contradiction is a :class:`CheckpointMismatchError` for an entry named by ``--release``; for
    an entry matched by file name it drops the entry (returns None) with a note. ``same_config``
    decides config equality where a family has aliases (SRTG's training-script names).
    """
    if release is None:
        return None
    expected = release_facts(release)
    wrong = []
    for key, (value, where) in facts.items():
        if value is None or key not in expected:
            continue
        want = expected[key]
        same = same_config(want, value) if key == "config" and same_config else _same(value, want)
        if not same:
            wrong.append(f"{key} {value!r} ({where}) but the entry says {want!r}")
    if not wrong:
        return release
    what = f"{Path(source).name} is not the file of registry entry {release.name}: " + "; ".join(wrong)
    if strong:
        raise CheckpointMismatchError(
            f"{what}. Convert it without --release (the protocol then comes from the file), or "
            "pass the entry it belongs to"
        )
    print(f"note: {what}; converting it without the registry entry")
    return None


def lab_protocol(
    source: str | os.PathLike,
    release: Release | None,
    fallback: InputProtocol,
    origin: str,
) -> dict[str, Any]:
    """The protocol dict a converted file records: the registry entry's (with its paper result)
    or ``fallback`` with where it came from; plus the source file's name, size and sha256."""
    from actionlab.pretrained.download import file_record
    from actionlab.pretrained.protocol import to_checkpoint

    record = file_record(source).as_dict()
    if release is not None:
        paper = release.paper.as_dict() if release.paper else None
        return to_checkpoint(
            release.protocol, f"registry {release.name}", release.name, paper, record
        )
    return to_checkpoint(fallback, origin, source_file=record)


def describe_protocol(protocol: Mapping[str, Any]) -> str:
    """One line for the converters' output."""
    data, evals = protocol["data"], protocol["eval"]
    return (
        f"protocol ({protocol['origin']}): {data['num_frames']} frames, {data['sampling']} "
        f"sampling, {data['channel_order']} mean {data['mean']} std {data['std']}, "
        f"eval.protocol={evals.get('protocol')} crop {evals.get('crop_size')}"
        + (f", model {protocol['model']}" if protocol.get("model") else "")
    )


def decide(
    what: str,
    source: str | os.PathLike,
    evidence: list[tuple[Any, str]],
    default: Any = None,
    default_note: str | None = None,
) -> Any:
    """The one value all the evidence agrees on (``(value, where)``; None values say nothing).

    Contradictory evidence is a :class:`CheckpointMismatchError` naming every source; without
    any, ``default`` is used and ``default_note`` printed (nothing is chosen silently).
    """
    said = [(v, w) for v, w in evidence if v is not None]
    values = []
    for v, _ in said:
        if not any(_same(v, u) for u in values):
            values.append(v)
    if len(values) > 1:
        listed = ", ".join(f"{v!r} ({w})" for v, w in said)
        raise CheckpointMismatchError(f"{Path(source).name}: contradictory {what}: {listed}")
    if values:
        return values[0]
    if default_note:
        print(f"note: {default_note}")
    return default


def read_class_names(path: str | os.PathLike | None, num_classes: int) -> list[str] | None:
    """``--class-names FILE``: one name per line, as many as the classifier has outputs."""
    if not path:
        return None
    names = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if len(names) != num_classes:
        raise SystemExit(
            f"{path} lists {len(names)} classes but the checkpoint has {num_classes}; pass the "
            "class list of the dataset it was trained on (--class-names)"
        )
    return names


def write_converted(
    args: Any,
    model: nn.Module,
    model_cfg: Mapping[str, Any],
    release: Release | None,
    fallback: InputProtocol,
    origin: str,
    summary: str,
) -> dict[str, Any]:
    """Save a converted model as ``args.output`` with its protocol and ``--class-names``, and
    say what was written; returns the protocol dict."""
    protocol = lab_protocol(args.input, release, fallback, origin)
    names = read_class_names(args.class_names, int(model_cfg["num_classes"]))
    save_lab_checkpoint(args.output, model, model_cfg, names, None, source=str(args.input), protocol=protocol)
    print(f"wrote {args.output}: {summary}")
    print(describe_protocol(protocol))
    return protocol
