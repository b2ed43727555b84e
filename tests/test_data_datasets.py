"""Annotation parsers of every benchmark on fixtures in the official layouts, and the data configs."""

import shutil
from pathlib import Path

import hydra

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from actionlab.data.datasets.base import DatasetLayoutError
from actionlab.data.datasets.diving48 import Diving48Annotations
from actionlab.data.datasets.filelist import ListAnnotations
from actionlab.data.datasets.folder import FolderAnnotations
from actionlab.data.datasets.hacs import HACSAnnotations
from actionlab.data.datasets.hmdb51 import HMDB51Annotations
from actionlab.data.datasets.kinetics import KineticsAnnotations
from actionlab.data.datasets.mit import MomentsInTimeAnnotations
from actionlab.data.datasets.ssv1 import SSv1Annotations
from actionlab.data.datasets.ssv2 import SSv2Annotations
from actionlab.data.datasets.ucf101 import UCF101Annotations

FIX = Path(__file__).parent / "fixtures"


def labels(records):
    return [(r.video_id, r.label) for r in records]


def test_ssv1_sorted_classes_semicolon_csv_frame_folders():
    ann = SSv1Annotations(str(FIX / "ssv1"))
    assert ann.class_names == [
        "Approaching something with your camera",
        "Pushing something from left to right",
        "Pushing something from right to left",
        "Tearing something into two pieces",
    ]
    train = ann.records("train")
    assert labels(train) == [("100218", 1), ("48032", 3), ("9", 0)]
    assert train[0].path == str(FIX / "ssv1" / "20bn-something-something-v1" / "100218")  # a frame folder
    assert labels(ann.records("val")) == [("1420", 2)] == labels(ann.records("test"))
    test = SSv1Annotations(str(FIX / "ssv1"), test_file="something-something-v1-test.csv").records("test")
    assert labels(test) == [("77", -1), ("78", -1)]


def test_kinetics_csv_names_and_sorted_classes():
    ann = KineticsAnnotations(str(FIX / "kinetics400"))
    assert ann.class_names == ["abseiling", "passing American football (in game)", "zumba"]
    train = ann.records("train")
    assert labels(train) == [("--07WQ2iBlw_000001_000011", 0), ("-0A7nFrCb5c_000035_000045", 2),
                             ("-1a7dU2VT3Q_000104_000114", 1), ("-3B32lodo2M_000059_000069", 0)]
    assert train[0].path == str(FIX / "kinetics400" / "train" / "--07WQ2iBlw_000001_000011.mp4")
    val = ann.records("val")  # extra is_cc column is ignored
    assert labels(val) == [("0wR5jVB-WPk_000417_000427", 2), ("3caPS4FHFF8_000036_000046", 1)]
    assert val[0].path.endswith("kinetics400/val/0wR5jVB-WPk_000417_000427.mp4")
    sub = KineticsAnnotations(str(FIX / "kinetics400"), label_subdirs=True, ext="")
    assert sub.records("val")[1].path.endswith(
        "val/passing_American_football_(in_game)/3caPS4FHFF8_000036_000046")
    test = KineticsAnnotations(str(FIX / "kinetics400"), files={"train": "annotations/train.csv",
                               "val": "annotations/val.csv", "test": "annotations/test.csv"}).records("test")
    assert labels(test) == [("--33Lscn6sk_000004_000014", -1)]


def test_hacs_positive_clips_windows_and_negatives():
    ann = HACSAnnotations(str(FIX / "hacs"))
    assert ann.class_names == ["Archery", "Blow-drying hair", "Zumba"]
    train = ann.records("train")
    assert [(r.label, r.start, r.end) for r in train] == [(0, 3.5, 5.5), (2, 12.0, 14.0)]
    assert train[0].path == str(FIX / "hacs" / "videos" / "Archery" / "v_0F4IOu5n_TA.mp4")
    val = ann.records("val")
    assert [(r.label, r.start) for r in val] == [(1, 100.2)]
    assert val[0].path.endswith("videos/Blow-drying_hair/v_a1b2c3d4e5f.mp4")
    neg = HACSAnnotations(str(FIX / "hacs"), include_negatives=True)
    assert neg.class_names[-1] == "background" and len(neg.class_names) == 4
    assert [r.label for r in neg.records("train")] == [0, 3, 2]
    clips = HACSAnnotations(str(FIX / "hacs"), layout="clips").records("train")
    assert clips[0].path.endswith("videos/Archery/0F4IOu5n_TA_000003_000005.mp4") and clips[0].start is None


