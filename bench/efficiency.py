"""Wall-clock efficiency of RubiksNet vs TSM (issue 15): today's default path against the new one.

Every variant runs in its own worker process (its own RubiksShift build: ``ACTIONLAB_CPU_ISA=
base`` is the portable build the lab shipped before, ``avx2`` the new default where the CPU has
it), and the variants of a section are timed **interleaved** (A B C A B C ..., medians), so a
load change on a shared machine hits them alike; the load average is recorded before and after
every section. Sections:

* ``kernels`` - the RubiksShift ops (forward, input and shift gradient) at RubiksNet-Tiny's
  shapes: channels-first with today's build, with the AVX2 build, channels-last (AVX2), and
  channels-last with the AVX-512 build (on AVX-512 CPUs) and with ``--baseline REV``'s code;
* ``train`` - train step (forward, CE, backward, SGD) at 8x224, batch 2: RubiksNet-Tiny and
  TSM-R50 today (contiguous, portable build) and in their fastest configuration;
* ``latency`` - batch-1 inference at 8x224: the ladder today -> channels-last -> BN + ReLU in
  the shift's load (eval) -> ``fuse_for_inference``, for both models;
* ``compile`` - ``torch.compile`` (inductor) as an alternative: compile time and the compiled
  latency / train step next to the best eager variant;
* ``profile`` - ``torch.profiler`` of one Tiny train step (8x160, batch 2, the issue's profile)
  and one batch-1 inference, today vs new, by op category;
* ``formats3d`` - contiguous vs channels_last_3d for the 3D models (X3D, VoV3D): what
  ``memory_format=auto`` picks for them on this device;
* ``bn_relu`` - training-mode BatchNorm + ReLU (forward and backward) at RubiksNet-Tiny's and
  TSM-R50's shapes: channels-last PyTorch, the fused channels-last kernel
  (``actionlab.ops.batch_norm_act``), NCHW PyTorch; and both models' train step at 8x224 with
  and without the kernel.

Output: a table per section, the changes with their predicted and measured effect, the target
ratios; ``bench/results/efficiency.json`` (``--out``). ``--device cuda`` runs the same on a GPU
(no ISA variants). One command, about 6-10 minutes on an idle 2-core machine::

    python bench/efficiency.py                     # CPU, 2 threads, all sections
    python bench/efficiency.py --sections train latency --reps 9
    python bench/efficiency.py --sections kernels train --baseline REV   # and the code at REV
    python bench/efficiency.py --device cuda --batch 16
    python bench/efficiency.py --table-only        # print the tables of the JSON, measure nothing
    python bench/efficiency.py --results-md        # bench/RESULTS.md's section from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "efficiency.json"
SECTIONS = ("kernels", "train", "latency", "compile", "profile", "formats3d", "bn_relu")


@dataclass(frozen=True)
class Variant:
    """One configuration timed in its own worker process."""

    name: str
    kind: str  # train | infer | op | bnrelu
    model: str = "rubiks_tiny"  # conf/model name
    frames: int = 8
    crop: int = 224
    batch: int = 2
    isa: str = "avx2"  # RubiksShift CPU build: base (today) | avx2
    memory_format: str = "contiguous"
    eval_fused: bool = True  # eval: BN + ReLU applied in the shift's load (off: today's ops)
    fuse: bool = False  # fuse_for_inference
    compile: bool = False  # torch.compile (inductor)
    retain: bool = True  # actionlab.utils.cpu_memory.retain_freed_memory (off: glibc's default)
    op: str = ""  # kind=op: forward | grad_input | grad_shift
    shape: tuple = ()  # kind=op: (N, T, C, H, W)
    stride: tuple = (1, 1, 1)
    bn_kernel: bool = True  # actionlab.ops.batch_norm_act.enabled (off: PyTorch's BN + ReLU)
    fold_stem: bool = True  # actionlab.models.rubiksnet.fold_stem_for_inference
    tree: str = ""  # another checkout (--baseline, relative to the repo): its src/ and cuda/ instead of this one's


# What each change should save, written down before measuring (issue 15: "profile first, write
# down what each change should save, measure, keep what works"). Baseline profile (the issue):
# a Tiny train step spends 52% in 1x1 convolutions (oneDNN reorders NCHW to its blocked layout on
# every call), 18% in BatchNorm, 8% in ReLU and adds, 9% in RubiksShift.
PREDICTIONS = {
    "avx2_build": "RubiksShift CPU ops 1.3-1.8x faster (8-wide FMA instead of 4-wide SSE2; the large "
    "planes are memory-bound, the small ones compute-bound); train step ~3% faster (shift ~9%)",
    "channels_last_train": "Tiny train step 1.4x faster (no conv reorders: the 52% conv share runs "
    "1.2-1.6x faster in NHWC, the NHWC shift about as fast as NCHW); TSM-R50 1.1-1.2x (its 3x3 convs "
    "are compute-bound)",
    "channels_last_infer": "Tiny batch-1 latency 1.3x lower; TSM-R50 1.1x",
    "eval_bn_relu_in_shift": "Tiny latency -10 to -15%: 2 of the ~13 full-tensor passes per block "
    "(BN-apply of bn2, ReLU) are folded into the shift's reads",
    "fuse_for_inference": "Tiny latency another -15 to -20%: bn2 into conv2 (free conv bias), the "
    "residual add + next BN + ReLU in one pass (3 of the remaining ~9 passes); TSM-R50 -10% (53 BNs "
    "folded into their convolutions, ReLU and adds stay)",
    "retain_freed_memory": "up to -10% (the kernel page-faults and zeroes every freed activation buffer "
    "again on the next step: ~21,000 faults and 30-75 ms system time per Tiny forward measured)",
    "bn_relu_kernel": "BN + ReLU forward + backward (16 frames): at C=54 80x80 and C=108 40x40 1.5-2.5x "
    "faster than channels-last PyTorch (PyTorch's channels-last BN backward is 2.4-4x its NCHW one there, "
    "and the ReLU forward and threshold_backward are 5 more passes over the tensor), at least as fast as "
    "NCHW PyTorch; at C=432 10x10 (0.7 MB, in cache) about equal. Tiny train step: the profiled 8x160 "
    "step's BN ~213 ms toward NCHW's ~113 ms or less, plus ~35 ms threshold_backward and ~8 ms ReLU "
    "forward gone: ~140 of ~700 ms, 1.2-1.25x; TSM-R50 (widths 64-2048, BN ~10% of its step) 1.02-1.05x",
    "fold_stem": "Tiny batch-1 latency -2 to -4%: the two BN + ReLU passes over the largest tensors "
    "(8x54x112x112, ~2.6 ms each when timed alone) replaced by one more 3-channel stem convolution "
    "(~2.7 ms): 2.5-5 ms of ~110 ms",
    "avx512_build": "the channels-last shift gradient (27 multiply-adds per element, compute-bound) "
    "1.5-2x faster, the memory-bound forward, input gradient and BN + ReLU at the large planes "
    "unchanged; Tiny train step 3-6% faster (the shift gradient is ~12% of it)",
    "grad_shift_blocks": "channels-last shift gradient 1.3-1.6x faster at Tiny's shapes (C = 54: the "
    "tail channels as an overlapping 16-channel block; narrow rows summed before the double sums), "
    "forward and input gradient unchanged; Tiny train step 5-8% faster (the shift gradient was 17% of "
    "a profiled 8x224 step)",
    "torch_compile": "inference at most ~10% better than the fused eager model (what is left to fuse "
    "is the 1x1-conv epilogues; RubiksShift stays an opaque op), at a compile cost of minutes on 2 "
    "cores; training: inductor fuses BN/ReLU/add in the backward too, maybe 1.2x, same compile cost",
}

TARGETS = {
    "train_ratio_tiny_vs_tsm": 4.0,
    "latency_ratio_tsm_vs_tiny": 5.0,
    "tiny_train_speedup_vs_today": 1.5,
}


def _cpu_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


def section_variants(section: str, device: str, batch: int, baseline: str = "") -> list[Variant]:
    """The variants of a section; on CUDA without the ISA ladder (a GPU build is one build).
    ``baseline``: a checkout of an earlier commit (``--baseline``): its kernels and Tiny's train
    step timed next to this one's."""
    cpu = device == "cpu"
    today = {"isa": "base", "retain": False} if cpu else {}
    avx512 = cpu and _cpu_capability() == "AVX512"
    if section == "kernels":
        shapes = [((2, 8, 54, 112, 112), (1, 1, 1)), ((2, 8, 54, 112, 112), (1, 2, 2)),
                  ((2, 8, 108, 28, 28), (1, 1, 1)), ((2, 8, 432, 7, 7), (1, 1, 1))]
        out = []
        for shape, stride in shapes:
            for op in ("forward", "grad_input", "grad_shift"):
                tag = f"{op} {'x'.join(map(str, shape[2:]))} s{stride[1]}"
                if cpu:
                    out.append(Variant(f"{tag} | channels-first, today's build", "op", isa="base", op=op, shape=shape, stride=stride))
                out.append(Variant(f"{tag} | channels-first", "op", op=op, shape=shape, stride=stride))
                out.append(Variant(f"{tag} | channels-last", "op", op=op, shape=shape, stride=stride, memory_format="channels_last"))
                if avx512:
                    out.append(Variant(f"{tag} | channels-last, AVX-512 build", "op", isa="avx512", op=op, shape=shape,
                                       stride=stride, memory_format="channels_last"))
                if baseline:
                    out.append(Variant(f"{tag} | channels-last, baseline", "op", op=op, shape=shape, stride=stride,
                                       memory_format="channels_last", tree=baseline))
        return out
    if section == "train":
        return [
            Variant("rubiks_tiny today", "train", batch=batch, eval_fused=False, **today),
            *([Variant("rubiks_tiny contiguous (AVX2 build)", "train", batch=batch)] if cpu else []),
            Variant("rubiks_tiny channels_last", "train", batch=batch, memory_format="channels_last"),
            *([Variant("rubiks_tiny channels_last (AVX-512 build)", "train", batch=batch, memory_format="channels_last", isa="avx512")] if avx512 else []),
            *([Variant("rubiks_tiny channels_last (baseline)", "train", batch=batch, memory_format="channels_last", tree=baseline)] if baseline else []),
            *([Variant("rubiks_tiny channels_last (glibc allocator)", "train", batch=batch, memory_format="channels_last", retain=False)] if cpu else []),
            Variant("tsm_r50 today", "train", model="tsm_r50", batch=batch, **today),
            *([Variant("tsm_r50 contiguous", "train", model="tsm_r50", batch=batch)] if cpu else []),
            Variant("tsm_r50 channels_last", "train", model="tsm_r50", batch=batch, memory_format="channels_last"),
        ]
    if section == "latency":
        cl = {"memory_format": "channels_last"}
        return [
            Variant("rubiks_tiny today", "infer", batch=1, eval_fused=False, **today),
            *([Variant("rubiks_tiny contiguous (AVX2 build)", "infer", batch=1, eval_fused=False)] if cpu else []),
            Variant("rubiks_tiny channels_last", "infer", batch=1, eval_fused=False, **cl),
            Variant("rubiks_tiny channels_last + BN/ReLU in shift", "infer", batch=1, **cl),
            Variant("rubiks_tiny channels_last + fuse_for_inference, stem not folded", "infer", batch=1, fuse=True, fold_stem=False, **cl),
            Variant("rubiks_tiny channels_last + fuse_for_inference", "infer", batch=1, fuse=True, **cl),
            *([Variant("rubiks_tiny channels_last + fuse_for_inference (AVX-512 build)", "infer", batch=1, fuse=True, isa="avx512", **cl)] if avx512 else []),
            Variant("rubiks_tiny channels_last + fuse_for_inference, compiled", "infer", batch=1, fuse=True, compile=True, **cl),
            *([Variant("rubiks_tiny channels_last + fuse_for_inference (glibc allocator)", "infer", batch=1, fuse=True, retain=False, **cl)] if cpu else []),
            Variant("tsm_r50 today", "infer", model="tsm_r50", batch=1, eval_fused=False, **today),
            Variant("tsm_r50 channels_last", "infer", model="tsm_r50", batch=1, **cl),
            Variant("tsm_r50 channels_last + fuse_for_inference", "infer", model="tsm_r50", batch=1, fuse=True, **cl),
            Variant("tsm_r50 channels_last + fuse_for_inference, compiled", "infer", model="tsm_r50", batch=1, fuse=True, compile=True, **cl),
        ]
    if section == "compile":
        cl = {"memory_format": "channels_last"}
        return [
            Variant("rubiks_tiny eager fused", "infer", batch=1, fuse=True, **cl),
            Variant("rubiks_tiny compiled", "infer", batch=1, compile=True, **cl),
            Variant("rubiks_tiny compiled fused", "infer", batch=1, fuse=True, compile=True, **cl),
            Variant("tsm_r50 eager fused", "infer", model="tsm_r50", batch=1, fuse=True, **cl),
            Variant("tsm_r50 compiled fused", "infer", model="tsm_r50", batch=1, fuse=True, compile=True, **cl),
            Variant("rubiks_tiny train eager", "train", batch=batch, **cl),
            Variant("rubiks_tiny train compiled", "train", batch=batch, compile=True, **cl),
        ]
    if section == "profile":
        return [
            Variant("rubiks_tiny train today", "train", crop=160, batch=batch, eval_fused=False, **today),
            Variant("rubiks_tiny train new", "train", crop=160, batch=batch, memory_format="channels_last"),
            Variant("rubiks_tiny infer today", "infer", batch=1, eval_fused=False, **today),
            Variant("rubiks_tiny infer new", "infer", batch=1, fuse=True, memory_format="channels_last"),
        ]
    if section == "formats3d":
        out = []
        for model, frames, crop in (("x3d_m", 16, 224), ("vov3d_m", 16, 224)):
            for fmt in ("contiguous", "channels_last"):
                out.append(Variant(f"{model} infer {fmt}", "infer", model=model, frames=frames, crop=crop, batch=1, fuse=True, memory_format=fmt))
        for fmt in ("contiguous", "channels_last"):
            out.append(Variant(f"x3d_s train {fmt}", "train", model="x3d_s", frames=13, crop=160, batch=batch, memory_format=fmt))
        return out
    if section == "bn_relu":
        out = []
        # (frames, C, H, W) of RubiksNet-Tiny at 8x160 batch 2 (the profiled step) and of
        # TSM-R50's stages at 8x224 batch 2.
        for shape in ((16, 54, 80, 80), (16, 108, 40, 40), (16, 216, 20, 20), (16, 432, 10, 10),
                      (16, 64, 56, 56), (16, 128, 28, 28), (16, 256, 14, 14), (16, 512, 7, 7)):
            tag = f"BN+ReLU {shape[1]}x{shape[2]}x{shape[3]} N{shape[0]}"
            out.append(Variant(f"{tag} | channels-last PyTorch", "bnrelu", shape=shape, memory_format="channels_last", bn_kernel=False))
            out.append(Variant(f"{tag} | channels-last kernel", "bnrelu", shape=shape, memory_format="channels_last"))
            out.append(Variant(f"{tag} | NCHW PyTorch", "bnrelu", shape=shape, bn_kernel=False))
        for model in ("rubiks_tiny", "tsm_r50"):
            out.append(Variant(f"{model} channels_last, PyTorch BN + ReLU", "train", model=model, batch=batch,
                               memory_format="channels_last", bn_kernel=False))
            out.append(Variant(f"{model} channels_last, BN + ReLU kernel", "train", model=model, batch=batch,
                               memory_format="channels_last"))
        return out
    raise ValueError(f"unknown section {section!r}; choose from {SECTIONS}")


