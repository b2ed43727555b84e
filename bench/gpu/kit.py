"""The GPU run kit: the wheels the GPU machine lacks, the size of what travels, and a proof that
every import the lab needs is satisfied there.

    python bench/gpu/kit.py download [--dest .whl]    # `make gpu-kit`: fetch, then size + check
    python bench/gpu/kit.py size [--limit-mib 64]     # git-tracked + untracked files + .whl
    python bench/gpu/kit.py check [--installed]       # requirements against the machine
    python bench/gpu/kit.py pytest-ignores            # test modules without cuda tests

The GPU machine (Python 3.12, torch 2.11+cu130, no network) gets the lab as a copy of the working
tree: tracked files, untracked files git does not ignore, and the carried ``.whl/`` folder, 64 MiB
together. ``download`` reads ``bench/gpu/wheels.txt`` (one line per package, with the reason it
travels), downloads cp312 manylinux wheels with ``--no-deps`` (pip resolves nothing: the list is
the resolution), builds the sdist-only ones into pure-Python wheels, deletes any other file in
``.whl/`` (two versions of one package would stop the install there), prints the sizes and
refuses (exit 1) when the total travelling size is over the limit.

``check`` proves the kit complete without the machine: every wheel installs on CPython 3.12
manylinux x86_64 (its tags and Requires-Python), every ``Requires-Dist`` of every wheel (no
extras) is met by another wheel or by a distribution of ``bench/gpu/machine_packages.txt`` (with
the version where that list knows it), and every top-level import in ``src/`` and ``bench/`` is
the standard library, the lab itself, a carried wheel (by the modules its RECORD lists), a
machine package, or one of the deliberately absent optional packages below. With ``--installed``
(run.sh step 1 on the machine) the installed distributions replace the list and each needed
module is imported for real.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIST = ROOT / "bench" / "gpu" / "wheels.txt"
MACHINE = ROOT / "bench" / "gpu" / "machine_packages.txt"
DEFAULT_DEST = ROOT / ".whl"
LIMIT_MIB = 64.0
PYTHON_VERSION = "3.12"
# pip matches manylinux_2_N exactly: list the ones PyPI's wheels of our packages use.
PLATFORMS = ("manylinux_2_39_x86_64", "manylinux_2_35_x86_64", "manylinux_2_34_x86_64",
             "manylinux_2_31_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux2010_x86_64", "manylinux1_x86_64")
# Imported somewhere in the lab but deliberately not carried (why: bench/gpu/wheels.txt). Each
# is imported lazily, only on the path named here, which the GPU run does not take.
OPTIONAL = {
    "wandb": "logger=wandb only (the GPU run uses logger=csv)",
    "optuna": "hparams_search=optuna only",
    "submitit": "hydra/launcher=submitit_slurm only",
    "nbclient": "tests/test_notebooks.py only (not a cuda test)",
    "nbformat": "tests/test_notebooks.py only (not a cuda test)",
}
# Import name -> distribution where they differ (for machine packages; wheels are read exactly).
MODULE_DIST = {"PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python-headless",
               "functorch": "torch", "torchgen": "torch", "_pytest": "pytest", "pkg_resources": "setuptools"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wanted:
    name: str
    version: str
    sdist: bool
    why: str


def read_list(path: Path = LIST) -> list[Wanted]:
    out = []
    for line in path.read_text().splitlines():
        body, _, why = line.partition("#")
        tokens = body.split()
        if not tokens:
            continue
        if "==" not in tokens[0]:
            raise SystemExit(f"{path}: {line!r}: write NAME==VERSION (the kit pins every wheel)")
        name, version = tokens[0].split("==", 1)
        extra = set(tokens[1:]) - {"sdist"}
        if extra:
            raise SystemExit(f"{path}: {line!r}: unknown word(s) {sorted(extra)} (only `sdist` is allowed)")
        out.append(Wanted(norm(name), version, "sdist" in tokens[1:], why.strip()))
    return out


def read_machine(path: Path = MACHINE) -> tuple[dict[str, str | None], str]:
    """``{dist: version or None}`` and the machine's Python version."""
    dists: dict[str, str | None] = {}
    python = PYTHON_VERSION
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        if norm(name) == "python":
            python = version
            continue
        dists[norm(name)] = version or None
    return dists, python


