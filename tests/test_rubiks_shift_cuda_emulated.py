"""The RubiksShift CUDA kernels, run on the CPU: index math, grid-stride loops, block reductions.

``cuda/rubiks_shift_kernels.cuh`` holds the kernels and their launch logic once; the CUDA build
launches them with ``<<<>>>`` and ``tests/cuda_emulation/`` compiles the same code for the host,
where blocks run in turn and the threads of a block run concurrently with real barriers for
``__syncthreads`` and warp shuffles. This checks everything but the GPU itself on machines
without one: on a CUDA machine ``test_rubiks_shift_kernels.py -m cuda`` runs the real thing.

A few emulated multiprocessors make the grids small, so the grid-stride loops run more than
once; ``wide`` forces the 64-bit index path that real inputs only take past 2^30 elements.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
from test_rubiks_shift_kernels import CASES, LAYOUTS, forward_backward, in_layout, make_inputs

from actionlab.ops.rubiks_shift import is_channels_last, rubiks_shift_reference

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent / "cuda_emulation"
CUDA_SOURCES = Path(__file__).resolve().parents[1] / "cuda"


@pytest.fixture(scope="module")
def emulated():
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler to build the CUDA emulation")
    from torch.utils.cpp_extension import load

    start = time.perf_counter()
    module = load(
        name="actionlab_rubiks_shift_cuda_emulated",
        sources=[str(HERE / "rubiks_shift_emulated.cpp")],
        extra_include_paths=[str(CUDA_SOURCES), str(HERE)],
        # -O1: 15 s less to compile than -O2 on 2 cores, 7 s more to run the tests (measured).
        extra_cflags=["-std=c++20", "-O1"],
    )
    print(f"\nemulated CUDA kernels ready in {time.perf_counter() - start:.1f}s")
    return module


def emulated_op(module, sms: int, wide: bool):
    """``fn(x, shift, stride, quantize)`` with autograd through the emulated kernels."""

    class EmulatedShift(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, shift, stride, quantize):
            ctx.save_for_backward(x, shift)
            ctx.stride, ctx.quantize = list(stride), quantize
            return module.forward(x, shift, list(stride), quantize, sms, wide)

        @staticmethod
        def backward(ctx, grad):
            x, shift = ctx.saved_tensors
            gx = module.grad_input(
                grad, shift, list(x.shape), ctx.stride, ctx.quantize, sms, wide, is_channels_last(x)
            )
            gs = module.grad_shift(grad, x, shift, ctx.stride, sms, wide)
            return gx, gs, None, None

    return lambda x, shift, stride, quantize: EmulatedShift.apply(x, shift, stride, quantize)


# (sms, wide): one SM (grid-stride loops, one block per channel in the shift gradient), many SMs
# (several blocks per channel, partials summed), the 64-bit index path.
LAUNCHES = [(1, False), (16, False), (2, True)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("sms", "wide"), LAUNCHES)
@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize(("shape", "stride", "scale"), CASES)
def test_emulated_kernels_match_reference_float64(emulated, shape, stride, scale, quantize, sms, wide, layout):
    x, shift = make_inputs(shape, scale)
    grad = torch.randn(rubiks_shift_reference(x, shift, stride).shape, dtype=x.dtype)
    ref = forward_backward(rubiks_shift_reference, x, shift, stride, quantize, grad)
    got = forward_backward(
        emulated_op(emulated, sms, wide), in_layout(x, layout), shift, stride, quantize,
        in_layout(grad, layout),
    )
    for name, a, b in zip(("output", "grad_x", "grad_shift"), got, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if name != "grad_shift":  # results stay in the layout of their input
            assert is_channels_last(a) == (layout == "channels_last"), (name, a.stride())
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", [False, True])
def test_emulated_fused_activation_forward(emulated, layout, affine):
    x, shift = make_inputs((2, 4, 37, 7, 9), 1.5)  # 37 channels: two tiles of 32, one partial
    scale, bias = (torch.randn(37, dtype=x.dtype), torch.randn(37, dtype=x.dtype)) if affine else (None, None)
    pre = x if scale is None else x * scale.view(1, 1, -1, 1, 1) + bias.view(1, 1, -1, 1, 1)
    ref = rubiks_shift_reference(torch.relu(pre), shift, (1, 2, 2))
    got = emulated.forward_act(in_layout(x, layout), shift, [1, 2, 2], False, scale, bias, True, 4, False)
    assert is_channels_last(got) == (layout == "channels_last")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("layout", "channels"), [("contiguous", 21), ("channels_last", 21), ("channels_last", 37)])
@pytest.mark.parametrize("sms", [1, 16])
def test_emulated_grid_stride_at_rubiksnet_shape(emulated, sms, layout, channels):
    # 2*8*21*14*14 = 65,856 outputs: 258 blocks of 256, more than 32 per emulated SM; with 37
    # channels the channels-last shift gradient runs two channel tiles, the second partly idle.
    x, shift = make_inputs((2, 8, channels, 14, 14), 1.5, seed=3, dtype=torch.float32)
    grad = torch.randn(2, 8, channels, 7, 7)
    ref = forward_backward(rubiks_shift_reference, x, shift, (1, 2, 2), False, grad)
    op = emulated_op(emulated, sms, False)
    got = forward_backward(op, in_layout(x, layout), shift, (1, 2, 2), False, in_layout(grad, layout))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_emulated_low_precision_against_float32(emulated, dtype):
    x, shift = make_inputs((2, 8, 19, 12, 12), 1.5, seed=5, dtype=torch.float32)
    x = x.to(dtype).float()  # same values in both precisions, so only the arithmetic differs
    grad = torch.randn(2, 8, 19, 6, 6).to(dtype).float()
    op = emulated_op(emulated, 4, False)
    ref = forward_backward(rubiks_shift_reference, x, shift, (1, 2, 2), False, grad)
    got = forward_backward(lambda a, s, st, q: op(a.to(dtype), s, st, q).float(), x, shift, (1, 2, 2), False, grad)
    assert got[0].dtype == torch.float32 and got[2].dtype == shift.dtype
    tol = 1e-2 if dtype == torch.float16 else 3e-2
    torch.testing.assert_close(got[0], ref[0], rtol=tol, atol=tol)
    torch.testing.assert_close(got[1], ref[1], rtol=tol, atol=tol)
    torch.testing.assert_close(got[2], ref[2], rtol=tol, atol=tol * ref[2].abs().max().item())


def test_emulated_kernels_check_their_arguments(emulated):
    x = torch.randn(1, 2, 3, 4, 4)
    with pytest.raises(RuntimeError, match=r"shift must be \(3, C=3\)"):
        emulated.forward(x, torch.zeros(3, 4), [1, 1, 1], False, 1, False)
    with pytest.raises(RuntimeError, match="grad_out has shape"):
        emulated.grad_shift(torch.zeros(1, 2, 3, 2, 2), x, torch.zeros(3, 3), [1, 1, 1], 1, False)


def test_empty_inputs_launch_nothing(emulated):
    x = torch.zeros(0, 2, 3, 4, 4)
    assert emulated.forward(x, torch.zeros(3, 3), [1, 1, 1], False, 1, False).shape == (0, 2, 3, 4, 4)
    assert torch.equal(emulated.grad_shift(x, x, torch.ones(3, 3), [1, 1, 1], 1, False), torch.zeros(3, 3))
