"""The CPU bf16 Conv3d guard: same convolution, finite weight gradients where oneDNN's are not."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actionlab.lit.module import VideoClassifier
from actionlab.models.cpu_bf16 import PaddedTimeConv3d, guard_cpu_bf16_conv3d
from actionlab.models.srtg import srtg_r3d_34

# (frames, kernel, padding): clips shorter than the temporal kernel, time zero-padded. Without the
# guard the first fails in ~95% of calls on torch 2.13's oneDNN, so 20 calls catch it for sure.
SHORT_CLIPS = [(2, (3, 1, 1), (1, 0, 0)), (2, (3, 3, 3), (1, 1, 1)), (4, (5, 1, 1), (2, 0, 0))]


def _guarded(kernel, padding) -> nn.Conv3d:
    conv = nn.Conv3d(32, 48, kernel, padding=padding, bias=True)
    assert guard_cpu_bf16_conv3d(conv) == 1
    return conv


@pytest.mark.parametrize(("frames", "kernel", "padding"), SHORT_CLIPS)
def test_bf16_weight_gradient_is_finite_and_matches_fp32(frames, kernel, padding):
    torch.manual_seed(0)
    conv = _guarded(kernel, padding)
    for _ in range(20):
        x = torch.randn(2, 32, frames, 8, 8).relu()
        grad_out = torch.randn_like(F.conv3d(x, conv.weight, padding=padding))
        conv.zero_grad()
        F.conv3d(x, conv.weight, conv.bias, padding=padding).backward(grad_out)
        expected = conv.weight.grad.clone()
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        out.backward(grad_out.bfloat16())
        assert torch.isfinite(conv.weight.grad).all()
        torch.testing.assert_close(conv.weight.grad, expected, rtol=0.05, atol=0.05 * expected.abs().max().item())


@pytest.mark.parametrize(("frames", "kernel", "padding"), SHORT_CLIPS + [(8, (3, 3, 3), (1, 1, 1))])
def test_guarded_forward_is_the_same_convolution(frames, kernel, padding):
    torch.manual_seed(1)
    conv = _guarded(kernel, padding)
    x = torch.randn(2, 32, frames, 9, 7).bfloat16()
    plain = F.conv3d(x, conv.weight.bfloat16(), conv.bias.bfloat16(), padding=padding)
    torch.testing.assert_close(conv.bfloat16()(x), plain)


def test_fp32_and_long_clips_take_the_plain_path():
    conv = _guarded((3, 1, 1), (1, 0, 0))
    assert not conv._needs_explicit_time_padding(torch.zeros(1, 32, 2, 4, 4))  # fp32
    assert not conv._needs_explicit_time_padding(torch.zeros(1, 32, 3, 4, 4, dtype=torch.bfloat16))
    assert conv._needs_explicit_time_padding(torch.zeros(1, 32, 2, 4, 4, dtype=torch.bfloat16))


def test_guard_keeps_parameters_and_checkpoint_keys():
    model = srtg_r3d_34(num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_conv = sum(type(m) is nn.Conv3d for m in model.modules())
    assert guard_cpu_bf16_conv3d(model) == n_conv > 0
    assert all(isinstance(m, PaddedTimeConv3d) for m in model.modules() if isinstance(m, nn.Conv3d))
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize(("precision", "device", "guarded"),
                         [("bf16-mixed", "cpu", True), ("32-true", "cpu", False), ("bf16-mixed", "meta", False)])
def test_module_guards_only_cpu_bf16_fits(precision, device, guarded):
    module = VideoClassifier(nn.Sequential(nn.Conv3d(3, 4, 3, padding=1)), optimizer=torch.optim.SGD, num_classes=4)
    module._trainer = SimpleNamespace(precision=precision, strategy=SimpleNamespace(root_device=torch.device(device)))
    module.setup("fit")
    assert isinstance(module.model[0], PaddedTimeConv3d) is guarded
