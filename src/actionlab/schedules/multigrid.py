"""Multigrid training schedules (Wu et al., "A Multigrid Method for Efficiently Training Video
Models", CVPR 2020), computed exactly as PySlowFast's ``MultigridSchedule`` does.

A *shape* is ``(b, t, s)``: batch factor ``b`` (relative to the base batch ``B0``), clip length
``t`` frames and crop ``s`` pixels, with ``b * t * s^2 ~= T0 * S0^2`` so every iteration costs
about the same FLOPs as one base iteration of ``(B0, T0, S0)``.

- Long cycle (per epoch): the training epochs between two LR steps are split over the
  long-cycle shapes (coarse to fine) so that each shape gets the same number of iterations;
  a fine-tune phase at the base shape follows; everything is rescaled to ``epoch_factor`` times
  the base epochs. The LR becomes "steps with relative LRs": stage ``(k, j)`` uses
  ``gamma^k * b_j`` (linear scaling with the batch factor; ``lr_scaling=sqrt|none`` scales by
  ``sqrt(b_j)`` or not at all, for models or optimisers that diverge at ``8x`` the base LR).
- Short cycle (per iteration): the batch sampler cycles crops ``0.5 S0``, ``0.707 S0`` and the
  stage crop with batches scaled by ``round((s / crop)^2)`` (crops absolute, as PySlowFast).

``python -m actionlab.schedules.multigrid --print [hydra overrides]`` prints the schedule of a
config (e.g. ``schedule=multigrid model=x3d_m data=kinetics400``).
"""

from __future__ import annotations

import argparse
import math
import sys
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Sequence

__all__ = [
    "LONG_CYCLE_FACTORS",
    "SHORT_CYCLE_FACTORS",
    "Shape",
    "Stage",
    "MultigridSchedule",
    "long_cycle_shapes",
    "long_cycle_schedule",
    "relative_lr_steps",
    "short_cycle_batch_factors",
    "short_cycle_crops",
    "steps_from_fractions",
]

SQRT_HALF = 0.5**0.5
#: (temporal, spatial) factors of the base shape, coarse to fine (PySlowFast defaults).
LONG_CYCLE_FACTORS: tuple[tuple[float, float], ...] = ((0.25, SQRT_HALF), (0.5, SQRT_HALF), (0.5, 1.0), (1.0, 1.0))
#: spatial factors of the base crop used by the short cycle before the stage crop.
SHORT_CYCLE_FACTORS: tuple[float, ...] = (0.5, SQRT_HALF)


@dataclass(frozen=True)
class Shape:
    """``b`` x base batch, ``t`` frames, crop ``s`` (a float for the short-cycle candidates)."""

    b: int
    t: int
    s: float


@dataclass(frozen=True)
class Stage:
    """One long-cycle stage: epochs ``[start, end)`` at ``shape``; ``step`` is the LR step index
    ``k`` and ``cycle`` the long-cycle index ``j`` (the fine-tune phase has ``step = n``)."""

    step: int
    cycle: int
    shape: Shape
    start: int
    end: int

    @property
    def epochs(self) -> int:
        return self.end - self.start


def long_cycle_shapes(
    num_frames: int,
    crop_size: int,
    long_factors: Sequence[Sequence[float]] = LONG_CYCLE_FACTORS,
    short_factors: Sequence[float] | None = SHORT_CYCLE_FACTORS,
) -> list[list[Shape]]:
    """Per long-cycle factor, its shapes: the short-cycle candidates (when ``short_factors``)
    then the long-cycle shape itself, last. ``b = round(T0 S0^2 / (t s^2))``."""
    default_size = float(num_frames * crop_size**2)
    all_shapes = []
    for t_factor, s_factor in long_factors:
        t = int(round(num_frames * t_factor))
        s = int(round(crop_size * s_factor))
        if t < 1:
            raise ValueError(
                f"long-cycle factor {t_factor} of num_frames={num_frames} gives 0 frames; "
                "use more frames or larger schedule.long_cycle_factors"
            )
        candidates = [(t, crop_size * f) for f in short_factors] if short_factors else []
        candidates.append((t, s))
        all_shapes.append([Shape(int(round(default_size / (ct * cs * cs))), ct, cs) for ct, cs in candidates])
    return all_shapes


