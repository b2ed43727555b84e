"""Released weights in, paper protocol out: for every family a checkpoint in the original
release's exact format (dict layout, prefixes, ``cfg`` strings as the original code writes
them) is built from a lab model, converted, and evaluated with ``python eval.py
ckpt_path=... data=... data.root=...`` and nothing else on small videos in that dataset's own
layout. The run's report and the inputs that reached the model must be the release's protocol:
mean/std and colour order (from the input values of a video of known colour), frames, sampling,
crop, views and aggregation. One test shows a command-line value winning, with its log line,
and one that a lab-trained checkpoint carries its own data config as its protocol.

The backbone's forward is replaced by a probe (``release_fixtures.ViewProbe``) so that the
30-view protocols cost nothing; the models are still built from the converted checkpoints
and loaded strictly, and their numerics against the originals are the converter tests'.
"""

from __future__ import annotations

import collections
import math

import pytest
import torch
import yaml
from release_fixtures import (
    ViewProbe,
    expected_input,
    hacs_layout,
    kinetics_layout,
    run_eval_py,
    ssv1_layout,
    ssv2_layout,
)
from test_convert_zoo1 import pyslowfast_key, randomise, tsm_key
from test_convert_zoo2 import TINY, _save_released
from test_rubiksnet_convert import write_official

from actionlab import predict
from actionlab.models import mtnet, srtg, vit
from actionlab.models.convert.__main__ import main as convert_main
from actionlab.models.convert.common import read_lab_checkpoint
from actionlab.models.tsm import TSM
from actionlab.models.vov3d import VoV3D
from actionlab.models.x3d import X3D
from actionlab.pretrained import get
from actionlab.pretrained.__main__ import main as pretrained_main

pytestmark = pytest.mark.slow

PYSLOWFAST_DEFAULTS = {"MEAN": [0.45, 0.45, 0.45], "STD": [0.225, 0.225, 0.225], "TARGET_FPS": 30}


def pyslowfast_checkpoint(path, model, cfg: dict) -> None:
    """``slowfast/utils/checkpoint.py save_checkpoint``: model_state under PySlowFast's names,
    the optimizer state and ``cfg.dump()`` (``yaml.safe_dump`` of the config)."""
    state = {pyslowfast_key(k): v for k, v in model.state_dict().items()}
    torch.save({"epoch": 300, "model_state": state, "optimizer_state": {}, "cfg": yaml.safe_dump(cfg)}, path)


