"""RubiksNet tiers: exact parameter counts (paper/released code), shapes, optimiser groups."""

import pytest
import torch

from actionlab.lit.optim import param_groups
from actionlab.models.rubiksnet import RubiksNet, rubiksnet_tiny

# Released-code parameter counts at 174 classes (docs/models/rubiksnet.md).
PARAMS_174 = {"tiny": 1_898_760, "small": 3_597_366, "medium": 6_185_622, "large": 8_538_294}


@pytest.mark.parametrize("tier,expected", PARAMS_174.items())
def test_parameter_counts_match_the_paper(tier, expected):
    model = RubiksNet(tier, num_classes=174)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_forward_shape_any_clip_length_and_stride_sizes():
    model = rubiksnet_tiny(num_classes=7).eval()
    for t, size in ((8, 64), (4, 33)):
        out = model(torch.randn(2, 3, t, size, size))
        assert out.shape == (2, 7)


def test_released_key_layout():
    keys = rubiksnet_tiny(num_classes=174).state_dict().keys()
    for key in (
        "backbone.conv1.weight",
        "backbone.layer0.0.bn1.running_mean",
        "backbone.layer1.0.shortcut.weight",
        "backbone.layer1.0.as3.rubiks3d.shift",
        "backbone.bn_last.weight",
        "new_fc.weight",
        "new_fc.bias",
    ):
        assert key in keys
    small = RubiksNet("small", num_classes=174).state_dict()
    assert small["backbone.layer2.1.se.fc.0.weight"].shape == (144 // 12, 144)


def test_frames_are_per_frame_until_the_shift_mixes_them():
    # With all shifts zero the network is a per-frame 2D CNN: permuting frames leaves the
    # logit average unchanged. Non-zero temporal shifts must break that symmetry.
    torch.manual_seed(0)
    model = rubiksnet_tiny(num_classes=5).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        shifts = [m.shift for n, m in model.named_modules() if n.endswith("rubiks3d")]
        saved = [s.clone() for s in shifts]
        for s in shifts:
            s.zero_()
        assert torch.allclose(model(x), model(x[:, :, perm]), atol=1e-5)
        for s, v in zip(shifts, saved):
            s.copy_(v)
        assert not torch.allclose(model(x), model(x[:, :, perm]), atol=1e-3)


def test_optimizer_groups_shift_lr_and_no_decay():
    model = rubiksnet_tiny(num_classes=10, shift_lr_mult=0.01)
    groups = {(g["lr_mult"], g["weight_decay"]): g["params"] for g in param_groups(model, 1e-4)}
    shifts = {id(p) for n, p in model.named_parameters() if n.endswith("shift")}
    assert {id(p) for p in groups[(0.01, 0.0)]} == shifts
    decayed = {id(p) for p in groups[(1.0, 1e-4)]}
    assert all(p.ndim == 4 or p.ndim == 2 for p in groups[(1.0, 1e-4)])
    assert id(model.new_fc.weight) in decayed and id(model.new_fc.bias) not in decayed
    total = sum(p.numel() for ps in groups.values() for p in ps)
    assert total == sum(p.numel() for p in model.parameters())


def test_bad_tier_and_variant_name_the_choices():
    with pytest.raises(ValueError, match="tiny"):
        RubiksNet("huge")
    with pytest.raises(ValueError, match="rubiks3d"):
        RubiksNet("tiny", variant="rubiks2d")
