"""Typed configs: the fields the lab owns are checked before anything is built.

``python train.py data.crop_size=abc`` or ``data.num_frames=0`` fails at once with the key, the
value and what is allowed (``ConfigValueError``), instead of a ``TypeError`` or a
``ZeroDivisionError`` deep inside a transform. Checked: ``data`` (``VideoDataModule``),
``module`` (``VideoClassifier``), ``schedule`` (``Multigrid``), ``eval`` and the top-level keys of
``train.yaml`` / ``eval.yaml``.

Where a field is declared:

- **types** come from the constructor's type hints of the node's ``_target_``
  (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``Sequence[X]``, ``Mapping``, ``Literal``);
  a new constructor parameter is type-checked with no change here;
- **ranges and choices** are one line each in :data:`RULES`, keyed by the config path
  (``"data.num_frames": at_least(1)``); ``one_of`` also takes a callable, so a vocabulary that
  grows in its own module (``PROTOCOLS``) is read when checking;
- config nodes without a class (``eval``, the top level) declare their types in :data:`TYPES`.

Keys that are not constructor parameters fail with the list of the known ones (instantiation
would fail on them anyway). Keys of class-less nodes that are not declared are only reported in
the debug log, so a field another module starts reading keeps working before it is declared here.

To add a field, e.g. ``data.channel_order``: give ``VideoDataModule.__init__`` the parameter with
its type hint (``channel_order: str = "rgb"``) and add one line to :data:`RULES`:
``"data.channel_order": one_of(("rgb", "bgr")),``. A ``module.*`` or ``schedule.*`` field works
the same way (its constructor). An ``eval.*`` or top-level key: one line in :data:`TYPES`
(``"eval.foo": int | None``, ``"memory_format": str``) and, for a range or choices, one in
:data:`RULES`. A new ``eval.protocol`` name needs nothing: the check reads ``PROTOCOLS``.
"""

from __future__ import annotations

import collections.abc
import functools
import importlib
import inspect
import logging
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = [
    "RULES",
    "TYPES",
    "ConfigValueError",
    "Rule",
    "at_least",
    "between",
    "each",
    "greater_than",
    "length",
    "one_of",
    "validate_eval_config",
    "validate_node",
    "validate_train_config",
]

log = logging.getLogger(__name__)


