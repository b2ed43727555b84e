"""The pure-PyTorch RubiksShift reference against a brute-force formulation, and its gradients."""

import itertools
import math

import numpy as np
import pytest
import torch

from actionlab.ops.rubiks_shift import (
    RubiksShift3d,
    normalize_shift_grad,
    output_size,
    rubiks_shift,
    rubiks_shift_reference,
)


def brute_force(x: np.ndarray, shift: np.ndarray, stride) -> np.ndarray:
    """Trilinear sampling by explicit loops over outputs and the 8 corners (per-corner zeros)."""
    n, t, c, h, w = x.shape
    st, sh, sw = stride
    out = np.zeros((n, output_size(t, st), c, output_size(h, sh), output_size(w, sw)))
    for ni, ti, ci, hi, wi in itertools.product(*(range(s) for s in out.shape)):
        pos = (ti * st + shift[0, ci], hi * sh + shift[1, ci], wi * sw + shift[2, ci])
        base = [math.floor(p) for p in pos]
        frac = [p - b for p, b in zip(pos, base)]
        acc = 0.0
        for corner in itertools.product((0, 1), repeat=3):
            idx = [b + k for b, k in zip(base, corner)]
            if not (0 <= idx[0] < t and 0 <= idx[1] < h and 0 <= idx[2] < w):
                continue
            weight = np.prod([f if k else 1 - f for f, k in zip(frac, corner)])
            acc += weight * x[ni, idx[0], ci, idx[1], idx[2]]
        out[ni, ti, ci, hi, wi] = acc
    return out


CASES = [
    # (N, T, C, H, W), stride, shift scale
    ((2, 4, 3, 5, 6), (1, 1, 1), 1.0),
    ((1, 5, 5, 7, 5), (1, 2, 2), 1.0),
    ((1, 3, 4, 6, 7), (2, 2, 1), 2.5),  # |shift| > 1 and odd sizes
    ((2, 4, 3, 4, 4), (1, 1, 1), 6.0),  # shifts past the borders
]


@pytest.mark.parametrize("shape,stride,scale", CASES)
def test_reference_matches_brute_force(shape, stride, scale):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    shift = (torch.rand(3, shape[2], generator=g, dtype=torch.float64) * 2 - 1) * scale
    out = rubiks_shift_reference(x, shift, stride)
    expected = brute_force(x.numpy(), shift.numpy(), stride)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


def test_integer_shift_is_a_pure_copy_tsm_convention():
    x = torch.arange(2 * 4 * 3 * 2 * 2, dtype=torch.float64).view(2, 4, 3, 2, 2)
    shift = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    out = rubiks_shift_reference(x, shift)
    # s_T = +1 reads the next frame (TSM's first fold), -1 the previous one, zeros at the ends.
    assert torch.equal(out[:, :-1, 0], x[:, 1:, 0]) and torch.all(out[:, -1, 0] == 0)
    assert torch.equal(out[:, 1:, 1], x[:, :-1, 1]) and torch.all(out[:, 0, 1] == 0)
    assert torch.equal(out[:, :, 2], x[:, :, 2])


def test_output_size_stride_two():
    x = torch.randn(1, 8, 4, 7, 8)
    out = rubiks_shift_reference(x, torch.zeros(3, 4), (1, 2, 2))
    assert out.shape == (1, 8, 4, 4, 4)
    assert torch.equal(out, x[:, :, :, ::2, ::2])


@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2)])
def test_gradcheck_float64_non_integer(stride):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 4, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    shift = torch.rand(3, 4, generator=g, dtype=torch.float64) * 3.0 - 1.5
    shift = (shift + 0.13).requires_grad_()  # keep away from integers
    assert torch.autograd.gradcheck(lambda a, s: rubiks_shift_reference(a, s, stride), (x, shift))


def test_integer_shift_gradient_is_central_difference():
    x = torch.randn(1, 5, 1, 1, 1, dtype=torch.float64)
    shift = torch.tensor([[1.0], [0.0], [0.0]], dtype=torch.float64, requires_grad=True)
    out = rubiks_shift_reference(x, shift)
    out.sum().backward()
    xs = x.view(5)
    # d/ds of sum_t x(t + s) at s = 1: sum_t 0.5 * (x[t + 2] - x[t]), zeros outside the clip.
    padded = torch.cat([torch.zeros(1, dtype=x.dtype), xs, torch.zeros(2, dtype=x.dtype)])
    expected = sum(0.5 * (padded[t + 3] - padded[t + 1]) for t in range(5))
    assert torch.allclose(shift.grad[0, 0], expected)


def test_quantize_rounds_forward_and_passes_gradient_through():
    x = torch.randn(1, 4, 2, 3, 3, dtype=torch.float64)
    shift = torch.tensor([[0.7, -0.2], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    out = rubiks_shift_reference(x, shift, quantize=True)
    rounded = rubiks_shift_reference(x, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(out, rounded)
    out.sum().backward()
    soft = shift.detach().clone().requires_grad_()
    rubiks_shift_reference(x, soft).sum().backward()
    assert torch.allclose(shift.grad, soft.grad)


def test_rejects_bad_shapes_with_clear_message():
    with pytest.raises(ValueError, match=r"\(3, C=4\)"):
        rubiks_shift_reference(torch.randn(1, 2, 4, 3, 3), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="impl"):
        rubiks_shift(torch.randn(1, 2, 4, 3, 3), torch.zeros(3, 4), impl="magic")


def test_normalize_shift_grad_unit_vectors_and_zero_channels():
    g = torch.tensor([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    n = normalize_shift_grad(g)
    assert torch.allclose(n[:, 0], torch.tensor([0.6, 0.8, 0.0]))
    assert torch.equal(n[:, 1], torch.zeros(3))
    assert torch.allclose(n.norm(dim=0)[[0, 2]], torch.ones(2))


def test_module_normalises_gradient_only_when_asked():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 5, 5)
    for normalize in (True, False):
        layer = RubiksShift3d(6, normalize_grad=normalize)
        assert layer.shift.shape == (3, 6) and layer.shift.abs().max() <= 1.0
        (layer(x) ** 2).sum().backward()
        norms = layer.shift.grad.norm(dim=0)
        assert torch.allclose(norms, torch.ones(6)) == normalize
