"""Shared fixtures: a small generated synthetic dataset and Hydra composition for tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

import actionlab  # noqa: F401  (registers the config resolvers)

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")

# Small enough to generate in ~2 s and train an epoch in seconds; big enough for 8 classes.
SYNTHETIC_TEST_DATA = [
    "data.annotations.num_train=32",
    "data.annotations.num_val=16",
    "data.annotations.min_frames=10",
    "data.annotations.max_frames=12",
]

torch.set_num_threads(min(2, torch.get_num_threads()))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """The synthetic test dataset, generated once per session through its own config."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"data.root={root}", *SYNTHETIC_TEST_DATA])
    import hydra

    hydra.utils.instantiate(cfg.data).prepare_data()
    GlobalHydra.instance().clear()
    return root


def _compose(config_name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.output_dir = str(tmp_path / "out")
        cfg.paths.work_dir = str(tmp_path)
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def compose_train(tmp_path, synthetic_root) -> Callable[..., DictConfig]:
    """``compose_train(*overrides)``: the train config on CPU, no logger, tiny synthetic data."""

    def make(*overrides: str) -> DictConfig:
        base = [
            "trainer=cpu",
            "logger=none",
            f"data.root={synthetic_root}",
            *SYNTHETIC_TEST_DATA,
            "data.batch_size=4",
            "data.num_workers=0",
            "trainer.max_epochs=1",
            "+trainer.enable_progress_bar=false",
        ]
        cfg = _compose("train", [*base, *overrides], tmp_path)
        if cfg.get("callbacks") and "model_summary" in cfg.callbacks:
            with open_dict(cfg):
                del cfg.callbacks["model_summary"]
        return cfg

    return make


@pytest.fixture
def compose_eval(tmp_path) -> Callable[..., DictConfig]:
    """``compose_eval(*overrides)``: the eval config on CPU with a CSV logger in tmp_path."""

    def make(*overrides: str) -> DictConfig:
        base = ["trainer=cpu", "+trainer.enable_progress_bar=false", "eval.num_workers=0"]
        cfg = _compose("eval", [*base, *overrides], tmp_path / "eval")
        with open_dict(cfg):
            # What Hydra hands the app: eval.py's command-line values beat the checkpoint's protocol.
            cfg.hydra = {"overrides": {"task": [*base, *overrides]}}
        return cfg

    return make
