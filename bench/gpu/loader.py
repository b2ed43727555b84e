"""Does the loader keep the GPU busy? The datamodule on many workers against the GPU train rate of
RubiksNet-Tiny (bench/gpu/run.sh step 6).

    python bench/gpu/loader.py --prepare-only --root DIR          # make the videos (run.sh: during the build)
    python bench/gpu/loader.py --root DIR --workers 16 --train-step train_step.json --out loader.json

Runs ``bench/dataloader.py`` (H.264 videos and JPEG frame folders made from them by
``python -m actionlab.data.prepare``; raw decode, the datamodule's uint8 loader as training uses
it, float batches, uint8 + CPU finish) on the given worker counts and backends, then divides the
datamodule's clips/s by the clips/s of one RubiksNet-Tiny bf16 train step at 8x224 on the GPU
(``bench/train_step.py --device cuda``, step 5). A ratio >= 1 means the loader outpaces the
GPU; below 1 the GPU waits for data at that share of its speed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import dataloader

VIDEOS, SECONDS = 12, 6.0


def gpu_train_rate(path: Path | None) -> dict | None:
    """The RubiksNet-Tiny row of the train-step JSON: the GPU one at 8x224 when there is one, else
    (the CPU rehearsal) any RubiksNet-Tiny row, so the comparison code runs there too."""
    if path is None or not path.is_file():
        return None
    rows = [r for r in json.loads(path.read_text()).get("rows", []) if r["model"] == "rubiks_tiny"]
    gpu = [r for r in rows if r["device"] == "cuda" and r["input_thw"] == [8, 224, 224]]
    return (gpu or rows or [None])[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="scratch folder for the generated videos")
    parser.add_argument("--prepare-only", action="store_true", help="only generate and prepare the videos")
    parser.add_argument("--videos", type=int, default=VIDEOS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--workers", type=int, nargs="+", default=[16])
    parser.add_argument("--backends", nargs="+", default=["video", "frames"])
    parser.add_argument("--batches-per-worker", type=int, default=6,
                        help="measured batches per worker (the pass is workers x this x 8 clips)")
    parser.add_argument("--train-step", type=Path, help="GPU train-step JSON (bench/train_step.py --device cuda)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.prepare_only:
        dataloader.make_data(args.root, args.videos, args.seconds, 256, 340)
        print(f"loader: videos ready in {args.root}")
        return 0
    if args.out is None:
        parser.error("--out is required unless --prepare-only")
    clips = max(args.workers) * args.batches_per_worker * 8
    scratch = args.root / "dataloader.json"
    result = dataloader.main([
        "--root", str(args.root), "--videos", str(args.videos), "--seconds", str(args.seconds),
        "--workers", *map(str, args.workers), "--backends", *args.backends, "--repeats", "1",
        "--epoch", str(clips), "--out", str(scratch),
    ])
    gpu = gpu_train_rate(args.train_step)
    verdicts = []
    for row in result["rows"]:
        entry = {"backend": row["backend"], "workers": row["workers"], "loader_clips_s": row["datamodule_clips_s"]}
        if gpu:
            entry["gpu_train_clips_s"] = gpu["clips_per_s"]
            entry["loader_over_gpu"] = round(row["datamodule_clips_s"] / gpu["clips_per_s"], 3)
            entry["keeps_gpu_busy"] = entry["loader_over_gpu"] >= 1.0
        verdicts.append(entry)
        line = f"loader {row['backend']:6s} x{row['workers']:<3d} {row['datamodule_clips_s']:8.1f} clips/s"
        if gpu:
            line += (f" vs RubiksNet-Tiny training on {gpu['device']} {gpu['clips_per_s']:.1f} clips/s "
                     f"(batch {gpu['batch']}, {'x'.join(map(str, gpu['input_thw']))}): "
                     f"{entry['loader_over_gpu']:.2f}x -> {'keeps up' if entry['keeps_gpu_busy'] else 'the GPU waits'}")
        print(line)
    if gpu is None:
        print("loader: no GPU train-step row for rubiks_tiny 8x224 (step 5 did not run or failed): loader rates only")
    payload = {**result, "against_gpu": verdicts, "gpu_train_row": gpu, "clips_per_pass": clips}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
