"""Records, summary and RESULTS.md section of the GPU kit (bench/gpu/run.sh).

    python bench/gpu/report.py mark FILE.json --step 3a --name pytest --status ok --seconds 12 --budget 90
    python bench/gpu/report.py note FILE.json KEY '{"json": 1}'    # a JSON value under KEY
    python bench/gpu/report.py merge FILE.json KEY OTHER.json      # OTHER's content under KEY
    python bench/gpu/report.py junit FILE.json KEY junit.xml        # pytest counts under KEY
    python bench/gpu/report.py train-metrics RUN_DIR --out train.json
    python bench/gpu/report.py summary OUT_DIR                      # the table run.sh prints last
    python bench/gpu/report.py results DIR [--md bench/RESULTS.md]  # the GPU section, from JSON

Every step of run.sh leaves a ``steps`` entry (status ok / failed / timeout / skipped, seconds,
budget, reason) in its group's JSON, written as soon as the step ends; the summary and the
RESULTS.md section are made from those files only. ``results`` writes figures only from a run
whose ``setup.json`` says ``mode: gpu`` and names a GPU; otherwise the section says that
nothing has run on a GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- gpu-kit:begin (bench/gpu/report.py results) -->", "<!-- gpu-kit:end -->"
STEP_ORDER = ("1", "2", "3a", "3b", "4", "5", "6", "7", "8")


def load(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {"_unreadable": str(path)}


def save(path: Path, payload: dict) -> None:
    """Atomic: a step killed mid-write never leaves a half JSON under $OUT."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def cmd_mark(args) -> None:
    payload = load(args.file)
    entry = {"name": args.name, "status": args.status, "seconds": args.seconds, "budget": args.budget,
             "rc": args.rc, "reason": args.reason}
    payload.setdefault("steps", {})[args.step] = entry
    if args.mode:
        payload["mode"] = args.mode
    save(args.file, payload)


def cmd_note(args) -> None:
    payload = load(args.file)
    payload[args.key] = json.loads(args.value)
    save(args.file, payload)


def cmd_merge(args) -> None:
    payload = load(args.file)
    payload[args.key] = load(args.other) if args.other.is_file() else {"missing": str(args.other)}
    save(args.file, payload)


def cmd_junit(args) -> None:
    payload = load(args.file)
    if not args.xml.is_file():
        payload[args.key] = {"missing": str(args.xml)}
    else:
        root = ET.parse(args.xml).getroot()
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        failures, skip_reasons = [], {}
        for case in root.iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            if case.find("failure") is not None or case.find("error") is not None:
                node = case.find("failure") if case.find("failure") is not None else case.find("error")
                counts["failed" if node.tag == "failure" else "errors"] += 1
                failures.append({"test": name, "message": (node.get("message") or "")[:500]})
            elif case.find("skipped") is not None:
                counts["skipped"] += 1
                reason = (case.find("skipped").get("message") or "")[:200]
                skip_reasons[reason] = skip_reasons.get(reason, 0) + 1
            else:
                counts["passed"] += 1
        payload[args.key] = {**counts, "failures": failures, "skip_reasons": skip_reasons}
    save(args.file, payload)


