"""Memory formats: ``memory_format`` / ``apply_memory_format``, and channels-last kept end to end.

The channels-last path only pays if no op falls back to NCHW: a dispatch-mode recorder checks
every 4-D result of a whole RubiksNet / TSM forward and backward (and every RubiksShift result)
for the channels-last layout, and the numbers equal the contiguous model's.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from actionlab.models.memory_format import (
    FORMATS,
    apply_memory_format,
    clip_to_frames,
    current_memory_format,
    resolve_memory_format,
)
from actionlab.models.rubiksnet import rubiksnet_small, rubiksnet_tiny, rubiksnet_tiny_aq
from actionlab.models.tsm import tsm_r50
from actionlab.models.x3d import x3d_xs
from actionlab.ops import rubiks_shift as rs
from actionlab.ops.temporal_shift import temporal_shift


class LayoutRecorder(TorchDispatchMode):
    """Every 4-D result that is not channels-last, and every RubiksShift result not stored
    ``N, T, H, W, C`` (planes of one pixel, where both layouts are the same memory, pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.offenders: list[tuple[str, tuple, tuple]] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or 0 in t.stride():
                continue  # broadcast views (stride 0) hold no memory of their own
            if t.ndim == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                self.offenders.append((str(func), tuple(t.shape), t.stride()))
            if t.ndim == 5 and "actionlab" in str(func) and not t.permute(0, 1, 3, 4, 2).is_contiguous():
                self.offenders.append((str(func), tuple(t.shape), t.stride()))
        return out


FRAME_MODELS = [rubiksnet_tiny, rubiksnet_small, rubiksnet_tiny_aq, tsm_r50]


@pytest.fixture(scope="module")
def kernel():
    if not rs.kernel_available():
        pytest.skip("the compiled RubiksShift op is unavailable (see test_rubiks_shift_kernels)")


@pytest.mark.parametrize("factory", FRAME_MODELS, ids=lambda f: f.__name__)
def test_channels_last_is_kept_through_forward_and_backward(kernel, factory):
    torch.manual_seed(0)
    model = factory(num_classes=5)
    assert apply_memory_format(model, "channels_last") == "channels_last"
    x = torch.randn(2, 3, 4, 64, 64)  # last stage 2 x 2: planes larger than one pixel everywhere
    with LayoutRecorder() as rec:
        model(x).logsumexp(-1).sum().backward()
    assert rec.ops > 100 and not rec.offenders, rec.offenders[:5]
    weights = [p for p in model.parameters() if p.ndim == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert all(p.grad.is_contiguous(memory_format=torch.channels_last) for p in weights)


@pytest.mark.parametrize("factory", [rubiksnet_tiny, rubiksnet_tiny_aq, tsm_r50], ids=lambda f: f.__name__)
def test_channels_last_training_step_equals_contiguous(kernel, factory):
    """Same logits and gradients in both formats, in float64 (in float32 the training-mode BNs of
    the small late stages amplify the rounding differences of layout-specific conv algorithms)."""
    x = torch.randn(2, 3, 4, 32, 32, dtype=torch.float64)
    results = {}
    for fmt in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        # Raw shift gradients: the ActiveShift normalisation would amplify rounding of tiny ones.
        kwargs = {} if factory is tsm_r50 else {"normalize_grad": False}
        model = factory(num_classes=5, **kwargs).double()
        apply_memory_format(model, fmt)
        out = model(x)
        out.square().sum().backward()
        results[fmt] = (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (out_a, grads_a), (out_b, grads_b) = results["contiguous"], results["channels_last"]
    torch.testing.assert_close(out_b, out_a, rtol=1e-9, atol=1e-9 * out_a.abs().max().item())
    for name, g in grads_a.items():
        tol = 1e-8 * max(g.abs().max().item(), 1e-12)
        torch.testing.assert_close(grads_b[name], g, rtol=1e-8, atol=tol, msg=name)


def test_clip_to_frames_layouts():
    x = torch.randn(2, 3, 4, 5, 6)
    ref = x.transpose(1, 2).contiguous()
    for fmt in ("contiguous", "channels_last"):
        frames = clip_to_frames(x, fmt)
        assert torch.equal(frames, ref)
        flat = frames.flatten(0, 1)
        assert flat.is_contiguous(memory_format=torch.channels_last if fmt == "channels_last" else torch.contiguous_format)
    # Already stored channels-last (B, T, H, W, C): no copy.
    stored = x.permute(0, 2, 3, 4, 1).contiguous()
    clip = stored.permute(0, 4, 1, 2, 3)
    assert clip_to_frames(clip, "channels_last").data_ptr() == stored.data_ptr()


@pytest.mark.parametrize("fold_div", [8, 4])
def test_temporal_shift_keeps_channels_last(fold_div):
    x = torch.randn(6, 16, 5, 7)  # 2 clips x 3 frames
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x_c = x.clone().requires_grad_()
    out_cl, out_c = temporal_shift(x_cl, 3, fold_div), temporal_shift(x_c, 3, fold_div)
    assert out_cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(out_cl, out_c)
    grad = torch.randn_like(out_c)
    out_cl.backward(grad.contiguous(memory_format=torch.channels_last))
    out_c.backward(grad)
    assert x_cl.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x_cl.grad, x_c.grad)
    v, fold = x.view(2, 3, 16, 5, 7), 16 // fold_div
    expect = torch.zeros_like(v)
    expect[:, :-1, :fold] = v[:, 1:, :fold]
    expect[:, 1:, fold:2 * fold] = v[:, :-1, fold:2 * fold]
    expect[:, :, 2 * fold:] = v[:, :, 2 * fold:]
    assert torch.equal(out_c, expect.view_as(x))


def test_3d_models_get_channels_last_3d_input_and_weights():
    torch.manual_seed(0)
    model = x3d_xs(num_classes=5).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert apply_memory_format(model, "channels_last") == "channels_last"
        seen = []
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv3d))
        handle = first_conv.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last_3d)))
        got = model(x)
        handle.remove()
    assert seen == [True]
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in model.parameters() if p.ndim == 5)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    # Undone by the other format: weights contiguous again, no input hook left.
    assert apply_memory_format(model, "contiguous") == "contiguous"
    assert all(p.is_contiguous() for p in model.parameters())
    assert not model._forward_pre_hooks and current_memory_format(model) == "contiguous"


