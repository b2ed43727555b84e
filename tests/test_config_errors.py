"""Typed configs: bad values fail at once, through ``train.py`` and ``eval.py`` as a user types them,
with a message that names the key, the value and what is allowed (``actionlab.config.schema``).

The entry points run in-process (``runpy``, exactly as ``python train.py ...``): Hydra composes,
the task rejects the value before building anything and Hydra exits 1 with the message.
"""

from __future__ import annotations

import logging
import runpy
import sys

import pytest
from conftest import CONF_DIR, REPO
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from actionlab.config.schema import (
    RULES,
    ConfigValueError,
    type_matches,
    validate_eval_config,
    validate_train_config,
)

# override -> (key, value as printed, words of what is allowed)
TRAIN_CASES = {
    "data.crop_size=abc": ("data.crop_size", "'abc'", "an integer"),
    "data.num_frames=0": ("data.num_frames", "0", ">= 1"),
    "data.batch_size=0": ("data.batch_size", "0", ">= 1"),
    "data.num_workers=-1": ("data.num_workers", "-1", ">= 0"),
    "data.scale_size=1.5": ("data.scale_size", "1.5", "an integer"),
    "data.backend=mkv": ("data.backend", "'mkv'", "one of 'frames', 'sqlite', 'video'"),
    "data.sampling=random": ("data.sampling", "'random'", "one of 'dense', 'segment'"),
    "data.bad_video_policy=ignore": ("data.bad_video_policy", "'ignore'", "one of 'fail', 'skip'"),
    "data.mean=[0.5,0.5]": ("data.mean", "[0.5, 0.5]", "a list of 3 values"),
    "data.std=[0.2,0,0.2]": ("data.std", "[0.2, 0, 0.2]", "> 0"),
    "data.train_scale_size=[72,60]": ("data.train_scale_size", "[72, 60]", "min <= max"),
    "data.gpu_augment=maybe": ("data.gpu_augment", "'maybe'", "one of 'auto', true, false"),
    "data.flip=sometimes": ("data.flip", "'sometimes'", "true or false"),
    "data.augment.train_crop=center": ("data.augment.train_crop", "'center'", "'multiscale', 'random', 'resized'"),
    "+data.frame_rate=30": ("data.frame_rate", "30", "a parameter of VideoDataModule"),
    "module.label_smoothing=1.5": ("module.label_smoothing", "1.5", "0.0 <= value < 1.0"),
    "module.weight_decay=-0.1": ("module.weight_decay", "-0.1", ">= 0.0"),
    "module.aggregate=max": ("module.aggregate", "'max'", "'logits_mean', 'softmax_mean', 'sum'"),
    "schedule=multigrid schedule.lr_scaling=cube": ("schedule.lr_scaling", "'cube'", "'linear', 'none', 'sqrt'"),
    "schedule=multigrid schedule.gamma=2": ("schedule.gamma", "2", "0.0 <= value <= 1.0"),
    "seed=abc": ("seed", "'abc'", "an integer or null"),
    "auto_resume=maybe": ("auto_resume", "'maybe'", "true or false"),
}
EVAL_CASES = {
    "eval.protocol=3clip": ("eval.protocol", "'3clip'", "one of '1clip', '2clip'"),
    "eval.crops=2": ("eval.crops", "2", "one of 1, 3"),
    "eval.clips=0": ("eval.clips", "0", ">= 1"),
    "eval.max_views_per_batch=0": ("eval.max_views_per_batch", "0", ">= 1"),
    "eval.aggregate=mean": ("eval.aggregate", "'mean'", "'logits_mean', 'softmax_mean', 'sum'"),
    "eval.num_workers=-1": ("eval.num_workers", "-1", ">= 0"),
    "eval.profile=perhaps": ("eval.profile", "'perhaps'", "true or false"),
    "split=train": ("split", "'train'", "one of 'val', 'test'"),
    "data=synthetic data.crop_size=0": ("data.crop_size", "0", ">= 1"),
}