@pytest.mark.parametrize("split, train, test", [
    (1, [("v_ApplyEyeMakeup_g08_c01", 0), ("v_Archery_g08_c02", 2), ("v_ApplyLipstick_g09_c01", 1)],
     [("v_ApplyEyeMakeup_g01_c01", 0), ("v_Archery_g01_c03", 2)]),
    (2, [("v_ApplyEyeMakeup_g01_c01", 0), ("v_Archery_g01_c03", 2)], [("v_ApplyLipstick_g09_c01", 1)]),
    (3, [("v_Archery_g08_c02", 2)], [("v_ApplyEyeMakeup_g08_c01", 0), ("v_ApplyLipstick_g09_c01", 1)]),
])
def test_ucf101_three_official_splits(split, train, test):
    ann = UCF101Annotations(str(FIX / "ucf101"), split=split)
    assert ann.class_names == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert labels(ann.records("train")) == train
    assert labels(ann.records("val")) == test == labels(ann.records("test"))
    path = ann.records("train")[0].path
    assert path.startswith(str(FIX / "ucf101" / "UCF-101")) and path.endswith(".avi")


def test_ucf101_rejects_unknown_split_and_ext_override():
    with pytest.raises(ValueError, match="data.split must be 1, 2 or 3"):
        UCF101Annotations(str(FIX / "ucf101"), split=4)
    ann = UCF101Annotations(str(FIX / "ucf101"), ext="mp4")
    assert ann.records("train")[0].path.endswith("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.mp4")


@pytest.mark.parametrize("split, train_ids, test_ids", [(1, "a", "b"), (2, "c", "a"), (3, "b", "c")])
def test_hmdb51_three_official_splits(split, train_ids, test_ids):
    ann = HMDB51Annotations(str(FIX / "hmdb51"), split=split)
    assert ann.class_names == ["brush_hair", "cartwheel", "wave"]
    train, test = ann.records("train"), ann.records("test")
    # Flag 1 = train, 2 = test, 0 = unused; one video of each kind per class and split.
    assert [(r.video_id.split("_")[-7], r.label) for r in train] == [(train_ids, i) for i in range(3)]
    assert [(r.video_id.split("_")[-7], r.label) for r in test] == [(test_ids, i) for i in range(3)]
    assert train[2].path == str(FIX / "hmdb51" / "hmdb51" / "wave" / f"wave_{train_ids}_u_nm_np1_fr_goo_"
                                f"{'abc'.index(train_ids)}.avi")


def test_diving48_json_and_vocabulary():
    ann = Diving48Annotations(str(FIX / "diving48"))
    assert ann.class_names == ["Back 15som 05Twis FREE", "Back 15som 15Twis FREE", "Inward 25som NoTwis PIKE"]
    assert labels(ann.records("train")) == [("-mmq0PT-u8k_00155", 0), ("-mmq0PT-u8k_00156", 2)]
    assert labels(ann.records("val")) == [("0uPeEVCHXAc_00002", 1)]
    assert ann.records("train")[0].path == str(FIX / "diving48" / "rgb" / "-mmq0PT-u8k_00155.mp4")


def test_moments_in_time_category_ids():
    ann = MomentsInTimeAnnotations(str(FIX / "mit"))
    assert ann.class_names == ["adult+female+singing", "clapping", "walking"]
    train = ann.records("train")
    assert labels(train) == [("0a2b3c", 0), ("yt-abc_12", 2), ("flickr-1", 1)]
    assert train[0].path == str(FIX / "mit" / "training" / "adult+female+singing" / "0a2b3c.mp4")
    assert labels(ann.records("test")) == [("zz", 2)]
    assert ann.records("val")[0].path.startswith(str(FIX / "mit" / "validation"))


def test_list_files_two_and_three_columns():
    ann = ListAnnotations(str(FIX / "list"), classes_file="classes.txt")
    assert ann.class_names == ["dog", "cat", "bird"]
    train = ann.records("train")
    assert [(r.path, r.label, r.num_frames) for r in train] == [
        (str(FIX / "list" / "videos" / "cat 1.mp4"), 1, None),  # a path with a space
        (str(FIX / "list" / "videos" / "dog.mp4"), 0, None),
        (str(FIX / "list" / "frames" / "bird"), 2, 120),  # TSM list: frame count known
    ]
    assert ListAnnotations(str(FIX / "list")).class_names == ["0", "1", "2"]
    assert labels(ann.records("test")) == [("owl", 2)]


