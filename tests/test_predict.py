"""``python -m actionlab.predict``: top-5 class names with probabilities for one video."""

import json
import os
import subprocess
import sys

import hydra
import pytest
from conftest import REPO
from omegaconf import OmegaConf
from test_eval import train_overfit_checkpoint

from actionlab import predict
from actionlab.models.convert.common import read_lab_checkpoint, save_lab_checkpoint

LEFT_TO_RIGHT = "Moving something from left to right"
RIGHT_TO_LEFT = "Moving something from right to left"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return train_overfit_checkpoint(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_cli_prints_the_trained_class(trained):
    """The checkpoint memorised training videos 0 (left to right) and 1 (right to left)."""
    ckpt, _, root = trained
    cmd = [
        sys.executable,
        "-m",
        "actionlab.predict",
        f"ckpt_path={ckpt}",
        f"video={root}/videos/0.mp4",
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [
        line.split()
        for line in proc.stdout.splitlines()
        if line.strip()[:2] in {f"{i}." for i in range(1, 6)}
    ]
    assert len(lines) == 5
    assert " ".join(lines[0][1:-1]) == LEFT_TO_RIGHT
    probs = [float(line[-1]) for line in lines]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


@pytest.mark.slow
def test_predict_in_process_and_other_class(trained, capsys):
    ckpt, _, root = trained
    top = predict.main([f"ckpt_path={ckpt}", f"video={root}/videos/1.mp4", "topk=3"])
    assert top[0][0] == RIGHT_TO_LEFT and len(top) == 3
    assert f"1. {RIGHT_TO_LEFT}" in capsys.readouterr().out
    # Multi-view prediction works the same way (6 views, mean logits).
    top2 = predict.main([f"ckpt_path={ckpt}", f"video={root}/videos/1.mp4", "protocol=2clip"])
    assert len(top2) == 5 and all(0 <= p <= 1 for _, p in top2)


@pytest.mark.slow
def test_converted_checkpoint_takes_names_from_a_labels_file(trained, tmp_path):
    ckpt, _, root = trained
    state, info = read_lab_checkpoint(ckpt)
    model = hydra.utils.instantiate(OmegaConf.create(info["model"]))
    model.load_state_dict(state)
    converted = tmp_path / "converted.ckpt"
    save_lab_checkpoint(converted, model, info["model"])
    args = [f"ckpt_path={converted}", f"video={root}/videos/0.mp4", "crop_size=32", "scale_size=32"]
    with pytest.raises(ValueError, match="labels=PATH"):
        predict.main(args)
    top = predict.main([*args, f"labels={root}/labels.json"])
    assert top[0][0] == LEFT_TO_RIGHT
    names = tmp_path / "names.json"
    names.write_text(json.dumps([f"class {i}" for i in range(8)]))
    assert predict.main([*args, f"labels={names}"])[0][0] == "class 0"
    names.write_text(json.dumps(["too", "few"]))
    with pytest.raises(ValueError, match="2 class names but the checkpoint predicts 8"):
        predict.main([*args, f"labels={names}"])


def test_missing_arguments_and_video_are_named(tmp_path):
    with pytest.raises(SystemExit, match="ckpt_path=PATH video=PATH"):
        predict.main(["video=x.mp4"])
    with pytest.raises(FileNotFoundError, match="video not found"):
        predict.main(["ckpt_path=x.ckpt", f"video={tmp_path / 'none.mp4'}"])
