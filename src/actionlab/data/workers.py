"""DataLoader workers that leave a job's signals to the process that trains.

Forked workers inherit the main process's signal handlers: SLURM delivers ``SIGTERM``
(``scontrol requeue``, preemption), ``SIGUSR1`` (Lightning's requeue signal) and ``SIGUSR2``
(submitit's) to every process of a job step, so without this each worker would run submitit's
checkpoint-and-requeue handler or a stale copy of Lightning's (writing an ``hpc_ckpt`` of step
0), or die of ``SIGTERM`` and take the training down with "DataLoader worker killed by signal".
Workers ignore those signals; the main process handles them (``actionlab.lit.preemption``) and
shuts the workers down itself. ``SIGCONT`` gets its default action back (submitit logs it).

Because they ignore ``SIGTERM``, multiprocessing's exit handler (which ``terminate()``s daemonic
children, then joins them) cannot end them: a process leaving without its loaders shut down (an
error inside Lightning's own teardown) would wait for them forever. The main process therefore
kills its remaining workers at exit, before that handler runs.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable

__all__ = ["JOB_SIGNALS", "ignore_job_signals", "kill_workers", "worker_init_fn"]

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


def kill_workers(grace_s: float = 1.0) -> int:
    """End this process's daemonic children as multiprocessing's exit handler would (SIGTERM),
    then SIGKILL those still alive after ``grace_s``: the lab's loader workers ignore SIGTERM
    (a started ``Process`` no longer tells which function it runs). Returns how many were killed."""
    children = [c for c in multiprocessing.active_children() if c.daemon]
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace_s
    for child in children:
        child.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [c for c in children if c.is_alive()]
    if stuck and threading.current_thread() is threading.main_thread():
        # torch's SIGCHLD handler would raise "DataLoader worker is killed by signal" at a kill
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in stuck:
        child.kill()
        child.join(timeout=5)
    return len(stuck)


_exit_hook = False


def worker_init_fn(rank: int = 0) -> Callable[[int], None]:
    """The ``worker_init_fn`` of every loader of the lab (``rank``: the global rank)."""
    global _exit_hook
    if not _exit_hook:
        # atexit runs hooks last-registered first: before multiprocessing's (registered on import)
        atexit.register(kill_workers)
        _exit_hook = True
    return functools.partial(_init_worker, rank=rank)
