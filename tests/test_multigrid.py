"""Multigrid schedule math (vs PySlowFast's worked K400 example), short-cycle sampler, split BN."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import RandomSampler, SequentialSampler

from actionlab.schedules.multigrid import (
    MultigridSchedule,
    long_cycle_shapes,
    long_cycle_schedule,
    relative_lr_steps,
    short_cycle_batch_factors,
    short_cycle_crops,
    steps_from_fractions,
)
from actionlab.schedules.samplers import ResumableBatchSampler, SamplerState, ShortCycleBatchSampler
from actionlab.schedules.split_bn import (
    SplitBatchNorm2d,
    SplitBatchNorm3d,
    convert_split_bn,
    fold_split_bn,
    num_splits_for,
    set_num_splits,
)


def test_worked_example_k400_slowfast_8x8():
    """PySlowFast's K400 SlowFast multigrid schedule: T0=32, S0=224, STEPS [0,94,154,196], E=239 (SlowFast #231)."""
    raw = long_cycle_schedule(32, 224, [0, 94, 154, 196], 239, 1.5)
    ends = [end for *_, end in raw]
    assert ends == [73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 358]
    assert [(s.b, s.t, round(s.s)) for *_, s, _ in raw[:4]] == [(8, 8, 158), (4, 16, 158), (2, 16, 224), (1, 32, 224)]
    steps, lrs, max_epoch = relative_lr_steps(raw, 0.1)
    assert steps == [0, 73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 343]
    assert max_epoch == 358
    expected = [8, 4, 2, 1, 0.8, 0.4, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01, 0.01, 0.001]
    assert lrs == pytest.approx(expected, rel=1e-12)
    shapes = long_cycle_shapes(32, 224)
    avg = [sum(s.b for s in group) / 3 for group in shapes]
    assert avg == pytest.approx([32 / 3, 16 / 3, 14 / 3, 7 / 3])
    assert sum(avg) / len(avg) == pytest.approx(5.75)  # iter_saving


def test_lr_scaling_options_change_only_the_batch_factor_term():
    raw = long_cycle_schedule(32, 224, [0, 94, 154, 196], 239, 1.5)
    linear = relative_lr_steps(raw, 0.1)
    sqrt = relative_lr_steps(raw, 0.1, "sqrt")
    none = relative_lr_steps(raw, 0.1, "none")
    assert linear[0] == sqrt[0] == none[0] and linear[2] == sqrt[2] == none[2]
    assert sqrt[1][:4] == pytest.approx([math.sqrt(8), 2, math.sqrt(2), 1])
    assert none[1] == pytest.approx([1] * 4 + [0.1] * 4 + [0.01] * 4 + [0.01, 0.001])
    sched = MultigridSchedule(16, 8, 56, 12, [0, 6, 9], lr_scaling="sqrt")
    assert sched.relative_lr(0) == pytest.approx(math.sqrt(8))
    with pytest.raises(ValueError, match="schedule.lr_scaling"):
        relative_lr_steps(raw, 0.1, "cubic")


def test_worked_example_ssv2_and_t16():
    assert [e for *_, e in long_cycle_schedule(64, 224, [0, 14, 18], 22)] == [11, 16, 21, 24, 27, 28, 30, 30, 33]
    sched = MultigridSchedule(64, 16, 224, 100, [0, 40, 60, 80])
    assert sched.total_epochs == 150
    assert [(s.shape.b, s.shape.t, round(s.shape.s)) for s in sched.stages[:4]] == [
        (8, 4, 158), (4, 8, 158), (2, 8, 224), (1, 16, 224)]


def test_iteration_saving_is_3_4x_for_the_default_schedule():
    sched = MultigridSchedule(64, 32, 224, 239, [0, 94, 154, 196])
    ratio = sched.baseline_iterations(10_000) / sched.iterations(10_000)
    assert ratio == pytest.approx(239 / 69.8, rel=0.01)  # 69.8 baseline-epoch equivalents