# -- wheels -------------------------------------------------------------------------------------
def wheel_key(path: Path) -> tuple[str, str]:
    from packaging.utils import parse_wheel_filename

    name, version, _, _ = parse_wheel_filename(path.name)
    return norm(str(name)), str(version)


def wheel_metadata(path: Path):
    from email.parser import Parser

    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1)
        msg = Parser().parsestr(zf.read(meta).decode())
        modules = set()
        for row in zf.read(record).decode().splitlines():
            top = row.split(",", 1)[0].split("/", 1)[0]
            if top and not top.endswith((".dist-info", ".data")) and not top.startswith("__pycache__"):
                modules.add(top[:-3] if top.endswith(".py") else top.split(".", 1)[0])
    return msg, modules


def pip_download(want: Wanted, dest: Path) -> None:
    if want.sdist:  # pure-Python sdist: build the wheel here (tagged py3-none-any)
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-binary", want.name,
               "-w", str(dest), f"{want.name}=={want.version}"]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", PYTHON_VERSION, "--implementation", "cp",
               *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest),
               f"{want.name}=={want.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        err = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING: Location"))
        raise SystemExit(f"gpu-kit: could not fetch {want.name}=={want.version} ({LIST.name}):\n{err[-2000:]}\n"
                         "Check the network to PyPI, or the version/`sdist` flag in that line.")


def download(dest: Path) -> list[Path]:
    wanted = read_list()
    dest.mkdir(parents=True, exist_ok=True)
    keys = {(w.name, w.version) for w in wanted}
    for path in sorted(dest.iterdir()):  # stale versions or strays: one version per package there
        try:
            stale = path.suffix != ".whl" or wheel_key(path) not in keys
        except ValueError:  # packaging's InvalidWheelFilename: not a wheel of ours either
            stale = True
        if stale:
            print(f"gpu-kit: removing {path.name} (not in {LIST.name})")
            path.unlink() if path.is_file() else None
    have = {wheel_key(p) for p in dest.glob("*.whl")}
    for want in wanted:
        if (want.name, want.version) not in have:
            print(f"gpu-kit: fetching {want.name}=={want.version}{' (building from sdist)' if want.sdist else ''}",
                  flush=True)
            pip_download(want, dest)
    files = sorted(dest.glob("*.whl"))
    missing = keys - {wheel_key(p) for p in files}
    if missing:
        raise SystemExit(f"gpu-kit: no wheel for {sorted(missing)} after download")
    return files


# -- size ---------------------------------------------------------------------------------------
def travelling_files(root: Path = ROOT, extra: tuple[Path, ...] = ()) -> dict[str, int]:
    """Bytes per path of what travels: tracked + untracked-not-ignored files, plus ``extra``."""
    def git(*args: str) -> list[str]:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True).stdout
        return [p for p in out.decode().split("\0") if p]

    sizes = {}
    for rel in git("ls-files", "-z", "--cached", "--others", "--exclude-standard"):
        path = root / rel
        if path.is_symlink() or path.is_file():
            sizes[rel] = path.lstat().st_size
    for folder in extra:
        for path in folder.rglob("*"):
            if path.is_file():
                sizes[str(path.relative_to(root) if path.is_relative_to(root) else path)] = path.stat().st_size
    return sizes


