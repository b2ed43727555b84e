"""The input protocol of each original code base, as a function of what varies between releases.

Every released checkpoint of a family was trained and tested by the same scripts; only frames,
sizes and the dataset's view count change. The registry builds its entries from these
functions and the converters build the protocol of a file without a registry entry from them
too (from the training config inside the file where there is one), so both say the same thing.
Each docstring names the original code the values come from.
"""

from __future__ import annotations

from actionlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, VIT_MEAN, VIT_STD
from actionlab.pretrained.protocol import InputProtocol

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PYSLOWFAST_MEAN",
    "PYSLOWFAST_STD",
    "SRTG_MEAN",
    "SRTG_STD",
    "VIT_MEAN",
    "VIT_STD",
    "pyslowfast_kinetics",
    "srtg_hacs",
    "tokshift_kinetics",
    "tsn_segments",
    "vov3d_something",
]

PYSLOWFAST_MEAN = (0.45, 0.45, 0.45)
PYSLOWFAST_STD = (0.225, 0.225, 0.225)
# SRTG/MTNet network/config.py: written as RGB means but applied to OpenCV's BGR frames, so the
# first value meets the blue channel; kept in that (BGR) order with channel_order=bgr.
SRTG_MEAN = (124 / 255, 117 / 255, 104 / 255)
SRTG_STD = (1 / (0.0167 * 255),) * 3

TSM_REFERENCE = (
    "TSM test_models.py: frames of ops/dataset.py _get_test_indices (segment centres; "
    "--twice_sample adds the segment starts), GroupScale(256) + GroupCenterCrop(224) for one "
    "crop, GroupFullResSample(224, 256) for --test_crops 3, ToTorchFormatTensor (RGB / 255) + "
    "GroupNormalize(ImageNet mean/std), logits averaged over views"
)
RUBIKSNET_REFERENCE = (
    "RubiksNet scripts/test_models.py (the TSM test pipeline: --two-clips = twice_sample with "
    "3 full-resolution crops; RubiksNet.input_mean/std ImageNet), over " + TSM_REFERENCE
)


def tsn_segments(
    num_frames: int = 8, eval_protocol: str = "2clip", reference: str = TSM_REFERENCE
) -> InputProtocol:
    """TSM / RubiksNet: ``num_frames`` TSN segments, RGB in [0, 1], ImageNet mean/std, frames
    at short side 256 cut by TSM's multi-scale crops to 224 in training; at test ``1clip``
    (centre crop, 1 view) or ``2clip`` (2 clips x 3 crops), logits averaged."""
    views = {"1clip": (1, 1), "2clip": (2, 3)}[eval_protocol]
    return InputProtocol(
        channel_order="rgb",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        sampling="segment",
        num_frames=num_frames,
        sampling_rate=None,
        target_fps=None,
        train_scale=(256, 256),
        train_crop=224,
        test_scale=256,
        test_crop=224,
        clips=views[0],
        crops=views[1],
        aggregate="logits_mean",
        eval_protocol=eval_protocol,
        reference=reference,
    )


PYSLOWFAST_REFERENCE = (
    "PySlowFast tools/test_net.py with datasets/kinetics.py: decoder.py get_start_end_idx + "
    "temporal_sampling (TEST.NUM_ENSEMBLE_VIEWS clips of NUM_FRAMES x SAMPLING_RATE at "
    "TARGET_FPS 30), utils.spatial_sampling + transform.uniform_crop (NUM_SPATIAL_CROPS crops "
    "at short side TEST_CROP_SIZE), tensor_normalize(DATA.MEAN, DATA.STD) on RGB / 255, the "
    "X3D head's AvgPool3d from NUM_FRAMES x ceil(TRAIN_CROP_SIZE / 32) with per-position "
    "softmax, TestMeter summing the views' probabilities"
)


def pyslowfast_kinetics(
    num_frames: int,
    sampling_rate: int,
    train_crop: int,
    test_crop: int,
    jitter: tuple[int, int],
    mean: tuple[float, float, float] = PYSLOWFAST_MEAN,
    std: tuple[float, float, float] = PYSLOWFAST_STD,
    clips: int = 10,
    crops: int = 3,
    target_fps: float = 30.0,
    reference: str = PYSLOWFAST_REFERENCE,
) -> InputProtocol:
    """X3D (PySlowFast) and VoV3D on Kinetics: a dense clip of ``num_frames`` frames
    ``sampling_rate`` apart at 30 fps, RGB / 255 with mean 0.45 / std 0.225, short side jittered
    in ``jitter`` and ``train_crop`` crops in training; ``clips`` x ``crops`` views of
    ``test_crop`` at short side ``test_crop`` and the released head at test, probabilities
    summed (``configs/Kinetics/X3D_*.yaml``)."""
    return InputProtocol(
        channel_order="rgb",
        mean=mean,
        std=std,
        sampling="dense",
        num_frames=num_frames,
        sampling_rate=sampling_rate,
        target_fps=target_fps,
        train_scale=tuple(jitter),
        train_crop=train_crop,
        test_scale=test_crop if crops > 1 else jitter[0],
        test_crop=test_crop,
        clips=clips,
        crops=crops,
        aggregate="sum",
        eval_protocol="pyslowfast_10x3",
        model_options={"release_head": True, "train_crop_size": train_crop},
        reference=reference,
    )