def test_list_rejects_labels_outside_classes(tmp_path):
    (tmp_path / "train.txt").write_text("a.mp4 0\nb.mp4 5\n")
    (tmp_path / "classes.txt").write_text("x\ny\n")
    with pytest.raises(DatasetLayoutError, match="label 5 of .*b.mp4 is outside 0..1"):
        ListAnnotations(str(tmp_path), classes_file="classes.txt").records("train")


def test_folder_dataset(tmp_path):
    for split, cls, name in (("train", "jump", "a.mp4"), ("train", "jump", "b.AVI"), ("train", "run", "c.webm"),
                             ("train", "run", "notes.txt"), ("val", "run", "d.mkv")):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        (tmp_path / split / cls / name).write_bytes(b"")
    (tmp_path / "train" / "run" / "e").mkdir()  # a frame folder
    ann = FolderAnnotations(str(tmp_path))
    assert ann.class_names == ["jump", "run"]
    assert labels(ann.records("train")) == [("a", 0), ("b", 0), ("c", 1), ("e", 1)]
    assert labels(ann.records("val")) == [("d", 1)] == labels(ann.records("test"))
    (tmp_path / "val" / "fly").mkdir()
    with pytest.raises(DatasetLayoutError, match="fly is not a class"):
        ann.records("val")


@pytest.mark.parametrize("ann", [
    lambda r: SSv1Annotations(r).class_names, lambda r: KineticsAnnotations(r).class_names,
    lambda r: HACSAnnotations(r).class_names, lambda r: UCF101Annotations(r).class_names,
    lambda r: HMDB51Annotations(r).class_names, lambda r: Diving48Annotations(r).class_names,
    lambda r: MomentsInTimeAnnotations(r).class_names, lambda r: FolderAnnotations(r).class_names,
    lambda r: ListAnnotations(r).class_names,
])
def test_missing_dataset_explains_layout(tmp_path, ann):
    with pytest.raises(DatasetLayoutError, match="expected .* under data.root"):
        ann(str(tmp_path / "nowhere"))


EXPECTED = {
    "ssv2": (174, "SSv2Annotations"), "ssv1": (174, "SSv1Annotations"),
    "kinetics400": (400, "KineticsAnnotations"), "kinetics600": (600, "KineticsAnnotations"),
    "kinetics700": (700, "KineticsAnnotations"), "hacs": (200, "HACSAnnotations"),
    "ucf101": (101, "UCF101Annotations"), "hmdb51": (51, "HMDB51Annotations"),
    "diving48": (48, "Diving48Annotations"), "mit": (339, "MomentsInTimeAnnotations"),
    "folder": (None, "FolderAnnotations"), "list": (None, "ListAnnotations"),
    "synthetic": (8, "SyntheticSSv2"),
}


def test_data_configs_build_their_datamodules(tmp_path):
    import hydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        for name, (classes, parser) in EXPECTED.items():
            cfg = compose("train", overrides=[f"data={name}", f"data.root={tmp_path / name}", "data.split=2"])
            if classes is not None:
                assert cfg.data.num_classes == classes, name
            assert cfg.data.annotations._target_.endswith(parser), name
            dm = hydra.utils.instantiate(cfg.data)
            assert type(dm.annotations).__name__ == parser
            if name in ("ucf101", "hmdb51"):
                assert dm.annotations.split == 2  # data.split reaches the parser
    GlobalHydra.instance().clear()


def _swap_left_right(name):
    words = {"left": "right", "right": "left"}
    return " ".join(words.get(w, w) for w in name.split(" "))


def _assert_flip_map_swaps_names(flip_map, names):
    """Each pair of the map is a left/right swap by name, and every such pair is in the map."""
    for a, b in flip_map.items():
        assert flip_map[b] == a and names[b] == _swap_left_right(names[a]) != names[a], (a, b)
    index = {n: i for i, n in enumerate(names)}
    mirrored = {i: index[_swap_left_right(n)] for i, n in enumerate(names)
                if _swap_left_right(n) != n and _swap_left_right(n) in index}
    assert mirrored == dict(flip_map)


