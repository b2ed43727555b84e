"""The compiled RubiksShift operator (cuda/): kernels against the reference, registration, build.

The CPU kernels are built once per session (ninja, torch extensions cache; about 10-30 s cold on
2 cores, well under a second warm). CUDA tests skip without a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from actionlab.models.rubiksnet import RubiksShiftBlock
from actionlab.ops import _extension
from actionlab.ops import rubiks_shift as rs
from actionlab.ops.rubiks_shift import rubiks_shift, rubiks_shift_kernel, rubiks_shift_reference

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


@pytest.fixture(scope="module")
def kernel():
    """Build (or reuse) the extension; a failed build fails these tests loudly."""
    if os.environ.get(_extension.DISABLE_ENV, "0") not in ("", "0"):
        pytest.skip(f"{_extension.DISABLE_ENV} is set: the kernels are disabled on purpose")
    start = time.perf_counter()
    assert rs.kernel_available(), f"RubiksShift build failed: {_extension.unavailable_reason()}"
    print(f"\nRubiksShift extension ready in {time.perf_counter() - start:.1f}s")
    return torch.ops.actionlab.rubiks_shift


# (N, T, C, H, W), stride, shift scale: odd sizes, C not a multiple of 8, |shift| > 1, borders.
CASES = [
    ((2, 4, 11, 7, 9), (1, 1, 1), 1.0),
    ((1, 5, 13, 8, 7), (1, 2, 2), 2.5),
    ((2, 3, 6, 5, 6), (2, 3, 1), 6.0),
    ((1, 6, 9, 9, 8), (1, 2, 2), 1.5),
]
# Memory layouts of x (N, T, C, H, W) with native kernels; results keep the layout.
LAYOUTS = ["contiguous", "channels_last"]


def in_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` stored contiguously or channels-last (``N, T, H, W, C`` in memory)."""
    if layout == "channels_last":
        return t.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return t.contiguous()


INTEGER_SHIFTS = torch.tensor([[-1.0, 0.0, 2.0], [1.0, -2.0, 0.0], [0.0, 1.0, -1.0]])