VOV3D_REFERENCE = (
    "VoV3D tools/test_net.py with vov3d/datasets/ssv2.py (ssv1.py alike): NUM_FRAMES segments "
    "of [round(seg*i), round(seg*(i+1))], a frame drawn per segment for each of the "
    "NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS views, OpenCV frames reversed to RGB "
    "(REVERSE_INPUT_CHANNEL) / 255, DATA.MEAN 0.45 / DATA.STD 0.225, uniform_crop at short "
    "side TEST_CROP_SIZE 256, the X3D head's pool from TRAIN_CROP_SIZE 224, TestMeter sum "
    "(configs/SSv1, configs/SSv2; README: 6 views)"
)


def vov3d_something(
    num_frames: int,
    train_crop: int = 224,
    test_crop: int = 256,
    jitter: tuple[int, int] = (256, 320),
    mean: tuple[float, float, float] = PYSLOWFAST_MEAN,
    std: tuple[float, float, float] = PYSLOWFAST_STD,
    clips: int = 2,
    crops: int = 3,
    reference: str = VOV3D_REFERENCE,
) -> InputProtocol:
    """VoV3D and its X3D baselines on Something-Something V1/V2: ``num_frames`` segments,
    RGB / 255 with 0.45 / 0.225, 224 crops of a short side in [256, 320] in training; 2 clips
    x 3 crops of 256 at short side 256 with the released head, probabilities summed."""
    return InputProtocol(
        channel_order="rgb",
        mean=mean,
        std=std,
        sampling="segment",
        num_frames=num_frames,
        sampling_rate=None,
        target_fps=None,
        train_scale=tuple(jitter),
        train_crop=train_crop,
        test_scale=test_crop,
        test_crop=test_crop,
        clips=clips,
        crops=crops,
        aggregate="sum",
        eval_protocol="ssv2_2x3",
        model_options={"release_head": True, "train_crop_size": train_crop},
        reference=reference,
    )


TOKSHIFT_REFERENCE = (
    "TokShift main_ddp_shift_v3.py --evaluate (VAL_SAMPLE_TIMES 10): data/dataset.py read_clip "
    "(T_SIZE frames T_STEP apart, looping short videos), data/augmentation.py Test_ClipAug "
    "(bicubic short side VAL_SHORT_SIDE, centre/left/right VAL_PATCH_SIZE crops, ToTensor + "
    "Normalize(PIXEL_MEAN 127.5 / 255, PIXEL_STD 0.5): pixels in [-1, 1]), validate() "
    "averaging the 30 views' logits (config/custom/kinetics400/k400_*.yml)"
)


def tokshift_kinetics(
    num_frames: int = 8, size: int = 224, train_scale: tuple[int, int] | None = None
) -> InputProtocol:
    """ViT / TokShift on Kinetics-400: ``num_frames`` frames 32 apart (source frame rate,
    looping), RGB mapped to [-1, 1] (mean 0.5, std 0.5), bicubic short side = crop = ``size``
    at test, 10 clips x 3 crops, logits averaged."""
    ranges = {224: (224, 330), 256: (256, 380), 384: (384, 512)}
    return InputProtocol(
        channel_order="rgb",
        mean=VIT_MEAN,
        std=VIT_STD,
        sampling="dense",
        num_frames=num_frames,
        sampling_rate=32,
        target_fps=None,
        train_scale=train_scale or ranges.get(size, (size, size)),
        train_crop=size,
        test_scale=size,
        test_crop=size,
        clips=10,
        crops=3,
        aggregate="logits_mean",
        eval_protocol="tokshift_10x3",
        pad="loop",
        reference=TOKSHIFT_REFERENCE,
    )


SRTG_REFERENCE = (
    "SRTG/MTNet train_hacs.py validation: data/video_sampler.py SequentialSampling (clip-length "
    "16, val-frame-interval 2, one of the non-overlapping clips), data/iterator_factory.py "
    "(imgaug Resize shorter side 294, CropToFixedSize 294 then 256 at the centre), frames "
    "decoded by OpenCV (BGR), /255 then network/config.py mean [124, 117, 104] / 255 and std "
    "1 / (0.0167 * 255)"
)


def srtg_hacs(train_crop: int, num_frames: int = 16, interval: int = 2) -> InputProtocol:
    """SRTG / MTNet on HACS: 16 frames 2 apart, OpenCV BGR / 255 with the repository's mean
    and std, ``train_crop`` crops in training (``--clip-size``); validation's single clip and
    centre 256 crop of a 294 short side at test."""
    return InputProtocol(
        channel_order="bgr",
        mean=SRTG_MEAN,
        std=SRTG_STD,
        sampling="dense",
        num_frames=num_frames,
        sampling_rate=interval,
        target_fps=None,
        train_scale=(384, 384),
        train_crop=train_crop,
        test_scale=294,
        test_crop=256,
        clips=1,
        crops=1,
        aggregate="logits_mean",
        eval_protocol="srtg_1x1",
        reference=SRTG_REFERENCE,
    )
