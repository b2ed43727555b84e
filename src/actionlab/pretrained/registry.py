"""The registry of released checkpoints: where each file comes from, what its paper reports and
the input protocol it was trained and tested with (``InputProtocol``).

Every entry is one file an author published: RubiksNet (SSv2, Kinetics), TSM (SSv1, SSv2,
Kinetics), PySlowFast's X3D, the X3D/VoV3D zoo of the VoV3D repository (SSv1, SSv2, Kinetics;
16 and 32 frames; from scratch and Kinetics-pretrained), SRTG and MTNet on HACS, ViT and
TokShift on Kinetics-400 and Google's ImageNet-21k ViT ``.npz``. ``url`` is a direct link
where the authors give one; otherwise ``url`` is None and ``page`` is where to download it by
hand (Google Drive folders, share pages). The numbers are the authors' own tables, with the
views they were measured on.

    from actionlab.pretrained import get
    get("x3d_m_k400").protocol.summary()
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from actionlab.pretrained.families import (
    RUBIKSNET_REFERENCE,
    pyslowfast_kinetics,
    srtg_hacs,
    tokshift_kinetics,
    tsn_segments,
    vov3d_something,
)
from actionlab.pretrained.protocol import InputProtocol

__all__ = ["REGISTRY", "PaperResult", "Release", "find_by_file", "get", "releases"]


@dataclass(frozen=True)
class PaperResult:
    """A reported accuracy (percent) and the views it was measured with."""

    top1: float | None
    top5: float | None
    views: str
    source: str

    def as_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "views": self.views, "source": self.source}


@dataclass(frozen=True)
class Release:
    """One released checkpoint.

    Args:
        name: registry name (``python -m actionlab.pretrained show NAME``).
        family: importer (``python -m actionlab.models.convert <family>``).
        config: model config it converts to (``conf/model/<config>.yaml``).
        dataset: data config of its dataset (``conf/data/<dataset>.yaml``).
        num_classes: classifier outputs.
        file_name: the file's name as published (None where the page does not show it).
        url: direct download link, or None (download by hand from ``page``).
        page: the authors' page listing the file.
        paper: the authors' reported result for this file (None: none reported).
        protocol: the input protocol of that result.
        pretrain: what training started from.
        results: further reported numbers (other view protocols).
        sha256, size: of the published file, where known.
        task: ``eval`` (a classifier to evaluate) or ``init`` (initial weights, no head).
        notes: quirks of the release.
    """

    name: str
    family: str
    config: str
    dataset: str
    num_classes: int
    file_name: str | None
    url: str | None
    page: str
    paper: PaperResult | None
    protocol: InputProtocol
    pretrain: str = "scratch"
    results: tuple[PaperResult, ...] = ()
    sha256: str | None = None
    size: int | None = None
    task: str = "eval"
    notes: str = ""

    @property
    def manual(self) -> bool:
        return self.url is None

    @property
    def source(self) -> str:
        return self.url if self.url else f"manual download: {self.page}"

    def eval_command(self, ckpt_path: str | Path, data_root: str | None = None) -> str:
        """The one ``eval.py`` command that reproduces the paper's row from the converted file."""
        root = data_root or f"/path/to/{self.dataset}"
        return f"python eval.py ckpt_path={ckpt_path} data={self.dataset} data.root={root}"

    def frames_x_crop(self) -> str:
        p = self.protocol
        return f"{p.num_frames}x{p.test_crop}"

    def views(self) -> str:
        return f"{self.protocol.clips}x{self.protocol.crops}"


# ----------------------------------------------------------------------------------------------
# Pages and links (the authors' READMEs).

RUBIKSNET_PAGE = "https://github.com/StanfordVL/RubiksNet#pretrained-models"
RUBIKSNET_URL = "https://github.com/StanfordVL/RubiksNet/raw/master/pretrained/{}"
TSM_PAGE = "https://github.com/mit-han-lab/temporal-shift-module#pretrained-models"
TSM_URL = "https://file.lzhu.me/projects/tsm/models/{}"
PYSLOWFAST_PAGE = "https://github.com/facebookresearch/SlowFast/blob/main/MODEL_ZOO.md"
PYSLOWFAST_URL = "https://dl.fbaipublicfiles.com/pyslowfast/x3d_models/{}"
VOV3D_PAGE = "https://github.com/youngwanLEE/VoV3D#main-result"
SRTG_PAGE = "https://github.com/alexandrosstergiou/Squeeze-and-Recursion-Temporal-Gates#pre-trained-weights"
TOKSHIFT_PAGE = "https://github.com/VideoNetworks/TokShift-Transformer#model-zoo-and-baselines"
VIT_URL = "https://storage.googleapis.com/vit_models/imagenet21k/{}"
VIT_PAGE = "https://github.com/google-research/vision_transformer#available-vit-models"


