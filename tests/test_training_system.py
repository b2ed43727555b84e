"""Training system (issue 7): multigrid runs, precision, DDP on CPU, sweeps, W&B, exact resume.

End-to-end tests use x3d_xs / rubiks_tiny on 4-8 frames at 32 px and the 32-clip synthetic set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from actionlab import train
from actionlab.lit.callbacks import RUN_ID_KEY
from actionlab.schedules.multigrid import MultigridSchedule, _main as multigrid_main
from actionlab.schedules.samplers import ResumableBatchSampler, SamplerState
from actionlab.schedules.split_bn import SplitBatchNorm3d
from conftest import CONF_DIR, REPO, SYNTHETIC_TEST_DATA
from training_helpers import read_rows

SMALL = ["data.num_frames=8", "data.crop_size=32", "data.scale_size=40", "data.train_scale_size=[36,44]"]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
# recipe values from the papers and their released configs: (lr, global batch, epochs, frames, crop)
RECIPES = {
    "tsm_r50_ssv2": (0.01, 64, 50, 8, 224),
    "rubiks_large_ssv2": (0.01, 64, 50, 8, 224),
    "rubiks_tiny_kinetics": (0.02, 128, 50, 8, 224),
    "x3d_m_kinetics": (0.1, 128, 256, 16, 224),
    "vov3d_l_ssv2": (0.1, 64, 100, 16, 224),
    "srtg_r3d_34_hacs": (0.1, 48, 120, 16, 284),
    "mtnet_m_hacs": (0.1, 64, 120, 16, 256),
    "tokshift_base_k400": (0.1, 42, 18, 8, 224),
}


def _compose(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_paper_experiments_compose_with_their_recipe(name):
    if name not in EXPERIMENTS:
        pytest.fail(f"conf/experiment/{name}.yaml is missing")
    try:
        cfg = _compose(f"experiment={name}")
    except Exception as err:  # a model/data group another helper has not landed yet
        if "Could not find" in str(err):
            pytest.skip(f"experiment {name} needs a config group that has not landed: {err}")
        raise
    lr, batch, epochs, frames, crop = RECIPES[name]
    assert cfg.optimizer.lr == lr and cfg.data.batch_size == batch and cfg.trainer.max_epochs == epochs
    assert cfg.data.num_frames == frames == cfg.model.num_frames and cfg.data.crop_size == crop
    assert cfg.model.num_classes == cfg.data.num_classes
    assert "paper" in cfg.tags


def test_schedule_configs_and_print(capsys):
    cfg = _compose("schedule=multigrid", "trainer.max_epochs=239", "data.num_frames=32", "data.crop_size=224",
                   "data.batch_size=64", "schedule.steps=[0,94,154,196]")
    assert not cfg.scheduler  # the stepwise relative LRs replace the LR scheduler
    assert _compose("schedule=long_cycle").schedule.short_cycle is False
    assert _compose("schedule=short_cycle").schedule.long_cycle is False
    assert multigrid_main(["--print", "--dataset-size", "1000", "trainer.max_epochs=239", "data.num_frames=32",
                           "data.crop_size=224", "data.batch_size=64", "schedule.steps=[0,94,154,196]"]) == 0
    out = capsys.readouterr().out
    assert "base epochs 239 -> 358" in out and "LR steps [0, 73, 110, 142, 158, 205" in out
    assert "3.42x fewer" in out


def test_scale_out_configs():
    cfg = _compose("trainer=ddp_multinode", "hydra/launcher=slurm", "trainer.num_nodes=3", "trainer.devices=8",
                   "trainer.accelerator=gpu")
    assert cfg.hydra.launcher.tasks_per_node == cfg.trainer.devices == 8
    assert cfg.hydra.launcher.nodes == 3 and cfg.hydra.launcher.gpus_per_node == 8
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.plugins[-1].auto_requeue is True
    cpu = _compose("trainer=ddp_cpu").trainer
    assert (cpu.accelerator, cpu.devices, cpu.strategy, cpu.sync_batchnorm) == ("cpu", 2, "ddp", False)
    sweep = _compose("hparams_search=optuna")
    assert sweep.hydra.sweeper._target_ == "hydra_plugins.actionlab_sweeper.OptunaSweeper"
    assert sweep.optimized_metric == "val/acc_best" and sweep.hydra.mode.name == "MULTIRUN"


def test_sweeper_search_space_suggestions():
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from actionlab.hparams.sweeper import search_space, suggest

    parsed = OverridesParser.create().parse_overrides(
        ["optimizer.lr=tag(log, interval(0.001, 1.0))", "data.num_frames=choice(4, 8)", "a.b=range(1, 4)",
         "trainer.max_epochs=3"])
    space = search_space(parsed)
    assert set(space) == {"optimizer.lr", "data.num_frames", "a.b"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        values = {k: suggest(trial, k, v) for k, v in space.items()}
        assert 0.001 <= values["optimizer.lr"] <= 1.0 and values["data.num_frames"] in (4, 8)
        assert values["a.b"] in (1, 2, 3)
        study.tell(trial, 0.0)
    assert study.trials[0].distributions["optimizer.lr"].log


def test_resumable_sampler_follows_distributed_sampler_epoch():
    from torch.utils.data import DistributedSampler

    data = list(range(10))
    state = SamplerState(seed=0, epoch=3)
    sampler = DistributedSampler(data, num_replicas=2, rank=0, shuffle=True, seed=0)
    batches = list(ResumableBatchSampler(sampler, 2, True, state))
    sampler.set_epoch(3)
    expected = list(iter(sampler))
    assert sum(batches, []) == expected[:4]


# -- end-to-end runs --------------------------------------------------------------------------
def _recorder(path: Path, sleep: float = 0.0) -> list[str]:
    return [f"+callbacks.recorder._target_=training_helpers.Recorder", f"+callbacks.recorder.path={path}",
            f"+callbacks.recorder.sleep={sleep}"]


@pytest.mark.slow
def test_long_cycle_run_changes_shapes_and_lr_as_scheduled(compose_train, tmp_path):
    rows_path = tmp_path / "rows.jsonl"
    cfg = compose_train("model=x3d_xs", *SMALL, "data.batch_size=2", "schedule=long_cycle", "trainer.max_epochs=4",
                        "schedule.steps=[0,2]", "schedule.bn_base_size=2", "optimizer.lr=0.01",
                        "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=1",
                        "callbacks.last_checkpoint.every_n_train_steps=1", *_recorder(rows_path))
    sched = MultigridSchedule(2, 8, 32, 4, [0, 2], short_cycle=False)
    assert sched.total_epochs == 6
    train.run(cfg)
    rows = read_rows(rows_path)
    assert sorted({r["epoch"] for r in rows}) == list(range(6))
    for row in rows:
        batch, frames, crop = sched.shape_at(row["epoch"])
        assert row["shape"] == [batch, 3, frames, crop, crop], row
        n = sum(1 for r in rows if r["epoch"] == row["epoch"])
        assert n == min(32 // batch, 4)
        expected = 0.01 * sched.relative_lr(row["epoch"] + row["batch_idx"] / n)
        assert row["lr"] == pytest.approx(expected, rel=1e-9), row
    assert all(r["lr"] == pytest.approx(0.08) for r in rows if r["epoch"] == 0)  # 8x batch, 8x LR
    # bigger batches, fewer steps: 2+2+2 + 4 + 4+4 (at most 4 per epoch here)
    assert len(rows) == 3 * 2 + 4 + 4 + 4
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == len(rows)
    assert not any("split_running" in k for k in last["state_dict"])  # checkpoints hold plain BN


@pytest.mark.slow
def test_short_cycle_run_cycles_crops_and_batches(compose_train, tmp_path):
    rows_path = tmp_path / "rows.jsonl"
    cfg = compose_train("model=x3d_xs", *SMALL, "data.batch_size=2", "schedule=short_cycle", "trainer.max_epochs=1",
                        "+trainer.limit_val_batches=1", "callbacks.last_checkpoint=null", *_recorder(rows_path))
    train.run(cfg)
    rows = read_rows(rows_path)
    # 32 clips, cycle (16 px x 8, 23 px x 4, 32 px x 2) = 14 clips: 2 cycles + no room for another 8
    assert [r["shape"][0] for r in rows] == [8, 4, 2, 8, 4, 2]
    assert [r["shape"][-1] for r in rows] == [16, 23, 32, 16, 23, 32]
    assert all(r["shape"][2] == 8 for r in rows)
    flat = [i for r in rows for i in r["index"]]
    assert len(flat) == len(set(flat)) == 28


@pytest.mark.slow
def test_split_bn_is_used_during_multigrid(compose_train):
    cfg = compose_train("model=x3d_xs", *SMALL, "data.batch_size=2", "schedule=long_cycle", "trainer.max_epochs=2",
                        "schedule.steps=[0,1]", "schedule.bn_base_size=4", "+trainer.limit_train_batches=1",
                        "+trainer.limit_val_batches=1", "callbacks.last_checkpoint=null")
    schedule = __import__("hydra").utils.instantiate(cfg.schedule)
    module = train.build_module(cfg)
    from lightning.pytorch import Trainer

    datamodule = __import__("hydra").utils.instantiate(cfg.data)
    trainer = Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, callbacks=[schedule],
                      reload_dataloaders_every_n_epochs=1)
    trainer.fit(module, datamodule=datamodule)
    bns = [m for m in module.modules() if isinstance(m, SplitBatchNorm3d)]
    assert bns and all(m.num_splits == 4 for m in bns)  # 16 clips per device / 4 per BN group
    assert all(torch.isfinite(m.running_var).all() for m in bns)


PRECISION_MODELS = ["rubiks_tiny", "tsm_r50", "x3d_xs", "vov3d_m", "srtg_r3d_34", "mtnet_xs", "tokshift_base"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("model", PRECISION_MODELS)
def test_mixed_precision_fast_dev_run(compose_train, model, precision):
    if precision == "16-mixed" and not torch.cuda.is_available():
        pytest.skip("16-mixed (fp16 AMP) is GPU-only in Lightning; on CPU use bf16-mixed")
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    crop = 40 if model.startswith("mtnet") else 32  # MTNet's lateral link needs >= 33 px frames
    cfg = compose_train(f"model={model}", "data.num_frames=4", f"data.crop_size={crop}",
                        f"data.scale_size={crop + 8}", f"data.train_scale_size={crop + 8}",
                        "data.batch_size=2", "debug=fdr",
                        f"trainer.precision={precision}", f"trainer.accelerator={accelerator}")
    metrics = train.run(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))


def _train_cmd(tmp_path: Path, synthetic_root: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, str(REPO / "train.py"), f"data.root={synthetic_root}", *SYNTHETIC_TEST_DATA,
        "data.num_workers=0", "+trainer.enable_progress_bar=false", f"paths.root_dir={tmp_path}",
        "callbacks.model_summary=null", "callbacks.wandb_media=null", *overrides,
    ]


def _env() -> dict[str, str]:
    tests = str(REPO / "tests")
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_evaluate(tmp_path, synthetic_root):
    rows_path = tmp_path / "rows.jsonl"
    cmd = _train_cmd(tmp_path, synthetic_root, "trainer=ddp_cpu", "logger=csv", "model=x3d_xs", "data.num_frames=4",
                     "data.crop_size=32", "data.scale_size=40", "data.train_scale_size=40", "data.batch_size=8",
                     "+trainer.limit_train_batches=2", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}/run",
                     *_recorder(rows_path))
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(rows_path)
    assert {r["rank"] for r in rows} == {0, 1}
    assert all(r["shape"][0] == 4 for r in rows)  # global batch 8 over 2 ranks
    seen = [set(sum((r["index"] for r in rows if r["rank"] == k), [])) for k in (0, 1)]
    assert not seen[0] & seen[1]  # each rank its own shard
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    metrics = (tmp_path / "run" / "csv").rglob("metrics.csv")
    text = "".join(p.read_text() for p in metrics)
    assert "val/acc" in text  # evaluated


@pytest.mark.slow
def test_optuna_sweep_of_two_trials(tmp_path, synthetic_root):
    cmd = _train_cmd(tmp_path, synthetic_root, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                     "hydra.sweeper.sampler.n_startup_trials=1", "logger=csv", "data.num_frames=4",
                     "data.crop_size=32", "data.scale_size=40", "data.train_scale_size=40", "data.batch_size=8",
                     "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "trainer.max_epochs=1",
                     f"hydra.sweep.dir={tmp_path}/sweep")
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert result.n_trials == 2 and 0.0 <= result.best_value <= 1.0
    assert set(result.best_params) == {"optimizer.lr", "module.weight_decay", "module.label_smoothing",
                                       "scheduler.warmup_epochs"}
    lrs = {OmegaConf.load(tmp_path / "sweep" / j / ".hydra" / "config.yaml").optimizer.lr for j in "01"}
    assert len(lrs) == 2 and all(0.005 <= lr <= 0.5 for lr in lrs)


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_exactly(tmp_path, synthetic_root):
    """Killed with SIGKILL inside epoch 1, the run continues from the mid-epoch last.ckpt with
    the same batches in the same order and ends with as many optimizer steps as 2 full epochs."""
    rows_path = tmp_path / "rows.jsonl"
    run_dir = tmp_path / "run"
    cmd = _train_cmd(tmp_path, synthetic_root, "logger=none", "data.num_frames=4", "data.crop_size=32",
                     "data.scale_size=40", "data.train_scale_size=40", "data.batch_size=4", "trainer.max_epochs=2",
                     "callbacks.last_checkpoint.every_n_train_steps=2", "+trainer.limit_val_batches=1",
                     f"hydra.run.dir={run_dir}", *_recorder(rows_path, sleep=0.4))
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = None
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            try:
                step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
            except Exception:
                step = None
            if step is not None and 10 <= step <= 13:  # inside epoch 1 (8 steps per epoch)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = step
                break
        time.sleep(0.05)
    if killed_at is None:
        proc.kill()
        pytest.fail(f"no mid-epoch checkpoint seen before the run ended: {proc.stderr.read()[-2000:]!r}")
    assert proc.returncode == -signal.SIGKILL
    # Same command again: auto_resume picks up the run directory's last.ckpt.
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["global_step"] == 16 and final["epoch"] == 1  # the uninterrupted count: 2 x 8
    rows = read_rows(rows_path)
    by_step: dict[int, dict] = {}
    for row in rows:  # steps redone after the kill overwrite the lost ones
        by_step[row["step"]] = row
    assert sorted(by_step) == list(range(16))
    resumed = [r for r in rows[len(rows) - (16 - killed_at):]]
    assert [r["step"] for r in resumed] == list(range(killed_at, 16))
    # The batches of the interrupted epoch follow the seeded order of epoch 1, without repeats.
    epoch1 = [by_step[s]["index"] for s in range(8, 16)]
    expected = list(ResumableBatchSampler(torch.utils.data.RandomSampler(range(32)), 4, True,
                                          SamplerState(seed=42, epoch=1)))
    assert epoch1 == expected
    # Steps trained before the kill but after the checkpoint were redone identically.
    first_run = {r["step"]: r for r in rows[: len(rows) - (16 - killed_at)]}
    for step in set(first_run) & set(range(killed_at, 16)):
        assert (first_run[step]["index"], first_run[step]["lr"]) == (by_step[step]["index"], by_step[step]["lr"])


@pytest.mark.slow
def test_wandb_offline_media_and_run_id_resume(compose_train, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    common = ["logger=wandb", "logger.wandb.project=test", "data.num_frames=4", "data.crop_size=32",
              "data.scale_size=40", "data.train_scale_size=40", "+trainer.limit_train_batches=2",
              "+trainer.limit_val_batches=2", "callbacks.speed_monitor.interval=1"]
    cfg = compose_train(*common)
    metrics = train.run(cfg)
    assert cfg.logger.wandb.log_model is False  # offline: never uploads checkpoints
    assert metrics["speed/clips_per_s"] > 0 and 0.0 <= metrics["speed/data_wait"] <= 1.0
    assert metrics["speed/forward_clips_per_s"] > 0 and metrics["speed/backward_clips_per_s"] > 0
    out = Path(cfg.paths.output_dir)
    assert list((out / "media").glob("val_confusion_epoch000.png"))
    last = out / "checkpoints" / "last.ckpt"
    run_id = torch.load(last, map_location="cpu", weights_only=True)[RUN_ID_KEY]
    runs = list((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1
    run_files = {p.suffix for p in runs[0].rglob("*")}
    assert ".png" in run_files and ".gif" in run_files  # confusion image and sample clips in the run
    cfg2 = compose_train(*common, "trainer.max_epochs=2", f"ckpt_path={last}")
    cfg2.paths.output_dir = str(out / "resumed")
    train.run(cfg2)
    assert list((out / "resumed" / "wandb").glob(f"offline-run-*-{run_id}"))  # same W&B run


def test_resumable_sampling_restores_epoch_and_skip():
    from types import SimpleNamespace

    from actionlab.schedules.callback import ResumableSampling

    trainer = SimpleNamespace(current_epoch=0)
    dm = SimpleNamespace(batch_sampler_factory=None)
    for saved, expected in [
        ({"seed": 7, "epoch": 3, "batches_done": 5, "batches_in_epoch": 8}, (3, 5)),  # mid-epoch
        ({"seed": 7, "epoch": 3, "batches_done": 8, "batches_in_epoch": 8}, (4, 0)),  # epoch end
        ({"seed": 7, "epoch": 3, "batches_done": 0, "batches_in_epoch": 8}, (3, 0)),
    ]:
        cb = ResumableSampling(seed=1)
        cb.load_state_dict(saved)
        # Lightning may build the loader before it restores its loops (current_epoch still 0)
        cb.before_train_loader(trainer, dm)
        assert (cb.state.seed, cb.state.epoch, cb.state.skip) == (7, *expected)
        assert dm.batch_sampler_factory.keywords["state"] is cb.state
        cb.before_train_loader(SimpleNamespace(current_epoch=9), dm)  # one-shot
        assert (cb.state.epoch, cb.state.skip) == (9, 0)
