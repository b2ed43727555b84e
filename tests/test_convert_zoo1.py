"""Importers of released X3D / VoV3D (PySlowFast) and TSM / torchvision checkpoints.

The released files are not downloadable in CI, so each test writes a checkpoint in the
released layout. Its key names come from an independent oracle below, written from the
released code (PySlowFast ``X3D``/``ResBlock``/``X3DHead``, VoV3D ``D_2plus1_D_bottlenck``
with ``nn.Sequential`` a/c, TSM ``TemporalShift`` wrapping ``conv1`` as ``.net``), not from the
converter's rules. Round trip: convert with the CLI, rebuild from the lab checkpoint's
``model_cfg``, load, same logits.
"""

from __future__ import annotations

import re

import hydra
import pytest
import torch

from actionlab.models.convert.__main__ import main as convert_main
from actionlab.models.convert.common import CheckpointMismatchError, read_lab_checkpoint
from actionlab.models.tsm import TSM
from actionlab.models.vov3d import VoV3D
from actionlab.models.x3d import X3D


def pyslowfast_key(key: str) -> str:
    """Our X3D/VoV3D parameter name -> the name PySlowFast/VoV3D code gives it."""
    key = key.replace("stem.conv_xy.", "s1.pathway0_stem.conv_xy.")
    key = key.replace("stem.conv_t.conv.", "s1.pathway0_stem.conv.")
    key = key.replace("stem.conv_t.bn.", "s1.pathway0_stem.bn.")
    key = re.sub(r"^s(\d)\.(\d+)\.", r"s\1.pathway0_res\2.", key)
    key = key.replace(".branch1.conv.", ".branch1.").replace(".branch1.bn.", ".branch1_bn.")
    key = re.sub(r"\.layers\.(\d+)\.(a|c)\.conv\.", r".layers.\1.\2.0.", key)
    key = re.sub(r"\.layers\.(\d+)\.(a|c)\.bn\.", r".layers.\1.\2.1.", key)
    key = re.sub(r"\.branch2\.(a|b|c)\.conv\.", r".branch2.\1.", key)
    key = re.sub(r"\.branch2\.(a|b|c)\.bn\.", r".branch2.\1_bn.", key)
    key = key.replace("head.conv_5.conv.", "head.conv_5.").replace("head.conv_5.bn.", "head.conv_5_bn.")
    return key


def tsm_key(key: str) -> str:
    key = key.replace("backbone.", "base_model.").replace("head.fc.", "new_fc.")
    return re.sub(r"(layer\d\.\d+)\.conv1\.", r"\1.conv1.net.", key)


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics and weights, so a wrong mapping changes the logits."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) * 0.5 + 0.75 if "running_var" in name or name.endswith("bn.weight") else t + 0.01 * torch.randn_like(t))
    return model.eval()


def convert_and_reload(family: str, src, tmp_path, *extra: str) -> torch.nn.Module:
    out = tmp_path / "lab.ckpt"
    convert_main([family, str(src), str(out), *extra])
    state, meta = read_lab_checkpoint(out)
    model = hydra.utils.instantiate(meta["model"])
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_x3d_pyslowfast_round_trip(tmp_path):
    ours = randomise(X3D("xs", num_classes=7))
    released = {pyslowfast_key(k): v for k, v in ours.state_dict().items()}
    for name in ("s1.pathway0_stem.conv.weight", "s2.pathway0_res0.branch1_bn.running_var",
                 "s2.pathway0_res0.branch2.b.weight", "s2.pathway0_res0.branch2.se.fc1.bias",
                 "s5.pathway0_res6.branch2.c_bn.weight", "head.conv_5_bn.bias", "head.lin_5.weight",
                 "head.projection.weight"):
        assert name in released
    src = tmp_path / "x3d_xs.pyth"
    torch.save({"model_state": released, "optimizer_state": {}, "epoch": 300, "cfg": "MODEL: ..."}, src)
    model = convert_and_reload("x3d", src, tmp_path, "--size", "xs")
    assert isinstance(model, X3D) and model.size == "xs" and model.num_classes == 7
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), ours(x), atol=1e-6)


def test_vov3d_round_trip_with_module_prefix_and_old_bn(tmp_path):
    ours = randomise(VoV3D("m", num_classes=5))
    released = {
        "module." + pyslowfast_key(k): v
        for k, v in ours.state_dict().items()
        if not k.endswith("num_batches_tracked")  # older checkpoints lack the BN counters
    }
    assert "module.s3.pathway0_res1.branch2.layers.4.a.1.running_mean" in released
    assert "module.s3.pathway0_res1.branch2.c_bn.weight" in released
    src = tmp_path / "vov3d_m.pyth"
    torch.save({"state_dict": released}, src)
    model = convert_and_reload("vov3d", src, tmp_path)
    assert isinstance(model, VoV3D) and model.size == "m"
    x = torch.randn(1, 3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), ours(x), atol=1e-6)


def test_tsm_round_trip(tmp_path):
    ours = randomise(TSM("r50", num_classes=6))
    released = {"module." + tsm_key(k): v for k, v in ours.state_dict().items()}
    assert "module.base_model.layer2.3.conv1.net.weight" in released
    src = tmp_path / "tsm.pth.tar"
    torch.save({"epoch": 45, "arch": "resnet50", "state_dict": released, "best_prec1": 61.2}, src)
    model = convert_and_reload("tsm", src, tmp_path, "--num-frames", "4")
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), ours(x), atol=1e-5)


def test_torchvision_resnet_into_tsm_backbone(tmp_path):
    trunk = randomise(TSM("r50", num_classes=3)).backbone
    imagenet = dict(trunk.state_dict())
    imagenet["fc.weight"], imagenet["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    src = tmp_path / "resnet50.pth"
    torch.save(imagenet, src)
    model = TSM("r50", num_classes=9, backbone_weights=str(src))
    for k, v in trunk.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    assert model.head.fc.weight.shape == (9, 2048)


def test_strict_key_accounting_lists_missing_and_unexpected(tmp_path):
    state = {pyslowfast_key(k): v for k, v in X3D("xs", num_classes=4).state_dict().items()}
    del state["s3.pathway0_res1.branch2.a.weight"]
    state["s3.pathway0_res1.branch2.extra.weight"] = torch.zeros(1)
    src = tmp_path / "bad.pyth"
    torch.save({"model_state": state}, src)
    with pytest.raises(CheckpointMismatchError) as err:
        convert_main(["x3d", str(src), str(tmp_path / "o.ckpt")])
    msg = str(err.value)
    assert "missing keys: s3.1.branch2.a.conv.weight" in msg
    assert "unexpected keys: s3.1.branch2.extra.weight" in msg
    assert not (tmp_path / "o.ckpt").exists()


class Payload:
    """An arbitrary pickled object: ``weights_only`` loading must refuse it."""


def test_loading_is_weights_only(tmp_path):
    src = tmp_path / "pickle.pyth"
    torch.save({"model_state": {"w": torch.zeros(1)}, "obj": Payload()}, src)
    with pytest.raises(CheckpointMismatchError, match="weights_only"):
        convert_main(["x3d", str(src), str(tmp_path / "o.ckpt")])