def _rubiksnet() -> list[Release]:
    # README table (2-clip) and the eval logs it links (1-clip), SSv2 validation set.
    ssv2 = (
        ("tiny", "rubiks_tiny", "ssv2_tiny.pth.tar", (56.7, 84.1), (54.60, 82.04)),
        ("small", "rubiks_small", "ssv2_small.pth.tar", (59.8, 86.2), (57.46, 84.34)),
        ("medium", "rubiks_medium", "ssv2_medium.pth.tar", (60.8, 86.9), (58.33, 84.97)),
        ("large", "rubiks_large", "ssv2_large.pth.tar", (61.7, 87.3), (58.95, 85.19)),
        ("large_aq", "rubiks_large_aq", "ssv2_large_aq_budget0.125.pth.tar", (61.6, 86.7), (58.57, 84.65)),
    )
    out = [
        Release(
            name=f"rubiksnet_{tier}_ssv2",
            family="rubiksnet",
            config=config,
            dataset="ssv2",
            num_classes=174,
            file_name=file,
            url=RUBIKSNET_URL.format(file),
            page=RUBIKSNET_PAGE,
            paper=PaperResult(*two, "2 clips x 3 crops", "RubiksNet README table"),
            results=(PaperResult(*one, "1 clip, centre crop", "RubiksNet scripts/eval_logs"),),
            protocol=tsn_segments(8, "2clip", RUBIKSNET_REFERENCE),
            pretrain="ImageNet (2D)",
            notes="Git LFS file of the repository"
            + ("; AQ budget 0.125 (rubiks3d-aq)" if tier == "large_aq" else ""),
        )
        for tier, config, file, two, one in ssv2
    ]
    out += [
        Release(
            name=f"rubiksnet_{tier}_kinetics",
            family="rubiksnet",
            config=f"rubiks_{tier}",
            dataset="kinetics400",
            num_classes=400,
            file_name=f"kinetics_{tier}.pth.tar",
            url=RUBIKSNET_URL.format(f"kinetics_{tier}.pth.tar"),
            page=RUBIKSNET_PAGE,
            paper=None,
            protocol=tsn_segments(8, "1clip", RUBIKSNET_REFERENCE),
            pretrain="ImageNet (2D)",
            notes="Kinetics pre-training checkpoint for fine-tuning; the README reports no "
            "Kinetics accuracy. Protocol: TSM's Kinetics test (8 segments, 1 centre crop)",
        )
        for tier in ("tiny", "small", "medium", "large")
    ]
    return out


def _tsm() -> list[Release]:
    rows = (
        # name, config, dataset, classes, frames, file, primary (top1, views), 1-clip result
        ("tsm_r50_ssv2_8f", "tsm_r50", "ssv2", 174, 8,
         "TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth", 61.2, None),
        ("tsm_r50_ssv2_16f", "tsm_r50", "ssv2", 174, 16,
         "TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment16_e45.pth", 63.1, None),
        ("tsm_r101_ssv2_8f", "tsm_r101", "ssv2", 174, 8,
         "TSM_somethingv2_RGB_resnet101_shift8_blockres_avg_segment8_e45.pth", 63.3, None),
        ("tsm_r50_ssv1_8f", "tsm_r50", "ssv1", 174, 8,
         "TSM_something_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth", 47.2, 45.6),
        ("tsm_r50_ssv1_16f", "tsm_r50", "ssv1", 174, 16,
         "TSM_something_RGB_resnet50_shift8_blockres_avg_segment16_e45.pth", 48.4, 47.2),
        ("tsm_r101_ssv1_8f", "tsm_r101", "ssv1", 174, 8,
         "TSM_something_RGB_resnet101_shift8_blockres_avg_segment8_e45.pth", 48.7, 46.9),
    )
    out = [
        Release(
            name=name,
            family="tsm",
            config=config,
            dataset=dataset,
            num_classes=classes,
            file_name=file,
            url=TSM_URL.format(file),
            page=TSM_PAGE,
            paper=PaperResult(top1, None, "2 clips x 3 crops (full resolution)", "TSM README"),
            results=(PaperResult(one, None, "1 clip, centre crop", "TSM README"),) if one else (),
            protocol=tsn_segments(frames, "2clip"),
            pretrain="ImageNet",
        )
        for name, config, dataset, classes, frames, file, top1, one in rows
    ]
    for frames, top1, ten in ((8, 71.2, 72.8), (16, 72.6, 73.7)):
        file = f"TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment{frames}_e50.pth"
        out.append(
            Release(
                name=f"tsm_r50_kinetics_{frames}f",
                family="tsm",
                config="tsm_r50",
                dataset="kinetics400",
                num_classes=400,
                file_name=file,
                url=TSM_URL.format(file),
                page=TSM_PAGE,
                paper=PaperResult(top1, None, "1 clip, centre crop (uniform sampling)", "TSM README"),
                results=(PaperResult(ten, None, "1 clip x 10 crops (flips)", "TSM README"),),
                protocol=tsn_segments(frames, "1clip"),
                pretrain="ImageNet",
                notes="the 10-crop number (--test_crops 10) has no lab protocol",
            )
        )
    return out


