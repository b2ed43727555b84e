"""mkdocs hook: tables generated at build time from the code and from ``bench/results/*.json``.

A page asks for a table with an HTML comment on a line of its own (invisible if not replaced):

``<!-- zoo: rubiks_tiny:174:8x224 rubiks_small:174:8x224 ... -->``
    Parameters and GMACs per view of each ``conf/model`` config at ``classes`` and input
    ``T x S x S``, counted by ``actionlab.profile`` on the ``meta`` device (shapes only: no
    weights, no compute), the paper's figure from ``actionlab.profile.ZOO`` where it lists the
    model, and the CPU latency of ``bench/results/zoo.json`` (``make zoo``) where it measured
    the same input. Counts are kept under a hash of the model and operator code and
    ``conf/model``: in ``docs/model_profiles.json`` (committed, so a fresh clone builds fast; ``make
    docs`` rewrites it) and ``.cache/docs/profiles.json``. A row whose hash does not match the
    code is counted again, so a table is never stale, only slower to build after a model change.
``<!-- bench: NAME -->``
    A table from ``bench/results/NAME.json`` (``rubiks_shift``, ``train_step``,
    ``train_step_zoo2``, ``dataloader``, ``multigrid``, ``multigrid_24ep``, ``zoo``).
    ``<!-- bench: efficiency -->`` renders ``bench/results/efficiency.json`` through
    ``bench/efficiency.py``'s own Markdown (the tables of ``bench/RESULTS.md``'s issue-15
    section): targets with MET / NOT MET as measured, every section's table, the changes
    predicted against measured, and the profile's op table of what limits the ratios.
    ``<!-- bench: gpu -->`` is the GPU run kit's section of ``bench/RESULTS.md`` as
    ``bench/gpu/report.py`` makes it from ``bench/results/gpu/*.json`` (the files a GPU run of
    ``bench/gpu/run.sh`` returned): the machine, the step table, the kernel and train-step
    figures, or, until a GPU run is there, the statement that nothing has run on a GPU.
``<!-- weights: all -->``, ``<!-- weights: FAMILY[,FAMILY] -->``
    The released checkpoints of ``actionlab.pretrained`` (every entry, or those of the
    converter families named): ``fetch`` name, model and data configs, frames x test crop,
    views and ``eval.protocol``, the authors' numbers with their views, the file or its page,
    and the entries' notes.
``<!-- weights-protocols: FAMILY[,FAMILY] -->``
    The input protocols of those entries (one row per distinct protocol) and the original code
    each comes from, as the registry holds them.
``<!-- weights-show: NAME -->``, ``<!-- weights-next: NAME -->``
    What ``python -m actionlab.pretrained show NAME`` prints, and the last lines of ``fetch
    NAME --dir weights`` (the ``eval.py`` command of the paper's row).
``<!-- protocols: all -->``
    The test protocols of ``actionlab.data.views.PROTOCOLS``: views, temporal rule, short
    side, crop layout, resize rule, score aggregation and the original test code.

An unknown directive, a missing results file, an unknown family or release, or a model that
fails to build raises, so a strict build (``make docs``) fails instead of publishing a page
without its numbers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CACHE = REPO / ".cache" / "docs" / "profiles.json"
COMMITTED = REPO / "docs" / "model_profiles.json"
# Set by `make docs`: rewrite the committed counts (tests and plain builds only use the cache).
WRITE_COMMITTED = os.environ.get("ACTIONLAB_DOCS_WRITE_PROFILES") == "1"
DIRECTIVE = re.compile(
    r"^<!--\s*(zoo|bench|weights|weights-protocols|weights-show|weights-next|protocols):\s*(.*?)\s*-->[ \t]*$",
    re.MULTILINE,
)
# What the per-view counts depend on; any change there recomputes them.
PROFILE_INPUTS = ("src/actionlab/models", "src/actionlab/ops", "src/actionlab/profile.py", "conf/model",
                  "conf/data_base")


# -- helpers -----------------------------------------------------------------------------------
def _results(name: str) -> Any:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"docs: {path.relative_to(REPO)} is missing; run the bench script that writes it")
    return json.loads(path.read_text())


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _bench_module(name: str):
    """A script of ``bench/`` (``name`` relative to it, e.g. ``gpu/report``) as a module (they are
    scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name.replace('/', '_')}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# -- zoo tables ----------------------------------------------------------------------------------
