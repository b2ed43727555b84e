"""Train-step throughput of Model zoo II (SRTG, plain 3D ResNets, MTNet, ViT, TokShift).

Runs ``bench/train_step.py`` on this family's cases (each in a fresh subprocess: forward +
cross-entropy + backward + SGD step on random clips at the paper input, median step time, peak
memory); writes
``bench/results/train_step_zoo2.json`` and prints a Markdown table plus the SR overhead
(SRTG vs its plain baseline: MAC ratio next to the step-time ratio).

    python bench/train_step_zoo2.py [--models srtg_r3d_34 r3d_34] [--device cpu] [--steps 2]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import train_step
from train_step import Case

RESULTS = BENCH / "results" / "train_step_zoo2.json"

# Paper inputs: SRTG / MTNet 16x224 (Kinetics, 400 classes), ViT / TokShift 8x224.
CASES: tuple[Case, ...] = (
    Case("r3d_34", 16, 224, 400),
    Case("srtg_r3d_34", 16, 224, 400),
    Case("r2plus1d_50", 16, 224, 400),
    Case("srtg_r2plus1d_50", 16, 224, 400),
    Case("mtnet_s", 16, 224, 400),
    Case("mtnet_m", 16, 224, 400),
    Case("vit_base", 8, 224, 400),
    Case("tokshift_base", 8, 224, 400),
)
PAIRS = (
    ("srtg_r3d_34", "r3d_34"),
    ("srtg_r2plus1d_50", "r2plus1d_50"),
    ("tokshift_base", "vit_base"),
)


def overheads(rows: list[dict]) -> list[str]:
    out = []
    for device in sorted({r["device"] for r in rows}):
        by_model = {r["model"]: r for r in rows if r["device"] == device}
        for model, base in PAIRS:
            if model in by_model and base in by_model:
                a, b = by_model[model], by_model[base]
                out.append(
                    f"{device}: {model} vs {base}: {a['gmacs_per_clip'] / b['gmacs_per_clip']:.3f}x MACs, "
                    f"{a['step_s_median'] / b['step_s_median']:.2f}x step time, "
                    f"{a['params'] / b['params']:.2f}x parameters"
                )
    return out


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # This family's defaults: one clip per CPU step (16x224 3D ResNets take ~10 s a step).
    for flag, value in (("--out", str(RESULTS)), ("--cpu-batch", "1"), ("--steps", "2")):
        if flag not in argv:
            argv += [flag, value]
    out = Path(argv[argv.index("--out") + 1])
    train_step.CASES = train_step.GPU_CASES = CASES  # this family on CPU and GPU alike
    train_step.main(argv)
    payload = json.loads(out.read_text())
    payload["summary"] = overheads(payload["rows"])
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print("\n".join(payload["summary"]))


if __name__ == "__main__":
    main()