def _pyslowfast_x3d() -> list[Release]:
    # MODEL_ZOO.md: top-1 of 10 views (10 clips x 1 crop) and 30 views; configs/Kinetics/X3D_*.yaml.
    rows = (
        ("xs", 4, 12, 160, 182, (182, 228), 69.5, 68.7),
        ("s", 13, 6, 160, 182, (182, 228), 73.5, 73.1),
        ("m", 16, 5, 224, 256, (256, 320), 76.2, 75.1),
        ("l", 16, 5, 312, 356, (356, 446), 77.5, 76.9),
    )
    out = []
    for size, frames, rate, train_crop, test_crop, jitter, top1, top1_10 in rows:
        extra = [PaperResult(top1_10, None, "10 clips x 1 crop", "PySlowFast MODEL_ZOO")]
        if size == "m":
            extra.append(PaperResult(76.0, 92.3, "10 clips x 3 crops", "VoV3D README (re-tested)"))
        out.append(
            Release(
                name=f"x3d_{size}_k400",
                family="x3d",
                config=f"x3d_{size}",
                dataset="kinetics400",
                num_classes=400,
                file_name=f"x3d_{size}.pyth",
                url=PYSLOWFAST_URL.format(f"x3d_{size}.pyth"),
                page=PYSLOWFAST_PAGE,
                paper=PaperResult(
                    top1, 92.9 if size == "l" else None, "10 clips x 3 crops",
                    "PySlowFast MODEL_ZOO" + (" (top-5: VoV3D README)" if size == "l" else ""),
                ),
                results=tuple(extra),
                protocol=pyslowfast_kinetics(frames, rate, train_crop, test_crop, jitter),
                notes="XS, S and M are one network; the file's cfg gives frames and crops",
            )
        )
    return out