class Datasets(dict):
    """Each dataset layout generated once, when a test first asks for it."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def __missing__(self, name):
        layouts = {"ssv2": ssv2_layout, "ssv1": ssv1_layout, "kinetics400": kinetics_layout, "hacs": hacs_layout}
        self[name] = layouts[name](self.base / name)
        return self[name]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return Datasets(tmp_path_factory.mktemp("release_data"))


def evaluate(monkeypatch, tmp_path, ckpt, data: str, root) -> tuple[dict, ViewProbe]:
    """``python eval.py ckpt_path=CKPT data=DATA data.root=ROOT``, watched by a probe."""
    probe = ViewProbe()
    probe.install(monkeypatch)
    result = run_eval_py(monkeypatch, [f"ckpt_path={ckpt}", f"data={data}", f"data.root={root}"], tmp_path / "run")
    return result, probe


def assert_protocol(result: dict, probe: ViewProbe, name: str, **expected) -> None:
    """The run used the registry entry's (or ``expected``'s) protocol end to end."""
    p = get(name).protocol if name else None
    want = {
        "channel_order": p.channel_order, "mean": list(p.mean), "std": list(p.std),
        "num_frames": p.num_frames, "sampling": p.sampling, "crop": p.test_crop,
        "scale": p.test_scale, "views": p.views, "aggregate": p.aggregate,
        "eval_protocol": p.eval_protocol,
    } if p else {}
    want.update(expected)
    inputs, protocol = result["inputs"], result["protocol"]
    assert inputs["channel_order"] == want["channel_order"]
    assert inputs["mean"] == pytest.approx(want["mean"]) and inputs["std"] == pytest.approx(want["std"])
    assert inputs["num_frames"] == want["num_frames"] and inputs["sampling"] == want["sampling"]
    assert protocol["name"] == want["eval_protocol"] and protocol["views"] == want["views"]
    assert protocol["crop_size"] == want["crop"] and protocol["scale_size"] == want["scale"]
    assert protocol["aggregate"] == want["aggregate"]
    # What reached the backbone: (videos x views, 3, T, crop, crop) in the protocol's colours.
    views = sum(s[0] for s in probe.shapes)
    assert views == want["views"] and all(s[1:] == (3, want["num_frames"], want["crop"], want["crop"]) for s in probe.shapes)
    expected_channels = expected_input(want["mean"], want["std"], want["channel_order"])
    assert probe.channels() == pytest.approx(expected_channels, abs=0.08)


def assert_paper(result: dict, name: str) -> None:
    paper = get(name).paper
    assert result["paper"]["registry"] == name and result["paper"]["same_protocol"] is True
    assert result["paper"]["top1"] == paper.top1
    assert f"paper ({name}: {paper.views})" in result["report"] and f"{paper.top1:.2f}%" in result["report"]


def test_x3d_pyslowfast_release(datasets, tmp_path, monkeypatch):
    """``x3d_xs.pyth`` as PySlowFast saves it (cfg inside): 30 views of 4 x 182, float clips at
    30 fps, mean 0.45 / std 0.225, probabilities summed, the released 5 x 5 head pool."""
    src = tmp_path / "x3d_xs.pyth"
    cfg = {
        "TRAIN": {"DATASET": "kinetics", "BATCH_SIZE": 128},
        "TEST": {"DATASET": "kinetics", "NUM_ENSEMBLE_VIEWS": 10, "NUM_SPATIAL_CROPS": 3},
        "DATA": {"NUM_FRAMES": 4, "SAMPLING_RATE": 12, "TRAIN_JITTER_SCALES": [182, 228],
                 "TRAIN_CROP_SIZE": 160, "TEST_CROP_SIZE": 182, "INPUT_CHANNEL_NUM": [3],
                 "REVERSE_INPUT_CHANNEL": False, **PYSLOWFAST_DEFAULTS},
        "MODEL": {"ARCH": "x3d", "MODEL_NAME": "X3D", "NUM_CLASSES": 400},
        "X3D": {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 2.2, "BOTTLENECK_FACTOR": 2.25},
    }
    pyslowfast_checkpoint(src, randomise(X3D("xs", num_classes=400)), cfg)
    ckpt = tmp_path / "x3d_xs.ckpt"
    convert_main(["x3d", str(src), str(ckpt)])
    result, probe = evaluate(monkeypatch, tmp_path, ckpt, "kinetics400", datasets["kinetics400"])
    assert_protocol(result, probe, "x3d_xs_k400")
    assert result["inputs"]["sampling_rate"] == 12 and result["inputs"]["target_fps"] == 30
    assert result["protocol"]["sampling"] == "pyslowfast" and result["protocol"]["crop_mode"] == "three"
    assert probe.model.head.pool_size == (4, 5, 5)  # ceil(160 / 32): the release head
    assert result["inputs"]["model_options"] == {"release_head": True, "train_crop_size": 160}
    assert_paper(result, "x3d_xs_k400")


def test_command_line_wins_over_the_checkpoint_protocol(datasets, tmp_path, monkeypatch, capsys):
    """Typed values replace the checkpoint's, each change is logged once, the rest stays."""
    src = tmp_path / "x3d_xs.pyth"
    pyslowfast_checkpoint(src, X3D("xs", num_classes=400), {"DATA": {"NUM_FRAMES": 4, "TRAIN_CROP_SIZE": 160}})
    ckpt = tmp_path / "x3d_xs.ckpt"
    convert_main(["x3d", str(src), str(ckpt)])
    probe = ViewProbe()
    probe.install(monkeypatch)
    result = run_eval_py(
        monkeypatch,
        [f"ckpt_path={ckpt}", "data=kinetics400", f"data.root={datasets['kinetics400']}",
         "data.mean=[0.5,0.5,0.5]", "eval.protocol=1clip", "+model_overrides.release_head=false"],
        tmp_path / "run",
    )
    line = (
        "the command line overrides the checkpoint's input protocol (registry x3d_xs_k400): "
        "data.mean [0.45, 0.45, 0.45] -> [0.5, 0.5, 0.5]; eval.protocol 'pyslowfast_10x3' -> "
        "'1clip'; model.release_head True -> False"
    )
    assert result["log"].count(line) == 1
    assert_protocol(
        result, probe, "x3d_xs_k400", mean=[0.5] * 3, eval_protocol="1clip", views=1, scale=182,
        aggregate="logits_mean",
    )
    assert probe.model.head.pool_size is None and result["paper"]["same_protocol"] is False
    assert "This run's views differ from the paper's." in result["report"]
    # predict: the same protocol, its own options winning, the change printed once.
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"action {i:03d}" for i in range(400)))
    video = next((datasets["kinetics400"] / "val").glob("*.mp4"))
    probe.shapes.clear()
    top = predict.main([f"ckpt_path={ckpt}", f"video={video}", f"labels={labels}", "protocol=1clip"])
    err = capsys.readouterr().err
    assert err.count("the command line overrides the checkpoint's input protocol (registry "
                     "x3d_xs_k400): eval.protocol 'pyslowfast_10x3' -> '1clip'") == 1
    assert probe.shapes == [(1, 3, 4, 182, 182)] and len(top) == 5


