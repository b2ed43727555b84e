"""Training-mode BatchNorm + ReLU kernel (``actionlab.ops.batch_norm_act``, ``cuda/batch_norm_relu.cpp``).

The op against ``relu(F.batch_norm(...))``: float64 gradcheck, float32 forward / backward /
running statistics within rounding over shapes that stress the channel loop (C not a multiple
of the vector width, one pixel per image, batch 1), the fallbacks, and a whole RubiksNet-Tiny
train step with and without the kernel.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actionlab.models.memory_format import apply_memory_format
from actionlab.models.rubiksnet import rubiksnet_tiny
from actionlab.models.tsm import tsm_r50
from actionlab.ops import batch_norm_act as ba
from actionlab.ops import rubiks_shift as rs

CL = torch.channels_last


@pytest.fixture(scope="module")
def kernel():
    if not rs.kernel_available():
        pytest.skip("the compiled actionlab extension is unavailable (see test_rubiks_shift_kernels)")


@pytest.fixture
def calls(monkeypatch):
    """Counts the kernel's forward calls (the fallback never reaches it)."""
    seen = []
    apply = ba.BatchNormReLU.apply

    def spy(*args):
        seen.append(tuple(args[0].shape))
        return apply(*args)

    monkeypatch.setattr(ba.BatchNormReLU, "apply", spy)
    return seen


