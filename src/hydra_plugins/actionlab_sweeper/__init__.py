"""Hydra plugin entry: the actionlab Optuna sweeper (implementation in ``actionlab.hparams.sweeper``)."""

from actionlab.hparams.sweeper import OptunaSweeperImpl


class OptunaSweeper(OptunaSweeperImpl):
    """``hydra/sweeper=optuna`` (``conf/hydra/sweeper/optuna.yaml``)."""
