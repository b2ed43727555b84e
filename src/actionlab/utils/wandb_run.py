"""Closing the process's W&B run: after every job of a sweep, and before a preempted job exits."""

from __future__ import annotations

import logging

__all__ = ["finish_wandb"]

log = logging.getLogger(__name__)
_service_lost = False  # W&B's service died (SLURM's SIGTERM reaches every process): stop trying


def finish_wandb(teardown: bool = False) -> None:
    """``wandb.finish()`` if a run is active (the next multirun job then starts its own), and with
    ``teardown`` also stop W&B's service process (before SLURM's SIGTERM kills it mid-write).
    Never raises: a W&B that cannot close must not replace the error or exit in flight."""
    global _service_lost
    try:
        import wandb
    except ImportError:
        return
    if _service_lost:
        return
    steps = [wandb.finish] if wandb.run is not None else []
    if teardown:
        # also when finish failed: teardown first unregisters W&B's atexit hook, which would
        # otherwise print the same failure again as the process exits
        steps.append(wandb.teardown)
    errors = []
    for step in steps:
        try:
            step()
        except Exception as err:  # e.g. the service was already killed by the job's SIGTERM
            errors.append(f"{type(err).__name__}: {err}")
    if errors:
        _service_lost = True
        log.warning("W&B did not close cleanly (%s); the offline run keeps what it wrote", "; ".join(errors))
