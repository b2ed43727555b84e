"""Converters refuse what they cannot load faithfully, saying what the file is, and read what
the files say about themselves (the PySlowFast ``cfg``, TSM's file names, SRTG's keys).

Files are written in each release's key layout. Where only shapes matter (the refusal comes
before any weight is used) the tensors are one value broadcast to the shape: ``torch.save``
stores one number, the converter sees the release's keys and shapes.
"""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from test_convert_zoo1 import pyslowfast_key, randomise, tsm_key

from actionlab.models import mtnet, srtg
from actionlab.models.convert.__main__ import main as convert_main
from actionlab.models.convert.common import CheckpointMismatchError, read_lab_checkpoint
from actionlab.models.tsm import TSM
from actionlab.models.vov3d import VoV3D
from actionlab.models.x3d import X3D

MTNET_RENAMES = {".sr_short.rnn.": ".sr_short.op.", ".sr_long.rnn.": ".sr_long.op."}


def shapes_of(factory, **kwargs) -> dict[str, torch.Tensor]:
    """A model's state dict as broadcast zeros: the release's keys and shapes, one stored value."""
    with torch.device("meta"):
        model = factory(**kwargs)
    return {k: torch.zeros(()).expand(v.shape) for k, v in model.state_dict().items()}


def save_srtg_layout(path, state, renames=(("sar.rnn.", "sar.lstm."),)) -> None:
    out = {}
    for key, value in state.items():
        for ours, theirs in renames:
            key = key.replace(ours, theirs)
        out["module." + key] = value
    torch.save({"epoch": 80, "state_dict": out, "optimizer": {"state": {}, "param_groups": []}}, path)


def refusal(argv) -> str:
    with pytest.raises(CheckpointMismatchError) as err:
        convert_main(argv)
    return str(err.value)


# --------------------------------------------------------------------------------------------
# TSM


def test_tsn_checkpoint_is_refused(tmp_path):
    """TSM's 2D baseline has the same ResNet without the ``.net`` shift wrappers."""
    src = tmp_path / "TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth"
    state = {"module." + tsm_key(k).replace(".conv1.net.", ".conv1."): v for k, v in shapes_of(TSM, size="r50", num_classes=400).items()}
    torch.save({"epoch": 50, "arch": "resnet50", "state_dict": state}, src)
    assert refusal(["tsm", str(src), str(tmp_path / "o.ckpt")]) == (
        f"{src} is a TSN checkpoint (no temporal shift): its bottlenecks' conv1 has no '.net.' "
        "shift wrapper (base_model.layer1.0.conv1.weight, where TSM files have "
        "base_model.layer1.0.conv1.net.weight). Loading it into TSM would shift features the "
        "weights never saw shifted; actionlab has no TSN model to load it into"
    )
    assert not (tmp_path / "o.ckpt").exists()


def test_tsm_inplace_block_shift_is_refused(tmp_path):
    src = tmp_path / "TSM_something_RGB_resnet50_shift8_block_avg_segment8_e45.pth"
    state = {"module." + re.sub(r"(layer\d\.\d+)\.conv1\.net\.", r"\1.net.conv1.", tsm_key(k)): v
             for k, v in shapes_of(TSM, size="r50", num_classes=174).items()}
    torch.save({"state_dict": state}, src)
    assert refusal(["tsm", str(src), str(tmp_path / "o.ckpt")]) == (
        f"{src} shifts whole blocks in place (shift_place 'block'); the lab's TSM shifts the "
        "residual branch ('blockres') only"
    )


def test_tsm_segments_from_the_file_name_are_a_check(tmp_path):
    src = tmp_path / "TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment16_e45.pth"
    torch.save({"state_dict": {"module." + tsm_key(k): v for k, v in shapes_of(TSM, size="r50", num_classes=174).items()}}, src)
    assert refusal(["tsm", str(src), str(tmp_path / "o.ckpt"), "--num-frames", "8"]) == (
        f"{src.name}: contradictory segments per clip: 8 (--num-frames), 16 (file name segment<N>), "
        "16 (registry entry)"
    )


def test_tsm_dropout0_classifier_at_base_model_fc(tmp_path, capsys):
    """``--dropout 0`` files keep the classifier where TSN put it: ``base_model.fc``."""
    ours = randomise(TSM("r50", num_classes=5, num_frames=4, dropout=0.0))
    state = {"module." + tsm_key(k).replace("new_fc.", "base_model.fc."): v for k, v in ours.state_dict().items()}
    src = tmp_path / "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment4_e50.pth"
    torch.save({"state_dict": state}, src)
    convert_main(["tsm", str(src), str(tmp_path / "o.ckpt")])
    assert "was trained with --dropout 0 (classifier at base_model.fc)" in capsys.readouterr().out
    weights, info = read_lab_checkpoint(tmp_path / "o.ckpt")
    assert info["model"]["dropout"] == 0.0 and info["model"]["num_frames"] == 4
    assert torch.equal(weights["head.fc.weight"], ours.head.fc.weight)
    assert info["protocol"]["eval"]["protocol"] == "1clip"  # TSM's Kinetics test


