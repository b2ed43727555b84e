"""Importer of the released SRTG / 3D-ResNet / R(2+1)D ``.pth`` checkpoints.

Released files (``alexandrosstergiou/Squeeze-and-Recursion-Temporal-Gates``) are
``{'epoch', 'state_dict', 'optimizer'}`` saved from ``nn.DataParallel``, so every key carries
``module.``. Our modules keep the released names except the SR cell (``sar.lstm`` -> ``sar.rnn``).

    python -m actionlab.models.convert srtg IN.pth OUT.ckpt [--model srtg_r3d_34] \
        [--num-classes N --partial] [--num-frames 16] [--release NAME]

The architecture is read off the keys: r3d or r(2+1)d stem, basic or bottleneck blocks, the
blocks per stage, SR cells present or not and their type (LSTM; MTNet's alignment cells are
GRUs). ``--model`` is a check; the one disagreement accepted is the release's training-script
quirk: its name dispatch builds the plain ``r3d_*``/``r2plus1d_*`` network for every
``srtg_*`` name (``network/symbol_builder.py`` tests ``"R3D" in name`` first), so a file
trained as ``srtg_r3d_34`` has no SR cells and converts to ``r3d_34``, with a note. Missing BN
``num_batches_tracked`` counters (older files) are filled.

Strict by default: every checkpoint key must land and every model key must be filled, or a
:class:`~actionlab.models.convert.common.CheckpointMismatchError` lists what did not fit.
``--partial`` (fine-tuning on another label set) loads what fits and prints what was skipped.

The generic machinery here (:class:`ReleasedFormat`, :func:`import_released`,
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
    check_release,
    decide,
    describe_protocol,
    fill_bn_counters,
    lab_protocol,
    load_state_dict_partial,
    load_state_dict_strict,
    read_checkpoint,
    read_class_names,
    release_of,
    save_lab_checkpoint,
    strip_prefix,
)

__all__ = [
    "FORMAT",
    "Converted",
    "ReleasedFormat",
    "convert_released",
    "describe_resnet",
    "format_report",
    "import_released",
    "main",
    "make_main",
    "matching_models",
]

Chooser = Callable[..., tuple[str, list[str]]]


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
    # Names the original training scripts accept but build as another model (their quirks).
    aliases: Mapping[str, str] = field(default_factory=dict)
    describe: Callable[[Mapping[str, Tensor]], str] = field(default=lambda state: "")
    # (state, ckpt, path, model, release) -> (factory, notes); None: match the keys.
    choose: Chooser | None = None
    # (model name, frames, state) -> (fallback InputProtocol, origin).
    protocol: Callable[[str, int, Mapping[str, Tensor]], tuple[Any, str]] | None = None
    # (key substring, family): keys that mark another family's file.
    foreign: tuple[tuple[str, str], ...] = ()
    # (path, ckpt) -> [(frames, where)]: what the file says about its clip length.
    frames_from: Callable[[str, Any], list[tuple[Any, str]]] = field(default=lambda path, ckpt: [])
    # state -> the factory its key features point to (checked by building it), or None.
    predict: Callable[[Mapping[str, Tensor]], str | None] = field(default=lambda state: None)


@dataclass
class Converted:
    """A released file loaded into a lab model, with what the lab checkpoint records."""

    model: nn.Module
    config: dict[str, Any]
    report: dict[str, list[str]]
    protocol: dict[str, Any]
    notes: list[str]


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


def _cell(state: Mapping[str, Tensor], marker: str) -> str:
    for key, value in state.items():
        if marker in key and key.endswith("weight_ih_l0"):
            gates = value.shape[0] // max(1, value.shape[1])
            return {4: "LSTM", 3: "GRU"}.get(gates, f"{gates}-gate") + f" cells (weight_ih {gates}C x C)"
    return "no SR cells"


def _layers(state: Mapping[str, Tensor]) -> tuple[int, ...]:
    return tuple(
        len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in (1, 2, 3, 4)
    )


def describe_resnet(state: Mapping[str, Tensor]) -> str:
    """What an SRTG-repository 3D ResNet's keys say: stem, blocks, depth, SR cells."""
    stem = "r(2+1)d stem" if "stem.3.weight" in state else "r3d stem"
    block = "bottleneck" if any(k.startswith("layer1.0.conv3.") for k in state) else "basic"
    return f"{stem}, {block} blocks {_layers(state)}, {_cell(state, '.sar.')}"