def long_cycle_schedule(
    num_frames: int,
    crop_size: int,
    steps: Sequence[int],
    max_epoch: int,
    epoch_factor: float = 1.5,
    long_factors: Sequence[Sequence[float]] = LONG_CYCLE_FACTORS,
    short_factors: Sequence[float] | None = SHORT_CYCLE_FACTORS,
) -> list[tuple[int, int, Shape, int]]:
    """PySlowFast ``get_long_cycle_schedule``: ``[(step k, cycle j, long shape, end epoch)]``.

    ``steps`` are the stepwise LR epochs ``[0, s1, ..., sn]`` of the base recipe, ``max_epoch`` its
    length. End epochs are cumulative and rounded; the last one is the new maximum epoch.
    """
    steps = [int(s) for s in steps]
    if not steps or steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"schedule.steps must start at 0 and increase, got {steps}")
    if steps[-1] >= max_epoch:
        raise ValueError(f"the last LR step {steps[-1]} must be before the last epoch {max_epoch}")
    all_shapes = long_cycle_shapes(num_frames, crop_size, long_factors, short_factors)
    avg_bs = [sum(s.b for s in shapes) / len(shapes) for shapes in all_shapes]
    raw: list[tuple[int, int, Shape, float]] = []
    total_iters = 0.0
    for k in range(len(steps) - 1):
        step_epochs = steps[k + 1] - steps[k]
        for j, shapes in enumerate(all_shapes):
            epochs = step_epochs * avg_bs[j] / sum(avg_bs)  # same iterations for every shape
            total_iters += epochs / avg_bs[j]
            raw.append((k, j, shapes[-1], epochs))
    iter_saving = steps[-1] / total_iters
    # The fine-tune phase at the base shape saves iterations at the same rate as the rest.
    ft_epochs = (max_epoch - steps[-1]) / iter_saving * avg_bs[-1]
    raw.append((len(steps) - 1, len(all_shapes) - 1, all_shapes[-1][-1], ft_epochs))
    scale = max_epoch * epoch_factor / sum(r[3] for r in raw)
    final, cumulative = [], 0.0
    for k, j, shape, epochs in raw:
        cumulative += epochs * scale
        final.append((k, j, shape, int(round(cumulative))))
    return final


LR_SCALINGS = {"linear": float, "sqrt": math.sqrt, "none": lambda b: 1.0}


def relative_lr_steps(
    schedule: Sequence[tuple[int, int, Shape, int]], gamma: float = 0.1, lr_scaling: str = "linear"
) -> tuple[list[int], list[float], int]:
    """PySlowFast ``steps_with_relative_lrs`` for a long-cycle schedule: ``(steps, lrs, max_epoch)``.

    Stage ``(k, j)`` has relative LR ``gamma^k * b_j`` (``lr_scaling="linear"``, PySlowFast;
    ``sqrt``: ``gamma^k * sqrt(b_j)``; ``none``: ``gamma^k``); the fine-tune phase keeps the
    previous LR for its first half (the last step becomes its midpoint) and uses ``gamma^n`` after.
    """
    if lr_scaling not in LR_SCALINGS:
        raise ValueError(f"schedule.lr_scaling must be one of {sorted(LR_SCALINGS)}, got {lr_scaling!r}")
    scale = LR_SCALINGS[lr_scaling]
    steps = [0] + [end for *_, end in schedule]
    steps[-1] = (steps[-2] + steps[-1]) // 2
    lrs = [gamma**k * scale(shape.b) for k, _, shape, _ in schedule]
    lrs = lrs[:-1] + [lrs[-2], lrs[-1]]
    return steps, lrs, schedule[-1][-1]


def short_cycle_batch_factors(
    crop_size: int, default_crop: int, short_factors: Sequence[float] = SHORT_CYCLE_FACTORS
) -> list[int]:
    """Batch multipliers of the three short-cycle iterations at stage crop ``crop_size``."""
    return [int(round((crop_size / (f * default_crop)) ** 2)) for f in short_factors] + [1]


