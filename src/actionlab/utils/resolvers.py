"""OmegaConf resolvers used by ``conf/`` (registered on ``import actionlab``)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def wandb_offline() -> bool:
    """W&B runs offline unless an API key is available (``wandb sync`` uploads later)."""
    return not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "online"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("al.wandb_offline"):
        OmegaConf.register_new_resolver("al.wandb_offline", wandb_offline)