def _code_hash() -> str:
    digest = hashlib.sha1()
    for rel in PROFILE_INPUTS:
        path = REPO / rel
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.is_file() and f.suffix in (".py", ".yaml"):
                digest.update(str(f.relative_to(REPO)).encode())
                digest.update(f.read_bytes())
    return digest.hexdigest()


class Profiles:
    """Per-view params/MACs of model configs, computed once per code version."""

    def __init__(self) -> None:
        self.key = _code_hash()
        self.rows: dict[str, dict] = {}
        for path in (COMMITTED, CACHE):
            cached = json.loads(path.read_text()) if path.is_file() else {}
            if cached.get("key") == self.key:
                self.rows.update(cached.get("rows", {}))
        self.used: set[str] = set()
        self.dirty = False

    def get(self, model: str, classes: int, frames: int, crop: int) -> dict:
        name = f"{model}:{classes}:{frames}x{crop}"
        self.used.add(name)
        if name not in self.rows:
            self.rows[name] = self._profile(model, classes, frames, crop)
            self.dirty = True
        return self.rows[name]

    @staticmethod
    def _profile(model: str, classes: int, frames: int, crop: int) -> dict:
        # The reference RubiksShift counts like the compiled op; never compile it for the docs.
        os.environ.setdefault("ACTIONLAB_NO_EXTENSION", "1")
        import torch

        from actionlab.profile import build_from_config, count_params, mac_breakdown

        overrides = [f"model={model}", f"data.num_classes={classes}", f"data.num_frames={frames}",
                     f"data.crop_size={crop}"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.device("meta"):
                net, _ = build_from_config(overrides)
            macs = mac_breakdown(net, torch.empty(1, 3, frames, crop, crop, device="meta"))["total"]
        return {"params": count_params(net), "macs": macs}

    def save(self) -> None:
        if self.dirty:
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            CACHE.write_text(json.dumps({"key": self.key, "rows": self.rows}, indent=1) + "\n")
            self.dirty = False

    def write_committed(self) -> None:
        rows = {name: self.rows[name] for name in sorted(self.used)}
        text = json.dumps({"key": self.key, "rows": rows}, indent=1, sort_keys=True) + "\n"
        if not COMMITTED.is_file() or COMMITTED.read_text() != text:
            COMMITTED.write_text(text)


_profiles: Profiles | None = None


def zoo_table(spec: str) -> str:
    """Rows ``model:classes:TxS``; see the module docstring."""
    global _profiles
    from actionlab.profile import ZOO

    _profiles = _profiles or Profiles()
    paper = {(e.model, e.num_classes, e.frames, e.crop): e.paper for e in ZOO}
    measured = {}
    if (RESULTS / "zoo.json").is_file():
        for r in _results("zoo"):
            t, h, _ = r["input_thw"]
            measured[(r["model"], r["num_classes"], t, h)] = r
    rows = []
    for item in spec.split():
        try:
            model, classes, shape = item.split(":")
            frames, crop = (int(v) for v in shape.split("x"))
            classes = int(classes)
        except ValueError as err:
            raise ValueError(f"docs: zoo row {item!r} is not model:classes:TxS") from err
        if not (REPO / "conf" / "model" / f"{model}.yaml").is_file():
            raise ValueError(f"docs: zoo row {item!r}: no conf/model/{model}.yaml")
        p = _profiles.get(model, classes, frames, crop)
        key = (model, classes, frames, crop)
        latency = (measured.get(key) or {}).get("latency_s")
        rows.append([
            f"`{model}`", classes, f"{frames}x{crop}x{crop}", f"{p['params'] / 1e6:.3f}M",
            f"{p['macs'] / 1e9:.2f}", paper.get(key, "-"), f"{latency * 1e3:.0f} ms" if latency else "-",
        ])
    _profiles.save()
    header = ["`model=`", "classes", "input T x H x W", "params", "GMACs / view", "paper / release",
              "CPU latency (`make zoo`)"]
    note = ("Counted from the code at build time (`actionlab.profile` on the meta device: one "
            "multiply-add = one MAC, forward, one view; RubiksShift 7 MACs per output element, "
            "temporal and token shifts 0).")
    return _table(header, rows) + "\n\n" + note


# -- benchmark tables ----------------------------------------------------------------------------
def bench_zoo() -> str:
    rows = []
    for r in _results("zoo"):
        t, h, w = r["input_thw"]
        lat = f"{r['latency_s'] * 1e3:.0f} ms" if r.get("latency_s") else "-"
        rows.append([f"`{r['model']}`", r["num_classes"], f"{t}x{h}x{w}", f"{r['params'] / 1e6:.3f}M",
                     f"{r['gmacs']:.2f}", lat, r.get("device", "cpu"), r.get("threads", "")])
    return _table(["model", "classes", "input", "params", "GMACs / view", "latency (batch 1)", "device",
                   "threads"], rows)


def bench_rubiks_shift() -> str:
    data = _results("rubiks_shift")
    parts = []
    for device, section in data.items():
        info = section.get("info", {})
        parts.append(
            f"**{device}**: {info.get('device', '?')}, torch {info.get('torch', '?')}, "
            f"{info.get('threads', '?')} threads, load average {info.get('loadavg_1min', 0):.1f}, "
            f"median of {info.get('repeats', '?')} runs."
        )
        rows = []
        for r in section["rows"]:
            rows.append([
                "x".join(map(str, r["shape"])), ",".join(map(str, r["stride"])), r["impl"], r["dtype"],
                f"{r['clone_ms']:.0f}", f"{r['forward_ms']:.0f}", f"{r['backward_ms']:.0f}",
                f"{r['forward_backward_ms']:.0f}", f"{r['forward_backward_vs_clone']:.1f}x",
            ])
        parts.append(_table(["shape (N,T,C,H,W)", "stride", "impl", "dtype", "clone ms", "fwd ms", "bwd ms",
                             "fwd+bwd ms", "fwd+bwd vs clone"], rows))
        speedups = section.get("speedup_kernel_over_reference") or []
        if speedups:
            parts.append(_table(
                ["shape", "stride", "kernel speedup fwd", "bwd", "fwd+bwd"],
                [["x".join(map(str, s["shape"])), ",".join(map(str, s["stride"])),
                  f"{s['forward_speedup']:.1f}x", f"{s['backward_speedup']:.1f}x",
                  f"**{s['forward_backward_speedup']:.1f}x**"] for s in speedups],
            ))
    return "\n\n".join(parts)


def _train_step(name: str) -> str:
    data = _results(name)
    rows = data["rows"] if isinstance(data, dict) else data
    script = _bench_module("train_step")
    text = script.table(rows)
    summary = script.ratios(rows)
    return text + ("\n\n" + "\n".join(f"- {line}" for line in summary) if summary else "")


def bench_train_step() -> str:
    return _train_step("train_step")


def bench_train_step_zoo2() -> str:
    return _train_step("train_step_zoo2")


def bench_dataloader() -> str:
    data = _results("dataloader")
    setup, machine = data.get("setup", {}), data.get("machine", {})
    head = (f"{setup.get('videos')} videos of {setup.get('seconds')} s at {setup.get('fps')} fps "
            f"({setup.get('codec')}); clip: {setup.get('clip')}; batch {setup.get('batch')}, "
            f"{setup.get('clips_per_pass')} clips per pass, best of {setup.get('repeats')}; "
            f"{machine.get('cpus')} CPUs, load {machine.get('loadavg_1m_at_end')}, torch {machine.get('torch')}.")
    rows = [[r["backend"], r["workers"], f"{r['raw_clips_s']:.1f}",
             f"**{r['datamodule_clips_s']:.1f} ({_pct(r['datamodule_vs_raw'])})**",
             f"{r['float_clips_s']:.1f} ({_pct(r['float_vs_raw'])})",
             f"{r['uint8_cpu_finish_clips_s']:.1f} ({_pct(r['uint8_cpu_finish_vs_raw'])})"]
            for r in data["rows"]]
    table = _table(["backend", "workers", "raw clips/s", "datamodule (% of raw)", "float batches",
                    "uint8 + CPU finish"], rows)
    scaling = data.get("scaling_1_to_2_workers", {})
    scale = _table(["backend", "raw", "datamodule", "float", "uint8 + CPU finish"],
                   [[b, *(f"x{v[k]:.2f}" for k in ("raw", "datamodule", "float", "uint8_cpu_finish"))]
                    for b, v in scaling.items()])
    return f"{head}\n\n{table}\n\nScaling from 1 to 2 workers:\n\n{scale}"


def _multigrid(name: str) -> str:
    data = _results(name)
    s = data["setup"]
    head = (f"`{s['model']}`, base batch {s['batch']} x {s['frames']} frames x {s['crop']} px, "
            f"{s['optimizer']} LR {s['lr']} (weight decay {s['weight_decay']}), {s['base_epochs']} base "
            f"epochs, LR steps at {s['steps']}, split BN of {s['bn_base_size']} clips, {s['dataset']}, "
            f"{s['device']} ({s['torch_threads']} threads). Schedule iteration ratio "
            f"{data['schedule_iteration_ratio']:.2f}x (PySlowFast's default K400 schedule: "
            f"{data['default_schedule_iteration_ratio']:.2f}x).")
    rows = []
    for run, r in data["runs"].items():
        rows.append([run, r["epochs"], f"{r['steps']:,}", f"{r['wall_s']:.0f} s", f"**{_pct(r['val_acc'])}**",
                     _pct(r["val_acc_best"]), f"{r['iteration_ratio']:.2f}x", f"{r['wall_clock_ratio']:.2f}x"])
    table = _table(["run", "epochs", "optimizer steps", "wall-clock", "val top-1 final", "best",
                    "fewer steps", "less wall-clock"], rows)
    curves = "\n".join(
        f"- {run}: " + ", ".join(f"{100 * v:.0f}" for v in r["val_acc_per_epoch"]) + " (% per epoch)"
        for run, r in data["runs"].items()
    )
    return f"{head}\n\n{table}\n\n{curves}"


def bench_multigrid() -> str:
    return _multigrid("multigrid")


def bench_multigrid_24ep() -> str:
    return _multigrid("multigrid_24ep")


def bench_efficiency() -> str:
    efficiency = _bench_module("efficiency")
    return efficiency.markdown(_results("efficiency"))


GPU_RESULTS = RESULTS / "gpu"


def bench_gpu() -> str:
    report = _bench_module("gpu/report")
    section = report.gpu_section(report.read_run(GPU_RESULTS) if GPU_RESULTS.is_dir() else {})
    # Its heading and how-it-was-made paragraph are RESULTS.md's; the page has its own.
    head, _, body = section.partition("\n\n")
    if not head.startswith("## GPU run kit"):
        raise ValueError(f"docs: bench/gpu/report.py's section starts with {head!r}, not '## GPU run kit'")
    return body.partition("\n\n")[2]


BENCH = {name[len("bench_"):]: fn for name, fn in globals().items() if name.startswith("bench_")}


# -- released weights (actionlab.pretrained) ----------------------------------------------------
def _releases(spec: str) -> list:
    """The registry entries of ``all`` or of comma/space-separated converter families."""
    from actionlab.pretrained import releases

    everything = releases()
    if spec.strip() == "all":
        return everything
    wanted = spec.replace(",", " ").split()
    known = sorted({r.family for r in everything})
    unknown = [f for f in wanted if f not in known]
    if not wanted or unknown:
        raise ValueError(f"docs: weights: unknown family {unknown or spec!r}; known: {known} or 'all'")
    return [r for r in everything if r.family in wanted]


def _release(name: str):
    from actionlab.pretrained import get

    try:
        return get(name.strip())
    except KeyError as err:
        raise ValueError(f"docs: {err.args[0]}") from err


def _result(result) -> str:
    if result is None or result.top1 is None:
        return "-"
    top5 = f" / {result.top5:g}" if result.top5 is not None else ""
    return f"{result.top1:g}{top5} ({result.views}; {result.source})"


def _values(values) -> str:
    values = [round(float(v), 4) for v in values]
    return f"{values[0]:g}" if len(set(values)) == 1 else "/".join(f"{v:g}" for v in values)


def weights_table(spec: str) -> str:
    rows, notes = [], {}
    for r in _releases(spec):
        p = r.protocol
        if r.url:
            where = f"[{r.file_name or 'file'}]({r.url})"
        else:
            where = f"{'`' + r.file_name + '` ' if r.file_name else ''}by hand from [its page]({r.page})"
        rows.append([
            f"`{r.name}`", f"`{r.config}`", f"`{r.dataset}`", r.pretrain, r.frames_x_crop(),
            f"{r.views()} `{p.eval_protocol}`", _result(r.paper),
            "; ".join(_result(x) for x in r.results) or "-", where,
        ])
        note = f"initial weights, not a classifier to evaluate; {r.notes}" if r.task == "init" else r.notes
        if note:
            notes.setdefault(note, []).append(f"`{r.name}`")
    header = ["`fetch` name", "`model=`", "`data=`", "pretrain", "frames x test crop", "views",
              "paper top-1 / top-5", "also reported", "file"]
    note = ("Generated from the registry (`actionlab.pretrained`) at build time; views are test clips "
            "x crops of the protocol the converted checkpoint records, the paper's.")
    listed = "\n".join(f"- {', '.join(names)}: {text}." for text, names in notes.items())
    return "\n\n".join(part for part in (_table(header, rows), listed, note) if part)


def weights_protocols(spec: str) -> str:
    groups: dict[str, list] = {}
    for r in _releases(spec):
        key = json.dumps({k: v for k, v in r.protocol.as_dict().items() if k != "reference"}, sort_keys=True)
        groups.setdefault(key, []).append(r)
    rows, references = [], []
    for entries in groups.values():
        p = entries[0].protocol
        if p.sampling == "dense":
            fps = f" at {p.target_fps:g} fps" if p.target_fps else " (source frames)"
            sampling = f"{p.num_frames} frames {p.sampling_rate} apart{fps}, short videos {p.pad}"
        else:
            sampling = f"{p.num_frames} TSN segments"
        options = ", ".join(f"`{k}={v}`" for k, v in p.model_options.items()) or "-"
        lo, hi = p.train_scale
        rows.append([
            ", ".join(f"`{r.name}`" for r in entries),
            f"{p.channel_order.upper()}, mean {_values(p.mean)}, std {_values(p.std)}",
            sampling,
            f"short side {lo if lo == hi else f'{lo}-{hi}'}, crop {p.train_crop}",
            f"{p.clips} x {p.crops} views of {p.test_crop}, short side {p.test_scale}",
            f"`{p.aggregate}`", f"`{p.eval_protocol}`", options,
        ])
        if p.reference not in references:
            references.append(p.reference)
    header = ["entries", "pixels (in [0, 1])", "sampling", "train", "test", "scores", "`eval.protocol`",
              "model options"]
    sources = "\n".join(f"- {ref}." for ref in references)
    return f"{_table(header, rows)}\n\nWhere the values come from (the original code):\n\n{sources}"


def weights_show(name: str) -> str:
    from actionlab.pretrained.__main__ import show

    release = _release(name)
    return f"```text\n$ python -m actionlab.pretrained show {release.name}\n{show(release)}\n```"


def weights_next(name: str) -> str:
    from actionlab.pretrained.__main__ import next_step

    release = _release(name)
    by_hand = " --file PATH" if release.manual else ""
    command = f"python -m actionlab.pretrained fetch {release.name} --dir weights{by_hand}"
    return (f"```text\n$ {command}\n...\n"
            f"{next_step(release, f'weights/{release.name}.ckpt')}\n```")


# -- test protocols (actionlab.data.views) --------------------------------------------------------
# The short-side rules of ``actionlab.data.views.SCALES`` in words; a new rule fails the build here.
SCALE_RULES = {
    "data": "`data.scale_size`",
    "crop": "= the test crop",
    "pyslowfast": "= the test crop (3 crops); `data.scale_size` (1 crop)",
    "srtg": "{srtg}",
}


def protocols_table(spec: str) -> str:
    from actionlab.data.views import PROTOCOLS, SCALES, SRTG_SCALE

    if spec.strip() != "all":
        raise ValueError(f"docs: protocols: {spec!r}; only 'all' is known")
    if set(SCALES) != set(SCALE_RULES):
        raise ValueError(f"docs: describe the short-side rules {sorted(set(SCALES) - set(SCALE_RULES))} in SCALE_RULES")
    rows = [[
        f"`{p.name}`", f"{p.clips} x {p.crops}", f"`{p.sampling}`" if p.sampling else "`data.sampling`",
        SCALE_RULES[p.scale].format(srtg=SRTG_SCALE), f"`{p.crop_mode}`", f"`{p.resize}`", f"`{p.aggregate}`",
        p.reference,
    ] for p in PROTOCOLS.values()]
    header = ["`eval.protocol`", "clips x crops", "frames (`eval.sampling`)", "short side", "crops",
              "resize", "scores (`eval.aggregate`)", "original test code"]
    return _table(header, rows)


RENDER = {
    "zoo": zoo_table,
    "weights": weights_table,
    "weights-protocols": weights_protocols,
    "weights-show": weights_show,
    "weights-next": weights_next,
    "protocols": protocols_table,
}


def render(markdown: str) -> str:
    """Replace every directive of ``markdown`` by its table."""

    def replace(match: re.Match) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind in RENDER:
            return RENDER[kind](arg)
        if arg not in BENCH:
            raise ValueError(f"docs: unknown bench table {arg!r}; known: {sorted(BENCH)}")
        return BENCH[arg]()

    return DIRECTIVE.sub(replace, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    return render(markdown)


def on_post_build(config) -> None:  # mkdocs hook
    if WRITE_COMMITTED and _profiles is not None:
        _profiles.write_committed()