def size_report(dest: Path, limit_mib: float) -> bool:
    sizes = travelling_files(extra=(dest,) if dest.exists() else ())
    whl = {k: v for k, v in sizes.items() if k.startswith(f"{dest.name}/")}
    tree = sum(v for k, v in sizes.items() if k not in whl)
    total = sum(sizes.values())
    print(f"gpu-kit: working tree {tree / 2**20:.2f} MiB ({len(sizes) - len(whl)} files) + "
          f"{dest.name}/ {sum(whl.values()) / 2**20:.2f} MiB ({len(whl)} wheels) = "
          f"{total / 2**20:.2f} MiB of {limit_mib:.0f} MiB")
    if total > limit_mib * 2**20:
        biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
        print(f"gpu-kit: REFUSED: {total / 2**20:.2f} MiB would travel to the GPU machine, over its "
              f"{limit_mib:.0f} MiB limit. Largest: "
              + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in biggest)
              + f". Remove or git-ignore large untracked files, or drop a package from {LIST.name}.",
              file=sys.stderr)
        return False
    return True


# -- check --------------------------------------------------------------------------------------
SCANNED = ("src", "bench", "train.py", "eval.py", "tests")


@functools.cache
def first_party(roots: tuple[str, ...] = SCANNED) -> frozenset[str]:
    """The lab's own top-level names: src/ packages and every script/test module (imported by
    their siblings, e.g. ``import train_step``)."""
    names = {p.name for p in (ROOT / "src").iterdir() if p.is_dir()}
    for root in roots:
        base = ROOT / root
        names.update(p.stem for p in ([base] if base.is_file() else base.rglob("*.py")))
    return frozenset(names)