class ConfigValueError(ValueError):
    """A config value of the wrong type or out of range; the message names key, value, allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key} must be {allowed}, got {_show(value)}")
        self.key, self.value, self.allowed = key, value, allowed


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    return str(value)


# -- rules: ranges and choices ---------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """``check(value) -> bool`` and the words for what is allowed. ``None`` always passes
    (whether null is allowed is the type's business)."""

    check: Callable[[Any], bool]
    allowed: Any  # str, or _Words


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_least(low: float) -> Rule:
    return Rule(lambda v: _number(v) and v >= low, f">= {low}")


def greater_than(low: float) -> Rule:
    return Rule(lambda v: _number(v) and v > low, f"> {low}")


def between(low: float, high: float, high_open: bool = False) -> Rule:
    upper = "<" if high_open else "<="
    return Rule(lambda v: _number(v) and low <= v and (v < high if high_open else v <= high),
                f"a number with {low} <= value {upper} {high}")


def one_of(choices: Iterable[Any] | Callable[[], Iterable[Any]]) -> Rule:
    """One of ``choices``; a callable is read at check time (vocabularies that grow elsewhere)."""

    def current() -> list[Any]:
        return list(choices() if callable(choices) else choices)

    def check(value: Any) -> bool:
        return any(value is c or (type(value) is type(c) and value == c) for c in current())

    return Rule(check, _Words(lambda: "one of " + ", ".join(_show(c) for c in current())))


class _Words:
    """Words computed when a message is written (the choices as they are then)."""

    def __init__(self, make: Callable[[], str]) -> None:
        self.make = make

    def __str__(self) -> str:
        return self.make()


def length(*sizes: int) -> Rule:
    return Rule(lambda v: isinstance(v, (list, tuple)) and len(v) in sizes,
                f"a list of {' or '.join(map(str, sizes))} values")


def each(rule: Rule) -> Rule:
    """``rule`` for a scalar or for every item of a list."""
    return Rule(lambda v: all(rule.check(x) for x in (v if isinstance(v, (list, tuple)) else [v])),
                f"{rule.allowed} (each value)")


def _all(*rules: Rule) -> Rule:
    return Rule(lambda v: all(r.check(v) for r in rules), ", ".join(str(r.allowed) for r in rules))


def _ordered_pair() -> Rule:
    return Rule(lambda v: not isinstance(v, (list, tuple)) or (len(v) in (1, 2) and v[0] <= v[-1]),
                "an int or [min, max] with min <= max")


def _choices(module: str, name: str) -> Callable[[], Iterable[Any]]:
    """A vocabulary constant of another module, imported when first checked."""
    return lambda: sorted(getattr(importlib.import_module(module), name), key=str)


# Ranges and choices, one line per field (types come from the constructors or TYPES).
RULES: dict[str, Rule] = {
    # data (VideoDataModule)
    "data.num_classes": at_least(1),
    "data.num_frames": at_least(1),
    "data.crop_size": at_least(1),
    "data.scale_size": at_least(1),
    "data.train_scale_size": _all(each(at_least(1)), _ordered_pair()),
    "data.batch_size": at_least(1),
    "data.num_workers": at_least(0),
    "data.backend": one_of(_choices("actionlab.data.readers", "BACKENDS")),
    "data.split": at_least(1),
    "data.mean": length(3),
    "data.std": _all(length(3), each(greater_than(0))),
    "data.bad_video_policy": one_of(_choices("actionlab.data.datamodule", "BAD_VIDEO_POLICIES")),
    "data.max_retries": at_least(0),
    "data.sampling": one_of(_choices("actionlab.data.datamodule", "SAMPLINGS")),
    "data.sampling_rate": at_least(1),
    "data.target_fps": greater_than(0),
    "data.pad": one_of(_choices("actionlab.data.sampling", "PAD_MODES")),
    "data.min_video_frames": at_least(1),
    "data.gpu_augment": one_of(("auto", True, False)),
    "data.augment.train_crop": one_of(_choices("actionlab.data.transforms", "TRAIN_CROPS")),
    "data.channel_order": one_of(("rgb", "bgr")),
    # module (VideoClassifier)
    "module.num_classes": at_least(1),
    "module.label_smoothing": between(0.0, 1.0, high_open=True),
    "module.weight_decay": at_least(0.0),
    "module.aggregate": one_of(_choices("actionlab.lit.module", "AGGREGATIONS")),
    # schedule (Multigrid)
    "schedule.base_epochs": at_least(1),
    "schedule.base_batch_size": at_least(1),
    "schedule.base_num_frames": at_least(1),
    "schedule.base_crop_size": at_least(1),
    "schedule.step_fractions": each(between(0.0, 1.0, high_open=True)),
    "schedule.epoch_factor": greater_than(0.0),
    "schedule.gamma": between(0.0, 1.0),
    "schedule.bn_base_size": at_least(1),
    "schedule.warmup_epochs": at_least(0.0),
    "schedule.warmup_start": between(0.0, 1.0),
    "schedule.lr_scaling": one_of(_choices("actionlab.schedules.multigrid", "LR_SCALINGS")),
    # eval (evaluate.py)
    "eval.protocol": one_of(_choices("actionlab.data.views", "PROTOCOLS")),
    "eval.clips": at_least(1),
    "eval.crops": one_of((1, 3)),
    "eval.sampling": one_of(_choices("actionlab.data.views", "SAMPLINGS")),
    "eval.crop_size": at_least(1),
    "eval.scale_size": at_least(1),
    "eval.sampling_rate": greater_than(0),
    "eval.aggregate": one_of(_choices("actionlab.lit.module", "AGGREGATIONS")),
    "eval.max_views_per_batch": at_least(1),
    "eval.batch_size": at_least(1),
    "eval.num_workers": at_least(0),
    "split": one_of(("val", "test")),
    "memory_format": one_of(_choices("actionlab.models.memory_format", "FORMATS")),
}

# Types of config nodes that no constructor describes.
TYPES: dict[str, Any] = {
    "seed": int | None,
    "ckpt_path": str | None,
    "auto_resume": bool,
    "memory_format": str,
    "channels_last_3d": bool | None,  # removed: train.py refuses true, naming memory_format
    "train": bool,
    "test": bool,
    "optimized_metric": str | None,
    "data_root": str | None,
    "split": str,
    "eval.protocol": str | None,
    "eval.clips": int | None,
    "eval.crops": int | None,
    "eval.sampling": str | None,
    "eval.sampling_rate": float | None,
    "eval.crop_size": int | None,
    "eval.scale_size": int | None,
    "eval.aggregate": str | None,
    "eval.max_views_per_batch": int | None,
    "eval.batch_size": int | None,
    "eval.num_workers": int | None,
    "eval.profile": bool,
}


# -- types ---------------------------------------------------------------------------------------
def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(_show(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (dict, collections.abc.Mapping) or hint in (dict, Mapping):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def type_matches(value: Any, hint: Any) -> bool:
    """Whether a resolved config value fits ``hint``; unknown hints (callables, classes) pass."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _number(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        item = args[0] if args and args[0] is not Ellipsis else Any
        return all(type_matches(v, item) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint in (dict, Mapping):
        return isinstance(value, dict)
    return True


# -- checking ----------------------------------------------------------------------------------
@functools.cache
def _constructor_hints(target: str) -> tuple[dict[str, Any], bool] | None:
    """``({parameter: hint}, accepts **kwargs)`` of ``target``'s constructor, None if unknown."""
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        init = cls.__init__ if inspect.isclass(cls) else cls
        params = inspect.signature(init).parameters
        hints = typing.get_type_hints(init)
    except Exception as err:  # a target another branch has not landed, a C extension, ...
        log.debug("no type hints for %s: %s", target, err)
        return None
    names = {n: hints.get(n, p.annotation) for n, p in params.items()
             if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check(key: str, value: Any, hint: Any) -> None:
    if hint is not None and not type_matches(value, hint):
        rule = RULES.get(key)
        extra = f" ({rule.allowed})" if rule is not None and value is not None else ""
        raise ConfigValueError(key, value, _describe(hint) + extra)
    rule = RULES.get(key)
    if rule is not None and value is not None and not rule.check(value):
        raise ConfigValueError(key, value, str(rule.allowed))


def _resolved(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def validate_node(cfg: DictConfig, path: str, fields: Mapping[str, Any] | None = None) -> None:
    """Check ``cfg.<path>`` against its ``_target_``'s constructor hints (or ``fields``) and
    :data:`RULES`. Nested nodes with their own ``_target_`` (annotations) are left to theirs."""
    node = OmegaConf.select(cfg, path) if path else cfg
    if not isinstance(node, DictConfig):
        return
    known: Mapping[str, Any]
    open_kwargs = True
    if fields is None:
        target = node.get("_target_")
        described = _constructor_hints(str(target)) if target else None
        if described is None:
            return
        known, open_kwargs = described
    else:
        known = fields
    for key in node:
        key = str(key)
        if key.startswith("_") and key.endswith("_"):
            continue
        full = f"{path}.{key}" if path else key
        if key not in known:
            if fields is None and not open_kwargs:
                target = str(node.get("_target_")).rpartition(".")[2]
                raise ConfigValueError(full, _resolved(node.get(key)),
                                       f"a parameter of {target} ({', '.join(sorted(known))}), which {key} is not")
            continue
        value = _resolved(node.get(key))
        if isinstance(value, dict) and "_target_" in value:
            continue
        _check(full, value, known[key])
        if isinstance(value, dict):  # declared nested fields (data.augment.train_crop)
            prefix = f"{full}."
            for nested in RULES:
                if nested.startswith(prefix) and nested[len(prefix):] in value:
                    _check(nested, value[nested[len(prefix):]], None)


def _declared(prefix: str) -> dict[str, Any]:
    """TYPES entries directly under ``prefix`` ("" = top level), keyed by their last part."""
    out = {}
    for key, hint in TYPES.items():
        head, _, last = key.rpartition(".")
        if head == prefix:
            out[last] = hint
    return out


def _validate_top_level(cfg: DictConfig) -> None:
    fields = _declared("")
    for key, hint in fields.items():
        if key in cfg and not isinstance(cfg.get(key), DictConfig):
            _check(key, _resolved(cfg.get(key)), hint)


def validate_train_config(cfg: DictConfig) -> None:
    """``train.py``'s checks: top level, data, module, schedule (when one is chosen)."""
    _validate_top_level(cfg)
    for path in ("data", "module", "schedule"):
        validate_node(cfg, path)


def validate_eval_config(cfg: DictConfig) -> None:
    """``eval.py``'s checks: top level, eval, and data when one is chosen on the command line
    (a data config read from a checkpoint is checked by :func:`validate_node` in the task)."""
    _validate_top_level(cfg)
    fields = _declared("eval")
    node = cfg.get("eval")
    if isinstance(node, DictConfig):
        for key in node:
            if str(key) not in fields:
                log.debug("eval.%s is not declared in actionlab.config.schema.TYPES", key)
        validate_node(cfg, "eval", {k: v for k, v in fields.items() if k in node})
    if cfg.get("data"):
        validate_node(cfg, "data")
