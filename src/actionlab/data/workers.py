"""DataLoader workers that leave a job's signals to the process that trains.

Forked workers inherit the main process's signal handlers: SLURM delivers ``SIGTERM``
(``scontrol requeue``, preemption), ``SIGUSR1`` (Lightning's requeue signal) and ``SIGUSR2``
(submitit's) to every process of a job step, so without this each worker would run submitit's
checkpoint-and-requeue handler or a stale copy of Lightning's (writing an ``hpc_ckpt`` of step
0), or die of ``SIGTERM`` and take the training down with "DataLoader worker killed by signal".
Workers ignore those signals; the main process handles them (``actionlab.lit.preemption``) and
shuts the workers down itself. ``SIGCONT`` gets its default action back (submitit logs it).
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable

__all__ = ["JOB_SIGNALS", "ignore_job_signals", "worker_init_fn"]

JOB_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def ignore_job_signals() -> None:
    for signum in JOB_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGCONT, signal.SIG_DFL)


def _init_worker(worker_id: int, rank: int) -> None:
    ignore_job_signals()
    # A DataLoader with a worker_init_fn does not get Lightning's seeding one
    # (seed_everything(workers=True)); call it so worker seeds stay Lightning's.
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id, rank=rank)


def worker_init_fn(rank: int = 0) -> Callable[[int], None]:
    """The ``worker_init_fn`` of every loader of the lab (``rank``: the global rank)."""
    return functools.partial(_init_worker, rank=rank)