# --------------------------------------------------------------------------------------------
# ViT vs TokShift


def save_vit_layout(path, **extra) -> None:
    from actionlab.models import vit

    state = shapes_of(vit.vit_base, num_classes=400, num_frames=8, img_size=224)
    torch.save({"epoch": 18, "state_dict": {"module.base_model." + k: v for k, v in state.items()},
                "best_acc1": 76.02, **extra}, path)


def test_vit_file_converted_as_tokshift_is_refused(tmp_path):
    src = tmp_path / "best_vit_B8x32x224_k400.pth"
    save_vit_layout(src)
    assert refusal(["tokshift", str(src), str(tmp_path / "o.ckpt"), "--model", "tokshift_base"]) == (
        "best_vit_B8x32x224_k400.pth: ViT and TokShift checkpoints have the same keys and the "
        "evidence disagrees on which this is: tokshift (--model tokshift_base); vit (file name "
        "best_vit_B8x32x224_k400.pth). Loaded into the wrong one it runs without an error and "
        "predicts wrongly; make --model / --release agree with the file"
    )
    assert refusal(["tokshift", str(src), str(tmp_path / "o.ckpt"), "--release", "tokshift_b16_8x224_k400"]) == (
        "best_vit_B8x32x224_k400.pth: ViT and TokShift checkpoints have the same keys and the "
        "evidence disagrees on which this is: tokshift (registry entry tokshift_b16_8x224_k400); "
        "vit (file name best_vit_B8x32x224_k400.pth). Loaded into the wrong one it runs without "
        "an error and predicts wrongly; make --model / --release agree with the file"
    )


def test_vit_or_tokshift_without_evidence_is_refused(tmp_path):
    src = tmp_path / "best_ckpt_e17.pth"
    save_vit_layout(src)
    assert refusal(["tokshift", str(src), str(tmp_path / "o.ckpt")]) == (
        "best_ckpt_e17.pth: ViT and TokShift checkpoints have the same keys (the token shift has "
        "no parameters), and neither the file name nor a config inside it says which this is. "
        "Pass --model vit_base|tokshift_base (_large for ViT-L) or --release NAME (python -m "
        "actionlab.pretrained list --family tokshift)"
    )


def test_training_config_inside_the_file_decides_and_checks(tmp_path):
    src = tmp_path / "best_ckpt_e17.pth"
    save_vit_layout(src, cfg={"NET": "ViT", "IS_SHIFT": False, "T_SIZE": 8, "VAL_PATCH_SIZE": 224})
    assert refusal(["tokshift", str(src), str(tmp_path / "o.ckpt"), "--model", "tokshift_base"]) == (
        "best_ckpt_e17.pth: ViT and TokShift checkpoints have the same keys and the evidence "
        "disagrees on which this is: tokshift (--model tokshift_base); vit (training config NET "
        "'ViT' IS_SHIFT False). Loaded into the wrong one it runs without an error and predicts "
        "wrongly; make --model / --release agree with the file"
    )


# --------------------------------------------------------------------------------------------
# SRTG / MTNet: the architecture from the keys, --model a check


def test_srtg_architecture_comes_from_the_keys(tmp_path):
    src = tmp_path / "r3d.pth"
    save_srtg_layout(src, shapes_of(srtg.r3d_34, num_classes=200))
    assert refusal(["srtg", str(src), str(tmp_path / "o.ckpt"), "--model", "r3d_50"]) == (
        f"--model r3d_50 does not fit {src}: its keys are those of r3d_34 (r3d stem, basic blocks "
        "(3, 4, 6, 3), no SR cells); pass --model r3d_34 or leave --model out"
    )
    assert refusal(["srtg", str(src), str(tmp_path / "o.ckpt"), "--model", "srtg_r2plus1d_34"]) == (
        f"--model srtg_r2plus1d_34 does not fit {src}: its keys are those of r3d_34 (r3d stem, "
        "basic blocks (3, 4, 6, 3), no SR cells); pass --model r3d_34 or leave --model out"
    )