# ---- worker (runs in the subprocess) -------------------------------------------------------------


class _Job:
    """Builds one variant and runs one timed iteration per ``run`` command."""

    def __init__(self, v: Variant, device: str, threads: int) -> None:
        import torch

        sys.path.insert(0, str(ROOT / v.tree / "src"))
        torch.set_num_threads(threads)
        if v.retain and device == "cpu":
            from actionlab.utils.cpu_memory import retain_freed_memory

            retain_freed_memory()
        torch.manual_seed(0)
        self.v, self.device = v, torch.device(device)
        self.torch = torch
        from actionlab.ops import batch_norm_act
        from actionlab.ops import rubiks_shift as rs

        batch_norm_act.enabled = v.bn_kernel
        from actionlab.models import rubiksnet

        rubiksnet.fold_stem_for_inference = v.fold_stem
        self.kernel = rs.kernel_available()
        self.info: dict[str, Any] = {"kernel": self.kernel, "threads": torch.get_num_threads()}
        self.compile_s = None
        self.inner = 1  # iterations per timed run (the result is per iteration)
        if v.kind == "op":
            self._setup_op(rs)
        elif v.kind == "bnrelu":
            self._setup_bn_relu(batch_norm_act)
        else:
            self._setup_model()

    def _setup_op(self, rs) -> None:
        torch, v = self.torch, self.v
        x = torch.randn(v.shape, device=self.device)
        shift = (torch.rand(3, v.shape[2], device=self.device) * 2 - 1)
        if v.memory_format == "channels_last":
            x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        out = torch.ops.actionlab.rubiks_shift(x, shift, list(v.stride), False)
        grad = torch.randn_like(out)
        ops, stride = torch.ops.actionlab, list(v.stride)
        call = {
            "forward": lambda: ops.rubiks_shift(x, shift, stride, False),
            "grad_input": lambda: ops.rubiks_shift_grad_input(grad, shift, list(x.shape), stride, False),
            "grad_shift": lambda: ops.rubiks_shift_grad_shift(grad, x, shift, stride, False),
        }[v.op]
        self._repeat_to_50ms(call)
        self.elements = out.numel()

    def _repeat_to_50ms(self, call) -> None:
        """About 50 ms per timed run: single calls of the small shapes are too short to time."""
        call()
        start = time.perf_counter()
        call()
        self.inner = max(1, min(50, round(0.05 / max(time.perf_counter() - start, 1e-4))))
        self.fn = lambda: [call() for _ in range(self.inner)]

    def _setup_bn_relu(self, batch_norm_act) -> None:
        """One training-mode BN + ReLU, forward and backward, as RubiksNet's blocks call it."""
        torch, v = self.torch, self.v
        fmt = torch.channels_last if v.memory_format == "channels_last" else torch.contiguous_format
        x = torch.randn(v.shape, device=self.device).contiguous(memory_format=fmt).requires_grad_()
        grad = torch.randn(v.shape, device=self.device).contiguous(memory_format=fmt)
        bn, relu = torch.nn.BatchNorm2d(v.shape[1]).to(self.device), torch.nn.ReLU(inplace=True)
        self.info["kernel_applies"] = batch_norm_act.kernel_applies(bn, x)

        def step() -> None:
            x.grad = bn.weight.grad = bn.bias.grad = None
            batch_norm_act.bn_relu(bn, x, relu).backward(grad)

        self._repeat_to_50ms(step)
        self.elements = x.numel()

    def _setup_model(self) -> None:
        torch, v = self.torch, self.v
        from actionlab.models.fuse import fuse_for_inference
        from actionlab.models.memory_format import apply_memory_format
        from actionlab.profile import build_from_config, count_macs

        overrides = [f"model={v.model}", "data.num_classes=174", f"data.num_frames={v.frames}",
                     f"data.crop_size={v.crop}"]
        model, _ = build_from_config(overrides)
        self.info["gmacs_per_clip"] = count_macs(model, torch.randn(1, 3, v.frames, v.crop, v.crop)) / 1e9
        model.to(self.device)
        apply_memory_format(model, v.memory_format, self.device)
        x = torch.randn(v.batch, 3, v.frames, v.crop, v.crop, device=self.device)
        if v.kind == "train":
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            y = torch.randint(0, 174, (v.batch,), device=self.device)
            net = torch.compile(model, dynamic=False) if v.compile else model

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(net(x), y).backward()
                opt.step()

            self.fn = step
        else:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            if v.fuse:
                model = fuse_for_inference(model, inplace=True)
            if v.compile:
                import torch._inductor.config as inductor_config

                inductor_config.freezing = True  # inference: constant-fold BN into convolutions
            net = torch.compile(model, dynamic=False) if v.compile else model
            # Today's eval ran the unfused ops: autograd mode on (nothing requires grad, so no
            # graph is kept) takes exactly those; no_grad takes the BN/ReLU-in-shift path.
            grad_mode = torch.enable_grad if not v.eval_fused else torch.no_grad

            def infer() -> None:
                with grad_mode():
                    net(x)

            self.fn = infer
        if v.compile:
            start = time.perf_counter()
            self.fn()
            self.sync()
            self.compile_s = time.perf_counter() - start

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def run(self) -> tuple[float, float]:
        """Wall-clock and CPU seconds (all threads of the process) of one iteration."""
        self.sync()
        start, cpu = time.perf_counter(), time.process_time()
        self.fn()
        self.sync()
        return (time.perf_counter() - start) / self.inner, (time.process_time() - cpu) / self.inner

    def profile(self) -> dict:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self.fn()
        with profile(activities=activities) as prof:
            self.fn()
            self.sync()
        return categorise(prof.key_averages(), self.device.type)


