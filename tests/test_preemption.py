"""Preemption without a cluster: loader workers ignore the job's signals, a signal becomes an
``hpc_ckpt`` at the next step and an exit without a result, resume takes the newest checkpoint.

(``tests/test_slurm.py`` does the same through the real SLURM commands.)
"""

from __future__ import annotations

import functools
import logging
import os
import signal

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from actionlab.data.workers import JOB_SIGNALS, worker_init_fn
from actionlab.lit import preemption as preemption_mod
from actionlab.lit.preemption import Preempted, SlurmPreemption
from actionlab.train import newest_checkpoint, resume_checkpoint
from actionlab.utils.wandb_run import finish_wandb


# -- loader workers --------------------------------------------------------------------------
class _Pid(Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([os.getpid(), torch.initial_seed() % 2**31])


def test_loader_workers_survive_the_jobs_signals(compose_train):
    """SLURM signals every process of a step: the datamodule's workers must neither die of SIGTERM
    or SIGUSR1 (their default action) nor run the main process's handlers."""
    import hydra

    cfg = compose_train("data.num_workers=2", "data.batch_size=4", "data.num_frames=4", "data.crop_size=32",
                        "data.scale_size=40", "data.train_scale_size=40")
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    # Default dispositions at fork time: a worker that kept them would die of each signal.
    previous = {s: signal.signal(s, signal.SIG_DFL) for s in JOB_SIGNALS}
    try:
        it = iter(dm.train_dataloader())
        next(it)
        pids = [w.pid for w in it._workers]
        for signum in JOB_SIGNALS:
            for pid in pids:
                os.kill(pid, signum)
        batches = [next(it) for _ in range(4)]  # the workers go on serving
        assert all(w.is_alive() for w in it._workers) and len(batches) == 4
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    del it


def test_worker_init_keeps_lightnings_worker_seeds(monkeypatch):
    monkeypatch.setenv("PL_SEED_WORKERS", "1")
    torch.manual_seed(7)
    ours = torch.cat(list(DataLoader(_Pid(), batch_size=16, num_workers=2, worker_init_fn=worker_init_fn(0))))
    torch.manual_seed(7)
    theirs = torch.cat(list(DataLoader(_Pid(), batch_size=16, num_workers=2,
                                       worker_init_fn=functools.partial(pl_worker_init_function, rank=0))))
    assert torch.equal(ours[:, 1], theirs[:, 1])


# -- the signal -> checkpoint -> exit path ------------------------------------------------------
class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _SignalAt(L.Callback):
    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), self.signum)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(40, 4, generator=g), torch.randint(0, 2, (40,), generator=g)),
                      batch_size=4)


def _trainer(root, callbacks, max_epochs: int = 2) -> L.Trainer:
    return L.Trainer(default_root_dir=str(root), max_epochs=max_epochs, accelerator="cpu", logger=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)


@pytest.mark.parametrize("signum, requeues", [(signal.SIGTERM, 0), (signal.SIGUSR1, 1)])
def test_signal_saves_hpc_checkpoint_requeues_and_exits(tmp_path, monkeypatch, signum, requeues):
    requeued = []
    monkeypatch.setattr(preemption_mod.slurm, "requeue", lambda: requeued.append(1) or True)
    # A one-task SLURM job as Lightning sees it (SLURMEnvironment with auto_requeue).
    for var, value in {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                       "SLURM_NODEID": "0", "SLURM_JOB_NAME": "test", "SLURM_NODELIST": "localhost"}.items():
        monkeypatch.setenv(var, value)
    guard = SlurmPreemption()
    trainer = _trainer(tmp_path, [_SignalAt(5, signum), guard])
    handler_before = signal.getsignal(signum)
    with pytest.raises(Preempted) as stopped:
        trainer.fit(_Tiny(), _loader())
    assert stopped.value.code == 128 + signum and isinstance(stopped.value, SystemExit)
    assert len(requeued) == requeues  # USR1 asks for a requeue; SIGTERM comes with SLURM's own
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    assert torch.load(hpc, weights_only=True)["global_step"] == 5  # the step the signal came in
    assert signal.getsignal(signum) == handler_before  # Lightning restored the pre-fit handler

    # The requeued job resumes from it (exactly, with the lab's sampler: tests/test_slurm.py).
    resumed = _trainer(tmp_path, [SlurmPreemption()])
    resumed.fit(_Tiny(), _loader(), ckpt_path=str(hpc))
    assert resumed.current_epoch == 2 and resumed.global_step >= 20