def _vov3d_zoo() -> list[Release]:
    """VoV3D README tables (``configs/SSv1``, ``configs/SSv2``, ``configs/Kinetics``)."""
    dropbox = "https://dl.dropbox.com/s/{}"
    dooray = "https://etri.gov-dooray.com/share/drive-files/kdhawuidbrbd.{}"
    rows = (
        # name, family, config, dataset, frames, pretrain, (top1, top5), dropbox path or dooray id
        ("x3d_m_ssv1", "x3d", "x3d_m", "ssv1", 16, "scratch", (46.4, 75.3), "lb9uvj4tl19xzmn/x3d_M_ssv1.pth"),
        ("vov3d_m_f16_ssv1", "vov3d", "vov3d_m", "ssv1", 16, "scratch", (48.1, 76.9), "usbcudmhpknqvtd/vov3d_M_f16_ssv1.pth"),
        ("vov3d_m_f32_ssv1", "vov3d", "vov3d_m", "ssv1", 32, "scratch", (49.8, 78.0), "fvet69zyeswe25v/vov3d_M_f32_ssv1.pth"),
        ("vov3d_m_f32_k400_ssv1", "vov3d", "vov3d_m", "ssv1", 32, "K400", (52.6, 80.4), "C59lPfB2Toul7wcFMk1yeQ"),
        ("x3d_l_ssv1", "x3d", "x3d_l", "ssv1", 16, "scratch", (47.0, 76.4), "yixwwfv6mv2bpnd/x3d_L_ssv1.pth"),
        ("vov3d_l_f16_ssv1", "vov3d", "vov3d_l", "ssv1", 16, "scratch", (49.5, 78.0), "bdjam5tyaedkczl/vov3d_L_f16_ssv1.pth"),
        ("vov3d_l_f32_ssv1", "vov3d", "vov3d_l", "ssv1", 32, "scratch", (50.6, 78.7), "g6lc5sj8h7f2r5v/vov3d_L_f32_ssv1.pth"),
        ("vov3d_l_f32_k400_ssv1", "vov3d", "vov3d_l", "ssv1", 32, "K400", (54.9, 82.3), "r2fJ4HSDSWmFYNo1ARZuHQ"),
        ("x3d_m_ssv2", "x3d", "x3d_m", "ssv2", 16, "scratch", (63.0, 87.9), "b6gjywzrn85sa89/x3d_M_ssv2.pth"),
        ("vov3d_m_f16_ssv2", "vov3d", "vov3d_m", "ssv2", 16, "scratch", (63.2, 88.2), "hz34ltdl6iukdxc/vov3d_M_f16_ssv2.pth"),
        ("vov3d_m_f32_ssv2", "vov3d", "vov3d_m", "ssv2", 32, "scratch", (64.2, 88.8), "z6qtyjgf0v13jnq/vov3d_M_f32_ssv2.pth"),
        ("vov3d_m_f32_k400_ssv2", "vov3d", "vov3d_m", "ssv2", 32, "K400", (65.2, 89.4), "PHQw3KwbRI-lIcopWjm-ew"),
        ("x3d_l_ssv2", "x3d", "x3d_l", "ssv2", 16, "scratch", (62.7, 87.7), "iaqwbejrkbd7372/x3d_L_ssv2.pth"),
        ("vov3d_l_f16_ssv2", "vov3d", "vov3d_l", "ssv2", 16, "scratch", (64.1, 88.6), "678efl8zyrmq7ch/vov3d_L_f16_ssv2.pth"),
        ("vov3d_l_f32_ssv2", "vov3d", "vov3d_l", "ssv2", 32, "scratch", (65.8, 89.5), "f4330e5htdiwqa5/vov3d_L_f32_ssv2.pth"),
        ("vov3d_l_f32_k400_ssv2", "vov3d", "vov3d_l", "ssv2", 32, "K400", (67.3, 90.5), "pEg57hjpSkOp2boe1oNZvQ"),
    )
    out = []
    for name, family, config, dataset, frames, pretrain, (top1, top5), where in rows:
        direct = "/" in where
        out.append(
            Release(
                name=name,
                family=family,
                config=config,
                dataset=dataset,
                num_classes=174,
                file_name=where.rsplit("/", 1)[1] if direct else None,
                url=dropbox.format(where) if direct else None,
                page=VOV3D_PAGE if direct else dooray.format(where),
                paper=PaperResult(top1, top5, "2 clips x 3 crops", "VoV3D README"),
                protocol=vov3d_something(frames),
                pretrain=pretrain,
                notes=(
                    "X3D baseline of the VoV3D repository; its yaml tests 1 x 1 at 224, the README "
                    "table reports 6 views at 256"
                    if family == "x3d"
                    else ("" if direct else "Dooray share page (no direct link)")
                ),
            )
        )
    kinetics = (
        ("x3d_m_256e_k400", "x3d", "x3d_m", (75.0, 92.1), "s87lnn7ch4a6e47/x3d_M_256e_k400.pth", "X3D-M retrained 256 epochs"),
        ("vov3d_m_k400", "vov3d", "vov3d_m", (73.9, 91.6), "hpk172nbvm3w5p1/vov3d_M_k400.pth", ""),
        ("vov3d_l_k400", "vov3d", "vov3d_l", (76.3, 92.9), "lzmq8d4dqyj8fj6/vov3d_L_k400.pth", ""),
    )
    for name, family, config, (top1, top5), where, notes in kinetics:
        out.append(
            Release(
                name=name,
                family=family,
                config=config,
                dataset="kinetics400",
                num_classes=400,
                file_name=where.rsplit("/", 1)[1],
                url=dropbox.format(where),
                page=VOV3D_PAGE,
                paper=PaperResult(top1, top5, "10 clips x 3 crops", "VoV3D README"),
                protocol=pyslowfast_kinetics(16, 5, 224, 256, (256, 320)),
                notes=notes,
            )
        )
    return out


