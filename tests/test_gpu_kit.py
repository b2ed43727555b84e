"""The GPU run kit (bench/gpu/): its wheel list, its completeness check, its size guard, its
reports, and the whole script rehearsed on the CPU as documented (`make gpu-kit`, then
`bash bench/gpu/run.sh --rehearse`)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO
from torch import nn

sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bench" / "gpu"))

import kit
import report
import train_step

STEP_FILES = {"1": "setup", "2": "setup", "3a": "verify", "3b": "verify", "4": "rubiks_shift",
              "5": "train_step", "6": "loader", "7": "train", "8": "efficiency"}


def test_the_kit_carries_the_versions_ci_tests():
    """A dependency bumped in .venv but not in bench/gpu/wheels.txt would travel untested."""
    for want in kit.read_list():
        installed = importlib.metadata.version(want.name)
        assert installed == want.version, (
            f"CI installs {want.name} {installed} but bench/gpu/wheels.txt carries {want.version}: "
            f"set {want.name}=={installed} there and run `make gpu-kit`")


def _wheel(folder: Path, name: str, version: str, requires: list[str], python: str | None = None,
           module: str | None = None) -> Path:
    """A minimal wheel: METADATA with these requirements, RECORD listing one package."""
    dist = f"{name.replace('-', '_')}-{version}"
    module = module or name.replace("-", "_")
    path = folder / f"{dist}-py3-none-any.whl"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Python: {python}"] if python else []
    meta += [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{module}/__init__.py", "")
        zf.writestr(f"{dist}.dist-info/METADATA", "\n".join(meta) + "\n")
        zf.writestr(f"{dist}.dist-info/RECORD", f"{module}/__init__.py,,\n")
    return path


def test_check_names_every_gap(tmp_path):
    wheels = tmp_path / "whl"
    wheels.mkdir()
    listing = tmp_path / "wheels.txt"
    listing.write_text("alpha==1.0  # needs beta\nbeta==2.0\ngamma==0.1  # never downloaded\n")
    machine = kit.MACHINE  # the real machine list: numpy 2.5.2, no absent-pkg
    _wheel(wheels, "alpha", "1.0", ["beta>=3", "numpy>=1.2", "absent-pkg", "sphinx; extra == 'docs'",
                                    "old-only; python_version < '3.9'"])
    _wheel(wheels, "beta", "2.0", [], python=">=3.13")
    _wheel(wheels, "stray", "9.9", [])
    problems = "\n".join(kit.check(wheels, installed=False, list_path=listing, machine_path=machine))
    assert "alpha needs beta>=3, which is 2.0 on the kit" in problems
    assert "alpha needs absent-pkg, which is not on the machine nor in the kit" in problems
    assert "Requires-Python >=3.13 excludes the machine's 3.12.3" in problems
    assert "gamma==0.1 is in wheels.txt but not in" in problems
    assert "stray-9.9-py3-none-any.whl is not in wheels.txt" in problems
    assert "numpy" not in problems and "sphinx" not in problems and "old-only" not in problems


def test_check_passes_on_the_real_list_with_its_wheels(tmp_path):
    """The lab's imports are all met by the listed wheels + the machine's list (fake wheels with
    the real names, versions and requirements; the real download is the rehearsal's)."""
    reqs = {"hydra-core": ["omegaconf<2.4,>=2.2", "antlr4-python3-runtime==4.9.*", "packaging"],
            "omegaconf": ["antlr4-python3-runtime==4.9.*", "PyYAML>=5.1.0"], "kornia": ["kornia-rs>=0.2.0", "torch>=2.5.1"]}
    modules = {"hydra-core": "hydra", "antlr4-python3-runtime": "antlr4"}
    for want in kit.read_list():
        _wheel(tmp_path, want.name, want.version, reqs.get(want.name, []), module=modules.get(want.name))
    assert kit.check(tmp_path, installed=False) == []


def test_size_guard_refuses_over_the_limit(capsys):
    assert kit.size_report(REPO / ".no-such-whl", limit_mib=64) is True
    assert kit.size_report(REPO / ".no-such-whl", limit_mib=0.01) is False
    err = capsys.readouterr().err
    assert "REFUSED" in err and "over its 0 MiB limit" in err and "Largest:" in err


def test_pytest_ignores_only_modules_without_cuda_tests(tmp_path, monkeypatch):
    ignores, problems = kit.pytest_ignores()
    assert "--ignore=tests/test_notebooks.py" in ignores and "--ignore=tests/test_docs.py" in ignores
    assert "--ignore=tests/test_rubiks_shift_kernels.py" not in ignores
    assert problems == []
    # A module with cuda tests is collected; one that also imports a not-carried package is named.
    monkeypatch.setattr(kit, "ROOT", tmp_path)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_plain.py").write_text("def test_x():\n    pass\n")
    (tmp_path / "tests" / "test_gpu.py").write_text("import pytest\n\n@pytest.mark.cuda\ndef test_x():\n    pass\n")
    (tmp_path / "tests" / "test_nb.py").write_text("import nbclient\nimport pytest\npytestmark = pytest.mark.cuda\n")
    ignores, problems = kit.pytest_ignores(tmp_path / "tests")
    assert ignores == ["--ignore=tests/test_plain.py"]
    assert len(problems) == 1 and problems[0].startswith("tests/test_nb.py imports ['nbclient']")


def test_memory_format_is_the_labs_auto_for_the_clips_device():
    """The bench lays models out exactly as ``memory_format=`` does in training: on the CPU
    ``auto`` keeps 3D models contiguous and puts time-folded ones (a ``memory_format``
    attribute) channels-last; ``channels_last`` gives a 3D model NTHWC weights and clips."""
    conv3d = nn.Sequential(nn.Conv3d(3, 4, 3))
    clips = torch.randn(2, 3, 4, 8, 8)
    reference = conv3d(clips)
    model, x, layout = train_step.apply_memory_format(conv3d, clips, "auto")
    assert layout == "contiguous" and x is clips and model[0].weight.is_contiguous()
    model, x, layout = train_step.apply_memory_format(conv3d, clips, "channels_last")
    assert layout == "channels_last_3d"
    assert x.is_contiguous(memory_format=torch.channels_last_3d)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(model(x), reference)

    class Folded(nn.Sequential):
        memory_format = "contiguous"

    folded = Folded(nn.Conv2d(3, 4, 3))
    model, x, layout = train_step.apply_memory_format(folded, clips, "auto")
    assert layout == "channels_last" and x is clips and model.memory_format == "channels_last"
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert train_step.apply_memory_format(folded, clips, "contiguous")[2] == "contiguous"
    assert model[0].weight.is_contiguous()
    with pytest.raises(ValueError, match="memory format must be one of"):
        train_step.apply_memory_format(conv3d, clips, "nhwc")


def _fake_gpu_run(folder: Path) -> None:
    folder.mkdir()
    env = {"gpu": {"name": "NVIDIA H200", "capability": "9.0", "sms": 132, "memory_gib": 139.8, "l2_mib": 60.0},
           "torch": "2.11.0+cu130", "torch_cuda": "13.0", "cudnn": 91900, "python": "3.12.3", "cpus": 16}
    (folder / "setup.json").write_text(json.dumps({"mode": "gpu", "env": env, "kit": {"problems": []},
                                                  "steps": {"1": {"name": "setup", "status": "ok", "seconds": 14, "budget": 30}}}))
    row = {"shape": [32, 8, 54, 56, 56], "stride": [1, 1, 1], "impl": "kernel", "dtype": "bfloat16", "clone_ms": 0.1,
           "forward_vs_clone": 1.2, "backward_vs_clone": 2.0, "forward_backward_vs_clone": 3.4, "meets_targets": False}
    (folder / "rubiks_shift.json").write_text(json.dumps({"cuda": {
        "info": {"device": "NVIDIA H200"}, "rows": [row],
        "targets": {"kernel_rows_meeting": 0, "kernel_rows": 1}},
        "steps": {"4": {"name": "kernels", "status": "ok", "seconds": 9, "budget": 30}}}))


def test_results_section_from_json(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nkept above\n")
    report.main(["results", str(tmp_path / "none"), "--md", str(md)])
    text = md.read_text()
    assert "kept above" in text and "**Nothing in this lab has run on a GPU yet.**" in text
    _fake_gpu_run(tmp_path / "run")
    report.main(["results", str(tmp_path / "run"), "--md", str(md)])
    text = md.read_text()
    assert text.count(report.BEGIN) == 1 and "Nothing in this lab" not in text
    assert "NVIDIA H200 (sm_90, 132 SMs" in text
    assert "| 32x8x54x56x56 | 1,1,1 | kernel | bfloat16 | 0.100 | 1.20x | 2.00x | 3.40x | MISSED |" in text
    assert "targets (1.3x / 3x) met by 0/1 kernel rows" in text


def test_a_rehearsal_run_never_fills_the_gpu_section(tmp_path):
    _fake_gpu_run(tmp_path / "run")
    setup = json.loads((tmp_path / "run" / "setup.json").read_text())
    setup["mode"] = "rehearse"
    (tmp_path / "run" / "setup.json").write_text(json.dumps(setup))
    assert "Nothing in this lab has run on a GPU yet" in report.gpu_section(report.read_run(tmp_path / "run"))


def test_results_md_gpu_section_is_the_scripts_output(tmp_path):
    """bench/RESULTS.md's GPU section is exactly what the script makes from bench/results/gpu/."""
    md = tmp_path / "RESULTS.md"
    md.write_text((REPO / "bench" / "RESULTS.md").read_text())
    report.main(["results", str(REPO / "bench" / "results" / "gpu"), "--md", str(md)])
    assert md.read_text() == (REPO / "bench" / "RESULTS.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rehearsal_as_documented(tmp_path):
    """`make gpu-kit` then `bash bench/gpu/run.sh --rehearse`: every step's JSON appears with its
    status ok (8 skipped where bench/efficiency.py is absent), at most 8 files come back, and the
    summary table is printed last."""
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_KIT_WORK=str(tmp_path / "work"))
    from actionlab.ops._extension import build_directory

    # The suite's build, reused: the folder holding it. Without TORCH_EXTENSIONS_DIR, torch builds
    # under get_default_build_root()/py311_cpu, so the root itself would be a second, fresh build
    # (a 50 s compile in CI).
    env.setdefault("TORCH_EXTENSIONS_DIR", str(build_directory(False).parent))
    kit_run = subprocess.run(["make", "gpu-kit"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=600, check=False)
    assert kit_run.returncode == 0, kit_run.stdout[-3000:] + kit_run.stderr[-3000:]
    assert "gpu-kit: complete" in kit_run.stdout and "of 64 MiB" in kit_run.stdout
    proc = subprocess.run(["bash", "bench/gpu/run.sh", "--rehearse"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    out = tmp_path / "out"
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8 and "run.log" in files, files
    for step, group in STEP_FILES.items():
        entry = json.loads((out / f"{group}.json").read_text())["steps"][step]
        expected = "skipped" if step == "8" else "ok"
        assert entry["status"] == expected, (step, entry)
    verify = json.loads((out / "verify.json").read_text())
    assert verify["pytest"]["skipped"] == verify["pytest"]["skip_reasons"].get("needs a CUDA device") > 0
    assert verify["smoke"]["passed"] == verify["smoke"]["total"] == 2
    rows = json.loads((out / "train_step.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"rubiks_tiny", "tsm_r50"}
    assert json.loads((out / "train.json").read_text())["epochs"] == 1
    tail = proc.stdout.strip().splitlines()[-16:]
    assert any(line.startswith("| step | what | status") for line in tail)
    assert "ALL STEPS OK (rehearsal" in proc.stdout
    assert (out / "run.log").read_text().count("== step") >= 16