# Op categories of a profile (self time): what the profile split the step into.
CATEGORIES = (
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("batch_norm", ("batch_norm", "bn_relu")),  # before relu: actionlab::bn_relu_* is BN + ReLU
    ("relu / threshold", ("relu", "threshold", "clamp_min")),
    ("add / residual", ("aten::add", "add_affine_relu", "affine_relu")),
    ("shift (RubiksShift / TSM)", ("rubiks_shift", "temporal_shift", "generatedbackwardfor_actionlab")),
    ("layout copies", ("aten::copy_", "aten::clone", "aten::contiguous")),
)


def categorise(averages, device_type: str) -> dict:
    totals: dict[str, float] = {}
    ops: list[tuple[str, float]] = []
    for e in averages:
        us = e.self_device_time_total if device_type == "cuda" else e.self_cpu_time_total
        if us <= 0:
            continue
        name = e.key.lower()
        cat = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        totals[cat] = totals.get(cat, 0.0) + us / 1e3
        ops.append((e.key, us / 1e3))
    total = sum(totals.values())
    ops.sort(key=lambda o: -o[1])
    return {
        "total_ms": total,
        "by_category_ms": totals,
        "by_category_pct": {k: 100 * v / total for k, v in totals.items()} if total else {},
        "top_ops_ms": ops[:12],
    }


