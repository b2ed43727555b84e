"""Clip-consistent augmentation: one crop/flip/colour draw per clip, label swaps, normalisation."""

import numpy as np
import pytest
import torch

from actionlab.data.transforms import (
    IMAGENET_MEAN,
    VIT_MEAN,
    VIT_STD,
    ClipTransform,
    GpuClipAugment,
    build_photometric,
    multiscale_crop_box,
    random_resized_crop_box,
)

ALL_SRTG = dict(blur=True, add=True, hue_saturation=True, contrast=True, perspective=True, rotation=True,
                p=1.0, p_op=1.0)


def static_clip(t=6, h=40, w=52, seed=0):
    """A clip whose frames are all the same picture: any per-frame randomness would show."""
    frame = np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    return np.stack([frame] * t)


@pytest.mark.parametrize("train_crop", ["random", "multiscale", "resized"])
def test_every_frame_gets_the_same_crop_flip_and_colour(train_crop):
    t = ClipTransform(16, (18, 22), train=True, flip=True, train_crop=train_crop, color_jitter=0.4,
                      srtg=ALL_SRTG)
    for seed in range(2):
        torch.manual_seed(seed)
        out, _ = t(static_clip(t=4, h=24, w=30), 0, np.random.default_rng(seed))
        assert out.shape == (3, 4, 16, 16)
        assert not torch.allclose(out, t.__class__(16, 20, False)(static_clip(4, 24, 30), 0, None)[0])
        for i in range(1, 4):
            torch.testing.assert_close(out[:, i], out[:, 0], atol=1e-5, rtol=0)


def test_crops_differ_between_clips_and_flip_is_applied_to_the_whole_clip():
    t = ClipTransform(32, (36, 44), train=True, flip=True, mean=(0, 0, 0), std=(1, 1, 1))
    ramp = np.tile(np.arange(52, dtype=np.uint8)[None, :, None] * 4, (40, 1, 3))
    clip = np.stack([ramp] * 4)
    firsts, directions = set(), set()
    for seed in range(30):
        out, _ = t(clip, 0, np.random.default_rng(seed))
        row = out[0, :, 16]  # (T, W): every frame increases left->right unless flipped
        increasing = bool(row[0, -1] > row[0, 0])
        assert all(bool(row[i, -1] > row[i, 0]) == increasing for i in range(4))
        directions.add(increasing)
        firsts.add(round(float(out[0, 0, 0, 0]), 3))
    assert directions == {True, False} and len(firsts) > 5


def test_ssv2_flip_swaps_left_right_labels_only():
    ssv2_map = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    t = ClipTransform(8, 8, train=True, flip=True, flip_label_map=ssv2_map, mean=(0, 0, 0), std=(1, 1, 1))
    clip = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    clip[:, :, :4] = 255  # left half white
    for label, swapped in ((86, 87), (94, 93), (167, 166), (5, 5)):
        seen = set()
        for seed in range(16):
            out, new = t(clip, label, np.random.default_rng(seed))
            flipped = bool(out[0, 0, 0, -1] > 0.5)
            assert new == (swapped if flipped else label)
            seen.add(flipped)
        assert seen == {True, False}
    off = ClipTransform(8, 8, train=True, flip=False, flip_label_map=ssv2_map)
    assert all(off(clip, 86, np.random.default_rng(s))[1] == 86 for s in range(10))


def test_evaluation_is_deterministic_centre_crop_without_augmentation():
    t = ClipTransform(32, 36, train=False, flip=True, color_jitter=0.4, srtg=ALL_SRTG)
    a, _ = t(static_clip(), 3, np.random.default_rng(1))
    b, _ = t(static_clip(), 3, np.random.default_rng(2))
    assert torch.equal(a, b) and t.photometric is None


def test_multiscale_crop_box_follows_tsm():
    rng = np.random.default_rng(0)
    sizes = {int(256 * s) if abs(int(256 * s) - 224) >= 3 else 224 for s in (1, 0.875, 0.75, 0.66)}
    assert sizes == {256, 224, 192, 168}
    seen = set()
    for _ in range(400):
        y0, x0, h, w = multiscale_crop_box(256, 340, 224, rng)
        assert h in sizes and w in sizes
        order = sorted(sizes, reverse=True)
        assert abs(order.index(h) - order.index(w)) <= 1  # max_distort = 1
        assert 0 <= y0 <= 256 - h and 0 <= x0 <= 340 - w
        hs, ws = (256 - h) // 4, (340 - w) // 4
        assert y0 in {0, hs, 2 * hs, 3 * hs, 4 * hs} and x0 in {0, ws, 2 * ws, 3 * ws, 4 * ws}
        if hs and ws:
            seen.add((y0 // hs, x0 // ws))
    # The 13 fixed positions of more_fix_crop: corners, centre, edge midpoints, quarter points.
    assert seen == {(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2),
                    (1, 1), (1, 3), (3, 1), (3, 3)}


def test_random_resized_crop_box_area_and_aspect():
    rng = np.random.default_rng(0)
    for _ in range(200):
        y0, x0, h, w = random_resized_crop_box(100, 150, rng, scale=(0.25, 0.5), ratio=(0.75, 4 / 3))
        assert 0 <= y0 and y0 + h <= 100 and 0 <= x0 and x0 + w <= 150
        assert 0.2 <= h * w / 15000 <= 0.55 and 0.7 <= w / h <= 1.4
    assert random_resized_crop_box(10, 20, rng, scale=(5.0, 6.0)) == (0, 5, 10, 10)  # fallback


def test_normalisation_per_backbone():
    clip = static_clip(t=2)
    imagenet, _ = ClipTransform(32, 40, train=False)(clip, 0, np.random.default_rng(0))
    vit, _ = ClipTransform(32, 40, train=False, mean=VIT_MEAN, std=VIT_STD)(clip, 0, np.random.default_rng(0))
    raw, _ = ClipTransform(32, 40, train=False, to_uint8=True)(clip, 0, np.random.default_rng(0))
    assert raw.dtype == torch.uint8 and raw.shape == (3, 2, 32, 32)
    x = raw.float() / 255
    torch.testing.assert_close(vit, (x - 0.5) / 0.5)
    torch.testing.assert_close(imagenet[0], (x[0] - IMAGENET_MEAN[0]) / 0.229)
    assert vit.min() >= -1 and vit.max() <= 1


def test_gpu_side_augment_is_per_clip_and_frame_consistent():
    torch.manual_seed(0)
    aug = GpuClipAugment(color_jitter=0.8)
    frame = torch.randint(0, 255, (2, 3, 1, 24, 24), dtype=torch.uint8)
    batch = frame.expand(2, 3, 5, 24, 24).contiguous()
    out = aug(batch, train=True)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    for b in range(2):
        for i in range(1, 5):
            torch.testing.assert_close(out[b, :, i], out[b, :, 0], atol=1e-5, rtol=0)
    evaluated = aug(batch, train=False)  # no augmentation, only normalisation
    plain = GpuClipAugment()(batch, train=True)
    torch.testing.assert_close(evaluated, plain)
    assert aug(plain, train=True) is plain  # float batches are already finished


def test_photometric_flags():
    assert build_photometric(None, None) is None
    assert build_photometric(0.0, {"blur": False}) is None
    assert build_photometric(None, {"rotation": True}) is not None
    with pytest.raises(ValueError, match="unknown data.augment.srtg flags.*sharpen"):
        build_photometric(None, {"sharpen": True})