def short_cycle_crops(
    crop_size: int, default_crop: int, short_factors: Sequence[float] = SHORT_CYCLE_FACTORS
) -> list[int]:
    """Crops of the three short-cycle iterations: absolute factors of the base crop, then the stage crop."""
    return [int(round(f * default_crop)) for f in short_factors] + [int(crop_size)]


def steps_from_fractions(fractions: Sequence[float], max_epoch: int) -> list[int]:
    """LR steps ``round(f * max_epoch)``; e.g. K400 SlowFast ``[0, 94, 154, 196]`` of 239 epochs."""
    return [int(round(f * max_epoch)) for f in fractions]


@dataclass
class MultigridSchedule:
    """The full schedule of a run from its base ``(B0, T0, S0)`` and recipe.

    Args:
        batch_size, num_frames, crop_size: base global batch ``B0``, frames ``T0``, crop ``S0``.
        max_epoch: epochs of the base recipe ``E``.
        steps: stepwise LR epochs ``[0, s1, ..., sn]`` of the base recipe (long cycle).
        long_cycle, short_cycle: which cycles are on (``multigrid`` = both).
        epoch_factor: train ``F x E`` epochs (1.5).
        gamma: LR decay per step.
        long_factors, short_factors: the cycles' factors (PySlowFast defaults).
        lr_scaling: how a stage's LR follows its batch factor: ``linear`` (PySlowFast), ``sqrt``
            or ``none``.
    """

    batch_size: int
    num_frames: int
    crop_size: int
    max_epoch: int
    steps: Sequence[int] = (0,)
    long_cycle: bool = True
    short_cycle: bool = True
    epoch_factor: float = 1.5
    gamma: float = 0.1
    long_factors: Sequence[Sequence[float]] = LONG_CYCLE_FACTORS
    short_factors: Sequence[float] = SHORT_CYCLE_FACTORS
    lr_scaling: str = "linear"
    stages: list[Stage] = field(init=False)
    lr_steps: list[int] = field(init=False)
    lr_values: list[float] = field(init=False)
    total_epochs: int = field(init=False)

    def __post_init__(self) -> None:
        if not (self.long_cycle or self.short_cycle):
            raise ValueError("a multigrid schedule needs long_cycle and/or short_cycle")
        self.long_factors = [tuple(float(v) for v in f) for f in self.long_factors]
        self.short_factors = [float(f) for f in self.short_factors]
        base = Shape(1, self.num_frames, self.crop_size)
        if self.long_cycle:
            raw = long_cycle_schedule(
                self.num_frames, self.crop_size, self.steps, self.max_epoch, self.epoch_factor,
                self.long_factors, self.short_factors if self.short_cycle else None,
            )
            self.lr_steps, self.lr_values, self.total_epochs = relative_lr_steps(raw, self.gamma, self.lr_scaling)
            starts = [0] + [end for *_, end in raw[:-1]]
            self.stages = [Stage(k, j, shape, start, end) for (k, j, shape, end), start in zip(raw, starts)]
        else:  # short cycle only: the recipe is stretched by the epoch factor, LR policy untouched
            self.total_epochs = int(self.max_epoch * self.epoch_factor)
            self.lr_steps = [int(s * self.epoch_factor) for s in self.steps]
            self.lr_values = [self.gamma**k for k in range(len(self.lr_steps))]
            self.stages = [Stage(0, 0, base, 0, self.total_epochs)]

    def stage_at(self, epoch: int) -> Stage:
        """The stage training epoch ``epoch`` (0-based) runs in; zero-length stages are skipped."""
        for stage in self.stages:
            if epoch < stage.end:
                return stage
        return self.stages[-1]

    def shape_at(self, epoch: int) -> tuple[int, int, int]:
        """``(global batch, frames, crop)`` of epoch ``epoch``."""
        shape = self.stage_at(epoch).shape
        return shape.b * self.batch_size, shape.t, int(round(shape.s))

    def relative_lr(self, epoch: float) -> float:
        """Relative LR at fractional epoch ``epoch`` (steps with relative LRs)."""
        return self.lr_values[max(0, bisect_right(self.lr_steps, epoch) - 1)]

    def short_cycle_batches(self, epoch: int) -> tuple[list[int], list[int]]:
        """``(crops, batch multipliers)`` of the three short-cycle iterations of epoch ``epoch``."""
        crop = self.shape_at(epoch)[2]
        return (
            short_cycle_crops(crop, self.crop_size, self.short_factors),
            short_cycle_batch_factors(crop, self.crop_size, self.short_factors),
        )

    def iterations(self, dataset_size: int) -> float:
        """Optimizer steps of the whole schedule on ``dataset_size`` clips (drop_last ignored)."""
        total = 0.0
        for stage in self.stages:
            batch = stage.shape.b * self.batch_size
            if self.short_cycle:
                _, mults = self.short_cycle_batches(stage.start)
                batch = batch * sum(mults) / len(mults)
            total += stage.epochs * dataset_size / batch
        return total

    def baseline_iterations(self, dataset_size: int) -> float:
        return self.max_epoch * dataset_size / self.batch_size

    def table(self) -> str:
        """Human-readable schedule (one line per stage)."""
        mode = "+".join(n for n, on in (("long", self.long_cycle), ("short", self.short_cycle)) if on)
        lines = [
            f"multigrid ({mode} cycle): base B={self.batch_size} T={self.num_frames} S={self.crop_size}, "
            f"base epochs {self.max_epoch} -> {self.total_epochs} (x{self.epoch_factor:g})",
            f"{'stage':>5} {'step':>4} {'epochs':>11} {'batch':>6} {'frames':>6} {'crop':>5} "
            f"{'rel. LR':>11}  short cycle (crop x batch)",
        ]
        for i, stage in enumerate(self.stages):
            batch, t, s = stage.shape.b * self.batch_size, stage.shape.t, int(round(stage.shape.s))
            lr = f"{self.lr_values[i]:.4g}" if self.long_cycle else "sched."
            if self.long_cycle and i == len(self.stages) - 1:  # fine-tune: two LRs
                lr = f"{self.lr_values[i]:.3g}>{self.lr_values[i + 1]:.3g}"
            short = ""
            if self.short_cycle:
                crops = short_cycle_crops(s, self.crop_size, self.short_factors)
                mults = short_cycle_batch_factors(s, self.crop_size, self.short_factors)
                short = ", ".join(f"{c}x{m * batch}" for c, m in zip(crops, mults))
            lines.append(
                f"{i:>5} {stage.step:>4} {stage.start:>5}-{stage.end:<5} {batch:>6} {t:>6} {s:>5} "
                f"{lr:>11}  {short}"
            )
        if self.long_cycle:
            lines.append(f"LR steps {self.lr_steps}")
            lines.append(f"relative LRs {[float(f'{v:.6g}') for v in self.lr_values]}")
        return "\n".join(lines)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m actionlab.schedules.multigrid",
        description="Print the multigrid schedule of a train config (Hydra overrides after the flags).",
    )
    parser.add_argument("--print", action="store_true", help="print the schedule table (the default)")
    parser.add_argument("--dataset-size", type=int, default=0, help="also print iterations for N clips")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. schedule=multigrid model=x3d_m")
    args = parser.parse_args(argv)

    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import actionlab  # noqa: F401  (resolvers)

    conf = Path(__file__).resolve().parents[3] / "conf"
    overrides = list(args.overrides)
    if not any(o.startswith(("schedule=", "experiment=")) for o in overrides):
        overrides.append("schedule=multigrid")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    if not cfg.get("schedule") or "_target_" not in cfg.schedule:
        print("schedule: none (every epoch at data.batch_size x data.num_frames x data.crop_size)")
        return 0
    with open_dict(cfg):
        cfg.paths.output_dir = "."
    from actionlab.schedules.callback import Multigrid

    import hydra

    callback: Multigrid = hydra.utils.instantiate(cfg.schedule)
    print(callback.schedule.table())
    if args.dataset_size:
        sched = callback.schedule
        mg, base = sched.iterations(args.dataset_size), sched.baseline_iterations(args.dataset_size)
        print(f"iterations: baseline {base:.0f}, multigrid {mg:.0f} ({base / mg:.2f}x fewer)")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
