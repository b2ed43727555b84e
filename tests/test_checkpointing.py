"""last.ckpt must follow training even when the monitored metric stops improving."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from actionlab.lit.checkpoint_io import ResumableCheckpoint


class _Worsening(L.LightningModule):
    """val/acc falls every epoch: only epoch 0 is ever a top-1 checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", 1.0 / (1 + self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(callback: ModelCheckpoint, root, epochs: int = 3) -> dict:
    data = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root, accelerator="cpu")
    trainer.fit(_Worsening(), data, data)
    assert callback.best_model_path.endswith("epoch_000.ckpt")
    return torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _kwargs(root) -> dict:
    return dict(dirpath=root / "checkpoints", filename="epoch_{epoch:03d}", monitor="val/acc", mode="max",
                save_last=True, save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)


def test_last_checkpoint_is_the_last_epoch_not_the_best(tmp_path):
    last = _fit(ResumableCheckpoint(**_kwargs(tmp_path)), tmp_path)
    assert (last["epoch"], last["global_step"]) == (2, 6)


def test_plain_lightning_checkpoint_keeps_a_stale_last(tmp_path):
    # Why ResumableCheckpoint exists: if this starts failing, Lightning fixed save_last upstream.
    last = _fit(ModelCheckpoint(**_kwargs(tmp_path)), tmp_path)
    assert (last["epoch"], last["global_step"]) == (0, 2)


@pytest.mark.parametrize("group", ["default", "minimal"])
def test_callback_configs_use_the_resumable_checkpoint(compose_train, group):
    cfg = compose_train(f"callbacks={group}")
    assert isinstance(instantiate(cfg.callbacks.model_checkpoint), ResumableCheckpoint)