@functools.cache
def lab_imports(roots: tuple[str, ...] = SCANNED) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for root in roots:
        base = ROOT / root
        for path in [base] if base.is_file() else sorted(base.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _satisfied(spec, version: str | None) -> bool:
    return version is None or spec.contains(version, prereleases=True)


def check(dest: Path, installed: bool, list_path: Path = LIST, machine_path: Path = MACHINE) -> list[str]:
    """Problems found (empty = the kit is complete); prints what it checked."""
    from packaging import tags
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import parse_wheel_filename

    problems: list[str] = []
    if installed:
        from importlib import metadata

        machine = {norm(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
        python = ".".join(map(str, sys.version_info[:3]))
        module_dists = {m: [norm(d) for d in ds] for m, ds in metadata.packages_distributions().items()}
    else:
        machine, python = read_machine(machine_path)
        module_dists = {}
    env = {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python,
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "os_name": "posix", "extra": ""}
    py_version = tuple(int(v) for v in python.split(".")[:2])
    # pip's own rule for a foreign interpreter: cpXY / abi3 from cp32 up / py3 / none / any.
    supported = set(tags.cpython_tags(py_version, platforms=PLATFORMS)) | set(
        tags.compatible_tags(py_version, f"cp{py_version[0]}{py_version[1]}", platforms=PLATFORMS))
    wanted = {w.name: w for w in read_list(list_path)}
    wheels = {}
    for path in sorted(dest.glob("*.whl")) if dest.exists() else []:
        name, version, _, wheel_tags = parse_wheel_filename(path.name)
        msg, modules = wheel_metadata(path)
        wheels[norm(str(name))] = (str(version), msg, modules, path)
        if not set(wheel_tags) & supported:
            problems.append(f"{path.name}: no tag installable on CPython {python} manylinux x86_64")
        rp = msg.get("Requires-Python")
        if rp and not SpecifierSet(rp).contains(python):
            problems.append(f"{path.name}: Requires-Python {rp} excludes the machine's {python}")
    for name in wanted.keys() - wheels.keys():
        problems.append(f"{name}=={wanted[name].version} is in {list_path.name} but not in {dest} (run `make gpu-kit`)")
    provided: dict[str, str] = {}
    for name, (version, msg, modules, path) in wheels.items():
        if name not in wanted:
            problems.append(f"{path.name} is not in {list_path.name} (remove it: two versions stop the install)")
        for module in modules:
            provided[module] = name
        for line in msg.get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = norm(req.name)
            if dep in wheels:
                ok, where, have = _satisfied(req.specifier, wheels[dep][0]), "kit", wheels[dep][0]
            elif dep in machine:
                ok, where, have = _satisfied(req.specifier, machine[dep]), "machine", machine[dep]
            else:
                ok, where, have = False, "nowhere", None
            print(f"  {name} needs {req}: {where}{f' {have}' if have else ''} {'ok' if ok else 'MISSING'}")
            if not ok:
                problems.append(f"{name} needs {req}, which is {'not on the machine nor in the kit' if where == 'nowhere' else f'{have} on the {where}'}")
    skip = set(sys.stdlib_module_names) | first_party()
    needed = []
    for module, files in sorted(lab_imports().items()):
        if module in skip:
            continue
        if module in OPTIONAL:
            print(f"  import {module}: not carried ({OPTIONAL[module]})")
            continue
        dist = provided.get(module)
        if dist is None:
            candidates = module_dists.get(module) or [norm(MODULE_DIST.get(module, module))]
            dist = next((d for d in candidates if d in machine), None)
            where = "machine"
        else:
            where = "kit"
        if dist is None:
            problems.append(f"`import {module}` ({min(files)}...) is met by no carried wheel and no "
                            f"machine package: add it to {list_path.name}, or to kit.OPTIONAL with the reason")
            continue
        needed.append(module)
        print(f"  import {module}: {where} ({dist})")
    if installed:
        code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
        proc = subprocess.run([sys.executable, "-c", code, *needed], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            problems.append(f"importing {needed} failed: {proc.stderr.strip().splitlines()[-1]}")
        else:
            print(f"  imported for real: {' '.join(needed)}")
    return problems


def pytest_ignores(tests: Path = ROOT / "tests") -> tuple[list[str], list[str]]:
    """``--ignore`` arguments for the test modules without a cuda test (no ``mark.cuda`` in
    their text, the rule conftest's marker is spelled by), and the problems.

    ``pytest -m cuda`` would only deselect their tests, after importing every module of the
    suite (lightning, hydra, the whole lab: 13 s of the GPU step's budget on a 2-core CPU).
    A module importing a not-carried package at module level would also fail collection there
    and stop the whole step; such a module holding cuda tests is a problem, since those would
    never run on the GPU machine."""
    ignores, problems = [], []
    for path in sorted(tests.rglob("test_*.py")):
        text = path.read_text()
        tree = ast.parse(text, str(path))
        top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module.split(".")[0] for n in tree.body
                if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module}
        missing = sorted(top & OPTIONAL.keys())
        rel = path.relative_to(ROOT)
        if "mark.cuda" not in text:
            ignores.append(f"--ignore={rel}")
        elif missing:
            problems.append(f"{rel} imports {missing} (not carried) at module level but holds cuda tests: "
                            "import them inside the tests that need them")
    return ignores, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pytest-ignores", help="print --ignore=... for the test modules without cuda tests")
    for name in ("download", "size", "check"):
        p = sub.add_parser(name)
        p.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="the wheel folder (default .whl)")
        p.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
        p.add_argument("--installed", action="store_true", help="check against this interpreter's packages")
        p.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.cmd == "pytest-ignores":
        ignores, problems = pytest_ignores()
        for problem in problems:
            print(f"gpu-kit: {problem}", file=sys.stderr)
        print(" ".join(ignores))
        return 1 if problems else 0
    dest = args.dest.resolve()
    result: dict = {"command": args.cmd}
    if args.cmd == "download":
        files = download(dest)
        print(f"\n{'wheel':72s} {'MiB':>7s}")
        for path in files:
            print(f"{path.name:72s} {path.stat().st_size / 2**20:7.2f}")
        print(f"{'total ' + dest.name + '/':72s} {sum(p.stat().st_size for p in files) / 2**20:7.2f}\n")
    if args.cmd in ("download", "size"):
        ok = size_report(dest, args.limit_mib)
        result["size_ok"] = ok
        if not ok:
            return 1
    if args.cmd in ("download", "check"):
        print(f"gpu-kit: checking {dest.name}/ against "
              f"{'this interpreter' if args.installed else MACHINE.name} (CPython {PYTHON_VERSION})")
        problems = check(dest, args.installed)
        result["problems"] = problems
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
        if problems:
            print("gpu-kit: INCOMPLETE:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print("gpu-kit: complete: every requirement and import is met on the GPU machine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
