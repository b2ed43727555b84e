"""Released RubiksNet checkpoints: strict loading in the official key layout and conversion."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from actionlab.models.convert.__main__ import main as convert_main
from actionlab.models.convert.common import CheckpointMismatchError, read_lab_checkpoint
from actionlab.models.rubiksnet import RubiksNet


def official_state_dict(tier: str, variant: str, num_classes: int, seed: int = 0) -> dict:
    """A state dict with the released key names and shapes (the released ``backbone.py``/``models.py``),
    written out from the architecture table, not from our modules."""
    width, repeats, use_se = {"tiny": (54, (3, 4, 6, 3), False), "small": (72, (3, 4, 6, 3), True)}[tier]
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def add(key: str, *shape: int) -> None:
        sd[key] = torch.randn(*shape, generator=g) * 0.05

    def bn(prefix: str, c: int) -> None:
        sd[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        add(f"{prefix}.bias", c)
        add(f"{prefix}.running_mean", c)
        sd[f"{prefix}.running_var"] = 0.5 + torch.rand(c, generator=g)
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)

    add("backbone.conv1.weight", width, 3, 3, 3)
    widths = (width, width, 2 * width, 4 * width, 8 * width)
    in_c = width
    for i, (w, count) in enumerate(zip(widths, (1, *repeats))):
        for j in range(count):
            p = f"backbone.layer{i}.{j}"
            stride = 2 if i > 0 and j == 0 else 1
            bn(f"{p}.bn1", in_c)
            if variant == "rubiks3d":
                add(f"{p}.conv2.weight", w, in_c, 1, 1)
                add(f"{p}.as3.rubiks3d.shift", 3, w)
            else:
                sd[f"{p}.conv2.0.T"] = torch.tensor(0.05)
                sd[f"{p}.conv2.0.weight"] = torch.rand(in_c, 3, generator=g)
                add(f"{p}.conv2.1.weight", w, in_c, 1, 1)
                add(f"{p}.as3.shift", 2, w)
            bn(f"{p}.bn2", w)
            if use_se:
                add(f"{p}.se.fc.0.weight", w // 12, w)
                add(f"{p}.se.fc.2.weight", w, w // 12)
            add(f"{p}.conv3.weight", w, w, 1, 1)
            if stride != 1 or in_c != w:
                add(f"{p}.shortcut.weight", w, in_c, 1, 1)
            in_c = w
    bn("backbone.bn_last", in_c)
    add("new_fc.weight", num_classes, in_c)
    add("new_fc.bias", num_classes)
    return sd


def write_official(path, tier="tiny", variant="rubiks3d", num_classes=7, prefix="", **meta):
    state = {prefix + k: v for k, v in official_state_dict(tier, variant, num_classes).items()}
    ckpt = {"tier": tier, "num_classes": num_classes, "num_frames": 8, "variant": variant,
            "model": state, **meta}
    torch.save(ckpt, path)
    return ckpt


@pytest.mark.parametrize(
    "tier,variant,file_variant,prefix",
    [
        ("tiny", "rubiks3d", "rubiks3d", ""),
        ("small", "rubiks3d", "rubiks3d", "module."),  # saved from DataParallel
        ("tiny", "rubiks3d-aq", "attention", ""),  # the name in the released eval logs
    ],
)
def test_load_pretrained_official_layout(tmp_path, tier, variant, file_variant, prefix):
    path = tmp_path / "ssv2.pth.tar"
    ckpt = write_official(path, tier, file_variant, prefix=prefix)
    model = RubiksNet.load_pretrained(str(path))
    assert (model.tier, model.variant, model.num_classes, model.num_frames) == (tier, variant, 7, 8)
    own = model.state_dict()
    for key, value in ckpt["model"].items():
        assert torch.equal(own[key[len(prefix):]], value), key
    model.eval()
    logits = model(torch.randn(1, 3, 2, 16, 16))
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()


def test_mismatched_checkpoint_lists_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "bad.pth.tar"
    ckpt = write_official(path)
    del ckpt["model"]["backbone.layer3.2.conv3.weight"]
    ckpt["model"]["backbone.layer3.2.extra.weight"] = torch.zeros(1)
    ckpt["model"]["new_fc.bias"] = torch.zeros(3)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatchError) as err:
        RubiksNet.load_pretrained(str(path))
    message = str(err.value)
    assert "missing keys: backbone.layer3.2.conv3.weight" in message
    assert "unexpected keys: backbone.layer3.2.extra.weight" in message
    assert "new_fc.bias" in message and str(path) in message


def test_wrong_variant_is_not_loaded_partially(tmp_path):
    path = tmp_path / "aq_as_3d.pth.tar"
    ckpt = write_official(path, variant="rubiks3d-aq")
    ckpt["variant"] = "rubiks3d"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatchError, match="missing keys: .*as3.rubiks3d.shift"):
        RubiksNet.load_pretrained(str(path))


def test_foreign_file_is_rejected(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointMismatchError, match="not a released RubiksNet checkpoint"):
        RubiksNet.load_pretrained(str(path))
    torch.save({"tier": "huge", "num_classes": 2, "num_frames": 8, "variant": "rubiks3d", "model": {}}, path)
    with pytest.raises(CheckpointMismatchError, match="unknown RubiksNet tier 'huge'"):
        RubiksNet.load_pretrained(str(path))


@pytest.mark.parametrize("variant", ["rubiks3d", "rubiks3d-aq"])
def test_convert_cli_writes_a_lab_checkpoint(tmp_path, variant):
    src, out = tmp_path / "release.pth.tar", tmp_path / "lab.ckpt"
    write_official(src, variant=variant)
    names = tmp_path / "category.txt"
    names.write_text("\n".join(f"class {i}" for i in range(7)) + "\n")
    convert_main(["rubiksnet", str(src), str(out), "--class-names", str(names)])
    state, info = read_lab_checkpoint(out)
    assert info["class_names"] == [f"class {i}" for i in range(7)]
    # What eval.py does: build the model from its stored config, load strictly, same outputs.
    rebuilt = hydra.utils.instantiate(OmegaConf.create(info["model"]))
    rebuilt.load_state_dict(state, strict=True)
    reference = RubiksNet.load_pretrained(str(src))
    assert rebuilt.variant == variant
    x = torch.randn(1, 3, 2, 16, 16)
    torch.testing.assert_close(rebuilt.eval()(x), reference.eval()(x))
    with pytest.raises(SystemExit, match="lists 3 classes"):
        names.write_text("a\nb\nc\n")
        convert_main(["rubiksnet", str(src), str(out), "--class-names", str(names)])


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("tier,variant", [("tiny", "rubiks3d"), ("small", "rubiks3d"), ("tiny", "attention")])
def test_released_checkpoint_fused_for_inference_keeps_its_logits(tmp_path, tier, variant, fmt):
    """The released weights (exact key layout, non-trivial BN statistics) through
    ``fuse_for_inference``: BNs folded into the stem (twice: block 0's activation and block 1's
    pre-scaled shortcut), into block 0's ``conv3`` and into every ``conv2``; logits unchanged."""
    from actionlab.models.fuse import fuse_for_inference
    from actionlab.models.memory_format import apply_memory_format

    path = tmp_path / "ssv2.pth.tar"
    write_official(path, tier, variant)
    model = RubiksNet.load_pretrained(str(path)).eval()
    apply_memory_format(model, fmt)
    x = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        fused = fuse_for_inference(model)
        got = fused(x)
    assert fused.backbone.blocks()[0].emits_activation
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * max(1.0, ref.abs().max().item()))