def test_srtg_gru_cells_are_refused(tmp_path):
    """SR cells that are GRUs (MTNet's cell) in an SRTG layout fit no lab model."""
    state = shapes_of(srtg.srtg_r3d_34, num_classes=200)
    for key in list(state):
        if ".sar.rnn." in key:  # GRU: 3 gates instead of the LSTM's 4
            rows = state[key].shape[0] // 4 * 3
            state[key] = torch.zeros(()).expand(rows, *state[key].shape[1:])
    src = tmp_path / "srtg.pth"
    save_srtg_layout(src, state)
    message = refusal(["srtg", str(src), str(tmp_path / "o.ckpt")])
    assert message.startswith(
        f"{src}: no srtg model of the lab has these keys (r3d stem, basic blocks (3, 4, 6, 3), GRU "
        "cells (weight_ih 3C x C)). Nearest: srtg_r3d_34, shapes differ: layer1.0.sar.rnn.bias_hh_l0 "
        "(file (192,) vs model (256,))"
    )


def test_srtg_training_script_quirk_is_accepted_with_a_note(tmp_path, capsys):
    """The release's scripts build plain r(2+1)d_50 for ``--network srtg_r2plus1d_50``."""
    src = tmp_path / "srtg_r2plus1d_50_ep-0100.pth"
    state = {k: v for k, v in shapes_of(srtg.r2plus1d_50, num_classes=200).items() if not k.endswith("num_batches_tracked")}
    save_srtg_layout(src, state)
    convert_main(["srtg", str(src), str(tmp_path / "o.ckpt"), "--model", "srtg_r2plus1d_50"])
    out = capsys.readouterr().out
    assert (
        "note: srtg_r2plus1d_50_ep-0100.pth has the keys of r2plus1d_50, not srtg_r2plus1d_50 "
        "(r(2+1)d stem, bottleneck blocks (3, 4, 6, 3), no SR cells): the release's training "
        "scripts build r2plus1d_50 for the name srtg_r2plus1d_50; converted as r2plus1d_50"
    ) in out
    _, info = read_lab_checkpoint(tmp_path / "o.ckpt")
    assert info["model"]["_target_"] == "actionlab.models.srtg.r2plus1d_50"
    assert info["protocol"]["data"]["channel_order"] == "bgr"
    # Against the registry entry the quirk is no contradiction either.
    convert_main(["srtg", str(src), str(tmp_path / "o.ckpt"), "--release", "srtg_r2plus1d_50_hacs"])
    assert read_lab_checkpoint(tmp_path / "o.ckpt")[1]["protocol"]["registry"] == "srtg_r2plus1d_50_hacs"


def test_mtnet_xs_name_quirk_and_foreign_files(tmp_path, capsys):
    src = tmp_path / "mtnet_xs_ep-0080.pth"
    save_srtg_layout(src, shapes_of(mtnet.mtnet_s, num_classes=200), tuple(MTNET_RENAMES.items()))
    convert_main(["mtnet", str(src), str(tmp_path / "o.ckpt"), "--model", "mtnet_xs"])
    assert "the release's training scripts build mtnet_s for the name mtnet_xs; converted as mtnet_s" in capsys.readouterr().out
    assert read_lab_checkpoint(tmp_path / "o.ckpt")[1]["model"]["_target_"] == "actionlab.models.mtnet.mtnet_s"
    assert refusal(["srtg", str(src), str(tmp_path / "o.ckpt")]) == (
        f"{src} is a mtnet checkpoint (keys with '.sr_short.'), not srtg: convert it with python -m "
        "actionlab.models.convert mtnet"
    )