def test_signal_handling_is_off_outside_slurm(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    guard = SlurmPreemption()
    trainer = _trainer(tmp_path, [guard], max_epochs=1)
    trainer.fit(_Tiny(), _loader())
    assert not guard.active and guard.signum is None


def test_error_after_a_signal_becomes_a_requeue_not_a_result(monkeypatch):
    requeued = []
    monkeypatch.setattr(preemption_mod.slurm, "requeue", lambda: requeued.append(1) or True)
    guard = SlurmPreemption(enabled=True)
    assert guard.exit_after_error(RuntimeError("DataLoader worker killed")) is None  # no signal: a failure
    guard.signum = signal.SIGUSR2
    stopped = guard.exit_after_error(ConnectionResetError("peer gone"))
    assert isinstance(stopped, Preempted) and stopped.requeued and requeued == [1]
    uncompleted = type("UncompletedJobError", (RuntimeError,), {})("timed-out too many times")
    assert guard.exit_after_error(uncompleted) is None  # submitit's verdict stays a failure


def test_finish_wandb_never_raises(monkeypatch, caplog):
    wandb = pytest.importorskip("wandb")
    from actionlab.utils import wandb_run

    def broken():
        raise ConnectionResetError("Connection lost")

    monkeypatch.setattr(wandb_run, "_service_lost", False)
    monkeypatch.setattr(wandb, "run", object())
    monkeypatch.setattr(wandb, "finish", broken)
    monkeypatch.setattr(wandb, "teardown", broken)
    with caplog.at_level(logging.WARNING):
        finish_wandb(teardown=True)
        finish_wandb()  # the service is gone: no second attempt, no second line
    assert caplog.text.count("W&B did not close cleanly") == 1 and "Connection lost" in caplog.text


# -- resume: the newest of last.ckpt and hpc_ckpt_* -------------------------------------------
def _ckpt(path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "epoch": step // 8}, path)


def test_resume_takes_the_most_advanced_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert newest_checkpoint(run) is None
    _ckpt(run / "checkpoints" / "last.ckpt", 8)
    _ckpt(run / "hpc_ckpt_1.ckpt", 11)
    assert newest_checkpoint(run) == run / "hpc_ckpt_1.ckpt"
    _ckpt(run / "checkpoints" / "last.ckpt", 16)  # training went on after the resume
    assert newest_checkpoint(run) == run / "checkpoints" / "last.ckpt"
    (run / "hpc_ckpt_2.ckpt").write_bytes(b"torn")  # unreadable: never chosen
    assert newest_checkpoint(run) == run / "checkpoints" / "last.ckpt"
    cfg = OmegaConf.create({"paths": {"output_dir": str(run)}, "auto_resume": True, "ckpt_path": None})
    assert resume_checkpoint(cfg) == str(run / "checkpoints" / "last.ckpt")
    cfg.auto_resume = False
    assert resume_checkpoint(cfg) is None


def test_resume_refuses_when_every_checkpoint_is_unreadable(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"torn")
    with pytest.raises(RuntimeError, match="last.ckpt"):
        newest_checkpoint(run)


# -- SIGTERM also ends W&B's service; workers that ignore SIGTERM still end at exit -----------
def _stub_trainer(*loggers):
    return type("Trainer", (), {"loggers": list(loggers)})()


@pytest.mark.parametrize("signum, detached", [(signal.SIGTERM, True), (signal.SIGUSR1, False), (signal.SIGUSR2, False)])
def test_sigterm_detaches_wandb_and_the_save_keeps_its_run_id(signum, detached, tmp_path):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from actionlab.lit.callbacks import RUN_ID_KEY, RunIdCheckpoint

    wandb_logger, csv = WandbLogger(id="run42", offline=True, save_dir=str(tmp_path)), CSVLogger(str(tmp_path))
    trainer = _stub_trainer(wandb_logger, csv)
    run_id, guard = RunIdCheckpoint(), SlurmPreemption(enabled=True)
    run_id.setup(trainer, None, "fit")
    guard._trainer = trainer
    guard._record(signum, None)
    assert trainer.loggers == ([csv] if detached else [wandb_logger, csv])
    checkpoint: dict = {}
    run_id.on_save_checkpoint(trainer, None, checkpoint)
    assert checkpoint[RUN_ID_KEY] == "run42"  # the requeued attempt continues the same W&B run


def test_a_wandb_connection_error_after_sigterm_is_one_line(caplog):
    guard = SlurmPreemption(enabled=True)
    guard.signum = signal.SIGTERM
    raiser = compile("def publish():\n    raise ConnectionResetError('Connection lost')\n",
                     os.path.join(os.sep, "site-packages", "wandb", "service_client.py"), "exec")
    scope: dict = {}
    exec(raiser, scope)
    def ours():
        raise ConnectionResetError("a peer of the lab's own")

    errors = []
    for fn in (scope["publish"], ours):  # the same error type raised inside W&B, then outside it
        try:
            fn()
        except ConnectionResetError as err:
            errors.append(err)
    with caplog.at_level(logging.WARNING):
        assert isinstance(guard.exit_after_error(errors[0]), Preempted)
        assert "W&B lost its service after SIGTERM (ConnectionResetError: Connection lost)" in caplog.text
        assert not any(r.exc_info for r in caplog.records)
        assert isinstance(guard.exit_after_error(errors[1]), Preempted)
    assert [bool(r.exc_info) for r in caplog.records] == [False, True]  # unknown errors keep their traceback


def test_a_process_leaving_with_live_workers_exits(tmp_path):
    """The lab's workers ignore SIGTERM, so multiprocessing's exit handler (terminate, then join)
    alone would wait for them forever; the lab kills them first."""
    import subprocess
    import sys

    script = tmp_path / "leave.py"
    script.write_text(
        "from torch.utils.data import DataLoader\n"
        "from actionlab.data.workers import worker_init_fn\n"
        "loader = DataLoader(list(range(64)), batch_size=2, num_workers=2, persistent_workers=True,\n"
        "                    worker_init_fn=worker_init_fn(0))\n"
        "it = iter(loader)\n"
        "next(it)\n"
        "print('leaving with', len(it._workers), 'workers', flush=True)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "leaving with 2 workers" in proc.stdout, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