def cmd_train_metrics(args) -> None:
    """val/acc per epoch, best, and the speed monitor's figures from the CSV logger's metrics."""
    files = sorted(args.run_dir.rglob("metrics.csv"))
    out: dict = {"run_dir": str(args.run_dir)}
    if not files:
        out["missing"] = f"no metrics.csv under {args.run_dir}"
    else:
        rows = list(csv.DictReader(files[-1].open()))
        def column(name: str) -> list[float]:
            return [float(r[name]) for r in rows if r.get(name) not in (None, "")]

        val = column("val/acc")
        out.update({
            "metrics_csv": str(files[-1]), "epochs": len(val), "val_acc_per_epoch": val,
            "val_acc_final": val[-1] if val else None, "val_acc_best": max(val) if val else None,
            "train_loss_last": (column("train/loss_step") or [None])[-1],
            "clips_per_s_median": _median(column("speed/clips_per_s")),
            "data_wait_median": _median(column("speed/data_wait")),
            "gpu_mem_gb_max": max(column("speed/gpu_mem_gb") or [0]) or None,
        })
    previous = load(args.out)
    previous.update(out)
    save(args.out, previous)


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[len(values) // 2]


# -- reading a run ------------------------------------------------------------------------------
def read_run(folder: Path) -> dict[str, dict]:
    return {p.stem: load(p) for p in sorted(folder.glob("*.json"))}


def steps_of(run: dict[str, dict]) -> list[tuple[str, dict, str]]:
    found = [(sid, entry, group) for group, payload in run.items() for sid, entry in payload.get("steps", {}).items()]
    return sorted(found, key=lambda t: STEP_ORDER.index(t[0]) if t[0] in STEP_ORDER else 99)


def _fmt(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def headline(sid: str, run: dict[str, dict]) -> str:
    """One line of what a step found, from its JSON."""
    setup, verify = run.get("setup", {}), run.get("verify", {})
    if sid == "1":
        env = setup.get("env", {})
        gpu = env.get("gpu")
        where = (f"{gpu['name']} sm_{gpu['capability'].replace('.', '')} {gpu['sms']} SMs {gpu['memory_gib']} GiB"
                 if gpu else "no GPU")
        kit = setup.get("kit", {})
        return (f"{where}; torch {env.get('torch')} CUDA {env.get('torch_cuda')}; Python {env.get('python')}; "
                f"kit {'complete' if kit.get('problems') == [] else 'INCOMPLETE: ' + '; '.join(kit.get('problems', ['not checked']))}")
    if sid == "2":
        build = setup.get("build", {})
        return f"{build.get('line') or 'no build line'} (TORCH_CUDA_ARCH_LIST={build.get('arch')})"
    if sid == "3a":
        p = verify.get("pytest", {})
        if "passed" not in p:
            return "no pytest report"
        reasons = "; ".join(f"{n} x {r}" for r, n in p.get("skip_reasons", {}).items())
        return (f"{p['passed']} passed, {p['failed']} failed, {p['errors']} errors, {p['skipped']} skipped"
                + (f" ({reasons})" if reasons else "")
                + ("; FAILED: " + ", ".join(f["test"] for f in p["failures"][:4]) if p.get("failures") else ""))
    if sid == "3b":
        s = verify.get("smoke", {})
        if "rows" not in s:
            return "no smoke report"
        bad = [r["model"] for r in s["rows"] if not r["ok"]]
        worst = max((r.get("bf16_vs_fp32_rel_l2") or 0 for r in s["rows"]), default=0)
        return (f"{s['passed']}/{s['total']} families: bf16-mixed train step + eval, worst bf16-vs-fp32 "
                f"logits {worst:.1e} (tolerance {s.get('bf16_rtol')})" + (f"; FAILED: {', '.join(bad)}" if bad else ""))
    if sid == "4":
        rs = run.get("rubiks_shift", {})
        section = rs.get("cuda") or rs.get("cpu")
        if not section:
            return "no kernel timings"
        parts = []
        for dtype in ("float32", "bfloat16"):
            rows = [r for r in section["rows"] if r["impl"] == "kernel" and r["dtype"] == dtype]
            if rows:
                parts.append(f"{dtype} kernel fwd <= {max(r['forward_vs_clone'] for r in rows):.2f}x, "
                             f"fwd+bwd <= {max(r['forward_backward_vs_clone'] for r in rows):.2f}x a clone")
        t = section.get("targets")
        verdict = (f"; targets (1.3x / 3x) met by {t['kernel_rows_meeting']}/{t['kernel_rows']} kernel rows" if t else "")
        return f"{section['info']['device']}: " + "; ".join(parts) + verdict
    if sid == "5":
        ts = run.get("train_step", {})
        rows = ts.get("rows", [])
        if not rows:
            return "no train-step rows"
        fast = ", ".join(f"{r['model']} {r['clips_per_s']:.4g}" for r in rows)
        return f"clips/s: {fast}. " + " ".join(ts.get("summary", []))
    if sid == "6":
        ld = run.get("loader", {})
        verdicts = ld.get("against_gpu", [])
        if not verdicts:
            return "no loader figures"
        return "; ".join(
            f"{v['backend']} x{v['workers']}: {v['loader_clips_s']:.4g} clips/s"
            + (f" = {v['loader_over_gpu']:.2f}x the train rate ({'keeps up' if v['keeps_gpu_busy'] else 'GPU waits'})"
               if "loader_over_gpu" in v else "") for v in verdicts)
    if sid == "7":
        tr = run.get("train", {})
        if "val_acc_final" not in tr:
            return tr.get("missing", "no training metrics")
        return (f"{tr['epochs']} epochs, val top-1 final {_fmt(tr['val_acc_final'], '.3f')} best "
                f"{_fmt(tr['val_acc_best'], '.3f')}, {_fmt(tr['clips_per_s_median'])} clips/s, data wait "
                f"{_fmt(tr['data_wait_median'], '.2f')}")
    if sid == "8":
        eff = run.get("efficiency", {})
        return "bench/efficiency.py output recorded" if eff and "steps" in eff and len(eff) > 1 else ""
    return ""


def summary_lines(run: dict[str, dict]) -> list[str]:
    lines = ["| step | what | status | seconds / budget | result |", "|---|---|---|---|---|"]
    for sid, entry, _ in steps_of(run):
        status = entry["status"] + (f" ({entry['reason']})" if entry.get("reason") else "")
        secs = f"{_fmt(entry.get('seconds'), '.0f')} / {_fmt(entry.get('budget'), '.0f')}"
        lines.append(f"| {sid} | {entry['name']} | {status} | {secs} | {headline(sid, run).replace('|', '/')} |")
    return lines


def cmd_summary(args) -> int:
    run = read_run(args.out_dir)
    mode = run.get("setup", {}).get("mode", "?")
    steps = steps_of(run)
    total = sum(e.get("seconds") or 0 for _, e, _ in steps)
    print(f"\nGPU kit summary ({mode}; {len(steps)} steps, {total:.0f} s; files in {args.out_dir}):\n")
    print("\n".join(summary_lines(run)))
    failed = [f"{sid} {e['name']}" for sid, e, _ in steps if e["status"] in ("failed", "timeout")]
    print(f"\n{'ALL STEPS OK' if not failed else 'NOT OK: ' + ', '.join(failed)}"
          + (" (rehearsal: these are CPU figures at tiny sizes, not GPU results)" if mode == "rehearse" else ""))
    return 0 if not failed else 1


# -- RESULTS.md -----------------------------------------------------------------------------------
def gpu_section(run: dict[str, dict]) -> str:
    setup = run.get("setup", {})
    gpu = setup.get("env", {}).get("gpu")
    how = ("Made by `python bench/gpu/report.py results bench/results/gpu` from the JSON files that "
           "`bash bench/gpu/run.sh` wrote under `$OUT` on the GPU machine (copied to `bench/results/gpu/`); "
           "see `bench/gpu/README.md`. Do not edit by hand.")
    if setup.get("mode") != "gpu" or not gpu:
        nothing = ("**Nothing in this lab has run on a GPU yet.** The kit is built and rehearsed on the CPU "
                   "(`bash bench/gpu/run.sh --rehearse`, run by CI) but has not run on a GPU machine yet, so "
                   "every speed figure of the lab is a CPU figure: the RubiksShift CUDA kernels, bf16-mixed "
                   "training, channels-last 3D convolutions and the loader feeding a device are unmeasured "
                   "on a GPU.")
        return f"## GPU run kit (issue 14)\n\n{how}\n\n{nothing}"
    env = setup["env"]
    machine = (f"Machine: {gpu['name']} (sm_{gpu['capability'].replace('.', '')}, {gpu['sms']} SMs, "
               f"{gpu['memory_gib']} GiB, L2 {gpu['l2_mib']} MiB), {env.get('cpus')} CPUs; torch {env.get('torch')} "
               f"(CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}), Python {env.get('python')}.")
    lines = ["## GPU run kit (issue 14)", "", how, "", machine, "", *summary_lines(run), ""]
    rs = run.get("rubiks_shift", {}).get("cuda")
    if rs:
        lines += ["### RubiksShift kernels (times as multiples of `x.clone()` of the same tensor)", "",
                  "| shape (N,T,C,H,W) | stride | impl | dtype | clone ms | fwd | bwd | fwd+bwd | targets |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rs["rows"]:
            target = {True: "met", False: "MISSED"}.get(r.get("meets_targets"), "-")
            lines.append(f"| {'x'.join(map(str, r['shape']))} | {','.join(map(str, r['stride']))} | {r['impl']} | "
                         f"{r['dtype']} | {r['clone_ms']:.3f} | {r['forward_vs_clone']:.2f}x | "
                         f"{r['backward_vs_clone']:.2f}x | {r['forward_backward_vs_clone']:.2f}x | {target} |")
        lines.append("")
    ts = run.get("train_step", {})
    if ts.get("rows"):
        sys.path.insert(0, str(ROOT / "bench"))
        import train_step

        lines += ["### Train steps (bf16-mixed, random clips, CUDA-event median)", "",
                  train_step.table([r for r in ts["rows"] if r["device"] == "cuda"]), "", *ts.get("summary", []), ""]
    return "\n".join(lines).rstrip()


def cmd_results(args) -> int:
    run = read_run(args.dir) if args.dir.is_dir() else {}
    section = gpu_section(run)
    sys.path.insert(0, str(ROOT / "bench"))
    from results_md import write_section

    write_section(args.md, BEGIN, END, section)
    print(f"wrote the GPU section of {args.md} from {args.dir} "
          f"({'GPU figures' if 'Nothing in this lab' not in section else 'no GPU figures'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("mark")
    p.add_argument("file", type=Path)
    p.add_argument("--step", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--status", choices=("ok", "failed", "timeout", "skipped"), required=True)
    p.add_argument("--seconds", type=float)
    p.add_argument("--budget", type=float)
    p.add_argument("--rc", type=int)
    p.add_argument("--reason")
    p.add_argument("--mode", choices=("gpu", "rehearse"))
    p = sub.add_parser("note")
    p.add_argument("file", type=Path)
    p.add_argument("key")
    p.add_argument("value", help="a JSON value")
    p = sub.add_parser("merge")
    p.add_argument("file", type=Path)
    p.add_argument("key")
    p.add_argument("other", type=Path)
    p = sub.add_parser("junit")
    p.add_argument("file", type=Path)
    p.add_argument("key")
    p.add_argument("xml", type=Path)
    p = sub.add_parser("train-metrics")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("summary")
    p.add_argument("out_dir", type=Path)
    p = sub.add_parser("results")
    p.add_argument("dir", type=Path)
    p.add_argument("--md", type=Path, default=RESULTS_MD)
    args = parser.parse_args(argv)
    handler = {"mark": cmd_mark, "note": cmd_note, "merge": cmd_merge, "junit": cmd_junit, "train-metrics": cmd_train_metrics,
               "summary": cmd_summary, "results": cmd_results}[args.cmd]
    return handler(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
