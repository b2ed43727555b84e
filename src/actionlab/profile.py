"""Model profiler: parameters, multiply-accumulates (MACs) and CPU latency.

Convention (docs/models/index.md): one multiply-add = one MAC, forward pass only, per
view (one clip), with the input ``T x H x W`` stated - the unit TSM, X3D/VoV3D (fvcore),
RubiksNet and TokShift call "FLOPs". Counting runs ``torch.utils.flop_counter.FlopCounterMode``
(which reports FLOPs = 2 x MACs for convolutions and matrix products and 0 for elementwise ops,
pooling and norms) and divides by 2.

Custom operators get registered formulas (:func:`register_op_macs`, :func:`register_module_macs`):

* ``actionlab::rubiks_shift`` (RubiksShift, trilinear interpolation): 7 MACs per output
  element (seven linear interpolations ``a + f * (b - a)`` per trilinear sample). The pure
  PyTorch reference path has no single op, so :class:`~actionlab.ops.rubiks_shift.RubiksShift3d`
  modules are counted by the same formula unless the compiled op was seen inside them, so both
  implementations give the same count.
* ``actionlab::temporal_shift`` (TSM): 0 MACs, a pure data copy.

Latency (:func:`measure_latency`, :func:`latency_model`): batch-1 inference, median of
``--repeats`` forwards (default 7) after ``--warmup`` (default 2), ``--threads`` intra-op
threads (default 2, the lab's reference CPU protocol), eval mode under ``torch.no_grad``, the
model in its fastest memory format (``memory_format=auto``) and fused for inference where the
model supports it (``actionlab.models.fuse``: BatchNorm folded into convolutions, RubiksNet's
elementwise passes fused); ``--no-fuse``, ``--memory-format`` and ``--compile`` (inductor with
frozen weights: about 1.3x faster for RubiksNet-Tiny and TSM-R50 alike on CPU, after 20-30 s of
compiling per model) measure other setups. On CPU freed activation buffers are retained
(``actionlab.utils.cpu_memory``), as in training.

Command line (Hydra; composes ``conf/`` like training does)::

    python -m actionlab.profile model=x3d_m data=ssv2 [--frames 16 --crop 224] [--json out.json]
    python -m actionlab.profile --zoo --readme README.md   # the README model table (make zoo)

prints parameters, GMACs at the stated ``T x H x W`` and batch-1 latency, and writes JSON.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "ProfileResult",
    "count_macs",
    "count_params",
    "latency_model",
    "mac_breakdown",
    "main",
    "measure_latency",
    "profile_model",
    "register_module_macs",
    "register_op_macs",
    "rubiks_shift_macs",
]

# MAC formula of a custom op: (inputs, output) -> MACs. Keyed by "namespace::name".
OpFormula = Callable[..., int]
# MAC formula of a module: (module, inputs tuple, output) -> MACs.
ModuleFormula = Callable[[nn.Module, tuple, Any], int]

_OP_FORMULAS: dict[str, OpFormula] = {}
_MODULE_FORMULAS: dict[type, tuple[ModuleFormula, str]] = {}
_OP_LABELS: dict[str, str] = {}


def register_op_macs(qualname: str, formula: OpFormula, label: str | None = None) -> None:
    """Register ``formula(*args, out=..., **kwargs) -> MACs`` for the ``torch.library`` op
    ``qualname`` (``"namespace::name"``). It is applied when the op exists at counting time,
    so an op registered later (a lazily built extension) is still counted. ``label`` names the
    entry in :func:`mac_breakdown` (default: ``qualname``)."""
    _OP_FORMULAS[qualname] = formula
    _OP_LABELS[qualname] = label or qualname


def register_module_macs(module_type: type, formula: ModuleFormula, label: str | None = None) -> None:
    """Register ``formula(module, inputs, output) -> MACs`` for modules whose work has no
    counted aten op (e.g. a pure-PyTorch reference of a custom op). Skipped for a call in
    which a registered custom op already ran, so nothing is counted twice. ``label`` names
    the entry in :func:`mac_breakdown` (default: the class name); use the op's name so both
    implementations report alike."""
    _MODULE_FORMULAS[module_type] = (formula, label or module_type.__name__)


def rubiks_shift_macs(output_numel: int) -> int:
    """7 MACs per output element: trilinear interpolation = 7 linear interpolations."""
    return 7 * int(output_numel)


def _rubiks_op_formula(*args, out=None, **kwargs) -> int:
    return rubiks_shift_macs(out.numel() if isinstance(out, Tensor) else out[0].numel())


def _zero_formula(*args, **kwargs) -> int:
    return 0


def _rubiks_module_formula(module: nn.Module, inputs: tuple, output: Any) -> int:
    return rubiks_shift_macs(output.numel())


def _register_defaults() -> None:
    register_op_macs("actionlab::rubiks_shift", _rubiks_op_formula)
    # The fused inference variant (activation applied as the shift reads): the same 7 MACs.
    register_op_macs("actionlab::rubiks_shift_act", _rubiks_op_formula, "actionlab::rubiks_shift")
    register_op_macs("actionlab::temporal_shift", _zero_formula)
    try:
        from actionlab.ops.rubiks_shift import RubiksShift2d, RubiksShift3d
    except ImportError:  # pragma: no cover - the op module is part of the package
        return
    # RubiksShift2d (RubiksNet-AQ) runs the same op on time-folded frames: same formula.
    for layer in (RubiksShift3d, RubiksShift2d):
        register_module_macs(layer, _rubiks_module_formula, "actionlab::rubiks_shift")


_register_defaults()


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _resolve_op(qualname: str):
    namespace, name = qualname.split("::")
    try:
        return getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return None


@dataclass
class _CustomCounter:
    macs: int = 0
    calls: int = 0
    by_name: dict[str, int] = field(default_factory=dict)


def _custom_mapping(counter: _CustomCounter) -> dict:
    """FlopCounterMode formulas (which return FLOPs = 2 x MACs) for the registered ops."""
    mapping = {}
    for qualname, formula in _OP_FORMULAS.items():
        op = _resolve_op(qualname)
        if op is None:
            continue

        def flop_fn(*args, _f=formula, _q=qualname, out_val=None, **kwargs) -> int:
            macs = int(_f(*args, out=out_val, **kwargs))
            counter.macs += macs
            counter.calls += 1
            key = _OP_LABELS.get(_q, _q)
            counter.by_name[key] = counter.by_name.get(key, 0) + macs
            return 2 * macs

        flop_fn._get_raw = True  # type: ignore[attr-defined]  # called with tensors, not shapes
        mapping[op] = flop_fn
    return mapping


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode, no autograd recording, parameters temporarily without ``requires_grad``
    (the forward then takes no gradient-only branches, and meta-device models work)."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


def mac_breakdown(model: nn.Module, x: Tensor) -> dict[str, int]:
    """MACs of one forward of ``model`` on ``x`` split by operator name (``aten.convolution``,
    ``aten.addmm``, ``actionlab::rubiks_shift`` ...), plus ``"total"``. Divide by the batch
    size of ``x`` for a per-view figure."""
    counter = _CustomCounter()
    module_macs: dict[str, int] = {}
    hooks = []
    for m in model.modules():
        entry = next((e for t, e in _MODULE_FORMULAS.items() if isinstance(m, t)), None)
        if entry is None:
            continue
        formula, label = entry

        def pre(mod, inputs):
            mod._profile_calls = counter.calls

        def post(mod, inputs, output, _f=formula, _key=label):
            if counter.calls == getattr(mod, "_profile_calls", counter.calls):
                module_macs[_key] = module_macs.get(_key, 0) + int(_f(mod, inputs, output))

        hooks.append(m.register_forward_pre_hook(pre))
        hooks.append(m.register_forward_hook(post))
    mode = FlopCounterMode(display=False, custom_mapping=_custom_mapping(counter))
    try:
        with _frozen(model), mode:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        for m in model.modules():
            if hasattr(m, "_profile_calls"):
                del m._profile_calls
    counts: dict[str, int] = {}
    for op, flops in mode.get_flop_counts().get("Global", {}).items():
        name = str(op)
        if any(name.startswith(q.replace("::", ".")) for q in _OP_FORMULAS):
            continue
        counts[name] = counts.get(name, 0) + int(flops) // 2
    counts.update(counter.by_name)
    for key, macs in module_macs.items():
        counts[key] = counts.get(key, 0) + macs
    counts["total"] = sum(counts.values())
    return counts


def count_macs(model: nn.Module, x: Tensor) -> int:
    """MACs (one multiply-add = one) of one forward of ``model`` on ``x``, per view.

    ``x`` is one clip batch ``(B, C, T, H, W)``; the result is divided by ``B``, so pass
    ``B = 1`` (the model may live on the ``meta`` device for large shapes).
    """
    total = mac_breakdown(model, x)["total"]
    return total // max(1, x.shape[0])


DEFAULT_THREADS = 2
DEFAULT_REPEATS = 7
DEFAULT_WARMUP = 2


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure_latency(
    model: nn.Module,
    x: Tensor,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    threads: int | None = None,
) -> dict[str, float]:
    """Median and minimum forward latency (seconds) of ``model(x)`` in eval mode, no grad, over
    ``repeats`` runs after ``warmup``; ``threads`` fixes the intra-op threads meanwhile."""
    from actionlab.utils.cpu_memory import retain_freed_memory

    if x.device.type == "cpu":
        retain_freed_memory()  # no page faults on every forward's fresh activations
    times = []
    with _frozen(model), _threads(threads):
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "repeats": repeats}


def latency_model(
    model: nn.Module,
    device: str | torch.device = "cpu",
    memory_format: str = "auto",
    fuse: bool = True,
    compile: bool = False,
) -> nn.Module:
    """The inference setup latency is measured on: a copy of ``model`` on ``device`` in
    ``memory_format`` (``auto``: the fastest measured for it), with ``fuse`` fused for inference
    (``actionlab.models.fuse.fuse_for_inference``), with ``compile`` compiled by inductor with
    weight freezing (its first forward compiles: tens of seconds); ``model`` is unchanged."""
    from actionlab.models.fuse import fuse_for_inference
    from actionlab.models.memory_format import apply_memory_format

    fast = copy.deepcopy(model).to(device).eval()
    apply_memory_format(fast, memory_format, device)
    if fuse:
        fuse_for_inference(fast, inplace=True)
    if compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # inference: weights are constants (BN folding, packing)
        compiled = torch.compile(fast, dynamic=False)
        for attr in ("_actionlab_fused_for_inference", "_actionlab_memory_format"):
            if hasattr(fast, attr):
                setattr(compiled, attr, getattr(fast, attr))
        return compiled
    return fast


@dataclass
class ProfileResult:
    model: str
    num_classes: int
    input_thw: tuple[int, int, int]
    params: int
    macs: int
    gmacs: float
    breakdown: dict[str, int]
    latency_s: float | None = None
    batch_size: int = 1
    device: str = "cpu"
    threads: int = 0
    memory_format: str = "contiguous"
    fused: bool = False
    repeats: int = 0
    warmup: int = 0

    def line(self) -> str:
        t, h, w = self.input_thw
        lat = (
            f", {self.device.upper()} latency {self.latency_s * 1e3:.1f} ms (batch {self.batch_size}, "
            f"{self.threads} threads, {self.memory_format}{', fused' if self.fused else ''})"
            if self.latency_s
            else ""
        )
        return (
            f"{self.model}: {self.params / 1e6:.3f} M params ({self.num_classes} classes), "
            f"{self.gmacs:.2f} GMACs per view at {t}x{h}x{w}{lat}"
        )


def profile_model(
    model: nn.Module,
    name: str,
    num_classes: int,
    frames: int,
    crop: int,
    latency: bool = True,
    batch_size: int = 1,
    device: str = "cpu",
    threads: int | None = DEFAULT_THREADS,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    memory_format: str = "auto",
    fuse: bool = True,
    compile: bool = False,
) -> ProfileResult:
    """Parameters, per-view MACs at ``frames x crop x crop`` and (optionally) inference latency
    on ``device`` (see :func:`latency_model` and :func:`measure_latency`).

    MACs are counted on a ``meta``-device copy (shapes only, no compute) when every op
    supports it, else on the model itself.
    """
    try:
        breakdown = mac_breakdown(
            copy.deepcopy(model).to("meta"), torch.empty(1, 3, frames, crop, crop, device="meta")
        )
    except (NotImplementedError, RuntimeError):
        breakdown = mac_breakdown(model, torch.randn(1, 3, frames, crop, crop))
    macs = breakdown["total"]
    lat, fmt, fused = None, "contiguous", False
    if latency:
        from actionlab.models.fuse import is_fused
        from actionlab.models.memory_format import current_memory_format

        fast = latency_model(model, device, memory_format, fuse, compile)
        fmt, fused = current_memory_format(fast), is_fused(fast)
        x = torch.randn(batch_size, 3, frames, crop, crop, device=device)
        lat = measure_latency(fast, x, warmup, repeats, threads)["median_s"]
        del fast
    return ProfileResult(
        model=name,
        num_classes=num_classes,
        input_thw=(frames, crop, crop),
        params=count_params(model),
        macs=macs,
        gmacs=macs / 1e9,
        breakdown=breakdown,
        latency_s=lat,
        batch_size=batch_size,
        device=torch.device(device).type,
        threads=threads or torch.get_num_threads(),
        memory_format=fmt,
        fused=fused,
        repeats=repeats if latency else 0,
        warmup=warmup if latency else 0,
    )


@dataclass(frozen=True)
class ZooEntry:
    """One README row: a model config profiled at its paper input, with the paper's figures."""

    model: str
    num_classes: int
    frames: int
    crop: int
    paper: str  # params / GMACs as the paper or released code reports them


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("rubiks_tiny", 174, 8, 224, "1.9M / 3.9G"),
    ZooEntry("rubiks_small", 174, 8, 224, "3.6M / 6.8G"),
    ZooEntry("rubiks_medium", 174, 8, 224, "6.2M / 11.2G"),
    ZooEntry("rubiks_large", 174, 8, 224, "8.5M / 15.8G"),
    ZooEntry("tsm_r50", 174, 8, 224, "24.3M (400 cl.) / 33G"),
    ZooEntry("tsm_r101", 174, 8, 224, "-"),
    ZooEntry("x3d_xs", 400, 4, 160, "3.8M / 0.6G"),
    ZooEntry("x3d_s", 400, 13, 160, "3.8M / 2.0G"),
    ZooEntry("x3d_m", 400, 16, 224, "3.8M / 4.73G (6.2G at 256)"),
    ZooEntry("x3d_l", 400, 16, 312, "6.2M / 18.4G"),
    ZooEntry("vov3d_m", 174, 16, 256, "3.2M / 6.4G"),
    ZooEntry("vov3d_l", 174, 16, 256, "5.8M / 12.1G"),
    ZooEntry("rubiks_large_aq", 174, 8, 224, "8.5M / 15.7G"),
    ZooEntry("r3d_34", 400, 16, 224, "63.7M / 42.65G (release)"),
    ZooEntry("srtg_r3d_34", 400, 16, 224, "83.9M / 42.7G (release)"),
    ZooEntry("srtg_r2plus1d_50", 400, 16, 224, "-"),
    ZooEntry("mtnet_xs", 400, 16, 224, "21.8M / 15.9G (analytic, release)"),
    ZooEntry("mtnet_m", 400, 16, 224, "44.0M / 25.3G (analytic, release)"),
    ZooEntry("vit_base", 400, 8, 224, "86.1M"),
    ZooEntry("tokshift_base", 400, 8, 224, "134.8G (Linear + patch embed only)"),
)
ZOO_START, ZOO_END = "<!-- zoo:start -->", "<!-- zoo:end -->"