def test_vov3d_f32_ssv1_release(datasets, tmp_path, monkeypatch):
    """``vov3d_M_f32_ssv1.pth`` (VoV3D's PySlowFast layout, its SSv1 cfg) on SSv1 JPEG frames:
    32 segments, 2 x 3 views of 256 with a frame drawn per view, probabilities summed."""
    src = tmp_path / "vov3d_M_f32_ssv1.pth"
    cfg = {
        "TRAIN": {"DATASET": "ssv1"}, "TEST": {"DATASET": "ssv1", "NUM_ENSEMBLE_VIEWS": 2, "NUM_SPATIAL_CROPS": 3},
        "DATA": {"NUM_FRAMES": 32, "TRAIN_JITTER_SCALES": [256, 320], "TRAIN_CROP_SIZE": 224,
                 "TEST_CROP_SIZE": 256, "REVERSE_INPUT_CHANNEL": True, "INV_UNIFORM_SAMPLE": True,
                 "SAMPLING_RATE": 8, **PYSLOWFAST_DEFAULTS},
        "MODEL": {"ARCH": "vov3d", "MODEL_NAME": "VoV3D", "NUM_CLASSES": 174},
        "VOV3D": {"DEPTH": 31, "INNER_CH": 40, "NUM_CONV": 5},
    }
    pyslowfast_checkpoint(src, VoV3D("m", num_classes=174), cfg)
    ckpt = tmp_path / "vov3d.ckpt"
    convert_main(["vov3d", str(src), str(ckpt)])
    result, probe = evaluate(monkeypatch, tmp_path, ckpt, "ssv1", datasets["ssv1"])
    assert_protocol(result, probe, "vov3d_m_f32_ssv1")
    assert result["protocol"]["sampling"] == "vov3d_segment"
    assert probe.model.head.pool_size == (32, 7, 7)
    assert_paper(result, "vov3d_m_f32_ssv1")


def test_tsm_segment16_release(datasets, tmp_path, monkeypatch):
    """TSM's SSv2 16-segment file (``{"state_dict": module.base_model...}``): 16 frames, 2 clips
    x 3 full-resolution crops, ImageNet mean/std, logits averaged."""
    src = tmp_path / "TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment16_e45.pth"
    model = TSM("r50", num_classes=174, num_frames=16)
    torch.save(
        {"epoch": 45, "arch": "resnet50", "best_prec1": 63.1,
         "state_dict": {"module." + tsm_key(k): v for k, v in model.state_dict().items()}},
        src,
    )
    ckpt = tmp_path / "tsm.ckpt"
    convert_main(["tsm", str(src), str(ckpt)])
    result, probe = evaluate(monkeypatch, tmp_path, ckpt, "ssv2", datasets["ssv2"])
    assert_protocol(result, probe, "tsm_r50_ssv2_16f")
    assert result["protocol"]["crop_mode"] == "three_tsm" and result["protocol"]["resize"] == "tsm"
    assert_paper(result, "tsm_r50_ssv2_16f")


def test_rubiksnet_release(datasets, tmp_path, monkeypatch):
    """``ssv2_tiny.pth.tar`` (the release's dict: tier, num_classes, variant, model): RubiksNet's
    2-clip protocol."""
    src = tmp_path / "ssv2_tiny.pth.tar"
    write_official(src, "tiny", "rubiks3d", num_classes=174)
    ckpt = tmp_path / "rubiks.ckpt"
    convert_main(["rubiksnet", str(src), str(ckpt)])
    result, probe = evaluate(monkeypatch, tmp_path, ckpt, "ssv2", datasets["ssv2"])
    assert_protocol(result, probe, "rubiksnet_tiny_ssv2")
    assert_paper(result, "rubiksnet_tiny_ssv2")