def _srtg() -> list[Release]:
    """SRTG README "Models trained on HACS" (links to per-model downloads, no file names)."""
    rows = (
        ("srtg_r3d_34", "srtg", 264, (78.599, 93.569), "README row reads srtg_r3d_32 (a typo for 34)"),
        ("srtg_r3d_50", "srtg", 264, (80.362, 95.548), ""),
        ("srtg_r3d_101", "srtg", 264, (81.659, 96.326), ""),
        ("srtg_r2plus1d_50", "srtg", 264, (83.774, 96.560), ""),
        ("srtg_r2plus1d_101", "srtg", 264, (84.326, 96.852), "the README links the same file as srtg_r2plus1d_50"),
        ("mtnet_s", "mtnet", 256, (80.712, 95.182), ""),
        ("mtnet_m", "mtnet", 256, (83.447, 95.872), ""),
        ("mtnet_l", "mtnet", 256, (86.574, 96.658), ""),
    )
    quirk = (
        "trained through the repository's scripts, whose name dispatch builds the plain "
        "r3d/r2plus1d network for srtg_* names: the converter infers the architecture from the keys"
    )
    return [
        Release(
            name=f"{config}_hacs",
            family=family,
            config=config,
            dataset="hacs",
            num_classes=200,
            file_name=None,
            url=None,
            page=SRTG_PAGE,
            paper=PaperResult(top1, top5, "1 clip, centre crop (validation)", "SRTG README"),
            protocol=srtg_hacs(crop),
            notes="; ".join(n for n in (note, quirk if family == "srtg" else "", "trained in float16 (apex O1)") if n),
        )
        for config, family, crop, (top1, top5), note in rows
    ]


def _tokshift() -> list[Release]:
    """TokShift README model zoo (Google Drive folders), 30-view Kinetics-400 top-1."""
    rows = (
        ("vit_b16_8x224_k400", "vit_base", 8, 224, 76.02, "best_vit_B8x32x224_k400.pth"),
        ("tokshift_b16_8x224_k400", "tokshift_base", 8, 224, 77.28, None),
        ("tokshift_b16_8x256_k400", "tokshift_base", 8, 256, 77.68, None),
        ("tokshift_b16_8x384_k400", "tokshift_base", 8, 384, 78.14, None),
        ("tokshift_b16_16x224_k400", "tokshift_base", 16, 224, 78.18, None),
        ("tokshift_l16_8x384_k400", "tokshift_large", 8, 384, 79.83, None),
        ("tokshift_l16_12x384_k400", "tokshift_large", 12, 384, 80.40, None),
    )
    return [
        Release(
            name=name,
            family="tokshift",
            config=config,
            dataset="kinetics400",
            num_classes=400,
            file_name=file,
            url=None,
            page=TOKSHIFT_PAGE,
            paper=PaperResult(top1, None, "10 clips x 3 crops", "TokShift README"),
            protocol=tokshift_kinetics(frames, size),
            pretrain="ImageNet-21k",
            notes="Google Drive folder; ViT and TokShift files have the same keys, the entry "
            "decides which model they load into",
        )
        for name, config, frames, size, top1, file in rows
    ]


def _vit_npz() -> list[Release]:
    return [
        Release(
            name=f"vit_{size.lower()}16_in21k",
            family="vit",
            config=f"tokshift_{'base' if size == 'B' else 'large'}",
            dataset="kinetics400",
            num_classes=400,
            file_name=f"ViT-{size}_16.npz",
            url=VIT_URL.format(f"ViT-{size}_16.npz"),
            page=VIT_PAGE,
            paper=None,
            protocol=tokshift_kinetics(8, 224 if size == "B" else 384),
            pretrain="ImageNet-21k",
            task="init",
            notes="initial weights of the TokShift recipes (TokShift's ViT-"
            f"{size}_16_Img21.npz is a copy); the classifier starts at zero",
        )
        for size in ("B", "L")
    ]


REGISTRY: dict[str, Release] = {
    r.name: r
    for r in (*_rubiksnet(), *_tsm(), *_pyslowfast_x3d(), *_vov3d_zoo(), *_srtg(), *_tokshift(), *_vit_npz())
}


def releases(family: str | None = None, dataset: str | None = None) -> list[Release]:
    """Entries in table order, optionally of one family / dataset."""
    return [
        r
        for r in REGISTRY.values()
        if (family is None or r.family == family) and (dataset is None or r.dataset == dataset)
    ]


def get(name: str) -> Release:
    """The entry called ``name``, or a KeyError that lists the closest names."""
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(
        f"no released checkpoint called {name!r} in actionlab.pretrained{hint} "
        "(python -m actionlab.pretrained list shows them all)"
    )


def find_by_file(file_name: str | Path) -> Release | None:
    """The entry whose published file has this name (case-sensitive), if any."""
    base = Path(file_name).name
    for release in REGISTRY.values():
        if release.file_name and release.file_name == base:
            return release
    return None