def config_dir() -> Path:
    """The repository's ``conf/`` (``ACTIONLAB_CONFIG_DIR`` overrides)."""
    import os

    env = os.environ.get("ACTIONLAB_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (path / "train.yaml").is_file():
        raise FileNotFoundError(
            f"no Hydra config tree at {path}; run from a source checkout or set "
            "ACTIONLAB_CONFIG_DIR to the repository's conf/ folder"
        )
    return path


def build_from_config(overrides: list[str]) -> tuple[nn.Module, Any]:
    """Compose ``conf/train.yaml`` with ``overrides`` and instantiate ``cfg.model``."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import actionlab  # noqa: F401  (registers the config resolvers)

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", *overrides])
    return instantiate(cfg.model), cfg


def _profile_entry(
    entry: ZooEntry, latency: bool, extra: list[str] | None = None, **latency_kwargs
) -> ProfileResult:
    overrides = [
        f"model={entry.model}",
        f"data.num_classes={entry.num_classes}",
        f"data.num_frames={entry.frames}",
        f"data.crop_size={entry.crop}",
        *(extra or []),
    ]
    model, _ = build_from_config(overrides)
    return profile_model(
        model, entry.model, entry.num_classes, entry.frames, entry.crop, latency, **latency_kwargs
    )


def zoo_table(results: list[ProfileResult], entries: tuple[ZooEntry, ...] = ZOO) -> str:
    """Markdown table of the zoo: measured params/GMACs next to the papers' figures."""
    paper = {e.model: e.paper for e in entries}
    lines = [
        "| model (`model=`) | classes | input T x H x W | params | GMACs / view | paper | latency (batch 1) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t, h, w = r.input_thw
        lat = f"{r.latency_s * 1e3:.0f} ms" if r.latency_s else "-"
        lines.append(
            f"| `{r.model}` | {r.num_classes} | {t}x{h}x{w} | {r.params / 1e6:.3f}M | "
            f"{r.gmacs:.2f} | {paper.get(r.model, '-')} | {lat} |"
        )
    timed = [r for r in results if r.latency_s]
    lines.append("")
    if timed:
        r = timed[0]
        last = [f"`{x.model}`" for x in timed if x.memory_format == "channels_last"]
        how = (
            f"{r.device.upper()} latency: batch {r.batch_size}, median of {r.repeats} forwards "
            f"after {r.warmup} warm-up ones, {r.threads} threads, eval mode, no autograd, "
            + ("fused for inference (`actionlab.models.fuse`), " if r.fused else "unfused, ")
            + "memory format `auto`: "
            + (f"channels-last for {', '.join(last)}, contiguous for the others." if last else "contiguous.")
        )
    else:
        how = "latency not measured (`--no-latency`)."
    lines.append(
        "GMACs: one multiply-add = one MAC, forward, one clip (view); convolutions, linear layers "
        "and RubiksShift (7 MACs per output element); temporal shift 0. Generated by `make zoo` "
        "(`python -m actionlab.profile --zoo`); " + how
    )
    return "\n".join(lines)


def update_readme(readme: Path, table: str, start: str = ZOO_START, end: str = ZOO_END) -> None:
    """Replace the text between the ``start`` and ``end`` markers of ``readme`` (the zoo
    markers by default) with ``table``."""
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(
            f"{readme} has no '{start}' ... '{end}' markers; add them where the table belongs"
        )
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table}\n{end}{tail}")


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """``python -m actionlab.profile model=<name> data=<name> [key=value ...] [options]``.

    Options: ``--frames T --crop S`` (default: ``data.num_frames``, ``data.crop_size``),
    ``--no-latency``, ``--batch B`` (latency batch), ``--json PATH``; ``--zoo`` profiles every
    model of :data:`ZOO` at its paper input, ``--readme README.md`` rewrites its table.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m actionlab.profile", description=main.__doc__)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=x3d_m data=ssv2")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--crop", type=int)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="intra-op threads while timing")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed forwards (median)")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed forwards first")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--memory-format", default="auto", help="auto | contiguous | channels_last")
    parser.add_argument("--no-fuse", action="store_true", help="time the model unfused")
    parser.add_argument("--compile", action="store_true", help="time it compiled (inductor, frozen weights)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--zoo", action="store_true")
    parser.add_argument("--models", nargs="*", help="with --zoo: only these rows (conf/model names)")
    parser.add_argument("--readme", type=Path)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    timing = dict(
        device=args.device, threads=args.threads, repeats=args.repeats, warmup=args.warmup,
        memory_format=args.memory_format, fuse=not args.no_fuse, compile=args.compile,
    )

    if args.zoo:
        unknown = set(args.models or ()) - {e.model for e in ZOO}
        if unknown:
            raise SystemExit(f"--models: not in the zoo: {sorted(unknown)}; rows are {[e.model for e in ZOO]}")
        results = []
        for entry in ZOO:
            if args.models and entry.model not in args.models:
                continue
            results.append(_profile_entry(entry, not args.no_latency, args.overrides, **timing))
            print(results[-1].line(), flush=True)
        table = zoo_table(results)
        print(table)
        _write_json(args.json or Path("bench/results/zoo.json"), [asdict(r) for r in results])
        if args.readme:
            update_readme(args.readme, table)
        return

    if not any(o.startswith("model=") for o in args.overrides):
        raise SystemExit("name the model: python -m actionlab.profile model=<conf/model name> data=<name>")
    model, cfg = build_from_config(args.overrides)
    name = next(o.split("=", 1)[1] for o in args.overrides if o.startswith("model="))
    frames = args.frames or int(cfg.data.num_frames)
    crop = args.crop or int(cfg.data.crop_size)
    result = profile_model(
        model, name, int(cfg.data.num_classes), frames, crop, not args.no_latency, args.batch, **timing
    )
    print(result.line())
    print("MACs by op: " + ", ".join(f"{k} {v / 1e9:.3f}G" for k, v in result.breakdown.items()))
    _write_json(args.json or Path(f"bench/results/profile_{name}.json"), asdict(result))


if __name__ == "__main__":
    main()
