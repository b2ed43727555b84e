"""Training batch samplers that resume exactly and vary the batch per iteration.

``ResumableBatchSampler``: the epoch's order is a function of ``(seed, epoch)`` only (a
``RandomSampler`` is replaced by a permutation drawn from that seed; a ``DistributedSampler`` is
told the epoch), and the first ``skip`` batches of the epoch can be skipped, so a run restarted
from a mid-epoch checkpoint sees exactly the batches it would have seen.

``ShortCycleBatchSampler``: the multigrid short cycle (PySlowFast ``ShortCycleBatchSampler``):
iterations cycle through three shapes, each index yielded as ``(index, crop_size)`` so the
dataset crops it at that size; batches grow as crops shrink (constant pixels per batch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, RandomSampler, Sampler

from actionlab.schedules.multigrid import SHORT_CYCLE_FACTORS, short_cycle_batch_factors, short_cycle_crops

__all__ = ["SamplerState", "ResumableBatchSampler", "ShortCycleBatchSampler"]


@dataclass
class SamplerState:
    """Where the training loader is: set by ``ResumableSampling`` before each loader is iterated.

    ``skip`` batches are skipped once (the next ``__iter__``), then reset to 0.
    """

    seed: int = 0
    epoch: int = 0
    skip: int = 0


class ResumableBatchSampler(BatchSampler):
    """A ``BatchSampler`` whose order depends on ``(state.seed, state.epoch)`` and that can skip.

    Args:
        sampler: the loader's sampler; ``RandomSampler`` -> seeded permutation, a sampler with
            ``set_epoch`` (``DistributedSampler``) -> told the epoch, anything else iterated as is.
        batch_size: clips per batch (per device).
        drop_last: drop the last incomplete batch.
        state: shared ``SamplerState``; None means seed ``PL_GLOBAL_SEED``, epoch 0, no skip.
    """

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool, state: SamplerState | None = None) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.state = state if state is not None else SamplerState(seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))

    def _indices(self) -> Iterator[int]:
        if isinstance(self.sampler, RandomSampler) and not self.sampler.replacement:
            generator = torch.Generator().manual_seed(self.state.seed * 100_003 + self.state.epoch)
            n = len(self.sampler.data_source)
            yield from torch.randperm(n, generator=generator)[: len(self.sampler)].tolist()
            return
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.state.epoch)
        yield from iter(self.sampler)

    def __iter__(self) -> Iterator[list]:
        skip, self.state.skip = self.state.skip, 0
        for i, batch in enumerate(self._batches()):
            if i >= skip:
                yield batch

    def _batches(self) -> Iterator[list]:
        batch: list = []
        for idx in self._indices():
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch


class ShortCycleBatchSampler(ResumableBatchSampler):
    """Multigrid short cycle: iteration ``i`` uses shape ``i mod 3`` (crops ``0.5 S0``,
    ``0.707 S0``, stage crop) with batch ``batch_size x round((crop_size / crop)^2)``.

    Args:
        sampler, batch_size, drop_last, state: as ``ResumableBatchSampler``; ``batch_size`` is
            the per-device batch of the stage crop.
        crop_size: the long-cycle stage crop.
        default_crop_size: the base crop ``S0`` (short-cycle crops are relative to it).
        factors: short-cycle spatial factors of ``S0``.
    """

    def __init__(
        self,
        sampler: Sampler,
        batch_size: int,
        drop_last: bool,
        state: SamplerState | None = None,
        crop_size: int = 224,
        default_crop_size: int = 224,
        factors: Sequence[float] = SHORT_CYCLE_FACTORS,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last, state)
        self.crop_size, self.default_crop_size, self.factors = crop_size, default_crop_size, tuple(factors)
        self.crops = short_cycle_crops(crop_size, default_crop_size, self.factors)
        self.batch_sizes = [batch_size * m for m in short_cycle_batch_factors(crop_size, default_crop_size, self.factors)]

    def _batches(self) -> Iterator[list[tuple[int, int]]]:
        counter, batch = 0, []
        for idx in self._indices():
            batch.append((idx, self.crops[counter % 3]))
            if len(batch) == self.batch_sizes[counter % 3]:
                yield batch
                counter, batch = counter + 1, []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        # Exact count of what __iter__ yields (PySlowFast's n / mean(batch) can be off by one).
        full, rest = divmod(len(self.sampler), sum(self.batch_sizes))
        count = 3 * full
        for size in self.batch_sizes:
            if rest >= size:
                count, rest = count + 1, rest - size
            else:
                break
        return count + (1 if rest and not self.drop_last else 0)