def test_auto_resolves_per_model_kind_and_device():
    tiny = rubiksnet_tiny(num_classes=3)
    assert resolve_memory_format(tiny, "auto", "cpu") == "channels_last"
    assert resolve_memory_format(tiny, "auto", "cuda") == "channels_last"
    x3d = x3d_xs(num_classes=3)
    assert resolve_memory_format(x3d, "auto", "cuda") == "channels_last"
    assert resolve_memory_format(x3d, "contiguous", "cuda") == "contiguous"
    assert set(FORMATS) == {"auto", "contiguous", "channels_last"}
    with pytest.raises(ValueError, match="memory_format must be one of .* memory_format=channels_last"):
        apply_memory_format(tiny, "nhwc")


def test_old_channels_last_3d_key_fails_naming_the_new_one():
    from actionlab.train import memory_format_setting

    assert memory_format_setting(OmegaConf.create({"memory_format": "contiguous", "channels_last_3d": None})) == "contiguous"
    assert memory_format_setting(OmegaConf.create({"channels_last_3d": False})) == "auto"
    with pytest.raises(ValueError, match="replaced by memory_format.*memory_format=channels_last"):
        memory_format_setting(OmegaConf.create({"channels_last_3d": True}))


def test_train_config_has_one_memory_format_key():
    from hydra import compose, initialize_config_dir

    from actionlab.profile import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", "memory_format=channels_last"])
    assert cfg.memory_format == "channels_last" and cfg.channels_last_3d is None


def test_callback_applies_the_format_for_the_trainer_device(kernel):
    from types import SimpleNamespace

    from actionlab.lit.callbacks import MemoryFormat

    model = rubiksnet_tiny(num_classes=3)
    module = SimpleNamespace(model=model)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    callback = MemoryFormat("auto")
    callback.setup(trainer, module, "fit")
    assert callback.applied == "channels_last" and model.memory_format == "channels_last"
    with pytest.raises(ValueError, match="memory_format must be one of"):
        MemoryFormat("channels_first")