def make_inputs(shape, scale, seed=0, dtype=torch.float64, device="cpu", integers=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    shift = (torch.rand(3, shape[2], generator=g, dtype=torch.float64) * 2 - 1) * scale
    if integers:  # exactly integer shifts take the central-difference gradient
        shift[:, :3] = INTEGER_SHIFTS.to(shift.dtype)
    return x.to(device, dtype), shift.to(device, dtype)


def forward_backward(fn, x, shift, stride, quantize, grad):
    x = x.detach().clone().requires_grad_()
    shift = shift.detach().clone().requires_grad_()
    out = fn(x, shift, stride, quantize)
    out.backward(grad)
    return out.detach(), x.grad, shift.grad


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("shape,stride,scale", CASES)
def test_kernel_matches_reference_float64(kernel, device, shape, stride, scale, quantize, layout):
    x, shift = make_inputs(shape, scale, device=device)
    grad = torch.randn(rubiks_shift_reference(x, shift, stride).shape, dtype=x.dtype, device=device)
    ref = forward_backward(rubiks_shift_reference, x, shift, stride, quantize, grad)
    got = forward_backward(
        rubiks_shift_kernel, in_layout(x, layout), shift, stride, quantize, in_layout(grad, layout)
    )
    for name, a, b in zip(("output", "grad_x", "grad_shift"), got, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if name != "grad_shift":  # results keep the layout of their input
            assert rs.is_channels_last(a) == (layout == "channels_last"), (name, a.stride())
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


def test_channels_last_outlier_channels(kernel):
    """Channels-last runs a stencil shared by all channels; a few channels with shifts far from
    the others do not fit its window and take the per-element path: still exact."""
    x, shift = make_inputs((2, 5, 24, 9, 11), 0.9, seed=11)
    shift[:, 5] = torch.tensor([4.3, -6.7, 9.1], dtype=shift.dtype)
    shift[1, 17] = -12.5
    grad = torch.randn(rubiks_shift_reference(x, shift, (1, 2, 2)).shape, dtype=x.dtype)
    ref = forward_backward(rubiks_shift_reference, x, shift, (1, 2, 2), False, grad)
    got = forward_backward(
        rubiks_shift_kernel, in_layout(x, "channels_last"), shift, (1, 2, 2), False,
        in_layout(grad, "channels_last"),
    )
    for name, a, b in zip(("output", "grad_x", "grad_shift"), got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize(
    "shape,stride",
    [
        ((2, 3, 16, 6, 9), (1, 1, 1)),  # exactly one channel block
        ((1, 4, 37, 5, 5), (1, 1, 1)),  # two blocks and a tail: the overlapping last block
        ((2, 3, 54, 12, 7), (1, 2, 2)),  # RubiksNet-Tiny's width; narrow rows summed across rows
    ],
)
def test_channels_last_shift_gradient_over_channel_blocks(kernel, shape, stride):
    """The channels-last shift gradient sums blocks of 16 channels (the last one overlapping the
    block before when C is not a multiple of 16) and adds narrow rows together before the double
    sums: every channel exact, none counted twice."""
    x, shift = make_inputs(shape, 0.95, seed=5, integers=False)
    grad = torch.randn(rubiks_shift_reference(x, shift, stride).shape, dtype=x.dtype)
    ref = forward_backward(rubiks_shift_reference, x, shift, stride, False, grad)
    got = forward_backward(rubiks_shift_kernel, in_layout(x, "channels_last"), shift, stride, False,
                           in_layout(grad, "channels_last"))
    for name, a, b in zip(("output", "grad_x", "grad_shift"), got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck_channels_last_random_shapes(kernel, device, seed):
    """float64 gradcheck of the channels-last kernels at random odd sizes, strides 1 and 2."""
    g = torch.Generator().manual_seed(100 + seed)
    # At most ~500 elements: gradcheck runs two forwards per input element.
    t, c = (int(v) for v in torch.randint(2, 4, (1,), generator=g).tolist() + torch.randint(3, 7, (1,), generator=g).tolist())
    n, h, w = 1, *(int(v) * 2 + 1 for v in torch.randint(1, 3, (2,), generator=g).tolist())
    stride = (1, 1, 1) if seed % 2 == 0 else (1, 2, 2)
    x = in_layout(torch.randn(n, t, c, h, w, generator=g, dtype=torch.float64), "channels_last")
    x = x.to(device).requires_grad_()
    frac = torch.rand(3, c, generator=g, dtype=torch.float64) * 0.8 + 0.1
    whole = torch.randint(-2, 2, (3, c), generator=g).to(torch.float64)
    shift = (whole + frac).to(device).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: rubiks_shift_kernel(a, b, stride), (x, shift), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("affine", [False, True])
def test_fused_activation_forward_matches_composition(kernel, device, layout, affine):
    """``rubiks_shift_act``: BN (scale, bias) and ReLU applied to each value the shift reads equals
    the activation as its own op before the shift; out-of-range corners stay 0."""
    x, shift = make_inputs((2, 4, 19, 7, 9), 1.5, device=device)
    scale = torch.randn(19, dtype=x.dtype, device=device) if affine else None
    bias = torch.randn(19, dtype=x.dtype, device=device) if affine else None
    act = x if scale is None else x * scale.view(1, 1, -1, 1, 1) + bias.view(1, 1, -1, 1, 1)
    for stride in ((1, 1, 1), (1, 2, 2)):
        ref = rubiks_shift_reference(torch.relu(act), shift, stride)
        with torch.no_grad():
            got = rs.rubiks_shift_act(in_layout(x, layout), shift, stride, False, scale, bias, relu=True)
        assert rs.is_channels_last(got) == (layout == "channels_last")
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    # With autograd it composes the activation and the differentiable op instead.
    xg = x.clone().requires_grad_()
    out = rs.rubiks_shift_act(xg, shift, 1, False, scale, bias, relu=True)
    out.sum().backward()
    assert xg.grad is not None and torch.equal(xg.grad == 0, (act <= 0) | (xg.grad == 0))
    with pytest.raises(ValueError, match="both scale and bias"):
        rs.rubiks_shift_act(x, shift, 1, False, scale=torch.ones(19, dtype=x.dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_matches_reference_float32(kernel, device):
    x, shift = make_inputs((2, 8, 21, 14, 14), 1.5, seed=3, dtype=torch.float32, device=device)
    grad = torch.randn(2, 8, 21, 7, 7, device=device)
    ref = forward_backward(rubiks_shift_reference, x, shift, (1, 2, 2), False, grad)
    got = forward_backward(rubiks_shift_kernel, x, shift, (1, 2, 2), False, grad)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2)])
def test_gradcheck_float64(kernel, device, stride):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 3, 5, 5, 6, generator=g, dtype=torch.float64).to(device).requires_grad_()
    # Shifts kept away from integers, where the interpolation is not differentiable.
    frac = torch.rand(3, 5, generator=g, dtype=torch.float64) * 0.8 + 0.1
    whole = torch.randint(-2, 2, (3, 5), generator=g).to(torch.float64)
    shift = (whole + frac).to(device).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: rubiks_shift_kernel(a, b, stride), (x, shift), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(kernel, device, layout):
    x, shift = make_inputs((2, 4, 5, 6, 5), 1.5, device=device, dtype=torch.float32)
    x = in_layout(x, layout).requires_grad_()
    shift.requires_grad_()
    ops = torch.ops.actionlab
    for stride, quantize in (([1, 1, 1], False), ([1, 2, 2], True)):
        torch.library.opcheck(ops.rubiks_shift.default, (x, shift, stride, quantize))
    scale, bias = torch.rand(5, device=device), torch.randn(5, device=device)
    torch.library.opcheck(
        ops.rubiks_shift_act.default, (x.detach(), shift.detach(), [1, 2, 2], False, scale, bias, True)
    )
    grad = in_layout(torch.randn(2, 4, 5, 3, 3, device=device), layout)
    torch.library.opcheck(
        ops.rubiks_shift_grad_input.default, (grad, shift.detach(), list(x.shape), [1, 2, 2], False)
    )
    torch.library.opcheck(
        ops.rubiks_shift_grad_shift.default, (grad, x.detach(), shift.detach(), [1, 2, 2], False)
    )


def test_auto_dispatches_to_the_kernel(kernel):
    calls = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append(str(func))
            return func(*args, **(kwargs or {}))

    x, shift = make_inputs((1, 3, 4, 5, 5), 1.0, dtype=torch.float32)
    with Recorder():
        rubiks_shift(x, shift, 1, impl="auto")
    assert any("actionlab.rubiks_shift" in c for c in calls), calls
    with pytest.raises(ValueError, match="impl must be one of"):
        rubiks_shift(x, shift, impl="fast")


def _block_and_input(device, impl="auto"):
    torch.manual_seed(0)
    block = RubiksShiftBlock(8, 16, stride=2, impl=impl).to(device)
    x = torch.randn(2, 4, 8, 9, 9, device=device, requires_grad=True)
    return block, x


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_block(kernel, device):
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        # AOT autograd (fake tensors + our registered autograd) without inductor's slow codegen.
        keep = lambda g, _: make_boxed_func(g)  # noqa: E731
        return aot_autograd(fw_compiler=keep, bw_compiler=keep)(gm, example_inputs)

    block, x = _block_and_input(device)
    eager = block(x)
    (gx_eager,) = torch.autograd.grad(eager.square().sum(), x)
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    out = compiled(x)
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    assert graphs and "actionlab.rubiks_shift" in graphs[0]
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, gx_eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_against_float32(kernel, device, dtype):
    x, shift = make_inputs((2, 8, 19, 12, 12), 1.5, seed=5, dtype=torch.float32, device=device)
    x = x.to(dtype).float()  # same values in both precisions, so only the arithmetic differs
    grad = torch.randn(2, 8, 19, 6, 6, device=device).to(dtype).float()
    ref = forward_backward(rubiks_shift_kernel, x, shift, (1, 2, 2), False, grad)
    got = forward_backward(
        lambda a, s, st, q: rubiks_shift_kernel(a.to(dtype), s, st, q).float(),
        x, shift, (1, 2, 2), False, grad,
    )
    tol = 1e-2 if dtype == torch.float16 else 3e-2
    torch.testing.assert_close(got[0], ref[0], rtol=tol, atol=tol)
    torch.testing.assert_close(got[1], ref[1], rtol=tol, atol=tol)
    # The shift gradient sums thousands of products; accumulation is fp32, inputs are rounded.
    torch.testing.assert_close(got[2], ref[2], rtol=tol, atol=tol * ref[2].abs().max().item())


@pytest.mark.parametrize(
    "device,dtype",
    [
        ("cpu", torch.bfloat16),
        pytest.param("cuda", torch.float16, marks=[pytest.mark.cuda, pytest.mark.skipif(
            not torch.cuda.is_available(), reason="needs a CUDA device")]),
        pytest.param("cuda", torch.bfloat16, marks=[pytest.mark.cuda, pytest.mark.skipif(
            not torch.cuda.is_available(), reason="needs a CUDA device")]),
    ],
)
def test_autocast_runs_the_op_in_low_precision(kernel, device, dtype):
    seen = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if "actionlab.rubiks_shift" in str(func):
                seen.append((str(func), args[0].dtype, out.dtype))
            return out

    block, x = _block_and_input(device)
    with torch.autocast(device, dtype=dtype), Recorder():
        out = block(x)
        out.float().sum().backward()
    forward = [s for s in seen if s[0].startswith("actionlab.rubiks_shift.")]
    assert forward and all(s[1] == dtype and s[2] == dtype for s in forward), seen
    shift = block.as3.rubiks3d.shift
    assert shift.grad is not None and shift.grad.dtype == torch.float32


def test_fallback_when_disabled(monkeypatch):
    """ACTIONLAB_NO_EXTENSION=1: one clear warning, then the reference, never an error."""
    monkeypatch.setenv(_extension.DISABLE_ENV, "1")
    monkeypatch.setattr(_extension, "_library", None)
    monkeypatch.setattr(_extension, "_reason", None)
    monkeypatch.setattr(rs, "_registered", False)
    x, shift = make_inputs((1, 3, 4, 5, 5), 1.0, dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="ACTIONLAB_NO_EXTENSION=1") as record:
        out = rubiks_shift(x, shift)
        out2 = rubiks_shift(x, shift)
    assert len([w for w in record if "RubiksShift" in str(w.message)]) == 1
    assert "pure-PyTorch reference" in str(record[0].message)
    assert torch.equal(out, rubiks_shift_reference(x, shift)) and torch.equal(out, out2)
    with pytest.raises(RuntimeError, match="impl='kernel' needs the compiled operator"):
        rubiks_shift(x, shift, impl="kernel")


def test_fallback_without_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    monkeypatch.delenv(_extension.DISABLE_ENV, raising=False)
    monkeypatch.setattr(_extension, "_library", None)
    monkeypatch.setattr(_extension, "_reason", None)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert _extension.load() is None


def test_unknown_instruction_set_is_named(monkeypatch):
    """A typo in ACTIONLAB_CPU_ISA: the warning names the variable, the value and the choices."""
    monkeypatch.setenv(_extension.ISA_ENV, "avx-512")
    monkeypatch.delenv(_extension.DISABLE_ENV, raising=False)
    monkeypatch.setattr(_extension, "_library", None)
    monkeypatch.setattr(_extension, "_reason", None)
    with pytest.warns(RuntimeWarning, match=r"ACTIONLAB_CPU_ISA='avx-512' is not .*base, avx2 or avx512"):
        assert _extension.load() is None
    from actionlab.ops import build

    monkeypatch.setenv(_extension.CUDA_ENV, "0")
    assert build.main(["--quiet"]) == 1  # `python -m actionlab.ops.build` says why, no traceback
    monkeypatch.setenv(_extension.ISA_ENV, "avx512")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    with pytest.raises(ValueError, match="ACTIONLAB_CPU_ISA=avx512 but this CPU's capability is AVX2"):
        _extension.cpu_isa()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert _extension.extension_name(False).startswith("actionlab_rubiks_shift_cpu_avx512_")


@pytest.mark.slow
def test_processes_with_another_path_reuse_the_build(kernel):
    """A process with the venv's ``bin/`` first on ``PATH`` (a notebook kernel, an activated venv)
    and one without it (``.venv/bin/python ...``, CI's ``make test``) load the same build as
    they find it. torch runs the first ``ninja`` on ``PATH``, and a system ninja of another
    version reads the other's ``.ninja_log`` as foreign and recompiles everything: this happened
    twice per CI run (~1 min each) before the build put the environment's ninja first."""
    if _extension.ninja_dir() is None:
        pytest.skip("this environment installed no ninja of its own")
    build = _extension.build_directory(_extension.has_cuda_kernels())
    built = {p.name: p.stat().st_mtime_ns for p in build.iterdir() if p.suffix in (".o", ".so")}
    assert built, f"no build in {build}"
    venv_bin = str(Path(sys.executable).parent)
    others = [d for d in os.environ["PATH"].split(os.pathsep) if d and d != venv_bin]
    load = "from actionlab.ops import _extension; assert _extension.load(), _extension.unavailable_reason()"
    for path in ([venv_bin, *others], others):
        env = {**os.environ, "PATH": os.pathsep.join(path)}
        proc = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        now = {p.name: p.stat().st_mtime_ns for p in build.iterdir() if p.suffix in (".o", ".so")}
        assert now == built, f"PATH {path[:2]}...: the build in {build} was compiled again"


def test_fallback_when_the_build_fails(monkeypatch, tmp_path):
    """A compiler error: one warning quoting it, the reference is used, nothing raises."""
    broken = tmp_path / "csrc"
    broken.mkdir()
    for name in _extension.SOURCES_CPU + _extension.SOURCES_CUDA + _extension.HEADERS:
        (broken / name).write_text("#error deliberately broken source\n")
    monkeypatch.setattr(_extension, "source_dir", lambda: broken)
    # Its own name: torch versions extensions by name within a process.
    monkeypatch.setattr(_extension, "extension_name", lambda with_cuda: "actionlab_broken_test")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(_extension.CUDA_ENV, "0")
    monkeypatch.delenv(_extension.DISABLE_ENV, raising=False)
    monkeypatch.setattr(_extension, "_library", None)
    monkeypatch.setattr(_extension, "_reason", None)
    with pytest.warns(RuntimeWarning, match="the build failed .*deliberately broken source"):
        assert _extension.load() is None
    assert "deliberately broken" in _extension.unavailable_reason()


def test_stale_build_lock_is_removed(monkeypatch, tmp_path):
    """A baton left by a killed build would make torch's loader wait forever; ours removes it.

    Runs in a private build folder with torch's loader stubbed, so concurrent jobs sharing the
    extensions cache are not disturbed (and cannot remove the baton first)."""
    import torch.utils.cpp_extension as cpp_extension

    baton = tmp_path / "lock"
    baton.touch()
    seen = {}

    def fake_load(**kwargs):
        seen.update(kwargs, baton_left=baton.exists())
        return str(tmp_path / "lib.so")

    monkeypatch.setattr(_extension, "build_directory", lambda with_cuda: tmp_path)
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    with pytest.warns(RuntimeWarning, match="stale build lock"):
        assert _extension._compile(False, verbose=False) == str(tmp_path / "lib.so")
    assert seen["baton_left"] is False and seen["build_directory"] == str(tmp_path)
    assert seen["is_python_module"] is False and seen["sources"][0].endswith("rubiks_shift.cpp")


def test_busy_lock_times_out_into_the_fallback(monkeypatch, tmp_path):
    from filelock import FileLock

    monkeypatch.setattr(_extension, "build_directory", lambda with_cuda: tmp_path)
    monkeypatch.setenv(_extension.TIMEOUT_ENV, "0.2")
    monkeypatch.delenv(_extension.DISABLE_ENV, raising=False)
    monkeypatch.setattr(_extension, "_library", None)
    monkeypatch.setattr(_extension, "_reason", None)
    with FileLock(str(tmp_path / "actionlab_build.lock")):
        with pytest.warns(RuntimeWarning, match="Timeout"):
            assert _extension.load() is None


def test_sources_ship_with_the_package():
    src = _extension.source_dir()
    assert src == Path(_extension.__file__).resolve().parent / "csrc"
    for name in _extension.SOURCES_CPU + _extension.SOURCES_CUDA + _extension.HEADERS + _extension.HEADERS_CUDA:
        assert (src / name).is_file(), name


def test_input_errors_name_the_problem(kernel):
    x = torch.randn(1, 2, 3, 4, 4)
    with pytest.raises(RuntimeError, match=r"shift must be \(3, C=3\)"):
        rubiks_shift_kernel(x, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="stride must be"):
        rubiks_shift_kernel(x, torch.zeros(3, 3), (1, 0, 1))


def test_meta_tensors_use_the_fake_kernel(kernel):
    """Shape-only runs (profiling on the meta device) go through the op's fake kernel."""
    x = torch.randn(2, 3, 4, 5, 5, device="meta", requires_grad=True)
    shift = torch.randn(3, 4, device="meta", requires_grad=True)
    out = rubiks_shift(x, shift, (1, 2, 2))
    assert out.shape == (2, 3, 4, 3, 3) and out.device.type == "meta"
    out.sum().backward()
    assert x.grad.shape == x.shape and shift.grad.shape == shift.shape
