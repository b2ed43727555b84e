"""What a checkpoint says about its input, and how eval.py and predict combine it with the data
group and the command line: the checkpoint's protocol over the group's defaults, the typed
values over the checkpoint's, each typed change reported once."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from actionlab.evaluate import checkpoint_protocol, command_line_keys, model_config, resolve_inputs
from actionlab.lit.module import VideoClassifier
from actionlab.models.convert.common import LAB_KEY
from actionlab.predict import predict_inputs
from actionlab.pretrained import get
from actionlab.pretrained.protocol import DATA_KEYS, describe_changes, to_checkpoint

TRAINED_DATA = {
    "name": "synthetic", "root": "/data/synthetic", "num_classes": 174, "num_frames": 4,
    "crop_size": 32, "scale_size": 36, "train_scale_size": [32, 40], "mean": [0.1, 0.2, 0.3],
    "std": [0.4, 0.5, 0.6], "channel_order": "bgr", "sampling": "segment", "sampling_rate": 1,
    "target_fps": None, "pad": "repeat", "batch_size": 2,
}


def test_a_trained_checkpoint_records_its_data_config_as_its_protocol():
    module = VideoClassifier(torch.nn.Linear(2, 2), optimizer=None, num_classes=2)
    module.lab_config = {"model": {"_target_": "torch.nn.Identity"}, "data": dict(TRAINED_DATA)}
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    protocol = checkpoint[LAB_KEY]["protocol"]
    assert protocol["data"] == {k: TRAINED_DATA[k] for k in DATA_KEYS}
    assert protocol["eval"] == {} and protocol["origin"] == "training run (synthetic data config)"
    # Lab files from before protocols were stored: the data config is the protocol.
    assert checkpoint_protocol({"data": TRAINED_DATA})["data"] == protocol["data"]
    assert checkpoint_protocol({"model": {}}) is None


def test_the_trained_protocol_beats_the_data_group_and_the_command_line_beats_both(compose_eval):
    cfg = compose_eval("ckpt_path=x.ckpt", "data=ssv2", "data.root=/videos", "data.std=[0.3,0.3,0.3]")
    typed = command_line_keys(cfg)
    assert {"data", "data.root", "data.std", "ckpt_path"} <= typed
    data, evals, changes = resolve_inputs(cfg, {"model": {}, "data": TRAINED_DATA}, typed)
    assert (data.num_frames, data.crop_size, data.scale_size, data.channel_order) == (4, 32, 36, "bgr")
    assert list(data.mean) == [0.1, 0.2, 0.3] and list(data.std) == [0.3, 0.3, 0.3]
    assert data.root == "/videos" and data.name == "ssv2" and evals.protocol == "1clip"
    assert changes == [("data.std", [0.4, 0.5, 0.6], [0.3, 0.3, 0.3])]


def test_a_registry_protocol_sets_data_eval_and_model_fields(compose_eval):
    info = {
        "model": {"_target_": "actionlab.models.x3d.x3d_m", "num_classes": 400, "num_frames": 16},
        "protocol": to_checkpoint(get("x3d_m_k400").protocol, "registry x3d_m_k400", "x3d_m_k400"),
    }
    cfg = compose_eval("ckpt_path=x.ckpt", "data=kinetics400", "eval.crops=1")
    data, evals, changes = resolve_inputs(cfg, info, command_line_keys(cfg))
    assert (list(data.mean), data.num_frames, data.sampling_rate, data.target_fps) == ([0.45] * 3, 16, 5, 30.0)
    assert (evals.protocol, evals.crop_size, evals.crops) == ("pyslowfast_10x3", 256, 1)
    assert changes == []  # eval.crops is not a field of the checkpoint's protocol
    model, model_changes = model_config(info, {"release_head": False})
    assert (model["release_head"], model["train_crop_size"]) == (False, 224)
    assert model_changes == [("model.release_head", True, False)]
    line = describe_changes(info["protocol"], model_changes)
    assert line == ("the command line overrides the checkpoint's input protocol (registry "
                    "x3d_m_k400): model.release_head True -> False")


def test_predict_uses_the_checkpoint_protocol_and_its_own_options():
    info = {
        "model": {"_target_": "actionlab.models.vit.tokshift_base", "num_classes": 400, "num_frames": 8},
        "protocol": to_checkpoint(get("tokshift_b16_8x256_k400").protocol, "registry", "tokshift_b16_8x256_k400"),
    }
    cfg = OmegaConf.create({"protocol": None, "aggregate": None, "num_frames": None, "crop_size": 224,
                            "scale_size": None, "sampling_rate": None})
    data, evals, changes = predict_inputs(cfg, info)
    assert (data["mean"], data["pad"], data["sampling_rate"]) == ([0.5] * 3, "loop", 32)
    assert (evals["protocol"], evals["crop_size"]) == ("tokshift_10x3", 224)
    assert changes == [("eval.crop_size", 256, 224)]
    converted_without_protocol = {"model": {"num_frames": 4}}
    data, evals, changes = predict_inputs(cfg, converted_without_protocol)
    assert (data["num_frames"], data["mean"], evals) == (4, [0.485, 0.456, 0.406], {"protocol": "1clip", "crop_size": 224})
