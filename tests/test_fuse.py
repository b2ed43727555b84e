"""Inference fusion: ``fuse_for_inference`` leaves the logits of every family unchanged (fp32
rounding), in both memory formats; its elementwise kernels match their PyTorch composition."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actionlab.models.fuse import (
    ConvAct,
    FrozenAffine,
    affine_relu,
    bn_affine,
    fold_bn_into_conv,
    fuse_for_inference,
    is_fused,
)
from actionlab.models.memory_format import apply_memory_format
from actionlab.models.rubiksnet import rubiksnet_small, rubiksnet_tiny, rubiksnet_tiny_aq
from actionlab.models.tsm import tsm_r50
from actionlab.models.vov3d import vov3d_m
from actionlab.models.x3d import x3d_xs
from actionlab.ops import rubiks_shift as rs


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affines (fresh ones are the identity and hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
    return model.eval()


CASES = [
    (rubiksnet_tiny, (2, 3, 4, 48, 48)),
    (rubiksnet_small, (1, 3, 4, 48, 48)),  # squeeze-excite blocks
    (rubiksnet_tiny_aq, (1, 3, 4, 48, 48)),
    (tsm_r50, (1, 3, 4, 64, 64)),
    (x3d_xs, (1, 3, 4, 64, 64)),
    (vov3d_m, (1, 3, 4, 64, 64)),
]


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize(("factory", "shape"), CASES, ids=[c[0].__name__ for c in CASES])
def test_fused_logits_equal_unfused(factory, shape, fmt):
    torch.manual_seed(0)
    model = trained_like(factory(num_classes=7))
    apply_memory_format(model, fmt)
    x = torch.randn(shape)
    with torch.no_grad():
        ref = model(x)
        fused = fuse_for_inference(model)
        got = fused(x)
    assert is_fused(fused) and not is_fused(model)
    bns = lambda m: sum(isinstance(b, nn.modules.batchnorm._BatchNorm) for b in m.modules())  # noqa: E731
    assert bns(model) > 0 and bns(fused) < bns(model) // 2, (bns(model), bns(fused))
    scale = ref.abs().max().item()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * max(1.0, scale))
    with torch.no_grad():  # the original is untouched
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)


def test_rubiksnet_is_fused_into_fewer_passes():
    """All BNs of RubiksNet fold or freeze; the forward runs the fused ops (when built)."""
    if not rs.kernel_available():
        pytest.skip("needs the compiled ops")
    model = trained_like(rubiksnet_tiny(num_classes=5))
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    blocks = fused.backbone.blocks()
    assert all(isinstance(b.bn1, FrozenAffine) and isinstance(b.bn2, nn.Identity) for b in blocks)
    assert all(isinstance(b.conv2, ConvAct) and b.conv2.act == "relu" and b.conv2.conv.bias is not None for b in blocks)
    seen = []

    class Recorder(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Recorder():
        fused(torch.randn(1, 3, 4, 32, 32))
    # Per block: conv2 (+ BN + ReLU), the shift, conv3 (+ residual), BN + ReLU of the sum;
    # except block 0, whose conv3 emits block 1's activation (its shortcut comes pre-scaled
    # from a second stem convolution) and whose own activation comes from a third.
    assert isinstance(fused.backbone.stem_act, ConvAct) and fused.backbone.stem_act.act == "relu"
    assert blocks[0].emits_activation and blocks[0].conv3.act == "relu"
    assert not any(getattr(b, "emits_activation", False) for b in blocks[1:])
    assert seen.count("mkldnn._convolution_pointwise.default") == len(blocks) + 2  # + the two stem convolutions
    assert seen.count("mkldnn._convolution_pointwise.binary") == len(blocks)
    assert seen.count("actionlab.rubiks_shift.default") == len(blocks)
    assert seen.count("actionlab.affine_relu.default") == len(blocks) - 1
    assert not any(s.startswith(("aten.native_batch_norm", "aten.relu", "aten.add.", "aten.mul.")) for s in seen), seen


def test_fused_model_refuses_to_train():
    fused = fuse_for_inference(trained_like(tsm_r50(num_classes=3)))
    fused.train()
    with pytest.raises(RuntimeError, match="fused for inference .* cannot train"):
        fused(torch.randn(1, 3, 2, 32, 32))


def test_eval_mode_fuses_bn_relu_into_the_shift_without_fuse_call():
    """Plain eval (no fuse_for_inference) already applies bn2 + ReLU inside the shift."""
    if not rs.kernel_available():
        pytest.skip("needs the compiled ops")
    model = trained_like(rubiksnet_tiny(num_classes=5))
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        fast = model(x)
    with torch.enable_grad():  # autograd on: the unfused ops
        slow = model(x).detach()
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_fold_bn_into_conv_exact_in_float64():
    conv = nn.Conv2d(4, 6, 3, padding=1).double()
    bn = trained_like(nn.BatchNorm2d(6).double())
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    ref = bn(conv(x))
    fold_bn_into_conv(conv, bn)
    torch.testing.assert_close(conv(x), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="no running statistics"):
        bn_affine(nn.BatchNorm2d(3, track_running_stats=False))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_affine_relu_op_matches_composition(fmt, dtype):
    x = torch.randn(3, 11, 5, 7, dtype=dtype).contiguous(memory_format=fmt)
    scale, bias = torch.randn(11, dtype=dtype), torch.randn(11, dtype=dtype)
    ref = torch.relu(x * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1))
    got = affine_relu(x, scale, bias)
    assert got.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("act", ["relu", "swish", None])
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_conv_act_epilogue_matches_composition(act, fmt):
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    x = torch.randn(2, 6, 9, 9)
    r = torch.randn(2, 10, 5, 5)
    if fmt == "channels_last":
        x, r = x.contiguous(memory_format=torch.channels_last), r.contiguous(memory_format=torch.channels_last)
    fn = {"relu": torch.relu, "swish": torch.nn.functional.silu, None: lambda v: v}[act]
    fused = ConvAct(conv, act)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), fn(conv(x)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused(x, r), fn(conv(x) + r), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="act must be one of"):
        ConvAct(conv, "gelu6")
