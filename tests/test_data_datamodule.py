"""VideoDataModule: multigrid hooks (shape changes between epochs, batch-sampler factory, per-item
crop size), backends and sampling by config, GPU-side finishing, bad-data epoch with 2 workers."""

from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler

from actionlab.data.datamodule import VideoDataModule, VideoDataset
from actionlab.data.datasets.synthetic import SyntheticSSv2
from actionlab.data.readers import DecordReader
from actionlab.data.sampling import SegmentSampler
from actionlab.data.transforms import ClipTransform

SYNTH = partial(SyntheticSSv2, num_train=32, num_val=16, min_frames=10, max_frames=12)


def make_dm(root, **kw) -> VideoDataModule:
    args = dict(num_classes=8, num_frames=4, crop_size=32, scale_size=40, batch_size=4, num_workers=0)
    args.update(kw)
    dm = VideoDataModule(str(root), SYNTH, **args)
    dm.prepare_data()
    return dm


def test_shape_changes_between_epochs_rebuild_the_train_dataset(synthetic_root):
    dm = make_dm(synthetic_root, train_scale_size=[36, 44])
    dm.setup("fit")
    clips, _, _ = next(iter(dm.train_dataloader()))
    assert clips.shape == (4, 3, 4, 32, 32)
    first = dm.datasets["train"]
    # What a multigrid long-cycle callback does between epochs.
    dm.num_frames, dm.crop_size, dm.batch_size = 2, 24, 8
    dm.train_scale_size = [26, 30]
    clips, _, _ = next(iter(dm.train_dataloader()))
    assert clips.shape == (8, 3, 2, 24, 24)
    assert dm.datasets["train"] is not first
    assert dm.datasets["train"].transform.scale_range == (26, 30)
    same = dm.datasets["train"]
    dm.train_dataloader()
    assert dm.datasets["train"] is same  # unchanged shape: no rebuild
    # Evaluation follows crop/frames too.
    clips, _, _ = next(iter(dm.val_dataloader()))
    assert clips.shape == (8, 3, 2, 24, 24)


class CropCycleBatchSampler(BatchSampler):
    """A toy short-cycle sampler: batch i uses crop ``crops[i % 2]`` and yields (index, crop)."""

    def __init__(self, sampler, batch_size, drop_last, crops=(16, 32)):
        super().__init__(sampler, batch_size, drop_last)
        self.crops = crops

    def __iter__(self):
        for i, batch in enumerate(super().__iter__()):
            yield [(idx, self.crops[i % 2]) for idx in batch]


def test_batch_sampler_factory_and_per_item_crop(synthetic_root):
    dm = make_dm(synthetic_root, train_scale_size=[36, 44])
    calls = []

    def factory(sampler, batch_size, drop_last):
        calls.append((type(sampler).__name__, batch_size, drop_last))
        return CropCycleBatchSampler(sampler, batch_size, drop_last)

    dm.batch_sampler_factory = factory
    dm.setup("fit")
    shapes = [tuple(c.shape) for c, _, _ in dm.train_dataloader()]
    assert calls == [("RandomSampler", 4, True)]
    assert shapes == [(4, 3, 4, 16, 16), (4, 3, 4, 32, 32)] * 4
    # The evaluation loaders are untouched.
    assert {tuple(c.shape) for c, _, _ in dm.val_dataloader()} == {(4, 3, 4, 32, 32)}


def test_tuple_item_scales_the_short_side_range(synthetic_root):
    dm = make_dm(synthetic_root, train_scale_size=[36, 44])
    ds = dm.dataset("train")
    clip, label, index = ds[(5, 16)]
    assert clip.shape == (3, 4, 16, 16) and index == 5
    assert ds.transform.scale_range_for(16) == (18, 22)  # [36, 44] * 16 / 32
    clip, _, _ = ds[5]
    assert clip.shape == (3, 4, 32, 32)


def test_dense_sampling_and_gpu_finish(synthetic_root):
    dm = make_dm(synthetic_root, sampling="dense", sampling_rate=2, gpu_augment=True,
                 augment={"color_jitter": 0.4})
    dm.setup("fit")
    clips, labels, index = next(iter(dm.val_dataloader()))
    assert clips.dtype == torch.uint8 and clips.shape == (4, 3, 4, 32, 32)
    out = dm.on_after_batch_transfer((clips, labels, index), 0)
    assert out[0].dtype == torch.float32 and out[1] is labels
    mean = torch.tensor(dm.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(dm.std).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(out[0], (clips.float() / 255 - mean) / std)


def test_gpu_augment_auto_places_the_finish_where_it_is_cheapest(synthetic_root, tmp_path):
    """auto: float without a trainer (nothing would finish uint8 batches); uint8 under a trainer,
    except on CPU with photometric augmentation (kornia would run serially in the main process)."""
    from types import SimpleNamespace

    def trainer(device: str) -> SimpleNamespace:
        return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), callbacks=[],
                               world_size=1, default_root_dir=str(tmp_path), training=False)

    plain, jitter = make_dm(synthetic_root), make_dm(synthetic_root, augment={"color_jitter": 0.4})
    assert plain.gpu_augment == "auto" and not plain.uint8_batches and not jitter.uint8_batches
    clips, _, _ = next(iter(plain.val_dataloader()))
    assert clips.dtype == torch.float32
    assert plain.on_after_batch_transfer((clips,), 0)[0] is clips
    float_clips = clips

    jitter.trainer = trainer("cpu")
    assert not jitter.uint8_batches
    jitter.trainer = trainer("cuda")  # no kernel runs: only the placement decision is tested
    assert jitter.uint8_batches
    plain.trainer = trainer("cpu")
    assert plain.uint8_batches
    clips, labels, index = next(iter(plain.val_dataloader()))  # rebuilt: the output type changed
    assert clips.dtype == torch.uint8 and clips.shape == (4, 3, 4, 32, 32)
    out = plain.on_after_batch_transfer((clips, labels, index), 0)
    # Finishing on the device gives the very batch the workers would have made.
    torch.testing.assert_close(out[0], float_clips)
    assert make_dm(synthetic_root, gpu_augment=False).uint8_batches is False


def test_invalid_options_name_the_setting(synthetic_root):
    with pytest.raises(ValueError, match="data.gpu_augment"):
        make_dm(synthetic_root, gpu_augment="gpu")
    for kw, match in (({"backend": "lmdb"}, "data.backend"), ({"sampling": "random"}, "data.sampling"),
                      ({"pad": "mirror"}, "data.pad"), ({"bad_video_policy": "ignore"}, "bad_video_policy")):
        with pytest.raises(ValueError, match=match):
            make_dm(synthetic_root, **kw)
    with pytest.raises(ValueError, match="train_crop"):
        ClipTransform(32, 40, True, train_crop="center")


def test_dataset_accepts_a_minimal_reader(synthetic_root):
    """Third-party readers need only ``num_frames`` and ``read`` (the VideoReader protocol)."""

    class Minimal:
        def __init__(self):
            self.inner = DecordReader()

        def num_frames(self, path):
            return self.inner.num_frames(path)

        def read(self, path, indices):
            return self.inner.read(path, indices)

    records = make_dm(synthetic_root).annotations.records("val")[:2]
    ds = VideoDataset(records, Minimal(), SegmentSampler(4), ClipTransform(32, 40, False), train=False)
    assert ds[1][0].shape == (3, 4, 32, 32)
    assert np.isfinite(ds[0][0].numpy()).all()