@pytest.mark.parametrize("t0,s0", [(32, 224), (16, 224), (8, 56), (16, 160)])
def test_batch_frames_pixels_constant_across_shapes(t0, s0):
    for group in long_cycle_shapes(t0, s0):
        for shape in group:
            # b * t * s^2 equals T0 * S0^2 up to the rounding of b
            assert shape.b * shape.t * shape.s**2 == pytest.approx(t0 * s0**2, rel=0.12)
    sched = MultigridSchedule(64, t0, s0, 100, [0, 40, 60, 80])
    for stage in sched.stages:
        batch, t, s = sched.shape_at(stage.start)
        crops, mults = sched.short_cycle_batches(stage.start)
        for crop, mult in zip(crops, mults):
            cost = batch * mult * t * crop**2
            assert cost == pytest.approx(64 * 4 * t0 * s0**2 / 4, rel=0.25)


def test_short_cycle_crops_are_absolute():
    assert short_cycle_crops(224, 224) == [112, 158, 224]
    assert short_cycle_batch_factors(224, 224) == [4, 2, 1]
    assert short_cycle_crops(158, 224) == [112, 158, 158]
    assert short_cycle_batch_factors(158, 224) == [2, 1, 1]


def test_schedule_validation_and_lookup():
    with pytest.raises(ValueError, match="start at 0"):
        MultigridSchedule(8, 8, 56, 10, [2, 5])
    with pytest.raises(ValueError, match="before the last epoch"):
        MultigridSchedule(8, 8, 56, 10, [0, 10])
    sched = MultigridSchedule(8, 8, 56, 12, steps_from_fractions([0, 0.5], 12))
    assert sched.shape_at(0) == (64, 2, 40)
    assert sched.shape_at(sched.total_epochs - 1) == (8, 8, 56)
    assert sched.relative_lr(0.0) == 8 and sched.relative_lr(sched.total_epochs - 0.01) == pytest.approx(0.1)
    short = MultigridSchedule(8, 8, 56, 12, [0, 6], long_cycle=False)
    assert short.total_epochs == 18 and short.shape_at(5) == (8, 8, 56)


def test_resumable_batch_sampler_order_and_skip():
    data = list(range(23))
    state = SamplerState(seed=3, epoch=0)
    full = list(ResumableBatchSampler(RandomSampler(data), 4, True, state))
    flat = sum(full, []); assert len(full) == 5 and len(set(flat)) == 20 and flat != sorted(flat)
    assert list(ResumableBatchSampler(RandomSampler(data), 4, True, SamplerState(seed=3, epoch=0))) == full
    state.epoch = 1
    assert list(ResumableBatchSampler(RandomSampler(data), 4, True, state)) != full
    state.epoch, state.skip = 0, 2
    sampler = ResumableBatchSampler(RandomSampler(data), 4, True, state)
    assert list(sampler) == full[2:] and len(sampler) == 5
    assert list(sampler) == full and state.skip == 0  # the skip applies once


@pytest.mark.parametrize("clips, world, fails", [(256, 1, False), (255, 1, True), (256, 2, False), (254, 2, True)])
def test_multigrid_rejects_a_training_set_smaller_than_a_stage_batch(clips, world, fails):
    from types import SimpleNamespace

    from actionlab.schedules.callback import Multigrid

    # B0=16, S0=56: stage 0 batch 128 (x8), short cycle 28 px at x2 -> 256 clips per iteration.
    multigrid = Multigrid(base_epochs=12, base_batch_size=16, base_num_frames=8, base_crop_size=56, steps=[0, 6, 9])
    trainer = SimpleNamespace(world_size=world)
    datamodule = SimpleNamespace(datasets={"train": range(clips)})
    if not fails:
        multigrid._check_dataset_size(trainer, datamodule)
        return
    with pytest.raises(ValueError, match=rf"stage 0 .* batches of {256 // world} clips per device.*data.batch_size"):
        multigrid._check_dataset_size(trainer, datamodule)
    multigrid.schedule = MultigridSchedule(16, 8, 56, 12, [0, 6, 9], short_cycle=False)  # 128 per stage-0 batch
    multigrid._check_dataset_size(trainer, datamodule)


@pytest.mark.parametrize("n", [4, 10, 31, 48, 50])
def test_short_cycle_sampler_cycles_shapes(n):
    sampler = ShortCycleBatchSampler(SequentialSampler(range(n)), 2, True, SamplerState(), crop_size=56,
                                     default_crop_size=56)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for i, batch in enumerate(batches):
        crop = [28, 40, 56][i % 3]
        assert len(batch) == [8, 4, 2][i % 3]
        assert all(c == crop for _, c in batch)
    flat = [idx for batch in batches for idx, _ in batch]
    assert flat == list(range(len(flat)))
    keep = ShortCycleBatchSampler(SequentialSampler(range(n)), 2, False, SamplerState(), crop_size=56,
                                  default_crop_size=56)
    assert sum(len(b) for b in keep) == n and len(list(keep)) == len(keep)