def test_mtnet_lstm_cells_are_refused(tmp_path):
    state = shapes_of(mtnet.mtnet_xs, num_classes=200)
    for key in list(state):
        if ".sr_" in key and ".rnn." in key:
            state[key] = torch.zeros(()).expand(state[key].shape[0] // 3 * 4, *state[key].shape[1:])
    src = tmp_path / "mtnet.pth"
    save_srtg_layout(src, state, tuple(MTNET_RENAMES.items()))
    assert refusal(["mtnet", str(src), str(tmp_path / "o.ckpt")]).startswith(
        f"{src}: no mtnet model of the lab has these keys (MTConv blocks (2, 2, 2, 2), alignment "
        "LSTM cells (weight_ih 4C x C)). Nearest: mtnet_xs"
    )


# --------------------------------------------------------------------------------------------
# PySlowFast / VoV3D: the cfg inside the file


def save_pyslowfast(path, model, cfg=None) -> None:
    state = {pyslowfast_key(k): v for k, v in model.state_dict().items()}
    ckpt = {"epoch": 1, "model_state": state, "optimizer_state": {}}
    if cfg is not None:
        ckpt["cfg"] = yaml.safe_dump(cfg)
    torch.save(ckpt, path)


def test_x3d_size_and_protocol_come_from_the_cfg(tmp_path):
    """A PySlowFast file under another name: its cfg says X3D-S (13 x 6 at 160)."""
    src = tmp_path / "checkpoint_epoch_00300.pyth"
    cfg = {"TRAIN": {"DATASET": "kinetics"}, "TEST": {"NUM_ENSEMBLE_VIEWS": 10, "NUM_SPATIAL_CROPS": 3},
           "DATA": {"NUM_FRAMES": 13, "SAMPLING_RATE": 6, "TRAIN_CROP_SIZE": 160, "TEST_CROP_SIZE": 182,
                    "TRAIN_JITTER_SCALES": [182, 228], "MEAN": [0.45] * 3, "STD": [0.225] * 3, "TARGET_FPS": 30},
           "MODEL": {"ARCH": "x3d", "NUM_CLASSES": 400}}
    save_pyslowfast(src, X3D("s", num_classes=400), cfg)
    convert_main(["x3d", str(src), str(tmp_path / "o.ckpt")])
    _, info = read_lab_checkpoint(tmp_path / "o.ckpt")
    assert info["model"] == {"_target_": "actionlab.models.x3d.x3d_s", "num_classes": 400, "num_frames": 13}
    p = info["protocol"]
    assert p["origin"] == "the PySlowFast cfg inside checkpoint_epoch_00300.pyth" and p["registry"] is None
    assert p["data"]["sampling_rate"] == 6 and p["data"]["crop_size"] == 160 and p["eval"]["crop_size"] == 182
    assert p["model"] == {"release_head": True, "train_crop_size": 160}


def test_x3d_cfg_contradicting_the_registry_entry(tmp_path):
    src = tmp_path / "x3d.pyth"
    save_pyslowfast(src, X3D("xs", num_classes=400), {"DATA": {"NUM_FRAMES": 4, "TRAIN_CROP_SIZE": 160}})
    assert refusal(["x3d", str(src), str(tmp_path / "o.ckpt"), "--release", "x3d_m_k400"]) == (
        "x3d.pyth is not the file of registry entry x3d_m_k400: num_frames 4 (cfg DATA.NUM_FRAMES) "
        "but the entry says 16; train_crop 160 (cfg DATA.TRAIN_CROP_SIZE) but the entry says 224; "
        "config 'x3d_xs' (cfg / file name) but the entry says 'x3d_m'. Convert it without "
        "--release (the protocol then comes from the file), or pass the entry it belongs to"
    )
    assert refusal(["x3d", str(src), str(tmp_path / "o.ckpt"), "--size", "l"]) == (
        "x3d.pyth: contradictory X3D size: 'l' (--size), 'xs' (cfg / file name)"
    )
    vov = tmp_path / "vov.pyth"
    save_pyslowfast(vov, VoV3D("m", num_classes=4))
    assert refusal(["x3d", str(vov), str(tmp_path / "o.ckpt")]) == (
        f"{vov} is a VoV3D checkpoint (T-OSA units under branch2.layers): convert it with "
        "python -m actionlab.models.convert vov3d"
    )


def test_vov3d_f32_from_the_file_name_and_foreign_structure(tmp_path):
    src = tmp_path / "vov3d_M_f32_ssv2_copy.pth"
    save_pyslowfast(src, VoV3D("m", num_classes=174))
    convert_main(["vov3d", str(src), str(tmp_path / "o.ckpt")])
    _, info = read_lab_checkpoint(tmp_path / "o.ckpt")
    assert info["model"]["num_frames"] == 32 and info["protocol"]["data"]["num_frames"] == 32
    assert info["protocol"]["eval"] == {"protocol": "ssv2_2x3", "crop_size": 256}
    # A VoV3D with 4 units per T-OSA and inner width 48 (one of the repository's yaml versions).
    state = {k: v for k, v in shapes_of(VoV3D, size="l", num_classes=174).items()
             if ".layers.4." not in k and not re.match(r"s4\.[34]\.|s5\.2\.", k)}
    odd = tmp_path / "vov3d_odd.pth"
    torch.save({"model_state": {pyslowfast_key(k): v for k, v in state.items()}}, odd)
    assert refusal(["vov3d", str(odd), str(tmp_path / "o.ckpt")]) == (
        f"{odd}: VoV3D with inner width 48, 4 D(2+1)D units per T-OSA and blocks (1, 2, 3, 2) "
        "matches no lab VoV3D size (M: inner 40, 5 units, blocks (1, 2, 3, 2); L: inner 48, 5 "
        "units, blocks (1, 2, 5, 3))"
    )
