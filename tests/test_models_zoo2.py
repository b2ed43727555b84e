"""Model zoo II: SRTG / 3D ResNets, MTNet, ViT and TokShift.

Paper / release figures are checked on the ``meta`` device (shapes only, no arithmetic), so the
16x224 and 8x224 profiles cost well under a second each; behaviour is checked on tiny inputs.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from actionlab.models import mtnet, srtg, vit
from actionlab.models.srtg import SqueezeRecursion, cycle_consistent
from actionlab.models.vit import VideoViT, ViTSize, resize_pos_embed
from actionlab.ops.token_shift import TokenShift, token_shift
from actionlab.profile import count_params, mac_breakdown

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
TINY_VIT = ViTSize(hidden=32, layers=2, heads=4, mlp_dim=64)
ZOO2_CONFIGS = [
    *(f"{p}{a}_{d}" for p in ("srtg_", "") for a in ("r3d", "r2plus1d") for d in (34, 50, 101)),
    "mtnet_xs",
    "mtnet_s",
    "mtnet_m",
    "mtnet_l",
    "vit_base",
    "tokshift_base",
    "tokshift_large",
]
# Real arithmetic for the code paths the training tests below do not cover (bottleneck block,
# (2+1)D convs and stem, TokShift); srtg_r3d_34 (basic block, 3D convs, SR, gates) and mtnet_xs
# train for real there. The rest differ only in depth or a switch and run forward and backward on
# the meta device (the whole autograd graph, no arithmetic), which keeps 35-300 M-parameter
# models cheap on 2 CPU cores.
REAL = {"srtg_r2plus1d_50", "tokshift_base"}


def _meta_model(model_fn, shape, **kwargs):
    with torch.device("meta"):
        return model_fn(**kwargs), torch.empty(shape)


def _meta_macs(model_fn, shape, **kwargs) -> tuple[int, dict[str, int]]:
    model, x = _meta_model(model_fn, shape, **kwargs)
    return count_params(model), mac_breakdown(model, x)


# --------------------------------------------------------------------------------------------
# TokShift op


def test_token_shift_moves_exactly_the_specified_cls_channels_and_frames():
    b, t, n, c = 2, 4, 3, 8  # fold_div 4 -> fold 2: channels 0-1 from t+1, 2-3 from t-1
    x = torch.arange(b * t * n * c, dtype=torch.float32).view(b * t, n, c) + 1
    out = token_shift(x, num_frames=t, fold_div=4)
    xv, ov = x.view(b, t, n, c), out.view(b, t, n, c)
    expected = xv.clone()
    for bi in range(b):
        for ti in range(t):
            expected[bi, ti, 0, 0:2] = xv[bi, ti + 1, 0, 0:2] if ti + 1 < t else 0.0
            expected[bi, ti, 0, 2:4] = xv[bi, ti - 1, 0, 2:4] if ti > 0 else 0.0
    assert torch.equal(ov, expected)
    # Patch tokens and the last half of the CLS channels never move.
    assert torch.equal(ov[:, :, 1:], xv[:, :, 1:])
    assert torch.equal(ov[:, :, 0, 4:], xv[:, :, 0, 4:])
    # Clips do not leak into each other: clip 1 frame 0 gets zeros, not clip 0's last frame.
    assert torch.equal(ov[1, 0, 0, 2:4], torch.zeros(2))
    assert torch.equal(TokenShift(4)(x, t), out)


def test_token_shift_gradient_is_the_transposed_shift():
    x = torch.randn(6, 2, 8, requires_grad=True)
    g = torch.randn(6, 2, 8)
    token_shift(x, 3).backward(g)
    # The adjoint of "frame t takes t+1" is "frame t+1 receives t's gradient".
    gv, xg = g.view(2, 3, 2, 8), x.grad.view(2, 3, 2, 8)
    assert torch.equal(xg[:, 1:, 0, :2], gv[:, :-1, 0, :2]) and torch.equal(
        xg[:, 0, 0, :2], torch.zeros(2, 2)
    )
    assert torch.equal(xg[:, :-1, 0, 2:4], gv[:, 1:, 0, 2:4])
    with pytest.raises(ValueError, match="num_frames"):
        token_shift(x, 4)


# --------------------------------------------------------------------------------------------
# ViT / TokShift


def _tiny_pair(t: int = 3) -> tuple[VideoViT, VideoViT, torch.Tensor]:
    torch.manual_seed(0)
    plain = VideoViT(TINY_VIT, num_classes=5, num_frames=t, img_size=32, shift=False)
    shifted = VideoViT(TINY_VIT, num_classes=5, num_frames=t, img_size=32, shift=True)
    torch.nn.init.normal_(plain.head.weight)  # a zero head would hide every difference
    shifted.load_state_dict(plain.state_dict())
    return plain, shifted, torch.randn(2, 3, t, 32, 32)


def test_tokshift_with_shift_disabled_equals_vit_exactly():
    plain, shifted, x = _tiny_pair()
    assert not torch.allclose(plain(x), shifted(x))  # the shift does change the output
    for block in shifted.transformer.encoder.layer:
        block.fold_div = None
    assert torch.equal(plain(x), shifted(x))


def test_tokshift_shifts_before_attention_and_mlp_in_every_block(monkeypatch):
    _, shifted, x = _tiny_pair()
    calls = []

    def spy(tokens, num_frames, fold_div):
        calls.append((tuple(tokens.shape), num_frames, fold_div))
        return token_shift(tokens, num_frames, fold_div)

    monkeypatch.setattr(vit, "token_shift", spy)
    shifted(x)
    assert calls == [((2 * 3, 1 + 4, 32), 3, 4)] * (2 * TINY_VIT.layers)


def test_vit_logits_are_the_mean_of_per_frame_cls_logits():
    plain, _, x = _tiny_pair()
    per_frame = torch.stack([plain(x[:, :, i : i + 1]) for i in range(x.shape[2])], dim=1)
    torch.testing.assert_close(plain(x), per_frame.mean(1))


def test_position_embedding_resize_keeps_cls_and_corners():
    pos = torch.randn(1, 1 + 4, 3)
    assert resize_pos_embed(pos, (2, 2)) is pos
    big = resize_pos_embed(pos, (4, 4))
    assert big.shape == (1, 17, 3)
    assert torch.equal(big[:, 0], pos[:, 0])
    grid, old = big[0, 1:].view(4, 4, 3), pos[0, 1:].view(2, 2, 3)
    for (i, j), (oi, oj) in {
        (0, 0): (0, 0),
        (0, 3): (0, 1),
        (3, 0): (1, 0),
        (3, 3): (1, 1),
    }.items():
        torch.testing.assert_close(grid[i, j], old[oi, oj])
    # A 224 model fed 256 frames interpolates on the fly instead of failing.
    model = VideoViT(TINY_VIT, num_classes=5, img_size=32)
    assert model(torch.randn(1, 3, 2, 48, 48)).shape == (1, 5)


def test_vit_b16_params_and_tokshift_b_macs_match_the_papers():
    params, macs = _meta_macs(vit.vit_base, (1, 3, 8, 224, 224), num_classes=400)
    assert params == 86_106_256  # "ViT-B/16 + 400-class head about 86.1 M"
    _, shift_macs = _meta_macs(vit.tokshift_base, (1, 3, 8, 224, 224), num_classes=400)
    assert shift_macs == macs  # the shift is pure data movement
    linear = macs["aten.addmm"] + macs["aten.convolution"]
    # Paper convention (Linear layers + patch embedding): L*N*(4D^2 + 2DM) + 196*768*768 per
    # frame, times 8 frames, plus the 400-class head on 8 CLS tokens.
    per_frame = 12 * 197 * (4 * 768**2 + 2 * 768 * 3072) + 196 * 16 * 16 * 3 * 768
    assert linear == 8 * per_frame + 8 * 768 * 400
    assert round(linear / 1e9, 1) == 134.8
    # With the attention matmuls (QK^T and AV: 2 * 12 * 197^2 * 768 per frame): 140.5 G.
    assert macs["total"] - linear == 8 * 2 * 12 * 197**2 * 768
    assert round(macs["total"] / 1e9, 1) == 140.5


def test_tokshift_large_384_params():
    params, macs = _meta_macs(
        vit.tokshift_large, (1, 3, 8, 384, 384), num_classes=400, img_size=384
    )
    assert round(params / 1e6, 1) == 304.1
    # README: TokShift-L 8x384 1397.6 GFLOPs (Linear + patch embedding convention).
    assert round((macs["aten.addmm"] + macs["aten.convolution"]) / 1e9, 1) == 1397.6


# --------------------------------------------------------------------------------------------
# SRTG: Squeeze-and-Recursion and the temporal gate


def test_cycle_consistency_on_hand_built_sequences():
    a = torch.tensor(
        [[[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]]]
    )  # (1, C=2, T=4), distinct frames
    assert cycle_consistent(a, a).tolist() == [True]
    assert cycle_consistent(a, a.flip(-1)).tolist() == [True]  # any 1-1 re-ordering cycles back
    collapsed = torch.zeros_like(a)
    collapsed[:, 0] = torch.tensor([0.0, 0.1, 0.0, 0.1])  # every frame of b sits near a_0
    assert cycle_consistent(a, collapsed).tolist() == [False]
    static = a[..., :1].expand_as(a)  # a frozen clip cannot cycle back to a unique frame
    assert cycle_consistent(static, a).tolist() == [False]
    both = torch.cat([a, a])
    b = torch.cat([a, collapsed])
    assert cycle_consistent(both, b).tolist() == [True, False]  # decided per sample


def test_temporal_gate_fuses_consistent_samples_and_passes_the_others_unchanged():
    torch.manual_seed(0)
    sr = SqueezeRecursion(6)
    x = torch.randn(2, 6, 4, 3, 3)
    fused = sr(x)  # gate off: x * R for every sample
    pooled = x.mean(dim=(3, 4))
    recurrent = sr.rnn(pooled.permute(2, 0, 1))[0].permute(1, 2, 0)
    torch.testing.assert_close(fused, x * recurrent[..., None, None])

    sr.gate_active = True
    sr.consistency = lambda p, r: torch.tensor([True, False])
    out = sr(x)
    torch.testing.assert_close(out[0], fused[0])
    assert torch.equal(out[1], x[1])
    out[1].sum().backward(retain_graph=True)  # inconsistent sample: no path to the LSTM
    assert all(p.grad is None or not p.grad.any() for p in sr.rnn.parameters())
    out[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sr.rnn.parameters())


def test_temporal_gate_without_patching_static_clip_passes_single_frame_fuses():
    torch.manual_seed(0)
    sr = SqueezeRecursion(4)
    sr.gate_active = True
    static = torch.randn(2, 4, 1, 2, 2).expand(2, 4, 5, 2, 2).contiguous()
    assert torch.equal(sr(static), static)  # never consistent: identity
    single = torch.randn(2, 4, 1, 2, 2)  # one frame is trivially consistent: fused
    out = sr(single)
    out.sum().backward()
    assert not torch.allclose(out, single)
    # One step from a zero state: the hidden-to-hidden weights see zeros; the rest learns.
    for name, p in sr.rnn.named_parameters():
        assert (p.grad.abs().sum() > 0) == ("weight_hh" not in name), name


def test_gates_from_epoch_switches_every_sr_block():
    model, _ = _meta_model(srtg.srtg_r3d_34, (1,), num_classes=4, gates_from_epoch=2)
    blocks = [m for m in model.modules() if isinstance(m, SqueezeRecursion)]
    assert len(blocks) == 3 + 4 + 6 + 3
    assert all(b.gate_active for b in blocks)  # not in a training run: the trained model gates
    model.set_epoch(0)
    assert not any(b.gate_active for b in blocks)
    model.set_epoch(2)
    assert all(b.gate_active for b in blocks)
    released, _ = _meta_model(srtg.srtg_r3d_34, (1,), num_classes=4)
    released.set_epoch(100)
    assert not any(m.gate_active for m in released.modules() if isinstance(m, SqueezeRecursion))
    with pytest.raises(ValueError, match="recursion"):
        _meta_model(srtg.r3d_34, (1,), num_classes=4, gates_from_epoch=0)


# Analytic count of the released code (16x224, 400 classes, max-pool after the stem).
SRTG_FIGURES = {  # name: (params baseline M, params SR M, GMACs baseline, GMACs SR)
    "r3d_34": (63.68, 83.86, 42.65, 42.68),
    "r3d_50": (36.72, 56.90, 26.47, 26.50),
    "r3d_101": (69.06, 107.14, 39.13, 39.20),
    "r2plus1d_34": (61.83, 82.01, 40.28, 40.31),
    "r2plus1d_50": (34.86, 55.04, 24.83, 24.86),
    "r2plus1d_101": (67.22, 105.29, 37.50, 37.56),
}


@pytest.mark.parametrize("arch", sorted(SRTG_FIGURES))
def test_srtg_params_and_macs_match_the_release(arch):
    p_base, p_sr, m_base, m_sr = SRTG_FIGURES[arch]
    shape = (1, 3, 16, 224, 224)
    params, macs = _meta_macs(getattr(srtg, arch), shape, num_classes=400)
    sr_params, sr_macs = _meta_macs(getattr(srtg, f"srtg_{arch}"), shape, num_classes=400)
    assert (round(params / 1e6, 2), round(sr_params / 1e6, 2)) == (p_base, p_sr)
    assert (round(macs["total"] / 1e9, 2), round(sr_macs["total"] / 1e9, 2)) == (m_base, m_sr)
    # All SR cost is the LSTMs: 8C^2 MACs per layer and time step (hidden = input = C).
    assert sr_macs["aten.convolution"] == macs["aten.convolution"]


def test_srtg_r3d_34_without_stem_pool_is_the_older_release_revision():
    params, macs = _meta_macs(
        srtg.srtg_r3d_34, (1, 3, 16, 224, 224), num_classes=400, stem_pool=False
    )
    assert round(params / 1e6, 2) == 83.86
    assert round(macs["total"] / 1e9, 1) == 301.6  # 7x: stage 1 at 16x112x112 instead of 8x56x56


def test_srtg_keeps_released_layout_with_expansion_one():
    model, _ = _meta_model(srtg.srtg_r2plus1d_50, (1,), num_classes=7)
    keys = set(model.state_dict())
    assert {
        "stem.0.weight",
        "stem.3.weight",
        "layer1.0.conv1.0.weight",
        "layer1.0.conv2.0.0.weight",
        "layer1.0.conv2.0.3.weight",
        "layer1.0.conv3.0.weight",
        "layer2.0.downsample.0.weight",
        "layer4.2.sar.rnn.weight_hh_l1",
        "fc.weight",
    } <= keys
    assert model.fc.in_features == 512
    assert model.layer1[0].conv2[0][0].out_channels == (64 * 64 * 27) // (64 * 9 + 3 * 64)


# --------------------------------------------------------------------------------------------
# MTNet


def test_select_frames_keeps_the_most_similar_frames_in_order():
    # Frames 1 and 2 resemble both neighbours; frames 3 and 4 are outliers.
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.2], [1.0, 0.05]])
    x = feats.T[None, :, :, None, None].expand(1, 2, 6, 2, 2).contiguous()
    out = mtnet.select_frames(x)
    assert out.shape == (1, 2, 3, 2, 2)
    sims = torch.nn.functional.cosine_similarity(feats[:-1], feats[1:], dim=1, eps=1e-4) ** 2
    scores = (sims[:-1] + sims[1:]) / 2
    kept = sorted((scores.topk(3).indices + 1).tolist())
    assert torch.equal(out, x[:, :, kept])
    assert kept[0] == 1 and 3 not in kept
    with pytest.raises(ValueError, match="3 frames"):
        mtnet.select_frames(x[:, :, :2])
    with pytest.raises(ValueError, match="crop_size"):
        mtnet.mtnet_xs(num_classes=2)(torch.randn(1, 3, 4, 32, 32))


def test_mtnet_paths_resolutions_and_lateral_link():
    model = mtnet.mtnet_xs(num_classes=5).eval()
    shapes = {}
    for name in ("layer1", "layer2", "layer3", "layer4"):
        getattr(model, name).register_forward_hook(
            lambda m, i, o, n=name: shapes.__setitem__(n, (tuple(o[0].shape), tuple(o[1].shape)))
        )
    model(torch.randn(1, 3, 16, 64, 64))
    # brief: 7/8 channels, full resolution; prolonged: 1/8, half T and half H, W.
    assert shapes["layer1"] == ((1, 56, 8, 16, 16), (1, 8, 4, 8, 8))
    assert shapes["layer2"] == ((1, 112, 4, 8, 8), (1, 16, 2, 4, 4))
    assert shapes["layer3"] == ((1, 224, 2, 4, 4), (1, 32, 1, 2, 2))
    assert shapes["layer4"] == ((1, 448, 1, 2, 2), (1, 64, 1, 1, 1))
    conv = model.layer2[1].conv2
    assert (conv.conv_short.in_channels, conv.conv_long.in_channels) == (112, 16)
    assert conv.conv_short2long.weight.shape == (16, 112, 1, 1, 1)
    assert model.layer2[0].downsample.conv_short2long is None  # the shortcut has no lateral
    assert isinstance(model.layer1[0].sr_short.rnn, torch.nn.GRU)
    assert (model.layer1[0].sr_short.rnn.hidden_size, model.layer1[0].sr_long.rnn.hidden_size) == (
        56,
        8,
    )


# Analytic count of the released MTNet code (16x224, 400 classes): params M, GRU params M, GMACs.
MTNET_FIGURES = {
    "xs": (21.8, 6.6, 15.9),
    "s": (40.0, 10.9, 18.5),
    "m": (44.0, 11.8, 25.3),
    "l": (88.1, 22.3, 38.1),
}


@pytest.mark.parametrize("size", sorted(MTNET_FIGURES))
def test_mtnet_params_and_macs(size):
    model, x = _meta_model(getattr(mtnet, f"mtnet_{size}"), (1, 3, 16, 224, 224), num_classes=400)
    params, macs = count_params(model), mac_breakdown(model, x)
    gru = sum(p.numel() for n, p in model.named_parameters() if ".rnn." in n)
    got = (round(params / 1e6, 1), round(gru / 1e6, 1), round(macs["total"] / 1e9, 1))
    # The analytic count rounded MTNet-S to ~18.6 GMACs; the exact count is 18.55.
    assert got == MTNET_FIGURES[size]


# --------------------------------------------------------------------------------------------
# Every config: instantiate, forward, backward


def _instantiate(name: str, crop: int):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    values = {"num_classes": 5, "num_frames": 4, "crop_size": crop}
    cfg = OmegaConf.merge({"data": values}, {"model": cfg})
    return hydra.utils.instantiate(cfg.model)


@pytest.mark.parametrize("name", ZOO2_CONFIGS)
def test_every_config_forward_backward(name):
    crop = 64 if name.startswith("mtnet") else 32  # MTNet needs >= 33 px
    if name not in REAL:
        with torch.device("meta"):
            model = _instantiate(name, crop)
            x = torch.empty(2, 3, 4, crop, crop)
    else:
        torch.manual_seed(0)
        model = _instantiate(name, crop)
        x = torch.randn(2, 3, 4, crop, crop)
    out = model(x)
    assert out.shape == (2, 5)
    out.logsumexp(-1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    if name in REAL:
        assert torch.isfinite(out).all()
        # A zero-initialised head (ViT) leaves the trunk without gradient on the first step.
        assert sum(g.abs().sum() for g in grads) > 0


# --------------------------------------------------------------------------------------------
# A few training steps on the embedded synthetic dataset (the real data path)


def _finite_metrics(metrics: dict[str, float]) -> None:
    assert any(k.startswith("train/loss") for k in metrics), sorted(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics


@pytest.mark.slow
def test_srtg_trains_with_gates_switched_on_by_epoch(compose_train, monkeypatch):
    from actionlab.train import run

    seen: list[tuple[int, bool]] = []
    set_epoch = srtg.VideoResNet.set_epoch

    def spy(self, epoch: int) -> None:
        set_epoch(self, epoch)
        seen.append(
            (epoch, all(m.gate_active for m in self.modules() if isinstance(m, SqueezeRecursion)))
        )

    monkeypatch.setattr(srtg.VideoResNet, "set_epoch", spy)
    cfg = compose_train(
        "model=srtg_r3d_34",
        "model.gates_from_epoch=1",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
    )
    _finite_metrics(run(cfg))
    assert seen == [(0, False), (1, True)]


@pytest.mark.slow
def test_mtnet_trains_on_synthetic_data(compose_train):
    from actionlab.train import run

    cfg = compose_train(
        "model=mtnet_xs", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"
    )
    _finite_metrics(run(cfg))


def test_tokshift_train_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = VideoViT(TINY_VIT, num_classes=4, num_frames=4, img_size=32)
    clips, labels = torch.randn(4, 3, 4, 32, 32), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