def _worker_main() -> None:
    """Line protocol on stdin/stdout: a JSON command per line, a JSON answer per line."""
    job = None
    out = sys.stdout
    sys.stdout = sys.stderr  # anything else printed goes to stderr
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "setup":
                spec = cmd["variant"]
                spec["shape"], spec["stride"] = tuple(spec["shape"]), tuple(spec["stride"])
                job = _Job(Variant(**spec), cmd["device"], cmd["threads"])
                answer = {"ok": True, "info": job.info, "compile_s": job.compile_s}
            elif cmd["cmd"] == "run":
                wall, cpu = job.run()
                answer = {"ok": True, "seconds": wall, "cpu_seconds": cpu}
            elif cmd["cmd"] == "profile":
                answer = {"ok": True, "profile": job.profile()}
            else:
                break
        except Exception as err:  # noqa: BLE001  (reported to the parent, which names the variant)
            import traceback

            answer = {"ok": False, "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-3000:]}
        out.write(json.dumps(answer) + "\n")
        out.flush()


# ---- parent --------------------------------------------------------------------------------------


class Worker:
    def __init__(self, v: Variant, device: str, threads: int) -> None:
        self.v = v
        env = dict(os.environ, ACTIONLAB_CPU_ISA=v.isa, OMP_NUM_THREADS=str(threads))
        env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_ext"))
        if v.tree:  # its own build of its own sources
            env["TORCH_EXTENSIONS_DIR"] = str(ROOT / v.tree / ".torch_ext")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=ROOT, env=env,
        )
        self.setup = self.ask({"cmd": "setup", "variant": asdict(v), "device": device, "threads": threads})

    def ask(self, cmd: dict) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker for {self.v.name!r} died (see its stderr above)")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"{self.v.name}: {answer['error']}\n{answer.get('trace', '')}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def interleaved(variants: list[Variant], device: str, threads: int, warmup: int, reps: int) -> list[dict]:
    """Median times of ``variants`` measured round-robin; ``warmup`` untimed rounds first."""
    workers = []
    try:
        for v in variants:
            workers.append(Worker(v, device, threads))
        times: list[list[float]] = [[] for _ in workers]
        cpu: list[list[float]] = [[] for _ in workers]
        for r in range(warmup + reps):
            for w, t, c in zip(workers, times, cpu):
                answer = w.ask({"cmd": "run"})
                if r >= warmup:
                    t.append(answer["seconds"])
                    c.append(answer["cpu_seconds"])
        rows = []
        for w, t, c in zip(workers, times, cpu):
            rows.append({
                "variant": w.v.name, **asdict(w.v), "median_s": statistics.median(t), "min_s": min(t),
                "all_s": t, "cpu_median_s": statistics.median(c), "info": w.setup["info"],
                "compile_s": w.setup["compile_s"],
            })
        return rows
    finally:
        for w in workers:
            w.close()


def profiles(variants: list[Variant], device: str, threads: int) -> list[dict]:
    out = []
    for v in variants:
        w = Worker(v, device, threads)
        try:
            out.append({"variant": v.name, **asdict(v), **w.ask({"cmd": "profile"})["profile"]})
        finally:
            w.close()
    return out


def _row(rows: list[dict], name: str) -> dict | None:
    return next((r for r in rows if r["variant"] == name), None)


def _ratio(rows: list[dict], slow: str, fast: str) -> float | None:
    a, b = _row(rows, slow), _row(rows, fast)
    return a["median_s"] / b["median_s"] if a and b else None


