"""The training spine end to end: config composition, fast_dev_run, resume, eval, W&B (sweeps: test_sweeps.py)."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from actionlab import evaluate, train
from actionlab.models.convert.common import read_lab_checkpoint
from conftest import CONF_DIR, REPO

MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (REPO / "conf" / "data").glob("*.yaml"))


def test_every_model_data_pair_composes():
    # Each group option is composed once through Hydra; every pair is then checked by
    # resolving the model's interpolations against that data config (Hydra composes the
    # same nodes side by side, so this is the pair's composed config without 500 composes).
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        models = {m: compose("train", overrides=[f"model={m}"]).model for m in MODELS}
        datas = {d: compose("train", overrides=[f"data={d}"]).data for d in DATASETS}
        pair = compose("train", overrides=[f"model={MODELS[-1]}", f"data={DATASETS[0]}"])
    assert pair.model.num_classes == pair.data.num_classes
    for data_name, data in datas.items():
        assert data._target_ == "actionlab.data.datamodule.VideoDataModule", data_name
        for model_name, model in models.items():
            cfg = OmegaConf.create({"model": model, "data": data, "paths": pair.paths})
            assert cfg.model.num_classes == cfg.data.num_classes, (model_name, data_name)
            if "num_frames" in cfg.model:
                assert cfg.model.num_frames == cfg.data.num_frames, (model_name, data_name)
            assert cfg.model._target_.startswith("actionlab.models."), model_name
    assert len(models) * len(datas) >= 8


def test_unknown_model_lists_the_choices():
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        with pytest.raises(MissingConfigException, match="rubiks_tiny"):
            compose("train", overrides=["model=rubiks_huge"])


def test_fast_dev_run_train_then_eval(compose_train, compose_eval, tmp_path):
    cfg = compose_train("trainer.max_epochs=2", "data.num_frames=4", "data.crop_size=32", "data.scale_size=40",
                        "data.train_scale_size=[36,44]")
    metrics = train.run(cfg)
    assert 0.0 <= metrics["val/acc"] <= 1.0 and "train/loss_epoch" in metrics
    out = Path(cfg.paths.output_dir)
    assert (out / "config_resolved.yaml").is_file()
    last = out / "checkpoints" / "last.ckpt"
    assert last.is_file()
    state, info = read_lab_checkpoint(last)
    assert info["class_names"][0] == "Moving something from left to right"
    assert info["model"]["_target_"] == "actionlab.models.rubiksnet.rubiksnet_tiny"
    assert not any(isinstance(v, str) and "${" in v for v in info["data"].values())

    ecfg = compose_eval(f"ckpt_path={last}", "split=val")
    results = evaluate.run(ecfg)
    assert results["val/acc"] == pytest.approx(metrics["val/acc"], abs=1e-6)
    assert (Path(ecfg.paths.output_dir) / "metrics.json").is_file()


def test_debug_fdr_runs_one_batch(compose_train):
    cfg = compose_train("debug=fdr", "data.num_frames=4", "data.crop_size=32", "data.scale_size=40",
                        "data.train_scale_size=40")
    assert cfg.trainer.fast_dev_run is True and not cfg.logger and not cfg.callbacks
    train.run(cfg)


def test_resume_continues_from_last_checkpoint(compose_train):
    small = ["data.num_frames=4", "data.crop_size=32", "data.scale_size=40", "data.train_scale_size=40"]
    cfg = compose_train(*small)
    train.run(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    first = torch.load(last, map_location="cpu", weights_only=True)
    assert first["global_step"] == 32 // 4  # one epoch: 32 clips in batches of 4
    cfg2 = compose_train(*small, "trainer.max_epochs=2", f"ckpt_path={last}",
                         f"paths.output_dir={cfg.paths.output_dir}/resumed")
    cfg2.paths.output_dir = str(Path(cfg.paths.output_dir) / "resumed")
    train.run(cfg2)
    resumed = torch.load(Path(cfg2.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu",
                         weights_only=True)
    assert resumed["epoch"] == first["epoch"] + 1
    assert resumed["global_step"] == 2 * first["global_step"]
    # The LR schedule continued rather than restarting.
    assert resumed["lr_schedulers"][0]["last_epoch"] == resumed["global_step"]


def test_missing_resume_checkpoint_is_a_clear_error(compose_train):
    cfg = compose_train("ckpt_path=/nope/last.ckpt")
    with pytest.raises(FileNotFoundError, match="ckpt_path=/nope/last.ckpt"):
        train.run(cfg)


def test_eval_rejects_foreign_checkpoint(compose_eval, tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(Exception, match="not an actionlab checkpoint"):
        evaluate.run(compose_eval(f"ckpt_path={tmp_path / 'foreign.pt'}"))


def test_wandb_offline_run_directory(compose_train, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train("logger=wandb", "logger.wandb.project=test", "data.num_frames=4",
                        "data.crop_size=32", "data.scale_size=40", "data.train_scale_size=40",
                        "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1")
    assert OmegaConf.to_container(cfg.logger, resolve=True)["wandb"]["offline"] is True
    train.run(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