def _bn(c: int, seed: int, momentum: float | None = 0.1) -> nn.BatchNorm2d:
    """A BN with non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) * 1.5 + 0.25)
        bn.weight[0] = -0.7  # a negative scale flips which side of the ReLU a value falls
        bn.bias.copy_(torch.randn(c, generator=g) * 0.5)
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return bn


def _input(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # A per-channel offset far from zero: the statistics must not lose it to cancellation.
    offset = torch.randn(1, shape[1], 1, 1, generator=g, dtype=torch.float64) * 3 + 2
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.7 + offset
    return x.to(dtype).contiguous(memory_format=CL)


@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 54, 3, 2), (3, 9, 1, 1)])
def test_gradcheck_float64(kernel, shape):
    x = _input(shape, 0, torch.float64).requires_grad_()
    bn = _bn(shape[1], 1).double()
    w, b = bn.weight.detach().clone().requires_grad_(), bn.bias.detach().clone().requires_grad_()

    def fn(x, w, b):
        return ba.BatchNormReLU.apply(x, w, b, None, None, 0.1, 1e-5)

    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7, rtol=1e-5)


SHAPES = [
    (4, 54, 6, 5),  # RubiksNet-Tiny's width: 6 vectors of 8 and a remainder of 6
    (2, 13, 5, 7),  # C not a multiple of 8
    (3, 7, 1, 1),  # one pixel per image: channels-last and contiguous are the same memory
    (1, 11, 4, 6),  # batch 1, spatial > 1
    (2, 108, 3, 3),
    (5, 432, 2, 1),
    (64, 3, 17, 19),  # more pixels than one reduction chunk, several chunks per thread
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_float32_matches_batch_norm_relu(kernel, calls, shape, momentum):
    c = shape[1]
    bn, ref_bn = _bn(c, 2, momentum), _bn(c, 2, momentum)
    for step in range(3):  # running statistics and num_batches_tracked over several steps
        x = _input(shape, 10 + step).requires_grad_()
        y = ba.bn_relu(bn, x)
        assert y.is_contiguous(memory_format=CL)
        grad_y = torch.randn(shape, generator=torch.Generator().manual_seed(20 + step)).contiguous(memory_format=CL)
        y.backward(grad_y)
        assert x.grad.is_contiguous(memory_format=CL)

        # Reference in float64 from the same float32 values. Values whose BN output is within
        # rounding of 0 may land on either side of the ReLU; the backward is compared for the
        # kernel's own mask (a wrong backward mask would still show), the forward for all values.
        x64 = x.detach().double().requires_grad_()
        w64, b64 = (p.detach().double().requires_grad_() for p in (ref_bn.weight, ref_bn.bias))
        z = F.batch_norm(x64, None, None, w64, b64, training=True, eps=ref_bn.eps)
        ref_y = torch.relu(z)
        tol = 2e-6 * ref_y.abs().max().item()
        torch.testing.assert_close(y.double(), ref_y, rtol=0, atol=tol)
        ambiguous = z.detach().abs() <= tol
        assert ((y > 0) == (ref_y > 0))[~ambiguous].all()
        (z * (y.detach() > 0) * grad_y.double()).sum().backward()
        for got, want, name in ((x.grad, x64.grad, "x"), (bn.weight.grad, w64.grad, "weight"),
                                (bn.bias.grad, b64.grad, "bias")):
            scale = want.abs().max().item()
            torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5 * scale, msg=name)
        bn.weight.grad = bn.bias.grad = None

        # PyTorch's own update of the running statistics, in float32 (its sums are float32, the
        # kernel's float64: a few float32 ulps of the data apart)
        ref_bn(x.detach())
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(getattr(bn, name), getattr(ref_bn, name), rtol=1e-5, atol=1e-5, msg=name)
        assert bn.num_batches_tracked.item() == ref_bn.num_batches_tracked.item() == step + 1
    assert len(calls) == 3


class _SyncLike(nn.BatchNorm2d):
    """A subclass with its own forward (as SyncBatchNorm has): must be called, not bypassed."""

    def forward(self, x):
        return super().forward(x) + 1.0


def _fallback_cases():
    x = _input((2, 6, 4, 4), 3)

    def with_hook(bn):
        bn.register_forward_hook(lambda m, i, o: o * 2)
        return bn

    return {
        "contiguous input": (lambda bn: bn, x.contiguous(), None),
        "eval mode": (lambda bn: bn.eval(), x, None),
        "subclass": (lambda bn: _SyncLike(6).train(), x, None),
        "no running stats": (lambda bn: nn.BatchNorm2d(6, track_running_stats=False), x, None),
        "not affine": (lambda bn: nn.BatchNorm2d(6, affine=False), x, None),
        "float64": (lambda bn: bn.double(), x.double(), None),
        "forward hook": (with_hook, x, None),
        "another activation": (lambda bn: bn, x, nn.LeakyReLU(0.3)),
        "one value per channel": (lambda bn: bn, x[:1, :, :1, :1], None),
    }


@pytest.mark.parametrize("case", list(_fallback_cases()))
def test_fallbacks_give_the_reference(kernel, calls, case):
    make, x, act = _fallback_cases()[case]
    bn, ref_bn = make(_bn(6, 4)), make(_bn(6, 4))
    if case == "one value per channel":  # PyTorch's own error, not the kernel's
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            ba.bn_relu(bn, x)
        return
    y = ba.bn_relu(bn, x, act)
    ref = (act or torch.relu)(ref_bn(x))
    assert not calls, f"{case}: the kernel ran"
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    if bn.track_running_stats:
        torch.testing.assert_close(bn.running_mean, ref_bn.running_mean, rtol=0, atol=0)


def test_module_switch_and_inplace_relu_fallback(kernel, calls, monkeypatch):
    x = _input((2, 6, 4, 4), 5)
    monkeypatch.setattr(ba, "enabled", False)
    bn, ref_bn = _bn(6, 6), _bn(6, 6)
    y = ba.bn_relu(bn, x, nn.ReLU(inplace=True))
    assert not calls and not ba.kernel_applies(bn, x)
    torch.testing.assert_close(y, torch.relu(ref_bn(x)), rtol=0, atol=0)
    monkeypatch.setattr(ba, "enabled", True)
    assert ba.kernel_applies(bn, x)
    ba.bn_relu(bn, x, nn.ReLU(inplace=True))
    assert calls == [(2, 6, 4, 4)]


def test_op_rejects_other_layouts_naming_the_fix(kernel):
    x = torch.randn(2, 6, 4, 4)
    w, b = torch.ones(6), torch.zeros(6)
    with pytest.raises(RuntimeError, match="channels-last contiguous"):
        torch.ops.actionlab.bn_relu_forward(x, w, b, None, None, 0.1, 1e-5)
    with pytest.raises(RuntimeError, match=r"weight must be \(C=6,\)"):
        torch.ops.actionlab.bn_relu_forward(x.contiguous(memory_format=CL), torch.ones(5), b, None, None, 0.1, 1e-5)


# Model, constructor arguments, BNs followed by a ReLU (the kernel's calls per forward).
TRAIN_MODELS = {
    # 17 blocks x (bn1, bn2) + bn_last; raw shift gradients (no ActiveShift normalisation, which
    # would amplify rounding differences of tiny ones)
    "rubiksnet_tiny": (rubiksnet_tiny, {"normalize_grad": False}, 2 * 17 + 1),
    # the stem's bn1 + 16 bottlenecks x (bn1, bn2); bn3 and the downsample BNs have no own ReLU
    "tsm_r50": (tsm_r50, {}, 1 + 2 * 16),
}


@pytest.mark.parametrize("name", list(TRAIN_MODELS))
def test_train_step_equals_pytorch_bn(kernel, calls, monkeypatch, name):
    """One channels-last train step with the kernel and with PyTorch's BN + ReLU: same loss,
    running statistics and layouts, and gradients as close to a float64 step as PyTorch's
    float32 ones. (Against each other the float32 gradients of TSM-R50 at this size differ by
    up to ~20% in single elements: its late BNs normalise 16 values per channel and amplify any
    rounding, PyTorch's own float32 against float64 as much.)"""
    factory, kwargs, n_kernel_calls = TRAIN_MODELS[name]
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(7))
    target = torch.tensor([1, 3])
    results = {}
    for key, use, dtype in (("kernel", True, torch.float32), ("pytorch", False, torch.float32),
                            ("float64", False, torch.float64)):
        monkeypatch.setattr(ba, "enabled", use)
        torch.manual_seed(0)
        model = factory(num_classes=5, **kwargs).to(dtype)
        apply_memory_format(model, "channels_last")
        model.train()
        loss = F.cross_entropy(model(x.to(dtype)), target)
        loss.backward()
        results[key] = (loss.detach().double(), {n: p.grad.clone() for n, p in model.named_parameters()},
                        {n: b.clone() for n, b in model.named_buffers()})
    assert len(calls) == n_kernel_calls  # every BN + ReLU of the float32 kernel run, once
    (loss_k, grads_k, bufs_k), (loss_p, grads_p, bufs_p), (loss_64, grads_64, bufs_64) = results.values()
    torch.testing.assert_close(loss_k, loss_p, rtol=1e-5, atol=1e-6)
    def distance(got: dict, names, ref: dict = grads_64) -> float:  # relative to the float64 step
        diff = sum((got[n].double() - ref[n]).square().sum().item() for n in names)
        return (diff / sum(ref[n].square().sum().item() for n in names)) ** 0.5

    for param, g64 in grads_64.items():
        # Per parameter within a factor of PyTorch's float32 (a wrong gradient is off by O(1); the
        # ill-conditioned TSM step scatters single parameters by up to ~3.5x either way).
        err_k, err_p = distance(grads_k, [param]), distance(grads_p, [param])
        assert err_k <= 4 * err_p + 1e-5, f"{param}: kernel {err_k:.2e}, PyTorch float32 {err_p:.2e} from float64"
        if g64.ndim == 4:
            assert grads_k[param].is_contiguous(memory_format=CL), param
    assert distance(grads_k, grads_64) <= 1.25 * distance(grads_p, grads_64) + 1e-6
    for buf, b in bufs_64.items():  # the forward rounds alike: running statistics as PyTorch's
        if not b.is_floating_point():  # num_batches_tracked
            assert torch.equal(bufs_k[buf], bufs_p[buf]), buf
            continue
        err_k, err_p = distance(bufs_k, [buf], bufs_64), distance(bufs_p, [buf], bufs_64)
        assert err_k <= 4 * err_p + 1e-6, f"{buf}: kernel {err_k:.2e}, PyTorch float32 {err_p:.2e} from float64"