def test_flip_maps_swap_left_right_classes_by_name():
    """The real 174-class files (SSv1 label csv in file order, SSv2 labels.json) through the
    parsers: the configs' flip maps name left/right pairs of their class ids."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        v2 = compose("train", overrides=["data=ssv2"])
        v1 = compose("train", overrides=["data=ssv1"])
    GlobalHydra.instance().clear()
    v1_names = SSv1Annotations(str(FIX / "ssv1_release")).class_names  # sorted, as TSM
    v2_names = SSv2Annotations(str(FIX / "ssv2_release")).class_names  # labels.json ids
    assert len(v1_names) == len(v2_names) == 174
    _assert_flip_map_swaps_names(dict(v1.data.flip_label_map), v1_names)
    _assert_flip_map_swaps_names(dict(v2.data.flip_label_map), v2_names)
    assert dict(v1.data.flip_label_map) == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert (v1_names[86], v1_names[167]) == (
        "Pulling something from left to right", "Turning the camera right while filming something")
    # mmaction2's sthv1 map {2: 4, 30: 41, 52: 66} numbers the label file's lines, not sorted ids.
    lines = (FIX / "ssv1_release" / "labels" / "something-something-v1-labels.csv").read_text().splitlines()
    assert lines[2] == _swap_left_right(lines[4]) and v1_names[2] != _swap_left_right(v1_names[4])
    assert v1.data.flip is False and v2.data.flip is False  # TSM/RubiksNet recipe: no flip


def test_ssv2_20bn_release_names_labels_dir_and_overrides(tmp_path):
    release = FIX / "ssv2_release"  # something-something-v2-{labels,train,validation,test}.json
    ann = SSv2Annotations(str(release))
    assert labels(ann.records("train")) == [("78687", 86), ("42326", 107), ("100904", 166)]
    assert labels(ann.records("val")) == [("74225", 94)] == labels(ann.records("test"))
    assert labels(SSv2Annotations(str(release), test_file="test.json").records("test")) == [("1420", -1)]
    # Newer packages: the same files under labels/ (short names here).
    (tmp_path / "20bn-something-something-v2").mkdir()
    (tmp_path / "labels").mkdir()
    for kind in ("labels", "train", "validation"):
        shutil.copy(release / f"something-something-v2-{kind}.json", tmp_path / "labels" / f"{kind}.json")
    assert labels(SSv2Annotations(str(tmp_path)).records("val")) == [("74225", 94)]
    # Any other name, from the data config.
    shutil.move(tmp_path / "labels" / "validation.json", tmp_path / "val_split.json")
    with pytest.raises(DatasetLayoutError, match="(?s)tried .*validation.json.*data.annotations.val_file"):
        SSv2Annotations(str(tmp_path)).records("val")
    assert labels(SSv2Annotations(str(tmp_path), val_file="val_split.json").records("val")) == [("74225", 94)]


def test_ssv2_release_layout_through_the_data_config():
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["data=ssv2", f"data.root={FIX / 'ssv2_release'}"])
    GlobalHydra.instance().clear()
    dm = hydra.utils.instantiate(cfg.data)
    assert len(dm.class_names) == 174 and len(dm.annotations.records("train")) == 3


def test_ssv1_files_under_labels_and_overridable(tmp_path):
    ann = SSv1Annotations(str(FIX / "ssv1_release"))  # every csv under labels/
    assert labels(ann.records("train")) == [("100218", 93), ("48032", 167)]
    assert labels(ann.records("val")) == [("1420", 87)]
    renamed = tmp_path / "ssv1"
    shutil.copytree(FIX / "ssv1_release", renamed)
    shutil.move(renamed / "labels" / "something-something-v1-labels.csv", renamed / "classes.txt")
    with pytest.raises(DatasetLayoutError, match="data.annotations.labels_file"):
        SSv1Annotations(str(renamed)).class_names
    assert len(SSv1Annotations(str(renamed), labels_file="classes.txt").class_names) == 174


@pytest.mark.parametrize("naming", ["downloader", "mmaction2"])
def test_kinetics_class_folders_with_spaces_or_underscores(tmp_path, naming):
    """ActivityNet's downloader names class folders by the class (spaces, parentheses);
    mmaction2's rename_classnames.sh turns the spaces into underscores. Both resolve."""
    root = tmp_path / "k400"
    shutil.copytree(FIX / "kinetics400" / "annotations", root / "annotations")
    ann = KineticsAnnotations(str(root), label_subdirs=True)
    for split in ("train", "val"):
        for cls in ann.class_names:
            folder = cls if naming == "downloader" else cls.replace(" ", "_")
            (root / split / folder).mkdir(parents=True)
        for r in ann.records(split):
            cls = ann.class_names[r.label]
            folder = cls if naming == "downloader" else cls.replace(" ", "_")
            (root / split / folder / (r.video_id + ".mp4")).write_bytes(b"x")
    records = ann.records("train") + ann.records("val")
    assert len(records) == 6 and all(Path(r.path).is_file() for r in records)
    football = [r for r in records if r.video_id == "3caPS4FHFF8_000036_000046"][0]
    assert Path(football.path).parent.name == (
        "passing American football (in game)" if naming == "downloader"
        else "passing_American_football_(in_game)")
