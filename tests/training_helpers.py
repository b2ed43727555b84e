"""Callbacks the training-system tests inject through ``+callbacks.<name>._target_=...``."""

from __future__ import annotations

import json
import time

from lightning.pytorch.callbacks import Callback


class Recorder(Callback):
    """Appends one JSON line per trained batch: epoch, step, clip shape, LR used, dataset indices.

    Written at batch end, so the LR is the one the step used (the multigrid callback sets it at
    batch start, after callbacks listed before it)."""

    def __init__(self, path: str, sleep: float = 0.0) -> None:
        self.path = path
        self.sleep = sleep

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        clips, _, index = batch
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step - 1,
            "batch_idx": batch_idx,
            "shape": list(clips.shape),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "index": index.tolist(),
            "rank": trainer.global_rank,
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.sleep:
            time.sleep(self.sleep)  # widens the window in which the kill test strikes mid-epoch


def read_rows(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
