"""Importers of Model zoo II: Google ViT ``.npz``, released SRTG / MTNet / TokShift ``.pth``."""

from __future__ import annotations

import collections
import math

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from actionlab.models import mtnet, srtg, vit
from actionlab.models.convert import mtnet as convert_mtnet
from actionlab.models.convert import srtg as convert_srtg
from actionlab.models.convert import tokshift as convert_tokshift
from actionlab.models.convert.common import CheckpointMismatchError, read_lab_checkpoint
from actionlab.models.convert.vit import convert_npz
from actionlab.models.vit import VideoViT, ViTSize, resize_pos_embed

TINY = ViTSize(hidden=32, layers=2, heads=4, mlp_dim=64, patch=16)


# --------------------------------------------------------------------------------------------
# Google ViT .npz


def _google_npz(path, size: ViTSize, grid: int, seed: int = 0, extra_blocks: int = 0) -> dict:
    """Random arrays under Google's ViT key names and shapes (HWIO kernels, [D, h, d] q/k/v)."""
    rng = np.random.default_rng(seed)
    d, h, m = size.hidden, size.heads, size.mlp_dim

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32) * 0.2

    w = {
        "embedding/kernel": r(size.patch, size.patch, 3, d),
        "embedding/bias": r(d),
        "cls": r(1, 1, d),
        "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, d),
        "Transformer/encoder_norm/scale": 1 + r(d),
        "Transformer/encoder_norm/bias": r(d),
        "head/kernel": r(d, 11),
        "head/bias": r(11),
        "pre_logits/kernel": r(d, d),
        "pre_logits/bias": r(d),
    }
    for i in range(size.layers + extra_blocks):
        root = f"Transformer/encoderblock_{i}/"
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            w[f"{root}{norm}/scale"], w[f"{root}{norm}/bias"] = 1 + r(d), r(d)
        attn = root + "MultiHeadDotProductAttention_1/"
        for proj in ("query", "key", "value"):
            w[f"{attn}{proj}/kernel"], w[f"{attn}{proj}/bias"] = r(d, h, d // h), r(h, d // h)
        w[f"{attn}out/kernel"], w[f"{attn}out/bias"] = r(h, d // h, d), r(d)
        w[f"{root}MlpBlock_3/Dense_0/kernel"], w[f"{root}MlpBlock_3/Dense_0/bias"] = r(d, m), r(m)
        w[f"{root}MlpBlock_3/Dense_1/kernel"], w[f"{root}MlpBlock_3/Dense_1/bias"] = r(m, d), r(d)
    np.savez(path, **w)
    return w


def _flax_vit_cls(w: dict, image: np.ndarray, size: ViTSize) -> np.ndarray:
    """The Flax ViT forward (NHWC, einsum over [D, h, d] kernels) written from the arrays
    themselves, independent of the importer's transposes: final-norm CLS feature of one image."""
    t = {k: torch.from_numpy(v).double() for k, v in w.items()}
    x = torch.from_numpy(image).double()  # (H, W, 3)
    p = size.patch
    g = x.shape[0] // p
    patches = x.reshape(g, p, g, p, 3).permute(0, 2, 1, 3, 4)  # (gh, gw, p, p, 3)
    tokens = torch.einsum("abijc,ijcd->abd", patches, t["embedding/kernel"]).reshape(g * g, -1)
    tokens = torch.cat([t["cls"][0], tokens + t["embedding/bias"]])
    tokens = tokens + t["Transformer/posembed_input/pos_embedding"][0]

    def ln(v, root):
        mu, var = v.mean(-1, keepdim=True), v.var(-1, unbiased=False, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-6) * t[root + "/scale"] + t[root + "/bias"]

    for i in range(size.layers):
        root = f"Transformer/encoderblock_{i}/"
        a = root + "MultiHeadDotProductAttention_1/"
        y = ln(tokens, root + "LayerNorm_0")
        q, k, v = (
            torch.einsum("nd,dhe->nhe", y, t[f"{a}{n}/kernel"]) + t[f"{a}{n}/bias"]
            for n in ("query", "key", "value")
        )
        att = torch.softmax(torch.einsum("qhe,khe->hqk", q, k) / math.sqrt(q.shape[-1]), -1)
        ctx = torch.einsum("hqk,khe->qhe", att, v)
        tokens = tokens + torch.einsum("qhe,hed->qd", ctx, t[f"{a}out/kernel"]) + t[f"{a}out/bias"]
        y = ln(tokens, root + "LayerNorm_2")
        hid = torch.nn.functional.gelu(
            y @ t[f"{root}MlpBlock_3/Dense_0/kernel"] + t[f"{root}MlpBlock_3/Dense_0/bias"]
        )
        tokens = (
            tokens
            + hid @ t[f"{root}MlpBlock_3/Dense_1/kernel"]
            + t[f"{root}MlpBlock_3/Dense_1/bias"]
        )
    return ln(tokens, "Transformer/encoder_norm")[0].numpy()


def test_npz_import_matches_the_flax_forward(tmp_path):
    path = tmp_path / "ViT-tiny.npz"
    w = _google_npz(path, TINY, grid=2)
    model = VideoViT(TINY, num_classes=5, num_frames=2, img_size=32, shift=False)
    net, _, report = convert_npz(path, model)
    assert net is model
    assert report["ignored"] == ["head/bias", "head/kernel", "pre_logits/bias", "pre_logits/kernel"]
    assert report["missing"] == ["head.bias", "head.weight"] and not report["unexpected"]
    assert not model.head.weight.any() and not model.head.bias.any()  # zero head, as released
    images = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    frames = torch.from_numpy(images).permute(0, 3, 1, 2)  # NCHW, the two frames of one clip
    with torch.no_grad():
        ours = model.transformer(frames, 2)[:, 0].double().numpy()
    for f in range(2):
        np.testing.assert_allclose(ours[f], _flax_vit_cls(w, images[f], TINY), rtol=1e-4, atol=1e-4)


def test_npz_import_resizes_position_embeddings(tmp_path):
    path = tmp_path / "ViT-tiny.npz"
    w = _google_npz(path, TINY, grid=2)
    model = VideoViT(TINY, num_classes=5, img_size=64)  # grid 4, like 224 -> 384 (14 -> 24)
    convert_npz(path, model)
    pos = model.transformer.embeddings.position_embeddings.detach()
    assert pos.shape == (1, 17, 32)
    expected = resize_pos_embed(
        torch.from_numpy(w["Transformer/posembed_input/pos_embedding"]), (4, 4)
    )
    torch.testing.assert_close(pos, expected)
    assert torch.equal(
        pos[:, 0], torch.from_numpy(w["Transformer/posembed_input/pos_embedding"][:, 0])
    )


def test_npz_strict_lists_arrays_without_a_place_and_partial_reports_them(tmp_path):
    path = tmp_path / "ViT-deeper.npz"
    _google_npz(path, TINY, grid=2, extra_blocks=1)
    with pytest.raises(CheckpointMismatchError, match="encoderblock_2") as err:
        convert_npz(path, VideoViT(TINY, num_classes=5, img_size=32))
    assert "--partial" in str(err.value)
    _, _, report = convert_npz(path, VideoViT(TINY, num_classes=5, img_size=32), partial=True)
    assert len(report["unexpected"]) == 16 and all(
        "encoderblock_2" in k for k in report["unexpected"]
    )
    # A file that is not an .npz of arrays is refused with the path in the message.
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointMismatchError, match="bad.npz"):
        convert_npz(bad, VideoViT(TINY, num_classes=5, img_size=32))


# --------------------------------------------------------------------------------------------
# Released .pth layouts: key accounting for every model (shapes only, meta device)


def _released_keys(
    model: torch.nn.Module, renames: dict[str, str], prefix: str
) -> dict[str, torch.Size]:
    out = {}
    for key, value in model.state_dict().items():
        for ours, theirs in renames.items():
            key = key.replace(ours, theirs)
        out[prefix + key] = value.shape
    return out


@pytest.mark.parametrize(
    "fmt, module, renames, prefix",
    [
        (convert_srtg.FORMAT, srtg, {".sar.rnn.": ".sar.lstm."}, "module."),
        (
            convert_mtnet.FORMAT,
            mtnet,
            {".sr_short.rnn.": ".sr_short.op.", ".sr_long.rnn.": ".sr_long.op."},
            "module.",
        ),
        (convert_tokshift.FORMAT, vit, {}, "module.base_model."),
    ],
    ids=["srtg", "mtnet", "tokshift"],
)
def test_released_layouts_map_onto_every_model_exactly(fmt, module, renames, prefix):
    for name in fmt.models:
        with torch.device("meta"):
            model = getattr(module, name)(num_classes=400)
        theirs = _released_keys(model, renames, prefix)
        if any(".rnn." in k for k in model.state_dict()):  # released cell names are really used
            assert any(old in k for k in theirs for old in renames.values())
        mapped = convert_srtg.released_state({"epoch": 1, "state_dict": theirs}, fmt)
        assert mapped == {k: v.shape for k, v in model.state_dict().items()}, name


# --------------------------------------------------------------------------------------------
# Round trips through the command line with real values


def _save_released(path, model, renames, prefix, **extra) -> None:
    state = {}
    for key, value in model.state_dict().items():
        for ours, theirs in renames.items():
            key = key.replace(ours, theirs)
        state[prefix + key] = value.clone()
    torch.save(
        {"epoch": 80, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}, **extra},
        path,
    )


