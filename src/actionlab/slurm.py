"""SLURM glue: what to request for a run, a launcher that says why a job waits, requeueing.

The SLURM launcher config (``conf/hydra/launcher/slurm.yaml``) derives the request from the
trainer config through the ``al.slurm_*`` resolvers defined here:

- ``tasks_per_node`` = one task per device (``trainer.devices``; ``-1``/``auto`` = the GPUs per
  node of the partition, or 1 on a CPU partition), ``nodes = trainer.num_nodes``;
- ``gpus_per_node``: none for ``trainer.accelerator=cpu``; one per task for ``gpu``; for ``auto``
  only when the partition has GPUs (asked with ``sinfo``), so one config serves a CPU and a GPU
  partition and a CPU job never asks for a GPU (``sbatch`` rejects that);
- ``cpus_per_task = data.num_workers + 1`` (the loader workers and the training process).

Before submitting, the launcher (``SlurmLauncherImpl``, loaded by Hydra as
``hydra_plugins.actionlab_launcher.SlurmLauncher``) checks the request against the partition (CPUs,
GPUs and nodes per partition, time limit) and fails with the key to change instead of leaving a
job pending forever; while it waits it logs every job's state and pending reason as they change.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as _SubmititSlurmLauncher,
    )
except ImportError:  # the launcher plugin is the optional extra actionlab[slurm]
    _SubmititSlurmLauncher = None

log = logging.getLogger(__name__)

__all__ = [
    "PartitionInfo",
    "SlurmLauncherImpl",
    "check_request",
    "cpus_per_task",
    "devices_per_node",
    "gpus_per_node",
    "job_id_to_requeue",
    "partition_info",
    "requeue",
    "tasks_per_node",
]

ALL_DEVICES = (-1, "-1", "auto", None)
GPU_ACCELERATORS = ("gpu", "cuda")
# Pending reasons that never clear by waiting, with the launcher key that fixes them.
HOPELESS = {
    "PartitionTimeLimit": "hydra.launcher.timeout_min exceeds the partition's time limit",
    "PartitionNodeLimit": "trainer.num_nodes exceeds the partition's node limit",
    "ReqNodeNotAvail": "the requested nodes are unavailable (hydra.launcher.exclude/constraint?)",
    "BadConstraints": "no node satisfies the request (cpus_per_task, gpus_per_node, mem_gb, constraint)",
    "InvalidAccount": "hydra.launcher.account is not valid on this cluster",
    "InvalidQOS": "hydra.launcher.qos is not valid on this cluster",
}


@dataclass(frozen=True)
class PartitionInfo:
    """What ``sinfo`` says about one partition (the largest node where nodes differ)."""

    name: str
    default: bool
    cpus_per_node: int
    gpus_per_node: int
    nodes: int
    time_limit_min: int | None  # None: unlimited


def _parse_time(text: str) -> int | None:
    """SLURM time ``[days-]hours:minutes:seconds`` / ``minutes`` / ``infinite`` -> minutes."""
    text = text.strip()
    if not text or text in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[-3:]
    return (int(days) if days else 0) * 1440 + h * 60 + m + (1 if s else 0)


def _gpus(gres: str) -> int:
    """GPUs per node in a ``sinfo %G`` field such as ``gpu:8(S:0-1)`` or ``gpu:a100:4,shard:2``."""
    total = 0
    for item in gres.split(","):
        match = re.match(r"gpu(?::[^:(]+)?:(\d+)", item.strip())
        if match:
            total += int(match.group(1))
    return total


def parse_sinfo(text: str) -> list[PartitionInfo]:
    """``sinfo -h -o '%P|%c|%G|%D|%l'`` output -> one ``PartitionInfo`` per partition."""
    found: dict[str, PartitionInfo] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        raw_name, cpus, gres, nodes, limit = fields
        name = raw_name.rstrip("*")
        info = PartitionInfo(
            name=name,
            default=raw_name.endswith("*"),
            cpus_per_node=int(re.sub(r"\D.*", "", cpus) or 0),
            gpus_per_node=_gpus(gres),
            nodes=int(re.sub(r"\D.*", "", nodes) or 0),
            time_limit_min=_parse_time(limit),
        )
        old = found.get(name)
        if old is not None:  # several node kinds in one partition: the largest of each
            info = PartitionInfo(
                name, old.default or info.default, max(old.cpus_per_node, info.cpus_per_node),
                max(old.gpus_per_node, info.gpus_per_node), old.nodes + info.nodes, old.time_limit_min,
            )
        found[name] = info
    return list(found.values())


@cache
def _sinfo() -> tuple[PartitionInfo, ...] | None:
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%G|%D|%l"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("sinfo failed (%s): the SLURM request is not checked against the partition", err)
        return None
    return tuple(parse_sinfo(out))


def partition_info(partition: str | None = None) -> PartitionInfo | None:
    """The named partition (None: the cluster's default one), or None when SLURM is not here."""
    partitions = _sinfo()
    if not partitions:
        return None
    for info in partitions:
        if (partition and info.name == partition) or (not partition and info.default):
            return info
    if partition:
        names = ", ".join(p.name for p in partitions)
        raise ValueError(f"hydra.launcher.partition={partition} is not a partition of this cluster; "
                         f"choose one of: {names}")
    return None


def _step_tasks_per_node() -> int | None:
    """Tasks per node of the SLURM job step this process belongs to (None outside a step)."""
    if "SLURM_STEP_ID" not in os.environ:
        return None
    for var in ("SLURM_NTASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        match = re.match(r"(\d+)", os.environ.get(var, ""))
        if match:
            return int(match.group(1))
    return None


def _is_all(devices: Any) -> bool:
    return devices in ALL_DEVICES or str(devices).strip() in ("-1", "auto")


def devices_per_node(partition: str | None = None) -> int:
    """``trainer.devices`` of multi-node configs: inside a SLURM step the tasks SLURM started on
    this node (Lightning needs exactly that); when submitting, the GPUs per node of the
    partition (1 on a CPU partition); elsewhere the visible GPUs, or 1."""
    step = _step_tasks_per_node()
    if step:
        return step
    info = partition_info(partition) if partition is not None or _sinfo() else None
    if info is not None:
        return max(1, info.gpus_per_node)
    import torch

    return max(1, torch.cuda.device_count())


def tasks_per_node(accelerator: str, devices: Any, partition: str | None = None) -> int:
    """One SLURM task per device (``trainer.devices``)."""
    if not _is_all(devices):
        try:
            value = int(devices)
        except (TypeError, ValueError):
            raise ValueError(f"trainer.devices={devices!r}: a SLURM job needs a device count "
                             "per node, e.g. trainer.devices=4") from None
        if value < 1:
            raise ValueError(f"trainer.devices={devices!r}: expected >= 1 (or -1 for every GPU of a node)")
        return value
    info = partition_info(partition)
    if str(accelerator) == "cpu" or info is None or info.gpus_per_node == 0:
        if str(accelerator) in GPU_ACCELERATORS and (info is None or info.gpus_per_node == 0):
            raise ValueError(
                f"trainer.devices={devices} (every GPU of a node) with trainer.accelerator={accelerator}, "
                f"but partition {partition or '(default)'} reports no GPUs: set trainer.devices=<GPUs "
                "per node> or hydra.launcher.partition=<a GPU partition>"
            )
        return 1
    return info.gpus_per_node


def gpus_per_node(accelerator: str, devices: Any, partition: str | None = None) -> int | None:
    """GPUs to request: none for CPU runs, one per task for GPU runs (``auto``: where the
    partition has GPUs)."""
    accelerator = str(accelerator)
    if accelerator == "cpu":
        return None
    if accelerator not in GPU_ACCELERATORS:  # auto
        info = partition_info(partition)
        if info is None or info.gpus_per_node == 0:
            return None
    return tasks_per_node(accelerator, devices, partition)


def cpus_per_task(num_workers: Any) -> int:
    """The loader workers plus the process that trains."""
    try:
        workers = int(num_workers)
    except (TypeError, ValueError):
        raise ValueError(f"data.num_workers={num_workers!r}: expected an integer >= 0") from None
    return max(0, workers) + 1


def check_request(params: dict[str, Any]) -> None:
    """Fail before ``sbatch`` when the partition can never run the request (the job would pend
    forever): CPUs per node, GPUs per node, node count, time limit."""
    info = partition_info(params.get("partition"))
    if info is None:
        return
    where = f"partition {info.name}"
    tasks = int(params.get("tasks_per_node") or 1)
    cpus = int(params.get("cpus_per_task") or 1)
    if info.cpus_per_node and tasks * cpus > info.cpus_per_node:
        raise ValueError(
            f"hydra.launcher.cpus_per_task={cpus} x tasks_per_node={tasks} = {tasks * cpus} CPUs per "
            f"node, but {where} has {info.cpus_per_node}: lower data.num_workers (cpus_per_task = "
            "num_workers + 1) or set hydra.launcher.cpus_per_task"
        )
    gpus = params.get("gpus_per_node")
    if gpus and int(gpus) > info.gpus_per_node:
        raise ValueError(
            f"hydra.launcher.gpus_per_node={gpus}, but {where} has {info.gpus_per_node} GPUs per "
            "node: set trainer.devices, choose a GPU partition (hydra.launcher.partition=...) or a CPU "
            "trainer (trainer=cpu / ddp_cpu)"
        )
    nodes = int(params.get("nodes") or 1)
    if info.nodes and nodes > info.nodes:
        raise ValueError(f"trainer.num_nodes={nodes}, but {where} has {info.nodes} nodes")
    limit, wanted = info.time_limit_min, params.get("timeout_min")
    if limit is not None and wanted and int(wanted) > limit:
        raise ValueError(
            f"hydra.launcher.timeout_min={wanted}, but {where} allows {limit} minutes: set "
            f"hydra.launcher.timeout_min<={limit} (jobs requeue themselves before the limit)"
        )


def job_id_to_requeue() -> str | None:
    """This job's id as ``scontrol requeue`` wants it (array tasks: ``<array id>_<task id>``)."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue() -> bool:
    """``scontrol requeue`` this job; True when SLURM accepted it."""
    job = job_id_to_requeue()
    if not job:
        log.warning("not a SLURM job: nothing to requeue")
        return False
    proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode == 0:
        log.warning("requeued SLURM job %s", job)
        return True
    log.error("scontrol requeue %s failed (%d): %s", job, proc.returncode, proc.stderr.strip())
    return False


class _PendingReporter:
    """Logs each submitted job's state and pending reason whenever it changes."""

    def __init__(self, folder: Path, interval_s: float = 15.0) -> None:
        self.folder = folder
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._seen: dict[str, tuple[str, str]] = {}
        self._thread = threading.Thread(target=self._run, name="slurm-pending-reporter", daemon=True)

    def __enter__(self) -> _PendingReporter:  # noqa: PYI034 (a private class, never subclassed)
        if shutil.which("squeue"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _job_ids(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        ids = {p.name.split("_")[0] for p in self.folder.iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)}
        return sorted(ids)

    def poll(self) -> None:
        ids = self._job_ids()
        if not ids:
            return
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i|%T|%r"],
                                 capture_output=True, text=True, check=False, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return
        for line in out.splitlines():
            job, _, rest = line.strip().partition("|")
            state, _, reason = rest.partition("|")
            if not job or self._seen.get(job) == (state, reason):
                continue
            self._seen[job] = (state, reason)
            if state == "PENDING":
                hint = HOPELESS.get(reason)
                if hint:
                    log.error("SLURM job %s is PENDING (%s) and will stay so: %s; cancel it with "
                              "scancel %s", job, reason, hint, job)
                else:
                    log.info("SLURM job %s is PENDING (%s)", job, reason)
            else:
                log.info("SLURM job %s is %s", job, state)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()


def _launcher_class() -> type | None:
    if _SubmititSlurmLauncher is None:
        return None

    class SlurmLauncherImpl(_SubmititSlurmLauncher):
        """Hydra's submitit SLURM launcher that checks the request against the partition before
        submitting and reports what the jobs are waiting for (the plugin class Hydra loads is
        ``hydra_plugins.actionlab_launcher.SlurmLauncher``)."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
            check_request(self.params)
            folder = Path(str(self.params["submitit_folder"])).parent
            with _PendingReporter(folder):
                return super().launch(job_overrides, initial_job_idx)

    return SlurmLauncherImpl


# None without the submitit launcher (pip install 'actionlab[slurm]').
SlurmLauncherImpl = _launcher_class()