def predict_resnet(state: Mapping[str, Tensor]) -> str | None:
    """The factory name an SRTG-repository 3D ResNet's key features point to."""
    from actionlab.models.srtg import ARCHS

    stem = "r2plus1d" if "stem.3.weight" in state else "r3d"
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in state)
    for arch, cfg in ARCHS.items():
        if cfg.stem == stem and cfg.layers == _layers(state) and (cfg.block.__name__ == "Bottleneck") == bottleneck:
            return f"srtg_{arch}" if any(".sar." in k for k in state) else arch
    return None


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def matching_models(
    state: Mapping[str, Tensor], fmt: ReleasedFormat, num_classes: int, kwargs: Mapping[str, Any]
) -> tuple[list[str], dict[str, tuple[list[str], list[str], list[str]]]]:
    """Factories of ``fmt`` whose state-dict keys and shapes are the file's (BN counters aside),
    and for the others ``(missing, unexpected, shapes that differ)``. Models are built on the meta device: the
    one the keys' features point to (``fmt.predict``) first, every one if that does not fit."""
    have = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    module = importlib.import_module(fmt.module)
    predicted = fmt.predict(state)
    if predicted in fmt.models:
        with torch.device("meta"):
            if _shapes(getattr(module, predicted)(num_classes=num_classes, **kwargs)) == have:
                return [predicted], {}
    exact, near = [], {}
    for name in fmt.models:
        with torch.device("meta"):
            own = _shapes(getattr(module, name)(num_classes=num_classes, **kwargs))
        if own == have:
            exact.append(name)
        else:
            missing = sorted(set(own) - set(have))
            unexpected = sorted(set(have) - set(own))
            shapes = [f"{k} (file {have[k]} vs model {own[k]})" for k in sorted(set(own) & set(have)) if own[k] != have[k]]
            near[name] = (missing, unexpected, shapes)
    return exact, near


def _choose_by_keys(
    state: Mapping[str, Tensor], fmt: ReleasedFormat, path: str, model: str | None,
    num_classes: int, kwargs: Mapping[str, Any],
) -> tuple[str, list[str]]:
    exact, near = matching_models(state, fmt, num_classes, kwargs)
    described = fmt.describe(state)
    if model is not None:
        if model in exact:
            return model, []
        alias = fmt.aliases.get(model)
        if alias in exact:
            return alias, [
                (f"{Path(path).name} has the keys of {alias}, not {model} ({described}): the "
                f"release's training scripts build {alias} for the name {model}; converted as {alias}")
            ]
        if exact:
            raise CheckpointMismatchError(
                f"--model {model} does not fit {path}: its keys are those of {exact[0]} "
                f"({described}); pass --model {exact[0]} or leave --model out"
            )
        return model, []  # the strict load lists what does not fit
    if len(exact) == 1:
        return exact[0], []
    if len(exact) > 1:
        raise CheckpointMismatchError(f"{path} fits {', '.join(exact)} alike; pass --model")
    # Nearest: the fewest keys named differently, then the fewest shapes that differ.
    best = min(near, key=lambda n: (len(near[n][0]) + len(near[n][1]), len(near[n][2])))
    parts = [
        f"{title}: {', '.join(items[:3])}" + (f" ... ({len(items)} in all)" if len(items) > 3 else "")
        for title, items in zip(("missing", "unexpected", "shapes differ"), near[best])
        if items
    ]
    raise CheckpointMismatchError(
        f"{path}: no {fmt.family} model of the lab has these keys ({described}). Nearest: "
        f"{best}, " + "; ".join(parts)
    )