def _run_entry_point(script: str, overrides: list[str], capfd) -> str:
    """``python <script> <overrides>`` in this process; returns stderr (it must exit 1)."""
    argv = sys.argv
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sys.argv = [str(REPO / script), *overrides]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(REPO / script), run_name="__main__")
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        for handler in root.handlers[:]:  # Hydra configured logging for its job: undo it
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
    assert exit_info.value.code == 1
    return capfd.readouterr().err


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTIONLAB_ROOT", str(tmp_path))  # Hydra's run dir and train.log go there
    monkeypatch.setenv("WANDB_MODE", "offline")
    return tmp_path


@pytest.mark.parametrize("override", sorted(TRAIN_CASES))
def test_bad_train_override_names_key_value_and_allowed(override, project, capfd):
    key, value, allowed = TRAIN_CASES[override]
    err = _run_entry_point("train.py", override.split(), capfd)
    message = [line for line in err.splitlines() if "ConfigValueError" in line]
    assert message, err[-2000:]
    assert f"{key} must be " in message[-1] and f"got {value}" in message[-1] and allowed in message[-1]
    assert not list((project / "logs").rglob("config_resolved.yaml"))  # nothing was built


@pytest.mark.parametrize("override", sorted(EVAL_CASES))
def test_bad_eval_override_names_key_value_and_allowed(override, project, capfd):
    key, value, allowed = EVAL_CASES[override]
    err = _run_entry_point("eval.py", ["ckpt_path=missing.ckpt", *override.split()], capfd)
    message = [line for line in err.splitlines() if "ConfigValueError" in line]
    assert message, err[-2000:]
    assert f"{key} must be " in message[-1] and f"got {value}" in message[-1] and allowed in message[-1]


def _compose(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize("data", sorted(p.stem for p in (REPO / "conf" / "data").glob("*.yaml")))
def test_every_shipped_data_config_passes(data):
    validate_train_config(_compose("train", f"data={data}"))


def test_every_shipped_schedule_and_experiment_passes():
    for schedule in ("none", "multigrid", "long_cycle", "short_cycle"):
        validate_train_config(_compose("train", f"schedule={schedule}"))
    for experiment in sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")):
        validate_train_config(_compose("train", f"experiment={experiment}"))
    validate_eval_config(_compose("eval", "ckpt_path=x.ckpt", "data=synthetic"))


def test_new_constructor_parameter_is_type_checked_without_a_schema_change(tmp_path, monkeypatch):
    """A field added to a constructor is checked from its hint; its choices take one line in RULES."""
    from actionlab.config import schema

    module = tmp_path / "extra_target.py"
    module.write_text("class Data:\n    def __init__(self, colour_space: str = 'rgb', size: int = 1):\n        pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = OmegaConf.create({"data": {"_target_": "extra_target.Data", "colour_space": 3, "size": 2}})
    with pytest.raises(ConfigValueError, match=r"data.colour_space must be a string, got 3"):
        schema.validate_node(cfg, "data")
    cfg.data.colour_space = "grb"
    schema.validate_node(cfg, "data")  # no rule yet: any string
    monkeypatch.setitem(schema.RULES, "data.colour_space", schema.one_of(("rgb", "yuv")))
    with pytest.raises(ConfigValueError, match=r"data.colour_space must be one of 'rgb', 'yuv', got 'grb'"):
        schema.validate_node(cfg, "data")


def test_growing_vocabularies_are_read_when_checking(monkeypatch):
    """eval.protocol follows actionlab.data.views.PROTOCOLS as it is when the check runs."""
    from actionlab.data import views

    monkeypatch.setitem(views.PROTOCOLS, "exact_10x3", views.PROTOCOLS["1clip"])
    cfg = _compose("eval", "ckpt_path=x.ckpt", "eval.protocol=exact_10x3")
    validate_eval_config(cfg)
    assert RULES["eval.protocol"].check("exact_10x3")


def test_type_matching():
    assert type_matches(3, int) and not type_matches(True, int) and not type_matches("3", int)
    assert type_matches(3, float) and type_matches(None, int | None) and type_matches([1, 2], list[int])
    assert not type_matches("ab", list[int]) and type_matches({"a": 1}, dict) and type_matches("x", object)
