"""Build lists of callbacks/loggers from config groups whose entries may be empty."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig


def instantiate_collection(cfg: DictConfig | None) -> list[Any]:
    """Every ``_target_`` entry of a mapping (``callbacks``, ``logger``), in order; None -> []."""
    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"expected a mapping of named entries, got {type(cfg).__name__}")
    return [hydra.utils.instantiate(node) for node in cfg.values() if node and "_target_" in node]