def import_released(
    path: str | Path,
    fmt: ReleasedFormat,
    model: str | None = None,
    num_classes: int | None = None,
    num_frames: int | None = None,
    partial: bool = False,
    release: str | None = None,
) -> Converted:
    """Load a released checkpoint into the lab model its keys (and the evidence) say it is."""
    if model is not None and model not in fmt.models:
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
    for marker, family in fmt.foreign:
        if any(marker in k for k in state):
            raise CheckpointMismatchError(
                f"{path} is a {family} checkpoint (keys with '{marker}'), not {fmt.family}: convert "
                f"it with python -m actionlab.models.convert {family}"
            )
    ckpt_classes = int(state[head_key].shape[0])
    num_classes = ckpt_classes if num_classes is None else num_classes
    if num_classes != ckpt_classes and not partial:
        raise CheckpointMismatchError(
            f"{path} has {ckpt_classes} classes but --num-classes {num_classes} was asked; add "
            "--partial to load everything but the classifier (fine-tuning)"
        )
    entry, strong = release_of(path, release)
    kwargs = fmt.model_kwargs(state)
    if fmt.choose is not None:
        name, notes = fmt.choose(state, ckpt, str(path), model, entry if strong else None)
    else:
        name, notes = _choose_by_keys(state, fmt, str(path), model, ckpt_classes, kwargs)
    for note in notes:
        print(f"note: {note}")
    same = (lambda want, got: got == want or fmt.aliases.get(want) == got) if fmt.aliases else None
    facts = {
        "config": (name, "the keys" if fmt.choose is None else "the evidence"),
        "num_classes": (ckpt_classes, "the classifier"),
        "num_frames": (num_frames, "--num-frames"),
        **({"img_size": (kwargs["img_size"], "position embeddings")} if "img_size" in kwargs else {}),
    }
    entry = check_release(path, entry, strong, facts, same)
    frames = decide(
        "frames per clip",
        path,
        [
            (num_frames, "--num-frames"),
            *fmt.frames_from(str(path), ckpt),
            (entry.protocol.num_frames if entry else None, "registry entry"),
        ],
        default=fmt.num_frames,
    )
    cfg = {"_target_": f"{fmt.module}.{name}", "num_classes": num_classes, "num_frames": frames, **kwargs}
    factory = getattr(importlib.import_module(fmt.module), name)
    net = factory(**{k: v for k, v in cfg.items() if k != "_target_"})
    fill_bn_counters(net, state)
    if partial:
        report = load_state_dict_partial(net, state)
    else:
        load_state_dict_strict(net, state, str(path))
        report = {"missing": [], "unexpected": [], "shape": []}
    fallback, origin = fmt.protocol(name, frames, state) if fmt.protocol else (None, "")
    protocol = lab_protocol(path, entry, fallback, origin) if (entry or fallback) else {}
    return Converted(net, cfg, report, protocol, notes)


def convert_released(
    path: str | Path,
    fmt: ReleasedFormat,
    model: str | None = None,
    num_classes: int | None = None,
    num_frames: int | None = None,
    partial: bool = False,
    release: str | None = None,
) -> tuple[nn.Module, dict[str, Any], dict[str, list[str]]]:
    """Build the file's model and load it: ``(model, model config, load report)`` (the report
    is empty in strict mode, which raises on any mismatch instead)."""
    done = import_released(path, fmt, model, num_classes, num_frames, partial, release)
    return done.model, done.config, done.report


def make_main(fmt: ReleasedFormat) -> Callable[[list[str]], None]:
    """The ``python -m actionlab.models.convert <family>`` entry point for ``fmt``."""

    def main(argv: list[str]) -> None:
        parser = argparse.ArgumentParser(
            prog=f"python -m actionlab.models.convert {fmt.family}",
            description=f"Convert a released {fmt.family} .pth into an actionlab checkpoint.",
        )
        parser.add_argument("src", help="released .pth file")
        parser.add_argument("dst", help="output lab checkpoint (.ckpt)")
        parser.add_argument(
            "--model", choices=fmt.models, default=None,
            help="model the file should be (a check; default: what its keys are)",
        )
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
        parser.add_argument(
            "--release", default=None,
            help="registry entry the file is (python -m actionlab.pretrained list)",
        )
        args = parser.parse_args(argv)
        done = import_released(
            args.src, fmt, args.model, args.num_classes, args.num_frames, args.partial, args.release
        )
        cfg = done.config
        names = read_class_names(args.class_names, cfg["num_classes"])
        save_lab_checkpoint(
            args.dst, done.model, cfg, names, None, source=str(args.src), protocol=done.protocol or None
        )
        print(f"wrote {args.dst} ({cfg['_target_']}, {cfg['num_classes']} classes)")
        if done.protocol:
            print(describe_protocol(done.protocol))
        if args.partial:
            print(format_report(done.report))

    return main


def _srtg_protocol(name: str, frames: int, state: Mapping[str, Tensor]) -> tuple[Any, str]:
    from actionlab.pretrained.families import srtg_hacs

    return (
        srtg_hacs(264, frames),
        "SRTG's validation protocol (train crop 264: the README's HACS clip-size)",
    )


SRTG_MODELS = ("r3d_34", "r3d_50", "r3d_101", "r2plus1d_34", "r2plus1d_50", "r2plus1d_101")

FORMAT = ReleasedFormat(
    family="srtg",
    module="actionlab.models.srtg",
    models=(*(f"srtg_{m}" for m in SRTG_MODELS), *SRTG_MODELS),
    prefixes=("module.",),
    renames=((".sar.lstm.", ".sar.rnn."),),
    head="fc",
    num_frames=16,
    aliases={f"srtg_{m}": m for m in SRTG_MODELS},
    describe=describe_resnet,
    predict=predict_resnet,
    protocol=_srtg_protocol,
    foreign=((".sr_short.", "mtnet"), (".conv_short.", "mtnet"), ("transformer.encoder.", "tokshift")),
)

main = make_main(FORMAT)