def test_srtg_release_fetched_by_hand(datasets, tmp_path, monkeypatch):
    """An SRTG HACS file (``{'epoch', 'state_dict' (module., sar.lstm), 'optimizer'}``, no BN
    counters: an older torch) given to ``fetch --file``: BGR frames, the repository's mean/std,
    16 frames 2 apart, one 256 centre crop of a 294 short side."""
    src = tmp_path / "srtg_r3d_50_ep-0120.pth"
    model = srtg.srtg_r3d_50(num_classes=200)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(
        {"epoch": 120, "optimizer": {"state": {}, "param_groups": []},
         "state_dict": {"module." + k.replace(".sar.rnn.", ".sar.lstm."): v for k, v in state.items()}},
        src,
    )
    del model, state
    pretrained_main(["fetch", "srtg_r3d_50_hacs", "--file", str(src), "--dir", str(tmp_path / "w")])
    ckpt = tmp_path / "w" / "srtg_r3d_50_hacs.ckpt"
    _, info = read_lab_checkpoint(ckpt)
    assert info["protocol"]["file"]["name"] == src.name and len(info["protocol"]["file"]["sha256"]) == 64
    result, probe = evaluate(monkeypatch, tmp_path, ckpt, "hacs", datasets["hacs"])
    assert_protocol(result, probe, "srtg_r3d_50_hacs")
    assert result["inputs"]["std"] == pytest.approx([1 / (0.0167 * 255)] * 3)
    assert result["inputs"]["sampling_rate"] == 2 and result["protocol"]["sampling"] == "srtg"
    assert_paper(result, "srtg_r3d_50_hacs")


def test_mtnet_release_without_registry_entry(datasets, tmp_path, monkeypatch):
    """An MTNet file no registry entry describes still gets its family's protocol (SRTG/MTNet
    validation) from the converter."""
    src = tmp_path / "mtnet_xs_ep-0080.pth"
    _save_released(src, mtnet.mtnet_xs(num_classes=200), {".sr_short.rnn.": ".sr_short.op.", ".sr_long.rnn.": ".sr_long.op."}, "module.")
    ckpt = tmp_path / "mtnet.ckpt"
    convert_main(["mtnet", str(src), str(ckpt)])
    result, probe = evaluate(monkeypatch, tmp_path, ckpt, "hacs", datasets["hacs"])
    assert_protocol(result, probe, "mtnet_s_hacs")  # the same protocol as the registry's MTNet rows
    assert result["inputs"]["origin"].startswith("MTNet's validation protocol") and result["paper"] is None


def test_tokshift_release(datasets, tmp_path, monkeypatch):
    """A TokShift K400 file (``module.base_model.`` keys, a pickled MultiStepLR state) fetched by
    hand: 10 looping clips of 8 frames 32 apart x 3 crops of 224, pixels in [-1, 1], logits
    averaged. ViT-B is shrunk to a tiny width here (same code path, same 224 input)."""
    monkeypatch.setitem(vit.SIZES, "base", TINY)
    released = vit.tokshift_base(num_classes=400, num_frames=8, img_size=224)
    src = tmp_path / "best_ckpt_e17.pth"
    _save_released(src, released, {}, "module.base_model.", best_acc1=77.28,
                   scheduler={"milestones": collections.Counter({10: 1, 15: 1}), "gamma": 0.1})
    pretrained_main(["fetch", "tokshift_b16_8x224_k400", "--file", str(src), "--dir", str(tmp_path / "w")])
    ckpt = tmp_path / "w" / "tokshift_b16_8x224_k400.ckpt"
    result, probe = evaluate(monkeypatch, tmp_path, ckpt, "kinetics400", datasets["kinetics400"])
    assert_protocol(result, probe, "tokshift_b16_8x224_k400")
    assert result["inputs"]["pad"] == "loop" and result["inputs"]["sampling_rate"] == 32
    assert probe.model.shift and probe.model_config["_target_"].endswith("tokshift_base")
    assert result["protocol"]["resize"] == "tokshift" and not math.isnan(result["metrics"]["test/acc5"])
    assert_paper(result, "tokshift_b16_8x224_k400")
