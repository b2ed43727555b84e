"""Model zoo I (TSM, X3D, VoV3D): shapes, gradients, structure as in the papers and training.

Small inputs (4 frames, 32 px) everywhere; paper-shape counts live in ``test_profile.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from actionlab.lit.optim import param_groups
from actionlab.models.layers import SqueezeExcite3d, round_width
from actionlab.models.tsm import TSM
from actionlab.models.vov3d import VoV3D
from actionlab.models.x3d import X3D
from actionlab.ops.temporal_shift import TemporalShift, temporal_shift
from actionlab.profile import build_from_config

ZOO1 = ["tsm_r50", "tsm_r101", "x3d_xs", "x3d_s", "x3d_m", "x3d_l", "vov3d_m", "vov3d_l"]


def build(name: str, classes: int = 5, frames: int = 4) -> nn.Module:
    model, _ = build_from_config(
        [f"model={name}", "data=synthetic", f"data.num_classes={classes}", f"data.num_frames={frames}"]
    )
    return model


@pytest.mark.parametrize("name", ZOO1)
def test_forward_backward_and_a_few_steps(name):
    """Every named config: logits shape, finite gradients reaching the stem, 2 SGD steps."""
    torch.manual_seed(0)
    model = build(name)
    x = torch.randn(1, 3, 2, 32, 32)
    y = torch.tensor([3])
    first = next(model.parameters())  # stem / conv1
    before = first.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step in range(2):
        opt.zero_grad()
        out = model(x)
        assert out.shape == (1, 5)
        loss = nn.functional.cross_entropy(out, y)
        assert torch.isfinite(loss), step
        loss.backward()
        if step == 0:
            assert all(torch.isfinite(p.grad).all() for p in model.parameters())
            assert first.grad.abs().sum() > 0
        opt.step()
    assert not torch.equal(before, first.detach())


@pytest.mark.slow
def test_trains_on_synthetic_data(compose_train):
    """End to end through ``actionlab.train.run`` on the embedded dataset (one 3D model; the
    test above runs the optimisation steps for every config)."""
    from actionlab.train import run

    cfg = compose_train(
        "model=x3d_xs",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "+trainer.num_sanity_val_steps=0",
        "data.num_frames=4",
        "data.crop_size=32",
    )
    metrics = run(cfg)
    assert math.isfinite(metrics["train/loss"])


# ---------------------------------------------------------------- X3D


@pytest.mark.parametrize(("size", "blocks"), [("m", [3, 5, 11, 7]), ("l", [5, 10, 25, 15])])
def test_x3d_layout(size, blocks):
    with torch.device("meta"):
        model = X3D(size, num_classes=400)
    stages = [model.s2, model.s3, model.s4, model.s5]
    assert [len(s) for s in stages] == blocks
    assert [s[0].branch2.c.conv.out_channels for s in stages] == [24, 48, 96, 192]
    assert [s[0].branch2.a.conv.out_channels for s in stages] == [54, 108, 216, 432]
    for stage in stages:
        for i, block in enumerate(stage):
            assert (block.branch2.se is not None) == (i % 2 == 0)  # SE on alternate blocks
            assert block.branch2.b.conv.groups == block.branch2.b.conv.in_channels  # depthwise
            assert block.branch2.b.conv.kernel_size == (3, 3, 3)
            assert block.branch2.b.conv.stride == ((1, 2, 2) if i == 0 else (1, 1, 1))
    assert model.stem.conv_t.conv.kernel_size == (5, 1, 1) and model.stem.conv_t.conv.groups == 24
    assert model.head.lin_5.out_channels == 2048 and model.head.conv_5.conv.out_channels == 432
    assert model.head.dropout.p == 0.5


def test_x3d_init_and_decay_groups():
    torch.manual_seed(0)
    model = X3D("xs", num_classes=400)
    finals = [b.branch2.c.bn.weight for s in (model.s2, model.s5) for b in s]
    assert all(torch.count_nonzero(w) == 0 for w in finals)  # zero-init final BN
    assert torch.all(model.s2[0].branch2.a.bn.weight == 1)
    fc = model.head.projection.weight
    assert abs(float(fc.detach().std()) - 0.01) < 0.001 and torch.all(model.head.projection.bias == 0)
    conv = model.s4[0].branch2.a.conv.weight.detach()  # MSRA fan-out: std sqrt(2 / (out * k))
    assert abs(float(conv.std()) - math.sqrt(2 / conv.shape[0])) < 0.1 * math.sqrt(2 / conv.shape[0])
    no_decay = model.no_weight_decay()
    assert "s2.0.branch2.a.bn.weight" in no_decay and "s2.0.branch2.a.conv.weight" not in no_decay
    decayed = {id(p) for g in param_groups(model, 5e-5) if g["weight_decay"] for p in g["params"]}
    assert id(model.s2[0].branch2.a.conv.weight) in decayed
    assert id(model.s2[0].branch2.a.bn.weight) not in decayed


def test_x3d_any_input_shape_and_swish_se():
    model = X3D("xs", num_classes=7).eval()
    for shape in [(1, 3, 5, 40, 48), (2, 3, 2, 64, 64)]:
        assert model(torch.randn(shape)).shape == (shape[0], 7)
    se = SqueezeExcite3d(432, 0.0625)
    assert se.hidden == 32 == round_width(432, 0.0625)  # PySlowFast rounding of 27 -> 32
    assert round_width(320, 0.0625) == 24 and round_width(40, 0.0625) == 8
    x = torch.randn(2, 432, 2, 3, 3)
    gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3, 4), keepdim=True)))))
    assert torch.allclose(se(x), x * gate)


# ---------------------------------------------------------------- VoV3D


@pytest.mark.parametrize(("size", "inner", "blocks"), [("m", 40, [1, 2, 3, 2]), ("l", 48, [1, 2, 5, 3])])
def test_vov3d_layout(size, inner, blocks):
    with torch.device("meta"):
        model = VoV3D(size, num_classes=174)
    stages = [model.s2, model.s3, model.s4, model.s5]
    assert [len(s) for s in stages] == blocks
    assert model.stem.conv_xy.out_channels == inner // 2
    for k, stage in enumerate(stages):
        dim_inner, dim_out = inner * (1, 2, 4, 8)[k], int(inner * (0.5, 1, 2, 4)[k])
        for i, block in enumerate(stage):
            tosa = block.branch2
            assert len(tosa.layers) == 5
            # one-shot concat: block input (stride 1 only) + 5 unit outputs of dim_inner / 2
            concat = 5 * dim_inner // 2 + (dim_out if i > 0 else 0)
            assert tosa.c.conv.in_channels == concat and tosa.c.conv.out_channels == dim_out
            assert getattr(tosa.c.bn, "final_bn", False)
            for u, unit in enumerate(tosa.layers):
                assert (unit.se is not None) == (u in (0, 2, 4))
                assert unit.b1.kernel_size == (1, 3, 3) and unit.b2.kernel_size == (3, 1, 1)
                assert unit.b1.groups == unit.b2.groups == dim_inner
                assert unit.residual == (not (i == 0 and u == 0))
    assert model.head.conv_5.conv.out_channels == 8 * inner


def test_vov3d_unit_receptive_field_grows_by_two_frames():
    """Unit k of a T-OSA sees 2k+3 frames of the block input (chained 3x1x1 convs); the SE
    of units 0/2/4 pools over all frames, so it is switched off to see the conv chain."""
    torch.manual_seed(0)
    model = VoV3D("m", num_classes=3).eval()
    tosa = model.s3[1].branch2
    for unit in tosa.layers:
        unit.se = None
    x = torch.randn(1, 40, 13, 4, 4, requires_grad=True)
    h = x
    for k, unit in enumerate(tosa.layers):
        h = unit(h)
        (g,) = torch.autograd.grad(h[0, :, 6].sum(), x, retain_graph=True)
        frames = (g.abs().sum(dim=(0, 1, 3, 4)) > 0).nonzero().flatten().tolist()
        assert frames == list(range(6 - k - 1, 6 + k + 2)), k


def test_vov3d_forward_any_shape():
    model = VoV3D("m", num_classes=4).eval()
    assert model(torch.randn(1, 3, 3, 40, 56)).shape == (1, 4)


# ---------------------------------------------------------------- TSM


def test_temporal_shift_semantics_and_adjoint():
    x = torch.randn(2 * 4, 16, 2, 2, dtype=torch.float64, requires_grad=True)
    v, w = x.view(2, 4, 16, 2, 2), temporal_shift(x, 4).view(2, 4, 16, 2, 2)
    assert torch.equal(w[:, :-1, :2], v[:, 1:, :2]) and torch.all(w[:, -1, :2] == 0)
    assert torch.equal(w[:, 1:, 2:4], v[:, :-1, 2:4]) and torch.all(w[:, 0, 2:4] == 0)
    assert torch.equal(w[:, :, 4:], v[:, :, 4:])
    assert torch.autograd.gradcheck(lambda a: temporal_shift(a, 4), (x,))
    with pytest.raises(ValueError, match="num_segments"):
        temporal_shift(torch.randn(6, 8, 1, 1), 4)


@pytest.mark.parametrize(("size", "every"), [("r50", 1), ("r101", 2)])
def test_tsm_residual_shift_placement(size, every):
    with torch.device("meta"):
        model = TSM(size, num_classes=174)
    for layer in (model.backbone.layer1, model.backbone.layer3):
        for i, block in enumerate(layer):
            assert isinstance(block.shift, TemporalShift) == (i % every == 0)
    keys = set(model.state_dict())
    # torchvision names, and the shift adds no state
    assert {"backbone.conv1.weight", "backbone.layer1.0.downsample.0.weight",
            "backbone.layer4.2.bn3.running_var", "head.fc.weight"} <= keys
    assert not any("shift" in k for k in keys)


def test_tsm_shift_is_in_the_residual_branch_only():
    torch.manual_seed(0)
    model = TSM("r50", num_classes=6, dropout=0.0).eval()
    model._set_segments(4)
    block = model.backbone.layer1[1]  # identity shortcut
    x = torch.randn(4, 256, 8, 8)
    with torch.no_grad():
        h = block.relu(block.bn1(block.conv1(temporal_shift(x, 4))))
        h = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(h)))))
        assert torch.allclose(block(x), torch.relu(h + x), atol=1e-5)


def test_tsm_averages_per_frame_logits_and_mixes_frames():
    torch.manual_seed(0)
    model = TSM("r50", num_classes=6, dropout=0.0).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        out = model(x)
        model._set_segments(4)
        feats = model.backbone(x.transpose(1, 2).reshape(4, 3, 32, 32))
        assert torch.allclose(out, model.head.fc(feats).mean(0, keepdim=True), atol=1e-5)
        y = x.clone()
        y[:, :, 3] = 0  # the last frame reaches the others' features through the shift
        changed = model.backbone(y.transpose(1, 2).reshape(4, 3, 32, 32))
    assert not torch.allclose(changed[0], feats[0])


def test_tsm_optimiser_declarations():
    model = TSM("r50", num_classes=10, fc_lr_mult=5.0)
    assert model.lr_multipliers() == {"head.fc.weight": 5.0, "head.fc.bias": 10.0}
    assert TSM("r50", num_classes=10).lr_multipliers() == {}
    assert "backbone.bn1.weight" in model.no_weight_decay()
    groups = {g["name"]: g for g in param_groups(model, 1e-4)}  # the training module's groups
    assert [p.shape for p in groups["lr5_wd0.0001"]["params"]] == [(10, 2048)]
    assert [p.shape for p in groups["lr10_wd0"]["params"]] == [(10,)]
    assert abs(float(model.head.fc.weight.detach().std()) - 0.001) < 2e-4
