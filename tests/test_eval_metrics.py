"""Score aggregation, DDP gathering/de-duplication, metrics and report files on hand-made scores."""

import csv
import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from actionlab.evaluate import videos_per_batch
from actionlab.lit.module import VideoClassifier, aggregate_views
from actionlab.reports import (
    ReportInfo,
    classification_metrics,
    confusion_matrix,
    dedup_by_index,
    top_confused_pairs,
    write_artefacts,
)

# Two views of one video: view 0 prefers class 0 strongly, view 1 prefers class 1 mildly.
VIEWS = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])


def test_logits_mean_averages_raw_logits():
    assert aggregate_views(VIEWS, "logits_mean").tolist() == [[2.0, 0.5, 0.0]]


def test_softmax_mean_and_sum_average_probabilities():
    e = math.e
    p0 = [e**4 / (e**4 + 2), 1 / (e**4 + 2), 1 / (e**4 + 2)]
    p1 = [1 / (e + 2), e / (e + 2), 1 / (e + 2)]
    mean = [(a + b) / 2 for a, b in zip(p0, p1)]
    torch.testing.assert_close(aggregate_views(VIEWS, "softmax_mean"), torch.tensor([mean]))
    # PySlowFast TestMeter: sum of the per-view probabilities (V times the mean).
    torch.testing.assert_close(aggregate_views(VIEWS, "sum"), torch.tensor([[2 * m for m in mean]]))
    with pytest.raises(ValueError, match="aggregation must be one of"):
        aggregate_views(VIEWS, "max")


def test_aggregations_can_disagree():
    # One confident view against two mildly opposed ones: logits and probabilities rank differently.
    scores = torch.tensor([[[6.0, 0.0], [0.0, 2.5], [0.0, 2.5]]])
    assert aggregate_views(scores, "logits_mean").argmax().item() == 0
    assert aggregate_views(scores, "softmax_mean").argmax().item() == 1


class CountingModel(nn.Module):
    """Logits from the clip mean; records the batch sizes it is called with."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.proj(x.mean(dim=(2, 3, 4)))


def test_view_cap_splits_the_forward_without_changing_scores():
    torch.manual_seed(0)
    model = CountingModel()
    module = VideoClassifier(model, optimizer=None, num_classes=4, aggregate="softmax_mean")
    clips = torch.randn(3, 6, 3, 2, 4, 4)  # (B, V, C, T, H, W)
    full = module(clips)
    assert model.calls == [18]
    model.calls.clear()
    module.max_views_per_batch = 4
    capped = module(clips)
    assert model.calls == [4, 4, 4, 4, 2]
    torch.testing.assert_close(capped, full)
    assert videos_per_batch(64, world_size=2, views=6, max_views=16) == 2
    assert videos_per_batch(64, world_size=2, views=30, max_views=16) == 1
    assert videos_per_batch(8, world_size=1, views=1, max_views=None) == 8


def test_ddp_padding_repeats_are_removed_by_index():
    """Two ranks over 5 videos: DistributedSampler pads rank 1 with video 0 again."""
    num_videos, world = 5, 2
    torch.manual_seed(0)
    scores_of = torch.randn(num_videos, 3)
    labels_of = torch.tensor([0, 1, 2, 0, 1])
    per_rank = [
        list(DistributedSampler(range(num_videos), world, r, shuffle=False)) for r in range(world)
    ]
    assert per_rank == [[0, 2, 4], [1, 3, 0]]  # the padding repeat
    # What all_gather returns: (world, N, ...), flattened over ranks.
    index = torch.tensor(per_rank)
    gathered = dedup_by_index(
        index.flatten(), scores_of[index].flatten(0, 1), labels_of[index].flatten()
    )
    assert gathered.index.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(gathered.scores, scores_of)
    assert gathered.labels.tolist() == labels_of.tolist()
    # Counting the repeat would change the metrics.
    naive = classification_metrics(scores_of[index].flatten(0, 1), labels_of[index].flatten(), 3)
    right = classification_metrics(gathered.scores, gathered.labels, 3)
    assert right == classification_metrics(scores_of, labels_of, 3)
    assert naive["acc"] != right["acc"] or naive["mean_class_acc"] != right["mean_class_acc"]


def test_metrics_on_hand_made_scores():
    # 6 videos, 3 classes; class 0 has 4 videos (3 right), classes 1 and 2 one each (1 right, 0).
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.0],
            [0.8, 0.2, 0.0],
            [0.7, 0.0, 0.3],
            [0.1, 0.6, 0.3],  # class 0 predicted as 1
            [0.2, 0.7, 0.1],
            [0.5, 0.1, 0.4],  # class 2 predicted as 0 (2nd best)
        ]
    )
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    m = classification_metrics(scores, labels, 3)
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["mean_class_acc"] == pytest.approx((3 / 4 + 1 + 0) / 3)
    assert m["acc5"] == 1.0  # top-5 of 3 classes always contains the label
    cm = confusion_matrix(scores.argmax(1), labels, 3)
    assert cm.tolist() == [[3, 1, 0], [0, 1, 0], [1, 0, 0]]
    pairs = top_confused_pairs(cm, ["a", "b", "c"], k=5)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("a", "b", 1),
        ("c", "a", 1),
    ]
    assert pairs[1]["share_of_true"] == 1.0
    # Unlabelled videos (-1) are ignored.
    m2 = classification_metrics(
        torch.cat([scores, scores[:1]]), torch.cat([labels, torch.tensor([-1])]), 3
    )
    assert m2 == m


def test_write_artefacts_files(tmp_path):
    names = ["left", "right", "up", "down", "closer", "away"]
    torch.manual_seed(1)
    scores = torch.randn(10, 6)
    labels = torch.arange(10) % 6
    scores[torch.arange(10), labels] += 3.0
    scores[3] = torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0, 0.0])  # video 3 (down) -> closer
    preds = dedup_by_index(torch.arange(10), scores, labels)
    info = ReportInfo(
        "model.ckpt",
        "val",
        {"name": "2clip", "clips": 2, "crops": 3, "views": 6, "aggregate": "logits_mean"},
        params=1_900_000,
        gmacs_per_view=0.5,
        input_thw=(8, 32, 32),
        seconds=2.0,
    )
    out = write_artefacts(
        tmp_path, preds, names, [f"vid{i}" for i in range(10)], info, prefix="val"
    )
    expected = classification_metrics(scores, labels, 6)
    assert out["metrics"]["val/acc"] == pytest.approx(expected["acc"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        saved["gmacs_per_video"] == pytest.approx(3.0)
        and saved["metrics"]["val/acc"] == expected["acc"]
    )
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and rows[3]["video_id"] == "vid3" and rows[3]["top1_class"] == "closer"
    assert float(rows[3]["top1_score"]) == 5.0 and "top5_class" in rows[0]
    with open(tmp_path / "per_class.csv") as f:
        per_class = list(csv.DictReader(f))
    assert [int(r["videos"]) for r in per_class] == [2, 2, 2, 2, 1, 1]
    assert per_class[3]["correct"] == "1"  # video 9 right, video 3 wrong
    report = (tmp_path / "report.md").read_text()
    assert "2clip" in report and "0.500 GMACs x 6 views = 3.000 GMACs" in report
    assert "| down | closer | 1 | 50.0% |" in report
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="class names"):
        write_artefacts(tmp_path, preds, names[:5], [""] * 10, info)
