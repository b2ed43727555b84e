"""Profiler: parameters exact to 0.1% and GMACs to 2% of the papers' / released code's tables.

MACs are counted on the ``meta`` device at the papers' shapes (batch 1), so no real compute runs.
Figures: X3D/VoV3D from PySlowFast's and VoV3D's model zoos and an analytic count of their code,
TSM and RubiksNet from their READMEs and papers (see docs/models/).
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from actionlab.models.resnet import ResNet
from actionlab.models.rubiksnet import RubiksNet
from actionlab.models.tsm import TSM
from actionlab.models.vov3d import VoV3D
from actionlab.models.x3d import X3D
from actionlab.ops.rubiks_shift import RubiksShift3d
from actionlab.profile import (
    ZOO_END,
    ZOO_START,
    count_macs,
    count_params,
    mac_breakdown,
    main,
    register_op_macs,
    update_readme,
    zoo_table,
)


def meta(factory, *args, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return factory(*args, **kwargs)


def gmacs(model: nn.Module, t: int, s: int) -> float:
    return count_macs(model, torch.empty(1, 3, t, s, s, device="meta")) / 1e9


def close(value: float, target: float, rel: float) -> bool:
    return abs(value - target) <= rel * target


# (factory args, classes, params in millions)
PARAMS = [
    ((X3D, "m"), 400, 3.794),
    ((X3D, "m"), 174, 3.331),
    ((X3D, "l"), 400, 6.153),
    ((X3D, "l"), 174, 5.690),
    ((VoV3D, "m"), 174, 3.204),
    ((VoV3D, "m"), 400, 3.667),
    ((VoV3D, "l"), 174, 5.834),
    ((VoV3D, "l"), 400, 6.297),
    ((TSM, "r50"), 174, 23.86),
    ((TSM, "r50"), 400, 24.33),
    ((RubiksNet, "tiny"), 174, 1.899),
    ((RubiksNet, "large"), 174, 8.538),
]


@pytest.mark.parametrize(("spec", "classes", "millions"), PARAMS)
def test_params_match_papers(spec, classes, millions):
    cls, size = spec
    n = count_params(meta(cls, size, num_classes=classes))
    assert close(n / 1e6, millions, 1e-3), f"{cls.__name__}-{size}: {n / 1e6:.4f}M vs {millions}M"


@pytest.fixture(scope="module")
def zoo() -> dict[str, nn.Module]:
    """One meta-device model per family and size (the head width does not change GMACs)."""
    return {
        "x3d_m": meta(X3D, "m", num_classes=400),
        "x3d_l": meta(X3D, "l", num_classes=400),
        "vov3d_m": meta(VoV3D, "m", num_classes=174),
        "vov3d_l": meta(VoV3D, "l", num_classes=174),
        "tsm_r50": meta(TSM, "r50", num_classes=174),
    }


# (model, T, crop, GMACs per view)
MACS = [
    ("x3d_m", 16, 224, 4.73),
    ("x3d_m", 16, 256, 6.19),
    ("x3d_l", 16, 224, 9.16),
    ("vov3d_m", 16, 224, 4.92),
    ("vov3d_m", 16, 256, 6.42),
    ("vov3d_l", 16, 224, 9.31),
    ("vov3d_l", 16, 256, 12.16),
    ("tsm_r50", 8, 224, 32.9),
]


@pytest.mark.parametrize(("name", "t", "crop", "target"), MACS)
def test_gmacs_match_papers(zoo, name, t, crop, target):
    value = gmacs(zoo[name], t, crop)
    assert close(value, target, 0.02), f"{name} at {t}x{crop}: {value:.3f} vs {target} GMACs"


def test_resnet50_is_4_1_gmacs_per_frame():
    backbone = meta(ResNet, 50)
    value = count_macs(backbone, torch.empty(1, 3, 224, 224, device="meta")) / 1e9
    assert close(value, 4.1, 0.02)


@pytest.mark.parametrize(
    ("tier", "conv_fc"), [("tiny", 3.695), ("small", 6.504), ("medium", 10.926), ("large", 15.347)]
)
def test_rubiksnet_conv_fc_macs(tier, conv_fc):
    model = meta(RubiksNet, tier, num_classes=174, shift_impl="reference")
    counts = mac_breakdown(model, torch.empty(1, 3, 8, 224, 224, device="meta"))
    dense = sum(v for k, v in counts.items() if k.startswith("aten."))
    assert close(dense / 1e9, conv_fc, 0.002), f"{tier}: {dense / 1e9:.4f} vs {conv_fc}"
    # The shift is counted on top: 7 MACs per output element of every RubiksShift.
    assert counts["actionlab::rubiks_shift"] > 0
    assert counts["total"] == dense + counts["actionlab::rubiks_shift"]


def test_rubiks_shift_formula_same_for_reference_and_kernel():
    x = torch.randn(2, 4, 6, 8, 8)
    layer = RubiksShift3d(6, stride=(1, 2, 2), impl="reference")
    out_numel = 2 * 4 * 6 * 4 * 4
    assert mac_breakdown(layer, x)["actionlab::rubiks_shift"] == 7 * out_numel
    layer.impl = "auto"  # compiled op when it builds here, else the reference again
    assert mac_breakdown(layer, x)["actionlab::rubiks_shift"] == 7 * out_numel


def test_temporal_shift_is_zero_macs_and_seen_as_op(zoo):
    counts = mac_breakdown(zoo["tsm_r50"], torch.empty(1, 3, 8, 64, 64, device="meta"))
    assert counts["actionlab::temporal_shift"] == 0
    plain = meta(ResNet, 50)
    frames = count_macs(plain, torch.empty(8, 3, 64, 64, device="meta")) * 8
    fc = 8 * 2048 * 174
    assert counts["total"] == frames + fc


def test_count_macs_is_per_view_and_params_trainable_only():
    model = X3D("xs", num_classes=5)
    one = count_macs(model, torch.randn(1, 3, 4, 32, 32))
    assert count_macs(model, torch.randn(3, 3, 4, 32, 32)) == one
    assert model.training and all(p.requires_grad for p in model.parameters())  # restored
    model.head.projection.requires_grad_(False)
    assert count_params(model, trainable_only=True) == count_params(model) - (2048 * 5 + 5)


def test_registered_formula_of_a_late_op_is_used():
    lib = torch.library.Library("actionlab_test", "FRAGMENT")
    lib.define("triple(Tensor x) -> Tensor")
    lib.impl("triple", lambda x: x * 3, "CompositeExplicitAutograd")
    register_op_macs("actionlab_test::triple", lambda x, out=None: 5 * out.numel())

    class Net(nn.Module):
        def forward(self, x):
            return torch.ops.actionlab_test.triple(x)

    counts = mac_breakdown(Net(), torch.randn(2, 3))
    assert counts["actionlab_test::triple"] == 30 and counts["total"] == 30


def test_cli_writes_json_with_stated_input(tmp_path, capsys):
    out = tmp_path / "p.json"
    main(["model=x3d_xs", "data=synthetic", "--frames", "4", "--crop", "160", "--no-latency", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["input_thw"] == [4, 160, 160] and result["num_classes"] == 8
    assert close(result["gmacs"], 0.60, 0.02)
    assert "4x160x160" in capsys.readouterr().out


def test_readme_table_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{ZOO_START}\nold\n{ZOO_END}\nrest\n")
    model = meta(X3D, "xs", num_classes=400)
    from actionlab.profile import ProfileResult

    row = ProfileResult("x3d_xs", 400, (4, 160, 160), count_params(model), 604_000_000, 0.604, {})
    update_readme(readme, zoo_table([row]))
    text = readme.read_text()
    assert "old" not in text and "| `x3d_xs` | 400 | 4x160x160 | 3.794M | 0.60 |" in text
    assert text.startswith("intro\n") and text.endswith(f"{ZOO_END}\nrest\n")
    bare = tmp_path / "bare.md"
    bare.write_text("no markers")
    with pytest.raises(SystemExit, match="markers"):
        update_readme(bare, "table")


def test_zoo_latency_column_measured_fused_in_fastest_format(tmp_path, capsys):
    """``python -m actionlab.profile --zoo --readme README.md`` (``make zoo``) on two rows: batch-1
    latency, fused, channels-last where ``auto`` picks it, the protocol stated under the table."""
    readme = tmp_path / "README.md"
    readme.write_text(f"{ZOO_START}\n{ZOO_END}\n")
    out = tmp_path / "zoo.json"
    main(["--zoo", "--models", "rubiks_tiny", "x3d_xs", "--readme", str(readme), "--json", str(out),
          "--repeats", "2", "--warmup", "1"])
    rows = {r["model"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"rubiks_tiny", "x3d_xs"}
    assert all(r["latency_s"] > 0 and r["fused"] and r["threads"] == 2 and r["repeats"] == 2 for r in rows.values())
    assert rows["rubiks_tiny"]["memory_format"] == "channels_last"
    assert rows["x3d_xs"]["memory_format"] == "contiguous"
    text = readme.read_text()
    assert "| `rubiks_tiny` | 174 | 8x224x224 |" in text and " ms |" in text
    assert "median of 2 forwards after 1 warm-up ones, 2 threads" in text
    assert "channels-last for `rubiks_tiny`" in text
    with pytest.raises(SystemExit, match="not in the zoo"):
        main(["--zoo", "--models", "resnet9000"])


def test_measure_latency_fixes_threads_and_reports_median():
    from actionlab.profile import measure_latency

    calls = []

    class Probe(nn.Module):
        def forward(self, x):
            calls.append(torch.get_num_threads())
            return x

    before = torch.get_num_threads()
    result = measure_latency(Probe(), torch.zeros(1), warmup=2, repeats=3, threads=1)
    assert calls == [1] * 5 and torch.get_num_threads() == before
    assert result["repeats"] == 3 and result["min_s"] <= result["median_s"]


def test_aq_spatial_shift_counted_on_the_reference_path():
    """RubiksNet-AQ's spatial RubiksShift2d costs the op's 7 MACs per output element whichever
    implementation runs (the docs count on the meta device, where the reference runs)."""
    with torch.device("meta"):
        model = RubiksNet("tiny", num_classes=174, variant="rubiks3d-aq", shift_impl="reference")
    reference = mac_breakdown(model, torch.empty(1, 3, 8, 64, 64, device="meta"))
    layers = [m for m in model.modules() if type(m).__name__ == "RubiksShift2d"]
    expected = [0]

    def count(mod, args, out):
        expected[0] += 7 * out.numel()

    hooks = [layer.register_forward_hook(count) for layer in layers]
    model.requires_grad_(False)
    with torch.no_grad():
        model(torch.empty(1, 3, 8, 64, 64, device="meta"))
    for h in hooks:
        h.remove()
    assert expected[0] > 0 and reference["actionlab::rubiks_shift"] == expected[0]
