"""OmegaConf resolvers used by ``conf/`` (registered on ``import actionlab``).

``al.root``: the project root, where ``logs/`` and ``data/`` go (``conf/paths/default.yaml``).
Hydra resolves ``hydra.sweep.dir`` (and the submitit folder under it) before its own runtime
config exists, so the root cannot come from ``${hydra:runtime.cwd}``; it is, in order:
``$ACTIONLAB_ROOT``; the nearest directory at or above the working directory that holds
``train.py`` and ``conf/train.yaml`` (a checkout); the checkout the ``actionlab`` package was
installed from (editable installs); the working directory. The value is cached in the config,
so every job of a sweep (and a requeued SLURM job) sees the submitter's root.

``al.python``: the running interpreter (``sys.executable``), for shell lines such as the SLURM
launcher's ``setup`` that must use the sweep's own environment, not whatever ``python`` a
compute node has on its ``PATH``.

``al.if_cuda:A,B``: ``A`` when this process sees a CUDA device, else ``B`` (resolved where the
run starts, i.e. on the compute node): SyncBatchNorm, mixed precision and cuDNN benchmark only
where there is a GPU.

SLURM (``actionlab.slurm``): ``al.slurm_devices:PARTITION``, ``al.slurm_tasks:DEVICES``,
``al.slurm_gpus:ACCELERATOR,DEVICES,PARTITION``, ``al.slurm_cpus:WORKERS``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT_ENV = "ACTIONLAB_ROOT"


def wandb_offline() -> bool:
    """W&B runs offline unless an API key is available (``wandb sync`` uploads later)."""
    return not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "online"


def _is_checkout(path: Path) -> bool:
    return (path / "train.py").is_file() and (path / "conf" / "train.yaml").is_file()


def project_root() -> str:
    """``$ACTIONLAB_ROOT``, else the enclosing checkout of the working directory, else the
    checkout of the installed package, else the working directory (see the module doc)."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return str(Path(env).expanduser().resolve())
    cwd = Path.cwd().resolve()
    for path in (cwd, *cwd.parents):
        if _is_checkout(path):
            return str(path)
    package_checkout = Path(__file__).resolve().parents[3]  # src/actionlab/utils/resolvers.py
    if _is_checkout(package_checkout):
        return str(package_checkout)
    return str(cwd)


def python_executable() -> str:
    return sys.executable


def if_cuda(on_gpu: Any, otherwise: Any) -> Any:
    import torch

    return on_gpu if torch.cuda.is_available() else otherwise


def _slurm(name: str):
    def call(*args: Any) -> Any:
        from actionlab import slurm

        return getattr(slurm, name)(*args)

    call.__name__ = name
    return call


def register_resolvers() -> None:
    resolvers = {
        "al.wandb_offline": (wandb_offline, False),
        "al.root": (project_root, True),
        "al.python": (python_executable, True),
        "al.if_cuda": (if_cuda, False),
        "al.slurm_devices": (_slurm("devices_per_node"), False),
        "al.slurm_tasks": (_slurm("tasks_per_node"), False),
        "al.slurm_gpus": (_slurm("gpus_per_node"), False),
        "al.slurm_cpus": (_slurm("cpus_per_task"), False),
    }
    for name, (fn, cache) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cache)
