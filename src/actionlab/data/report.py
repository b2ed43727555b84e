"""Epoch-end report of bad videos: a log line, a ``data/bad_videos`` metric, ``bad_videos.txt``.

DataLoader workers hold their own dataset copies, so their in-memory lists never reach the main
process; workers record each bad video as a file in the datamodule's ``report_dir`` instead
(see ``VideoDataset``) and this callback merges them. ``VideoDataModule`` attaches one
automatically (``data.report_bad_videos=true``); to list it explicitly add to
``conf/callbacks/default.yaml``::

    bad_videos:
      _target_: actionlab.data.report.BadVideoReport
"""

from __future__ import annotations

import logging
import os

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["BadVideoReport", "write_bad_video_list"]

log = logging.getLogger(__name__)
REPORT_FILE = "bad_videos.txt"


def write_bad_video_list(path: str, bad: dict[str, str]) -> None:
    """``<path>\\t<reason>`` lines, sorted, written atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(f"{video}\t{bad[video]}\n" for video in sorted(bad))
    os.replace(tmp, path)


class BadVideoReport(L.Callback):
    """At the end of every train/validation/test epoch: how many bad videos were skipped so far,
    and the full list in ``<run dir>/bad_videos.txt`` (``trainer.log_dir``, else
    ``default_root_dir``). Nothing is written while no video was bad."""

    def __init__(self, filename: str = REPORT_FILE) -> None:
        self.filename = filename
        self.reported: set[str] = set()
        self.path: str | None = None

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        collect = getattr(datamodule, "bad_videos", None)
        if not callable(collect):
            return
        bad = collect()
        if stage == "train":
            pl_module.log("data/bad_videos", float(len(bad)), rank_zero_only=True, sync_dist=False)
        if not bad:
            return
        new = sorted(set(bad) - self.reported)
        self.reported |= set(bad)
        self._write(trainer, bad, new, stage)

    @rank_zero_only
    def _write(self, trainer: L.Trainer, bad: dict[str, str], new: list[str], stage: str) -> None:
        run_dir = trainer.log_dir or trainer.default_root_dir
        self.path = os.path.join(run_dir, self.filename)
        write_bad_video_list(self.path, bad)
        if new:
            log.warning(
                "%s epoch %d: %d bad video(s) skipped so far (%d new), listed in %s",
                stage, trainer.current_epoch, len(bad), len(new), self.path,
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._report(trainer, pl_module, "validation")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, "test")
