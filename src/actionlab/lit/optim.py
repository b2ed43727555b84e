"""Optimiser parameter groups: no decay on norms/biases, per-parameter LR multipliers.

A backbone may declare ``no_weight_decay() -> set[str]`` (extra parameter names without decay)
and ``lr_multipliers() -> dict[str, float]`` (e.g. RubiksShift shifts at LR x 0.01).
"""

from __future__ import annotations

from collections import defaultdict

from torch import nn

__all__ = ["param_groups"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Groups keyed by ``(lr_mult, weight_decay)``; each group carries ``lr_mult`` and ``name``."""
    no_decay = set(getattr(model, "no_weight_decay", lambda: set())())
    lr_mults = dict(getattr(model, "lr_multipliers", lambda: {})())
    unknown = (no_decay | set(lr_mults)) - {n for n, _ in model.named_parameters()}
    if unknown:
        raise ValueError(
            f"{type(model).__name__} declares optimiser settings for unknown parameters: {sorted(unknown)}"
        )
    grouped: dict[tuple[float, float], list] = defaultdict(list)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = 0.0 if (param.ndim <= 1 or name in no_decay) else weight_decay
        grouped[(lr_mults.get(name, 1.0), decay)].append(param)
    return [
        {"params": params, "lr_mult": mult, "weight_decay": decay, "name": f"lr{mult:g}_wd{decay:g}"}
        for (mult, decay), params in sorted(grouped.items(), key=lambda kv: (-kv[0][0], -kv[0][1]))
    ]