def test_split_bn_statistics_equal_plain_bn():
    torch.manual_seed(0)
    x = torch.randn(16, 6, 2, 5, 5) * torch.linspace(0.5, 3, 6).view(1, 6, 1, 1, 1) + 2.0
    plain = nn.BatchNorm3d(6, momentum=1.0)
    plain(x)
    model = nn.Sequential(nn.BatchNorm3d(6, momentum=1.0))
    assert convert_split_bn(model) == 1
    split = model[0]
    set_num_splits(model, 4)
    split(x)
    fold_split_bn(model)
    m = 16 // 4 * 2 * 5 * 5  # elements per channel per split
    assert torch.allclose(split.running_mean, plain.running_mean, atol=1e-6)
    # PySlowFast fold: unbiased split variances (m-1) vs the unbiased plain one (16*50-1)
    assert torch.allclose(split.running_var, plain.running_var, rtol=2.0 / m)
    # Per-split normalisation: each strided split is normalised with its own statistics.
    split.eval(), plain.eval()
    split.train()
    y = split(x)
    for j in range(4):
        part = y[j::4].transpose(0, 1).reshape(6, -1)
        assert torch.allclose(part.mean(1), torch.zeros(6), atol=1e-5)
    split.eval()
    assert torch.allclose(split(x), plain(x), atol=5e-2)


class _FramesBN(nn.Module):
    """A 2D backbone in miniature: frames folded into the batch, clip-major, then BatchNorm2d."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, momentum=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        return self.bn(x.transpose(1, 2).reshape(b * t, c, h, w)).view(b, t, c, h, w)


def test_split_bn_2d_groups_whole_clips_of_time_folded_frames():
    torch.manual_seed(0)
    # per-clip offsets: a split that mixed frames of different clip groups would not be centred
    x = torch.randn(16, 6, 3, 5, 5) + 4 * torch.randn(16, 1, 1, 1, 1)
    model = _FramesBN(6)
    assert convert_split_bn(model) == 1 and isinstance(model.bn, SplitBatchNorm2d)
    set_num_splits(model, 4)
    y = model.train()(x)
    assert model.bn.clip_frames == 3  # read from the clip by the pre-hook
    for j in range(4):  # split j = clips j, j+4, ...: exactly plain BN over those clips' frames
        reference = nn.BatchNorm2d(6, affine=False)
        frames = x[j::4].transpose(1, 2).reshape(-1, 6, 5, 5)
        assert torch.allclose(y[j::4].reshape(-1, 6, 5, 5), reference.train()(frames), atol=1e-5)
    plain = nn.BatchNorm2d(6, momentum=1.0)
    plain(x.transpose(1, 2).reshape(48, 6, 5, 5))
    fold_split_bn(model)
    assert torch.allclose(model.bn.running_mean, plain.running_mean, atol=1e-5)
    m = 4 * 3 * 5 * 5  # elements per channel per split
    assert torch.allclose(model.bn.running_var, plain.running_var, rtol=2.0 / m)
    model(torch.randn(8, 6, 2, 5, 5))  # a new clip length is picked up per call
    assert model.bn.clip_frames == 2
    with pytest.raises(ValueError, match="batch of 6 clips"):
        model(torch.randn(6, 6, 2, 5, 5))
    model.eval()
    assert model(torch.randn(6, 6, 2, 5, 5)).shape == (6, 2, 6, 5, 5)  # eval: plain BN, any batch


def test_split_bn_shares_parameters_and_state_dict_keys():
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4))
    weight = model[1].weight
    keys = set(model.state_dict())
    convert_split_bn(model)
    assert model[1].weight is weight and set(model.state_dict()) == keys
    set_num_splits(model, 2)
    with pytest.raises(ValueError, match="multiple of the split count"):
        model.train()(torch.randn(3, 3, 1, 2, 2))
    assert num_splits_for(64, 8) == 8 and num_splits_for(24, 8) == 3 and num_splits_for(4, 8) == 1
    assert num_splits_for(20, 8) == 2 and isinstance(model[1], SplitBatchNorm3d)