def changes(results: dict) -> list[dict]:
    """Each change: what it should save (PREDICTIONS) and what it saved (measured ratios)."""
    kern, train, lat, comp = (results["sections"].get(s, {}).get("rows", []) for s in ("kernels", "train", "latency", "compile"))
    out = []

    def add(key: str, measured: dict[str, float | None], kept: str) -> None:
        out.append({"change": key, "predicted": PREDICTIONS[key],
                    "measured": {k: (round(v, 3) if v is not None else None) for k, v in measured.items()}, "kept": kept})

    if kern or train:
        measured: dict[str, float | None] = {}
        if kern:
            def by(suffix: str) -> dict[str, dict]:
                return {r["variant"].split(" | ")[0]: r for r in kern if r["variant"].endswith(suffix)}

            base, new, cl = by("today's build"), by("| channels-first"), by("| channels-last")
            measured.update({f"op speedup {k}": base[k]["median_s"] / new[k]["median_s"] for k in base if k in new})
            out.append({"change": "channels_last_kernels", "predicted": "about as fast as channels-first",
                        "measured": {f"channels-first / channels-last time {k}": round(new[k]["median_s"] / cl[k]["median_s"], 3)
                                     for k in cl if k in new},
                        "kept": "yes (the layout the network runs in)"})
        if _row(train, "rubiks_tiny contiguous (AVX2 build)"):
            measured["tiny train step speedup"] = _ratio(train, "rubiks_tiny today", "rubiks_tiny contiguous (AVX2 build)")
        if measured:
            add("avx2_build", measured, "yes (chosen at build time from the CPU; ACTIONLAB_CPU_ISA=base opts out)")
    if train:
        same_build = "rubiks_tiny contiguous (AVX2 build)" if _row(train, "rubiks_tiny contiguous (AVX2 build)") else "rubiks_tiny today"
        add("channels_last_train", {
            "tiny train step speedup vs contiguous (same build)": _ratio(train, same_build, "rubiks_tiny channels_last"),
            "tsm train step speedup": _ratio(train, "tsm_r50 today", "tsm_r50 channels_last"),
            **({"tsm train step speedup vs contiguous (same allocator)": _ratio(train, "tsm_r50 contiguous", "tsm_r50 channels_last")}
               if _row(train, "tsm_r50 contiguous") else {}),
        }, "memory_format=auto: see PREFERRED in actionlab/models/memory_format.py")
    if lat:
        add("channels_last_infer", {
            "tiny latency speedup": _ratio(lat, "rubiks_tiny today", "rubiks_tiny channels_last"),
            **({"tiny latency speedup vs contiguous (same build)": _ratio(lat, "rubiks_tiny contiguous (AVX2 build)", "rubiks_tiny channels_last")}
               if _row(lat, "rubiks_tiny contiguous (AVX2 build)") else {}),
            "tsm latency speedup (with its eval path)": _ratio(lat, "tsm_r50 today", "tsm_r50 channels_last"),
        }, "yes")
        add("eval_bn_relu_in_shift", {"tiny latency speedup": _ratio(lat, "rubiks_tiny channels_last", "rubiks_tiny channels_last + BN/ReLU in shift")},
            "yes: the default eval path of RubiksNet without autograd")
        add("fuse_for_inference", {
            "tiny latency speedup": _ratio(lat, "rubiks_tiny channels_last + BN/ReLU in shift", "rubiks_tiny channels_last + fuse_for_inference"),
            "tsm latency speedup": _ratio(lat, "tsm_r50 channels_last", "tsm_r50 channels_last + fuse_for_inference"),
        }, "yes: python -m actionlab.profile / make zoo time fused models")
    if _row(lat, "rubiks_tiny channels_last + fuse_for_inference, stem not folded"):
        add("fold_stem", {"tiny latency speedup": _ratio(lat, "rubiks_tiny channels_last + fuse_for_inference, stem not folded",
                                                          "rubiks_tiny channels_last + fuse_for_inference")},
            "yes: exact, and never slower in this session's five side-by-side runs (1.00-1.05x); "
            "actionlab.models.rubiksnet.fold_stem_for_inference = False opts out")
    base_rows = [r for r in kern if r["variant"].endswith("| channels-last, baseline")]
    if base_rows or _row(train, "rubiks_tiny channels_last (baseline)"):
        cl_ = {r["variant"].split(" | ")[0]: r for r in kern if r["variant"].endswith("| channels-last")}
        since = {f"op speedup {r['variant'].split(' | ')[0]}": r["median_s"] / cl_[r["variant"].split(" | ")[0]]["median_s"]
                 for r in base_rows if r["variant"].split(" | ")[0] in cl_}
        if _row(train, "rubiks_tiny channels_last (baseline)"):
            since["tiny train step speedup"] = _ratio(train, "rubiks_tiny channels_last (baseline)", "rubiks_tiny channels_last")
        add("grad_shift_blocks", since, f"yes (measured against --baseline {results['machine'].get('baseline')})")
    avx = {}
    if kern:
        cl_ = {r["variant"].split(" | ")[0]: r for r in kern if r["variant"].endswith("| channels-last")}
        for r in kern:
            if r["variant"].endswith("AVX-512 build"):
                tag = r["variant"].split(" | ")[0]
                avx[f"op speedup {tag}"] = cl_[tag]["median_s"] / r["median_s"] if tag in cl_ else None
    if _row(train, "rubiks_tiny channels_last (AVX-512 build)"):
        avx["tiny train step speedup"] = _ratio(train, "rubiks_tiny channels_last", "rubiks_tiny channels_last (AVX-512 build)")
    if _row(lat, "rubiks_tiny channels_last + fuse_for_inference (AVX-512 build)"):
        avx["tiny latency speedup"] = _ratio(lat, "rubiks_tiny channels_last + fuse_for_inference",
                                             "rubiks_tiny channels_last + fuse_for_inference (AVX-512 build)")
    if avx:
        add("avx512_build", avx, "not the default: mixed against AVX2 (the shift gradient faster, "
            "the forward often slower, train step and latency within noise); ACTIONLAB_CPU_ISA=avx512 opts in")
    retain = {}
    if _row(lat, "rubiks_tiny channels_last + fuse_for_inference (glibc allocator)"):
        retain["tiny latency speedup"] = _ratio(lat, "rubiks_tiny channels_last + fuse_for_inference (glibc allocator)", "rubiks_tiny channels_last + fuse_for_inference")
    if _row(train, "rubiks_tiny channels_last (glibc allocator)"):
        retain["tiny train step speedup"] = _ratio(train, "rubiks_tiny channels_last (glibc allocator)", "rubiks_tiny channels_last")
    if retain:
        add("retain_freed_memory", retain, "yes where measured faster: actionlab.profile latency, the CPU train task")
    bnr = results["sections"].get("bn_relu", {}).get("rows", [])
    if bnr:
        def per_shape(slow: str) -> dict[str, float | None]:
            tags = dict.fromkeys(r["variant"].split(" | ")[0] for r in bnr if r["kind"] == "bnrelu")
            return {f"{tag}: {slow} / kernel": _ratio(bnr, f"{tag} | {slow}", f"{tag} | channels-last kernel") for tag in tags}

        add("bn_relu_kernel", {
            **per_shape("channels-last PyTorch"), **per_shape("NCHW PyTorch"),
            **{f"{m} train step speedup": _ratio(bnr, f"{m} channels_last, PyTorch BN + ReLU", f"{m} channels_last, BN + ReLU kernel")
               for m in ("rubiks_tiny", "tsm_r50")},
        }, "yes: training-mode BN + ReLU of RubiksNet (bn1, bn2, bn_last) on channels-last CPU float32, and of "
           "TSM's ResNet (bn1, bn2, stem) so both models train with the same BN + ReLU (its share of TSM's step "
           "is small: the step moves less than run-to-run noise); actionlab.ops.batch_norm_act.enabled = False opts out")
    if comp:
        add("torch_compile", {
            "tiny latency speedup vs eager fused": _ratio(comp, "rubiks_tiny eager fused", "rubiks_tiny compiled fused"),
            "tiny latency speedup compiled unfused vs eager fused": _ratio(comp, "rubiks_tiny eager fused", "rubiks_tiny compiled"),
            "tsm latency speedup vs eager fused": _ratio(comp, "tsm_r50 eager fused", "tsm_r50 compiled fused"),
            "tiny train step speedup": _ratio(comp, "rubiks_tiny train eager", "rubiks_tiny train compiled"),
            "compile seconds (tiny infer / tsm infer / tiny train)": None,
        }, "see RESULTS.md (module.compile=true for training; opt-in)")
        out[-1]["measured"]["compile seconds (tiny infer / tsm infer / tiny train)"] = [
            (_row(comp, n) or {}).get("compile_s") for n in ("rubiks_tiny compiled fused", "tsm_r50 compiled fused", "rubiks_tiny train compiled")]
    return out


