"""``python -m actionlab.pretrained fetch`` against a server this test starts on 127.0.0.1: a full
download converted with the entry's protocol, an interrupted download resumed with HTTP Range,
a file whose size differs from the registry's refused with nothing left behind, and the
releases without a direct link."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO
from release_fixtures import ReleaseServer as Release
from release_fixtures import ViewProbe, release_server, run_eval_py, ssv2_layout  # noqa: F401
from test_convert_zoo1 import pyslowfast_key

from actionlab.models.convert.common import read_lab_checkpoint
from actionlab.models.vov3d import VoV3D
from actionlab.pretrained import registry
from actionlab.pretrained.__main__ import main as pretrained_main


@pytest.fixture
def server(release_server):  # noqa: F811
    return release_server


def fetch(url, weights, *extra):
    pretrained_main(["fetch", "rubiksnet_tiny_ssv2", "--dir", str(weights), "--url", url, *extra])


def test_full_download_records_and_converts(server, tmp_path, capsys):
    weights = tmp_path / "w"
    fetch(server, weights)
    out = capsys.readouterr().out
    payload = Release.payload
    digest = hashlib.sha256(payload).hexdigest()
    assert (weights / "ssv2_tiny.pth.tar").read_bytes() == payload
    record = json.loads((weights / "ssv2_tiny.pth.tar.json").read_text())
    assert (record["size"], record["sha256"], record["url"]) == (len(payload), digest, server)
    assert f"{weights / 'ssv2_tiny.pth.tar'}: {len(payload)} bytes, sha256 {digest}" in out
    ckpt = weights / "rubiksnet_tiny_ssv2.ckpt"
    _, info = read_lab_checkpoint(ckpt)
    protocol = info["protocol"]
    assert protocol["registry"] == "rubiksnet_tiny_ssv2" and protocol["file"]["sha256"] == digest
    assert protocol["eval"] == {"protocol": "2clip", "crop_size": 224} and protocol["paper"]["top1"] == 56.7
    assert out.rstrip().endswith(
        "reproduce the paper's row (top-1 56.7 / 84.1 on 2 clips x 3 crops, RubiksNet README table):\n"
        f"  python eval.py ckpt_path={ckpt} data=ssv2 data.root=/path/to/ssv2"
    )
    # A second fetch checks the file against its record and downloads nothing.
    fetch(server, weights)
    assert Release.ranges == [None]


def test_interrupted_download_resumes(server, tmp_path):
    weights = tmp_path / "w"
    Release.drop_after = 100_000
    with pytest.raises(SystemExit) as err:
        fetch(server, weights)
    part = weights / "ssv2_tiny.pth.tar.part"
    assert str(err.value) == (
        f"download of ssv2_tiny.pth.tar interrupted after 100000 of {len(Release.payload)} bytes; "
        f"run the same command again to resume from {part}"
    )
    assert part.stat().st_size == 100_000 and not (weights / "ssv2_tiny.pth.tar").exists()
    fetch(server, weights)
    assert Release.ranges == [None, "bytes=100000-"]
    assert (weights / "ssv2_tiny.pth.tar").read_bytes() == Release.payload and not part.exists()
    assert (weights / "rubiksnet_tiny_ssv2.ckpt").is_file()


def test_size_mismatch_is_refused_and_nothing_is_left(server, tmp_path, monkeypatch):
    entry = registry.REGISTRY["rubiksnet_tiny_ssv2"]
    wrong = len(Release.payload) + 7
    monkeypatch.setitem(registry.REGISTRY, entry.name, dataclasses.replace(entry, size=wrong))
    weights = tmp_path / "w"
    with pytest.raises(SystemExit) as err:
        fetch(server, weights)
    assert str(err.value) == (
        f"size mismatch for ssv2_tiny.pth.tar: the registry says {wrong} bytes but {server} sends "
        f"{len(Release.payload)}; nothing was kept. The file on the server changed or the link "
        "points elsewhere"
    )
    assert sorted(p.name for p in weights.iterdir()) == []


def test_manual_release_needs_the_file(tmp_path):
    with pytest.raises(SystemExit) as err:
        pretrained_main(["fetch", "tokshift_b16_8x224_k400", "--dir", str(tmp_path)])
    assert str(err.value) == (
        "tokshift_b16_8x224_k400 has no direct download link: download it by hand from "
        "https://github.com/VideoNetworks/TokShift-Transformer#model-zoo-and-baselines, then run "
        "python -m actionlab.pretrained fetch tokshift_b16_8x224_k400 --file PATH"
    )
    with pytest.raises(SystemExit, match="did you mean tokshift_b16_8x224_k400"):
        pretrained_main(["fetch", "tokshift_b16_8x224", "--dir", str(tmp_path)])


def readme_commands() -> list[str]:
    section = (REPO / "README.md").read_text().split("## Released weights", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_commands_run_as_written(server, tmp_path, monkeypatch):
    """The README's "Released weights" commands, in a fresh folder: list and show as
    subprocesses; fetch from the entry's link (served here on 127.0.0.1); eval.py on SSv2 videos
    at the documented data.root; the manual fetch of a file downloaded by hand."""
    commands = readme_commands()
    assert [c.split()[:4] for c in commands] == [
        ["python", "-m", "actionlab.pretrained", "list"],
        ["python", "-m", "actionlab.pretrained", "show"],
        ["python", "-m", "actionlab.pretrained", "fetch"],
        ["python", "eval.py", "ckpt_path=weights/rubiksnet_tiny_ssv2.ckpt", "data=ssv2"],
        ["python", "-m", "actionlab.pretrained", "fetch"],
    ]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACTIONLAB_ROOT", str(tmp_path))
    for command in commands[:2]:
        done = subprocess.run([sys.executable, *shlex.split(command)[1:]], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "rubiksnet_tiny_ssv2" in done.stdout and "eval.protocol=2clip" in done.stdout
    entry = registry.REGISTRY["rubiksnet_tiny_ssv2"]
    monkeypatch.setitem(registry.REGISTRY, entry.name, dataclasses.replace(entry, url=server))
    pretrained_main(shlex.split(commands[2])[3:])
    ssv2_layout(tmp_path / "data" / "ssv2")
    probe = ViewProbe()
    probe.install(monkeypatch)
    result = run_eval_py(monkeypatch, shlex.split(commands[3])[2:])
    assert result["protocol"]["name"] == "2clip" and result["paper"]["top1"] == 56.7
    # The hand-downloaded file: VoV3D-M (K400-pretrained, SSv1) as its repository saves it.
    cfg = {"TRAIN": {"DATASET": "ssv1"}, "MODEL": {"ARCH": "vov3d", "NUM_CLASSES": 174},
           "DATA": {"NUM_FRAMES": 32, "TRAIN_CROP_SIZE": 224, "TEST_CROP_SIZE": 256, "MEAN": [0.45] * 3,
                    "STD": [0.225] * 3, "REVERSE_INPUT_CHANNEL": True}}
    state = {pyslowfast_key(k): v for k, v in VoV3D("m", num_classes=174).state_dict().items()}
    torch.save({"epoch": 50, "model_state": state, "cfg": yaml.safe_dump(cfg)}, tmp_path / "vov3d_M_f32_ssv1_k400.pth")
    pretrained_main(shlex.split(commands[4])[3:])
    _, info = read_lab_checkpoint(tmp_path / "weights" / "vov3d_m_f32_k400_ssv1.ckpt")
    assert info["protocol"]["registry"] == "vov3d_m_f32_k400_ssv1" and info["model"]["num_frames"] == 32
