"""The registry of released weights: every entry consistent with the lab (its model and data
configs, its converter, a protocol the lab's views reproduce), the authors' numbers, the
command line, and the README table generated from it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from actionlab.data.views import PROTOCOLS
from actionlab.models.convert.__main__ import families
from actionlab.pretrained import REGISTRY, find_by_file, get, releases
from actionlab.pretrained.__main__ import WEIGHTS_END, WEIGHTS_START, main, markdown_table
from actionlab.pretrained.families import SRTG_MEAN, SRTG_STD


@pytest.mark.parametrize("release", list(REGISTRY.values()), ids=list(REGISTRY))
def test_entry_fits_the_lab(release):
    model_cfg = yaml.safe_load((REPO / "conf" / "model" / f"{release.config}.yaml").read_text())
    data_cfg = yaml.safe_load((REPO / "conf" / "data" / f"{release.dataset}.yaml").read_text())
    assert data_cfg["num_classes"] == release.num_classes
    assert release.family in families()
    p = release.protocol
    assert p.eval_protocol in PROTOCOLS
    p.check()  # resolve_protocol gives exactly these clips, crops, frames, sizes, aggregation
    for key in p.model_options:  # options the model config knows
        assert key in model_cfg, (release.name, key)
    assert (release.url or release.page).startswith("https://") and release.page.startswith("https://")
    assert release.task == "init" or release.paper is None or release.paper.top1 is not None


def test_names_files_and_lookup():
    files = [r.file_name for r in REGISTRY.values() if r.file_name]
    assert len(files) == len(set(files)) and len(REGISTRY) == 57
    assert find_by_file("/somewhere/x3d_M_ssv2.pth").name == "x3d_m_ssv2"
    assert find_by_file("unknown.pth") is None
    with pytest.raises(KeyError, match="did you mean x3d_m_k400"):
        get("x3d_m_k40")
    assert {r.family for r in releases()} == {"rubiksnet", "tsm", "x3d", "vov3d", "srtg", "mtnet", "tokshift", "vit"}
    assert len(releases("vov3d", "ssv2")) == 6 and len(releases(dataset="hacs")) == 8


def test_protocols_are_the_original_test_code():
    """Spot checks against the original configs and test scripts (values, not the table)."""
    x3d_m = get("x3d_m_k400").protocol  # configs/Kinetics/X3D_M.yaml
    assert (x3d_m.mean, x3d_m.std, x3d_m.num_frames, x3d_m.sampling_rate, x3d_m.target_fps) == (
        (0.45,) * 3, (0.225,) * 3, 16, 5, 30.0)
    assert (x3d_m.train_crop, x3d_m.test_crop, x3d_m.test_scale, x3d_m.views, x3d_m.aggregate) == (
        224, 256, 256, 30, "sum")
    assert x3d_m.model_options == {"release_head": True, "train_crop_size": 224}
    x3d_l = get("x3d_l_k400").protocol  # X3D_L.yaml: 312 / 356, jitter [356, 446]
    assert (x3d_l.train_crop, x3d_l.test_crop, x3d_l.train_scale) == (312, 356, (356, 446))
    vov = get("vov3d_l_f32_k400_ssv2")
    assert (vov.protocol.num_frames, vov.protocol.views, vov.protocol.eval_protocol, vov.manual) == (32, 6, "ssv2_2x3", True)
    srtg = get("srtg_r3d_34_hacs").protocol  # network/config.py on OpenCV frames
    assert (srtg.channel_order, srtg.mean, srtg.std) == ("bgr", SRTG_MEAN, SRTG_STD)
    assert srtg.mean[0] == pytest.approx(124 / 255) and srtg.std[0] == pytest.approx(0.2348, abs=1e-4)
    assert (srtg.num_frames, srtg.sampling_rate, srtg.test_scale, srtg.test_crop, srtg.views) == (16, 2, 294, 256, 1)
    tok = get("tokshift_l16_12x384_k400").protocol  # k400_tokshift_div4_12x32_large_384.yml
    assert (tok.mean, tok.std, tok.normalised_range) == ((0.5,) * 3, (0.5,) * 3, (-1.0, 1.0))
    assert (tok.num_frames, tok.sampling_rate, tok.pad, tok.train_scale, tok.test_crop) == (12, 32, "loop", (384, 512), 384)
    assert (tok.views, tok.aggregate) == (30, "logits_mean")
    tsm = get("tsm_r50_ssv2_16f").protocol
    assert (tsm.num_frames, tsm.sampling, tsm.views, tsm.aggregate, tsm.test_scale) == (16, "segment", 6, "logits_mean", 256)
    assert get("tsm_r50_kinetics_8f").protocol.eval_protocol == "1clip"


def test_paper_numbers_are_the_authors_tables():
    rows = {  # name: (top-1, top-5) as printed in the authors' READMEs / model zoo
        "rubiksnet_large_ssv2": (61.7, 87.3),
        "rubiksnet_large_aq_ssv2": (61.6, 86.7),
        "tsm_r50_ssv2_8f": (61.2, None),
        "tsm_r101_ssv1_8f": (48.7, None),
        "x3d_xs_k400": (69.5, None),
        "x3d_m_k400": (76.2, None),
        "vov3d_l_f32_k400_ssv1": (54.9, 82.3),
        "x3d_m_ssv2": (63.0, 87.9),
        "vov3d_m_k400": (73.9, 91.6),
        "srtg_r2plus1d_101_hacs": (84.326, 96.852),
        "mtnet_l_hacs": (86.574, 96.658),
        "tokshift_b16_16x224_k400": (78.18, None),
        "vit_b16_8x224_k400": (76.02, None),
    }
    for name, (top1, top5) in rows.items():
        assert (get(name).paper.top1, get(name).paper.top5) == (top1, top5), name
    assert get("rubiksnet_tiny_ssv2").results[0].top1 == 54.60  # its 1-clip eval log
    assert get("rubiksnet_tiny_kinetics").paper is None and get("vit_l16_in21k").task == "init"


def test_list_and_show_without_network(capsys, monkeypatch):
    """Nothing downloads at import or for list/show: any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    main(["list", "--family", "mtnet"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "dataset", "frames", "x", "crop", "views", "paper", "top-1", "source"]
    assert lines[1].split()[:5] == ["mtnet_s_hacs", "hacs", "16x256", "1x1", "80.712"]
    assert lines[1].endswith(
        "manual download: https://github.com/alexandrosstergiou/Squeeze-and-Recursion-Temporal-Gates#pre-trained-weights"
    )
    main(["show", "vov3d_m_f16_ssv2"])
    shown = capsys.readouterr().out
    assert "source:    https://dl.dropbox.com/s/hz34ltdl6iukdxc/vov3d_M_f16_ssv2.pth" in shown
    assert "paper:     top-1 63.2 / 88.2 on 2 clips x 3 crops (VoV3D README)" in shown
    assert "test:  short side 256, 2 clips x 3 crops of 256, sum (eval.protocol=ssv2_2x3)" in shown
    assert "model: {'release_head': True, 'train_crop_size': 224}" in shown
    with pytest.raises(SystemExit, match="no release of family 'c3d'"):
        main(["list", "--family", "c3d"])


def test_readme_registry_table_is_generated_from_the_code(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert f"{WEIGHTS_START}\n{markdown_table()}\n{WEIGHTS_END}" in readme, "run make registry"
    copy = tmp_path / "README.md"
    copy.write_text(readme.replace(markdown_table(), "stale"))
    main(["readme", str(copy)])
    assert copy.read_text() == readme
    Path(copy).write_text("no markers")
    with pytest.raises(SystemExit, match="has no '<!-- weights:start -->'"):
        main(["readme", str(copy)])