def test_mtnet_released_pth_round_trip_strict_and_partial(tmp_path):
    torch.manual_seed(0)
    released = mtnet.mtnet_xs(num_classes=7).eval()
    src = tmp_path / "mtnet_xs_ep-0080.pth"
    _save_released(
        src,
        released,
        {".sr_short.rnn.": ".sr_short.op.", ".sr_long.rnn.": ".sr_long.op."},
        "module.",
    )
    dst = tmp_path / "mtnet_xs.ckpt"
    convert_mtnet.main([str(src), str(dst), "--model", "mtnet_xs"])
    state, meta = read_lab_checkpoint(dst)
    assert meta["model"] == {
        "_target_": "actionlab.models.mtnet.mtnet_xs",
        "num_classes": 7,
        "num_frames": 16,
    }
    rebuilt = hydra.utils.instantiate(OmegaConf.create(meta["model"]))
    rebuilt.load_state_dict(state)
    x = torch.randn(1, 3, 8, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), released(x))

    # Another label set needs --partial, which loads everything else and names the classifier.
    with pytest.raises(CheckpointMismatchError, match="--partial"):
        convert_mtnet.main([str(src), str(dst), "--model", "mtnet_xs", "--num-classes", "3"])
    net, _, report = convert_srtg.convert_released(
        src, convert_mtnet.FORMAT, "mtnet_xs", num_classes=3, partial=True
    )
    assert report == {
        "missing": ["fc.bias", "fc.weight"],
        "unexpected": [],
        "shape": ["fc.bias", "fc.weight"],
    }
    assert torch.equal(
        net.layer1[0].sr_short.rnn.weight_ih_l0, released.layer1[0].sr_short.rnn.weight_ih_l0
    )


