"""Sweeps as written: the README's local sweep from a fresh copy with no overrides, the project
root, and what the SLURM launcher asks for on CPU and GPU partitions (``actionlab.slurm``)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, REPO
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from actionlab import slurm
from actionlab.slurm import PartitionInfo, check_request, parse_sinfo
from actionlab.utils import resolvers

LOCAL_SWEEP = "python train.py -m experiment=quick optimizer.lr=2e-3,5e-3"
GPU_RECIPE = ("python train.py -m hydra/launcher=slurm experiment=rubiks_large_ssv2 data.root=/datasets/ssv2 "
              "trainer=ddp_multinode trainer.num_nodes=2 hydra.launcher.partition=gpu")
CPU = PartitionInfo("cpu", True, cpus_per_node=16, gpus_per_node=0, nodes=4, time_limit_min=None)
GPU = PartitionInfo("gpu", False, cpus_per_node=96, gpus_per_node=8, nodes=2, time_limit_min=2880)


def _compose(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=True)


@pytest.fixture
def partitions(monkeypatch):
    """A cluster with a default CPU partition and a GPU one, as ``sinfo`` would describe it."""
    slurm._sinfo.cache_clear()
    monkeypatch.setattr(slurm, "_sinfo", lambda: (CPU, GPU))
    for var in [v for v in os.environ if v.startswith("SLURM_")]:
        monkeypatch.delenv(var)


def test_readme_commands_are_these():
    readme = (REPO / "README.md").read_text()
    assert LOCAL_SWEEP in readme and GPU_RECIPE in readme


def test_sweep_dir_and_submitit_folder_resolve_without_hydra_runtime(monkeypatch, tmp_path):
    """The bug: ${hydra:runtime.cwd} in paths.root_dir made hydra.sweep.dir unresolvable."""
    monkeypatch.delenv("ACTIONLAB_ROOT", raising=False)
    monkeypatch.chdir(REPO / "conf")  # inside the checkout: its root
    cfg = _compose("train", "hydra/launcher=slurm")
    assert Path(cfg.hydra.sweep.dir).parent == REPO / "logs" / "train" / "multiruns"
    assert cfg.hydra.launcher.submitit_folder.startswith(f"{cfg.hydra.sweep.dir}/.submitit/")
    monkeypatch.setenv("ACTIONLAB_ROOT", str(tmp_path))
    assert _compose("train").paths.log_dir == str(tmp_path / "logs")


def test_project_root_order(monkeypatch, tmp_path):
    monkeypatch.delenv("ACTIONLAB_ROOT", raising=False)
    clone = tmp_path / "clone"
    (clone / "conf").mkdir(parents=True)
    (clone / "conf" / "train.yaml").write_text("{}")
    (clone / "train.py").write_text("")
    (clone / "notebooks").mkdir()
    monkeypatch.chdir(clone / "notebooks")
    assert resolvers.project_root() == str(clone)  # the checkout around the working directory
    monkeypatch.chdir(tmp_path)
    assert resolvers.project_root() == str(REPO)  # else the checkout actionlab is installed from
    monkeypatch.setenv("ACTIONLAB_ROOT", str(tmp_path / "elsewhere"))
    assert resolvers.project_root() == str(tmp_path / "elsewhere")


def test_debug_keeps_an_explicit_logger():
    assert list(_compose("train", "debug=fdr", "logger=csv").logger) == ["csv"]
    assert list(_compose("train", "logger=csv", "debug=overfit").logger) == ["csv"]
    cfg = _compose("train", "debug=fdr")
    assert not cfg.logger and not cfg.callbacks and cfg.trainer.fast_dev_run is True


def test_ddp_multinode_on_a_cpu_partition(partitions):
    cfg = _compose("train", "hydra/launcher=slurm", "trainer=ddp_multinode", "trainer.num_nodes=2")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 1, None)
    assert launcher["cpus_per_task"] == cfg.data.num_workers + 1
    if not torch.cuda.is_available():
        trainer = cfg.trainer
        assert (trainer.devices, trainer.precision, trainer.sync_batchnorm, trainer.accelerator) == (
            1, "32-true", False, "auto")


def test_ddp_multinode_on_a_gpu_partition_as_documented(partitions):
    cfg = _compose("train", *shlex.split(GPU_RECIPE)[3:])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["partition"], launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (
        "gpu", 2, 8, 8)
    assert launcher["cpus_per_task"] == cfg.data.num_workers + 1 and cfg.trainer.devices == 8
    check_request(launcher)  # fits the partition


@pytest.mark.parametrize("trainer, tasks, gpus", [("cpu", 1, None), ("ddp_cpu", 2, None), ("gpu", 1, 1),
                                                 ("default", 1, None)])
def test_gpus_only_for_gpu_runs(partitions, trainer, tasks, gpus):
    cfg = _compose("train", "hydra/launcher=slurm", f"trainer={trainer}")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"]) == (tasks, gpus)
    assert launcher["setup"] == [f"{sys.executable} -m actionlab.ops.build --quiet"]


def test_all_gpus_of_a_node(partitions):
    cfg = _compose("train", "hydra/launcher=slurm", "trainer=ddp", "hydra.launcher.partition=gpu")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"]) == (8, 8)
    cfg = _compose("train", "hydra/launcher=slurm", "trainer=ddp")  # the default partition has none
    with pytest.raises(Exception, match="reports no GPUs"):
        OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


@pytest.mark.parametrize("change, message", [
    ({"cpus_per_task": 10, "tasks_per_node": 2}, "cpus_per_task=10 x tasks_per_node=2 = 20 CPUs"),
    ({"gpus_per_node": 1}, "gpus_per_node=1, but partition cpu has 0 GPUs"),
    ({"nodes": 5}, "num_nodes=5, but partition cpu has 4 nodes"),
    ({"partition": "gpu", "timeout_min": 4320}, "timeout_min=4320, but partition gpu allows 2880"),
    ({"partition": "big"}, "partition=big is not a partition of this cluster"),
])
def test_request_that_can_never_run_fails_before_sbatch(partitions, change, message):
    request = {"partition": None, "tasks_per_node": 1, "cpus_per_task": 3, "gpus_per_node": None, "nodes": 1,
               "timeout_min": 60, **change}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_request(request)


def test_parse_sinfo():
    text = "cpu*|16|(null)|4|infinite\ngpu|64|gpu:a100:4(S:0-1),gpu:v100:4|2|2-00:00:00\ngpu|32|gpu:8|1|2-00:00:00\n"
    cpu, gpu = parse_sinfo(text)
    assert cpu == CPU
    assert (gpu.cpus_per_node, gpu.gpus_per_node, gpu.nodes, gpu.time_limit_min) == (64, 8, 3, 2880)
    assert slurm._parse_time("30") == 30 and slurm._parse_time("1:30:00") == 90


@pytest.mark.slow
def test_readme_local_sweep_from_a_fresh_clone(tmp_path):
    """The README's sweep, typed in a fresh checkout: no path override, no environment."""
    clone = tmp_path / "actionlab"
    clone.mkdir()
    for name in ("train.py", "eval.py"):
        shutil.copy2(REPO / name, clone / name)
    shutil.copytree(REPO / "conf", clone / "conf")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACTIONLAB_", "SLURM_"))}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    argv = [sys.executable, *shlex.split(LOCAL_SWEEP)[1:]]
    proc = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (sweep,) = (clone / "logs" / "train" / "multiruns").iterdir()
    lrs = set()
    for job in ("0", "1"):
        ckpt = torch.load(sweep / job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert (ckpt["global_step"], ckpt["epoch"]) == (24, 3)  # 3 epochs of 8 steps
        lrs.add(OmegaConf.load(sweep / job / ".hydra" / "config.yaml").optimizer.lr)
        assert len(list((sweep / job / "wandb").glob("offline-run-*"))) == 1
    assert lrs == {2e-3, 5e-3}
    assert (clone / "data" / "synthetic_quick" / "videos").is_dir()  # the recipe's own small dataset
