"""Hyper-parameter search: an Optuna sweeper that Hydra multirun drives (``hparams_search=...``)."""