def ratios(results: dict) -> dict:
    train = results["sections"].get("train", {}).get("rows", [])
    lat = results["sections"].get("latency", {}).get("rows", [])
    out: dict[str, Any] = {}
    if train:
        # Both models in their fastest configuration the lab ships (the glibc-allocator rows are
        # ablations, not configurations).
        shipped = [r for r in train if "glibc" not in r["variant"] and not r.get("tree")]
        tiny_new = min((r for r in shipped if r["model"] == "rubiks_tiny"), key=lambda r: r["median_s"])
        fastest_tsm = min((r for r in shipped if r["model"] == "tsm_r50"), key=lambda r: r["median_s"])
        tiny_old, tsm_old = _row(train, "rubiks_tiny today"), _row(train, "tsm_r50 today")
        out["train_ratio_tiny_vs_tsm"] = fastest_tsm["median_s"] / tiny_new["median_s"]
        out["train_ratio_tiny_vs_tsm_today"] = tsm_old["median_s"] / tiny_old["median_s"]
        out["tiny_train_speedup_vs_today"] = tiny_old["median_s"] / tiny_new["median_s"]
        out["train_tiny_variant_used"] = tiny_new["variant"]
        out["train_tsm_variant_used"] = fastest_tsm["variant"]
        # Process CPU time (all threads): less sensitive to other processes than wall clock.
        out["train_ratio_tiny_vs_tsm_cpu_time"] = fastest_tsm["cpu_median_s"] / tiny_new["cpu_median_s"]
        out["tiny_train_speedup_vs_today_cpu_time"] = tiny_old["cpu_median_s"] / tiny_new["cpu_median_s"]
    if lat:
        tiny = min((r for r in lat if r["model"] == "rubiks_tiny"), key=lambda r: r["median_s"])
        tsm = min((r for r in lat if r["model"] == "tsm_r50"), key=lambda r: r["median_s"])
        out["latency_ratio_tsm_vs_tiny"] = tsm["median_s"] / tiny["median_s"]
        out["latency_ratio_tsm_vs_tiny_today"] = _ratio(lat, "tsm_r50 today", "rubiks_tiny today")
        out["latency_tiny_ms"], out["latency_tsm_ms"] = tiny["median_s"] * 1e3, tsm["median_s"] * 1e3
        out["latency_variants_used"] = [tiny["variant"], tsm["variant"]]
        out["latency_ratio_tsm_vs_tiny_cpu_time"] = tsm["cpu_median_s"] / tiny["cpu_median_s"]
    comp = results["sections"].get("compile", {}).get("rows", [])
    if comp and _row(comp, "tsm_r50 compiled fused") and _row(comp, "rubiks_tiny compiled fused"):
        out["latency_ratio_tsm_vs_tiny_compiled"] = _ratio(comp, "tsm_r50 compiled fused", "rubiks_tiny compiled fused")
    out["targets"] = {k: {"target": t, "measured": out.get(k), "met": (out.get(k) or 0) >= t} for k, t in TARGETS.items()}
    return out