def test_srtg_strict_import_names_missing_and_renamed_keys(tmp_path):
    with torch.device("meta"):
        ref = srtg.srtg_r3d_50(num_classes=4)
    state = {
        f"module.{k.replace('.sar.rnn.', '.sar.lstm.')}": torch.zeros(v.shape)
        for k, v in ref.state_dict().items()
    }
    del state["module.layer3.5.sar.lstm.bias_hh_l1"]
    state["module.layer3.5.sar.gate.weight"] = torch.zeros(1)
    src = tmp_path / "srtg_r3d_50.pth"
    torch.save({"epoch": 1, "state_dict": state}, src)
    with pytest.raises(CheckpointMismatchError) as err:
        convert_srtg.convert_released(src, convert_srtg.FORMAT, "srtg_r3d_50")
    msg = str(err.value)
    assert (
        "missing keys: layer3.5.sar.rnn.bias_hh_l1" in msg
        and "unexpected keys: layer3.5.sar.gate.weight" in msg
    )
    with pytest.raises(ValueError, match="srtg_r3d_34"):
        convert_srtg.convert_released(src, convert_srtg.FORMAT, "resnet50")


def test_tokshift_released_pth_with_scheduler_counter(tmp_path, monkeypatch):
    # The released files pickle a MultiStepLR state (milestones: a Counter) next to the weights.
    monkeypatch.setattr(vit, "tokshift_base", lambda **kw: VideoViT(TINY, shift=True, **kw))
    torch.manual_seed(0)
    released = VideoViT(TINY, num_classes=6, num_frames=4, img_size=48, shift=True)
    torch.nn.init.normal_(released.head.weight)
    src = tmp_path / "best_ckpt_e17.pth"
    _save_released(
        src,
        released,
        {},
        "module.base_model.",
        best_acc1=77.28,
        scheduler={"milestones": collections.Counter({10: 1, 15: 1, 18: 1}), "gamma": 0.1},
    )
    net, cfg, _ = convert_srtg.convert_released(
        src, convert_tokshift.FORMAT, "tokshift_base", num_frames=4
    )
    assert cfg == {
        "_target_": "actionlab.models.vit.tokshift_base",
        "num_classes": 6,
        "num_frames": 4,
        "img_size": 48,
    }
    x = torch.randn(2, 3, 4, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(net(x), released(x))


def test_weights_only_refuses_pickled_code(tmp_path):
    src = tmp_path / "evil.pth"
    torch.save(
        {
            "state_dict": {"fc.weight": torch.zeros(2, 2)},
            "hook": collections.OrderedDict,
            "obj": _Payload(),
        },
        src,
    )
    with pytest.raises(CheckpointMismatchError, match="weights_only"):
        convert_srtg.convert_released(src, convert_srtg.FORMAT, "r3d_34")


class _Payload:
    pass