def section_table(name: str, rows: list[dict]) -> str:
    if name == "bn_relu":
        ops = [r for r in rows if r["kind"] == "bnrelu"]
        lines = ["| BN + ReLU, C x H x W, frames | variant | median ms (forward + backward) | ns / element |",
                 "|---|---|---|---|"]
        for r in ops:
            shape, variant = r["variant"].split(" | ")
            n, c, h, w = r["shape"]
            lines.append(f"| {shape} | {variant} | {r['median_s'] * 1e3:.2f} | {r['median_s'] * 1e9 / (n * c * h * w):.2f} |")
        return "\n".join(lines) + "\n\n" + section_table("train", [r for r in rows if r["kind"] != "bnrelu"])
    if name == "kernels":
        lines = ["| op, C x H x W, stride | variant | median ms | ns / output element |", "|---|---|---|---|"]
        for r in rows:
            op, variant = r["variant"].split(" | ")
            n, t, c, h, w = r["shape"]
            outs = n * t * c * ((h - 1) // r["stride"][1] + 1) * ((w - 1) // r["stride"][2] + 1)
            lines.append(f"| {op} | {variant} | {r['median_s'] * 1e3:.1f} | {r['median_s'] * 1e9 / outs:.2f} |")
        return "\n".join(lines)
    lines = ["| variant | kind | T x H x W | batch | median | clips/s | CPU time (all threads) | compile s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        comp = f"{r['compile_s']:.0f}" if r.get("compile_s") else "-"
        cpu = f"{r['cpu_median_s'] * 1e3:.0f} ms" if r.get("cpu_median_s") is not None else "-"
        lines.append(f"| {r['variant']} | {r['kind']} | {r['frames']}x{r['crop']}x{r['crop']} | {r['batch']} | "
                     f"{r['median_s'] * 1e3:.0f} ms | {r['batch'] / r['median_s']:.3g} | {cpu} | {comp} |")
    return "\n".join(lines)


def profile_table(rows: list[dict]) -> str:
    cats = [c for c, _ in CATEGORIES] + ["other"]
    lines = ["| variant | total ms | " + " | ".join(cats) + " |", "|---|---|" + "---|" * len(cats)]
    for r in rows:
        pct = r["by_category_pct"]
        ms = r["by_category_ms"]
        cells = [f"{ms.get(c, 0):.0f} ms ({pct.get(c, 0):.0f}%)" for c in cats]
        lines.append(f"| {r['variant']} | {r['total_ms']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- Markdown: bench/RESULTS.md's section and the docs page (docs/hooks.py) ----------------------

RESULTS_MD = ROOT / "bench" / "RESULTS.md"
MD_BEGIN, MD_END = "<!-- efficiency:begin (python bench/efficiency.py --results-md) -->", "<!-- efficiency:end -->"
SECTION_TITLES = {
    "train": "Train step at 8x224: today's default path against the fastest configuration",
    "latency": "Batch-1 inference latency at 8x224, change by change",
    "compile": "`torch.compile` (inductor) against the fused eager model",
    "profile": "Profile by op category, before (today) and after (new)",
    "formats3d": "3D models: contiguous against channels_last_3d (what `memory_format=auto` picks)",
    "kernels": "RubiksShift kernels at RubiksNet-Tiny's shapes",
    "bn_relu": "Training BatchNorm + ReLU: channels-last PyTorch, the fused kernel, NCHW PyTorch",
}
TARGET_LABELS = {
    "train_ratio_tiny_vs_tsm": "RubiksNet-Tiny / TSM-R50 train clips/s at 8x224, both in their fastest configuration",
    "latency_ratio_tsm_vs_tiny": "batch-1 latency TSM-R50 / RubiksNet-Tiny at 8x224, both in their fastest configuration",
    "tiny_train_speedup_vs_today": "RubiksNet-Tiny train clips/s, fastest configuration / today's default path",
}
# The profile's train rows compared op by op ("what limits it").
PROFILE_PAIR = ("rubiks_tiny train today", "rubiks_tiny train new")


def _measured_cell(measured: dict) -> str:
    parts = []
    for key, value in measured.items():
        if isinstance(value, list):
            shown = " / ".join(f"{v:.0f}" if v is not None else "-" for v in value)
        else:
            shown = f"{value:.2f}x" if value is not None else "-"
        parts.append(f"{key}: {shown}")
    return "; ".join(parts) or "-"


def changes_table(changes_: list[dict]) -> str:
    """Each change: predicted (written down before measuring), measured (ratios > 1: faster), kept."""
    lines = ["| change | predicted | measured (old time / new time) | kept |", "|---|---|---|---|"]
    for c in changes_:
        lines.append(f"| `{c['change']}` | {c['predicted']} | {_measured_cell(c['measured'])} | {c['kept']} |")
    return "\n".join(lines)


def targets_table(ratios_: dict) -> str:
    lines = ["| target | required | measured | result |", "|---|---|---|---|"]
    for key, t in ratios_.get("targets", {}).items():
        value = f"{t['measured']:.2f}x" if t.get("measured") is not None else "not measured"
        lines.append(f"| {TARGET_LABELS.get(key, key)} (`{key}`) | >= {t['target']:g}x | {value} | "
                     f"**{'MET' if t['met'] else 'NOT MET'}** |")
    return "\n".join(lines)


def limits(sections: dict) -> str:
    """What limits the ratios, from the profile: the ops of Tiny's train step today and new (in
    milliseconds of the profiled step), and the shares the sentences below the table name."""
    rows = sections.get("profile", {}).get("rows", [])
    old, new = (_row(rows, name) for name in PROFILE_PAIR)
    if not old or not new:
        return ""
    before, after = dict(old["top_ops_ms"]), dict(new["top_ops_ms"])
    # Ops of either profile's top 12 ("-": not among that profile's 12 largest, or not called:
    # the BN + ReLU kernel replaces PyTorch's BatchNorm and ReLU ops in the new step).
    lines = ["| op (Tiny train step, profiled; -: not in that step's 12 largest) | today ms | new ms | new / today |",
             "|---|---|---|---|"]
    for op in sorted(set(before) | set(after), key=lambda o: (-after.get(o, 0), -before.get(o, 0))):
        a, b = before.get(op), after.get(op)
        cells = [f"{v:.0f}" if v is not None else "-" for v in (a, b)]
        lines.append(f"| `{op}` | {cells[0]} | {cells[1]} | {f'{b / a:.2f}x' if a and b else '-'} |")
    table = "\n".join(lines)
    bn_back = "aten::native_batch_norm_backward"
    bn_relu_back = "actionlab::bn_relu_backward"
    grad_shift = "actionlab::rubiks_shift_grad_shift"
    notes = []
    if bn_back in before and bn_relu_back in after:
        notes.append(
            f"PyTorch's CPU BatchNorm backward in channels-last is several times slower than its NCHW one at "
            f"Tiny's widths, so the new step runs the fused channels-last BN + ReLU kernel (BN + ReLU table): its "
            f"backward (with the ReLU's mask) takes {after[bn_relu_back] / before[bn_back]:.2f}x as long as today's "
            f"NCHW BatchNorm backward alone, and BatchNorm (with its ReLU) is "
            f"{new['by_category_pct'].get('batch_norm', 0):.0f}% of the new Tiny step (convolutions "
            f"{new['by_category_pct'].get('convolution', 0):.0f}%).")
    elif bn_back in before and bn_back in after:
        notes.append(
            f"PyTorch's CPU BatchNorm backward in channels-last takes {after[bn_back] / before[bn_back]:.1f}x as "
            f"long as its NCHW one at Tiny's widths, and BatchNorm is "
            f"{new['by_category_pct'].get('batch_norm', 0):.0f}% of the new Tiny step (convolutions "
            f"{new['by_category_pct'].get('convolution', 0):.0f}%): channels-last removes the convolutions' "
            "reorders, and the BatchNorm backward gives much of it back.")
    if grad_shift in before and grad_shift in after:
        notes.append(
            f"The shift's gradient in channels-last takes {after[grad_shift] / before[grad_shift]:.1f}x as long "
            "as channels-first: every channel has its own shift, so the channels-last kernel reduces a "
            "correlation per offset of a window shared by all channels (27 multiply-adds per element for "
            "shifts in [-1, 1), against 8 channels-first) to vectorise over channels.")
    train = sections.get("train", {}).get("rows", [])
    if _row(train, "tsm_r50 contiguous") and _row(train, "tsm_r50 channels_last"):
        notes.append(
            f"TSM-R50 gains {_ratio(train, 'tsm_r50 contiguous', 'tsm_r50 channels_last'):.2f}x from channels-last; "
            "its 3x3 convolutions are dense and compute-bound, oneDNN's best case, so the train ratio moves "
            "mostly with what Tiny saves.")
    lat = sections.get("latency", {}).get("rows", [])
    rate = {}
    for model in ("rubiks_tiny", "tsm_r50"):
        rows = [r for r in lat if r["model"] == model and r["info"].get("gmacs_per_clip")]
        if rows:
            best = min(rows, key=lambda r: r["median_s"])
            rate[model] = (best["info"]["gmacs_per_clip"], best["info"]["gmacs_per_clip"] / best["median_s"])
    if len(rate) == 2:
        (tiny_g, tiny_r), (tsm_g, tsm_r) = rate["rubiks_tiny"], rate["tsm_r50"]
        notes.append(
            f"In batch-1 inference (fastest rows) TSM-R50 runs its {tsm_g:.1f} GMACs at {tsm_r:.0f} GMAC/s and "
            f"Tiny its {tiny_g:.2f} GMACs at {tiny_r:.0f} GMAC/s: Tiny's 1x1 convolutions over 54-432 channels "
            "and its passes over memory (shift, BN + ReLU at 112x112) use the CPU's arithmetic "
            f"{tsm_r / tiny_r:.1f}x less well, so {tsm_g / tiny_g:.1f}x fewer MACs make a "
            f"{(tiny_r / tsm_r) * (tsm_g / tiny_g):.1f}x latency ratio.")
    return table + "\n\n" + "\n".join(f"- {n}" for n in notes)


def markdown(payload: dict, heading: str = "###") -> str:
    """Every device's tables, changes, targets and limits as Markdown (from the JSON only)."""
    parts = [f"Protocol: {payload.get('protocol', '-')}."]
    for device, results in payload.get("devices", {}).items():
        m = results["machine"]
        parts.append(
            f"**{device}**: {m.get('cpus')} CPUs ({m.get('device_name')}, ATen CPU capability "
            f"{m.get('cpu_capability')}), torch {m.get('torch')}, {m.get('threads')} threads, train batch "
            f"{m.get('train_batch')}; run started {m.get('started')}. Measured with {m.get('threads')} threads, "
            "side by side in one run, interleaved worker processes: compare ratios within a table.")
        targets = results.get("ratios", {}).get("targets", {})
        verdict = {flag: [f"`{k}`" for k, t in targets.items() if t["met"] == flag] for flag in (True, False)}
        parts += [f"{heading} Targets ({device})", targets_table(results.get("ratios", {})),
                  f"Met: {', '.join(verdict[True]) or 'none'}. Not met: {', '.join(verdict[False]) or 'none'}."]
        for name, title in SECTION_TITLES.items():
            sec = results["sections"].get(name)
            if not sec:
                continue
            when = sec.get("from_previous_run") or m.get("started")
            load = f"load average {sec['load_before'][0]:.2f} before, {sec['load_after'][0]:.2f} after"
            parts += [f"{heading} {title} ({device})", f"Run started {when}; {load}.",
                      profile_table(sec["rows"]) if name == "profile" else section_table(name, sec["rows"])]
        parts += [f"{heading} Changes: predicted and measured ({device})", changes_table(results.get("changes", []))]
        limit = limits(results["sections"])
        if limit:
            parts += [f"{heading} What limits the ratios ({device})", limit]
    return "\n\n".join(parts)


def results_section(payload: dict) -> str:
    """bench/RESULTS.md's section for issue 15 (between MD_BEGIN and MD_END)."""
    how = ("Made by `python bench/efficiency.py --results-md` from `bench/results/efficiency.json`, which "
           "`python bench/efficiency.py` wrote (6-10 minutes of both cores); do not edit by hand. The same "
           "tables are on the docs' Benchmarks page.")
    return f"## Wall-clock efficiency (issue 15)\n\n{how}\n\n{markdown(payload)}"


def write_results_md(payload: dict, path: Path = RESULTS_MD) -> None:
    """Replace (or append) the section of ``path`` between the markers."""
    sys.path.insert(0, str(ROOT / "bench"))
    from results_md import write_section

    write_section(path, MD_BEGIN, MD_END, results_section(payload))


def baseline_checkout(rev: str) -> str:
    """A detached worktree of ``rev`` under ``.bench/`` (made once, then reused)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        raise SystemExit(f"--baseline {rev!r}: not a commit of this repository ({err})") from err
    tree = ROOT / ".bench" / f"baseline-{sha[:12]}"
    if not (tree / "src").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True,
                       capture_output=True)
    return str(tree.relative_to(ROOT))  # relative: the JSON names no path of this machine


def run_device(device: str, args: argparse.Namespace) -> dict[str, Any]:
    """All requested sections on one device: machine, sections, changes, ratios."""
    import torch

    batch = args.batch or (2 if device == "cpu" else 16)
    results: dict[str, Any] = {
        "machine": {
            "device": device,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine()),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "train_batch": batch,
            "torch": torch.__version__,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            **({"baseline": args.baseline} if args.baseline else {}),
        },
        "sections": {},
    }
    for section in args.sections:
        variants = section_variants(section, device, batch, args.baseline_tree)
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        print(f"== {device} {section}: {len(variants)} variants (load {load_before[0]:.2f})", flush=True)
        if section == "profile":
            rows = profiles(variants, device, args.threads)
        else:
            reps = args.reps
            # The kernel rows compare within one op and shape: interleaved per op and shape, so
            # that 5 workers at a time hold memory, not 60.
            groups = {}
            for v in variants:
                groups.setdefault(v.name.split(" | ")[0] if v.kind == "op" else v.name, []).append(v)
            if section != "kernels":
                groups = {"all": variants}
            rows = [r for g in groups.values() for r in interleaved(g, device, args.threads, args.warmup, reps)]
        results["sections"][section] = {
            "rows": rows, "load_before": load_before, "load_after": os.getloadavg(),
            "seconds": time.perf_counter() - t0,
        }
        print(profile_table(rows) if section == "profile" else section_table(section, rows), flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="all (default): the CPU, and the GPU when one is visible")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every worker (CPU)")
    parser.add_argument("--batch", type=int, default=None, help="train batch (CPU 2, CUDA 16)")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--reps", type=int, default=5, help="timed rounds per section (medians)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--baseline", default="", metavar="REV",
                        help="also time the kernels, Tiny's train step and latency at git revision REV "
                        "(checked out under .bench/), side by side: what a change since REV saved")
    parser.add_argument("--table-only", action="store_true", help="print the tables of --out")
    parser.add_argument("--results-md", nargs="?", type=Path, const=RESULTS_MD, default=None, metavar="MD",
                        help="rewrite the section of bench/RESULTS.md (or MD) from --out; measures nothing")
    args = parser.parse_args(argv)
    if args.worker:
        _worker_main()
        return
    if args.table_only or args.results_md:
        payload = json.loads(args.out.read_text())
        if args.results_md:
            write_results_md(payload, args.results_md)
            print(f"wrote the efficiency section of {args.results_md} from {args.out}")
        if args.table_only:
            report(payload)
        return
    import torch

    args.baseline_tree = baseline_checkout(args.baseline) if args.baseline else ""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    payload: dict[str, Any] = {
        "protocol": f"variants interleaved round-robin in separate worker processes, {args.warmup} warm-up "
        f"round(s) then {args.reps} timed, medians; train step = forward + CE + backward + SGD(momentum); "
        "load = os.getloadavg() before/after each section",
        "predictions": PREDICTIONS,
        "targets": TARGETS,
        "devices": dict(previous.get("devices", {})),
    }
    start = time.perf_counter()
    for device in devices:
        results = run_device(device, args)
        old = previous.get("devices", {}).get(device, {})
        for name, sec in old.get("sections", {}).items():  # a partial run keeps the other sections
            # A section carried over twice keeps the date it was measured, not the last run's.
            results["sections"].setdefault(name, {"from_previous_run": old["machine"].get("started"), **sec})
        results["changes"], results["ratios"] = changes(results), ratios(results)
        payload["devices"][device] = results
    payload["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    report(payload, tables=False)
    print(f"\nwrote {args.out} in {payload['seconds']:.0f} s")


def report(payload: dict, tables: bool = True) -> None:
    for device, results in payload.get("devices", {}).items():
        if tables:
            for name, sec in results["sections"].items():
                print(f"\n== {device} {name} (load {sec['load_before'][0]:.2f} -> {sec['load_after'][0]:.2f})")
                print(profile_table(sec["rows"]) if name == "profile" else section_table(name, sec["rows"]))
        print(f"\n== {device}: changes, predicted vs measured")
        for c in results.get("changes", []):
            print(f"- {c['change']}: predicted {c['predicted']}\n  measured {c['measured']}; kept: {c['kept']}")
        print(f"\n== {device}: targets")
        for key, t in results.get("ratios", {}).get("targets", {}).items():
            value = t["measured"]
            shown = f"{value:.2f}x" if value is not None else "not measured"
            print(f"- {key}: {shown} (target >= {t['target']}x) {'MET' if t['met'] else 'NOT MET'}")


if __name__ == "__main__":
    main()
