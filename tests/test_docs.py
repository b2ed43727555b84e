"""The documentation site: strict build, commands that compose, rendered notebooks, no outside paths.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the nav, an API
object that does not resolve and a generated table without its input (``docs/hooks.py``). Every
``python train.py`` / ``python eval.py`` / ``python -m actionlab.predict`` line in a fenced code
block of the docs or the README is composed with Hydra exactly as written (sweeps expanded).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import CONF_DIR, REPO
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

import actionlab

DOCS = REPO / "docs"
FENCE = re.compile(r"^([ \t]*)```[^\n]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
# Placeholders a reader replaces (``<run>``); composed as a plain word.
PLACEHOLDER = re.compile(r"<[A-Za-z0-9_ .-]+>")
ENTRY_POINTS = {"train.py": "train", "eval.py": "eval", "-m actionlab.predict": "predict"}
# Hydra command-line flags that take no override (and the ones followed by a value).
FLAGS = {"-m", "--multirun", "--resolve", "--info", "-i"}
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp"}


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- the build -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {k: v for k, v in os.environ.items() if k != "ACTIONLAB_DOCS_WRITE_PROFILES"}
    env["NO_MKDOCS_2_WARNING"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    problems = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems or [proc.stderr[-4000:]])
    return out


@pytest.mark.slow
def test_site_builds_strictly_with_generated_tables(site):
    rubiks = (site / "models" / "rubiksnet" / "index.html").read_text()
    assert "1.899M" in rubiks and "8.564M" in rubiks  # counted from the code at build time
    assert "<!-- zoo" not in rubiks
    bench = (site / "benchmarks" / "index.html").read_text()
    assert "8x8x54x56x56" in bench and "<!-- bench" not in bench  # from bench/results/rubiks_shift.json
    # bench/gpu/report.py's section: a GPU run's machine, or that nothing has run on a GPU
    assert 'id="gpu-run-kit"' in bench and ("Machine: " in bench or "Nothing in this lab has run on a GPU" in bench)
    assert 'id="wall-clock-efficiency"' in bench and "<strong>NOT MET</strong>" in bench  # efficiency.json
    multigrid = (site / "training" / "multigrid" / "index.html").read_text()
    assert "multigrid_sqrt" in multigrid
    api = (site / "reference" / "ops" / "index.html").read_text()
    assert "RubiksShift3d" in api and "rubiks_shift_reference" in api
    models_api = (site / "reference" / "models" / "index.html").read_text()
    assert "fuse_for_inference" in models_api and "apply_memory_format" in models_api  # issue 15's modules
    weights = (site / "weights" / "index.html").read_text()  # the registry, at build time
    assert weights.count("<td><code>tokshift_l16_12x384_k400</code></td>") == 1 and "<!-- weights" not in weights
    assert "$ python -m actionlab.pretrained show x3d_m_k400" in weights
    assert "ckpt_path=weights/x3d_m_k400.ckpt data=kinetics400 data.root=/path/to/kinetics400" in weights
    x3d = (site / "models" / "x3d" / "index.html").read_text()
    assert "<code>x3d_m_256e_k400</code>" in x3d and "TRAIN_CROP_SIZE" in x3d  # table, protocols, source
    evaluation = (site / "evaluation" / "index.html").read_text()
    assert "<code>pyslowfast_10x3</code>" in evaluation and "<!-- protocols" not in evaluation
    assert 'id="frames-evalsampling"' in evaluation  # the heading after a generated table survives
    tasks = (site / "reference" / "tasks" / "index.html").read_text()
    assert "find_by_file" in tasks and "check_request" in tasks and "ConfigValueError" in tasks
    assert "retain_freed_memory" in tasks and "RetainCpuMemory" in (site / "reference" / "lit" / "index.html").read_text()
    for name in ("quickstart", "rubiks_shifts", "zoo"):
        page = (site / "notebooks" / name / "index.html").read_text()
        assert "data:image/png" in page, f"{name}: the rendered notebook has no figure output"


def test_generated_table_directives_fail_loudly():
    hooks = _hooks()
    with pytest.raises(ValueError, match="unknown bench table"):
        hooks.render("<!-- bench: no_such_table -->")
    with pytest.raises(ValueError, match="conf/model"):
        hooks.render("<!-- zoo: no_such_model:10:8x224 -->")
    with pytest.raises(ValueError, match="model:classes:TxS"):
        hooks.render("<!-- zoo: rubiks_tiny:174 -->")
    with pytest.raises(ValueError, match="unknown family"):
        hooks.render("<!-- weights: x3d,no_such_family -->")
    with pytest.raises(ValueError, match="did you mean x3d_m_k400"):
        hooks.render("<!-- weights-show: x3d_m_k40 -->")
    with pytest.raises(ValueError, match="only 'all'"):
        hooks.render("<!-- protocols: 1clip -->")
    assert hooks.render("text\n<!-- not a directive -->\n") == "text\n<!-- not a directive -->\n"


def test_gpu_section_is_the_kits_report(tmp_path, monkeypatch):
    """<!-- bench: gpu --> renders bench/gpu/report.py's section from bench/results/gpu/: the
    statement that nothing ran on a GPU until a GPU run is there, then that run's figures."""
    hooks = _hooks()
    report = hooks._bench_module("gpu/report")
    assert re.search(r"^<!-- bench: gpu -->$", (DOCS / "benchmarks.md").read_text(), re.MULTILINE)
    monkeypatch.setattr(hooks, "GPU_RESULTS", tmp_path / "gpu")
    empty = hooks.render("<!-- bench: gpu -->")
    assert empty.startswith("**Nothing in this lab has run on a GPU yet.**")
    assert empty in report.gpu_section({}) and "## " not in empty
    (tmp_path / "gpu").mkdir()
    gpu = {"name": "NVIDIA H200", "capability": "9.0", "sms": 132, "memory_gib": 139.8, "l2_mib": 60}
    step = {"name": "setup", "status": "ok", "seconds": 20, "budget": 45}
    for mode, expected in (("rehearse", "Nothing in this lab"), ("gpu", "NVIDIA H200 (sm_90, 132 SMs")):
        (tmp_path / "gpu" / "setup.json").write_text(json.dumps(
            {"mode": mode, "env": {"gpu": gpu, "torch": "2.11.0+cu130"}, "steps": {"1": step}}))
        page = hooks.render("<!-- bench: gpu -->")
        assert expected in page and page in report.gpu_section(report.read_run(tmp_path / "gpu"))
    assert "| 1 | setup | ok | 20 / 45 |" in page


def _efficiency():
    return _hooks()._bench_module("efficiency"), json.loads((REPO / "bench" / "results" / "efficiency.json").read_text())


def test_efficiency_section_shows_the_targets_as_measured(tmp_path):
    """<!-- bench: efficiency --> renders bench/results/efficiency.json: each target's measured
    ratio and MET / NOT MET follow the JSON (a changed measurement changes the verdict), and
    bench/RESULTS.md holds the same section, regenerated from the JSON (not stale)."""
    efficiency, payload = _efficiency()
    assert re.search(r"^<!-- bench: efficiency -->$", (DOCS / "benchmarks.md").read_text(), re.MULTILINE)
    page = _hooks().render("<!-- bench: efficiency -->")
    targets = payload["devices"]["cpu"]["ratios"]["targets"]
    assert len(targets) == 3
    for key, t in targets.items():
        row = next(line for line in page.splitlines() if f"(`{key}`) |" in line)
        assert f"| {t['measured']:.2f}x |" in row and row.endswith("**MET** |" if t["met"] else "**NOT MET** |")
    for title in efficiency.SECTION_TITLES.values():
        assert title in page
    assert "predicted" in page and "`aten::native_batch_norm_backward`" in page
    block = f"{efficiency.MD_BEGIN}\n{efficiency.results_section(payload)}\n{efficiency.MD_END}"
    assert block in (REPO / "bench" / "RESULTS.md").read_text(), "run: python bench/efficiency.py --results-md"
    # Another measurement, another verdict: nothing in the section is written by hand.
    t = payload["devices"]["cpu"]["ratios"]["targets"]["train_ratio_tiny_vs_tsm"]
    t["measured"], t["met"] = 4.213, True
    changed = tmp_path / "efficiency.json"
    changed.write_text(json.dumps(payload))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n")
    for _ in range(2):  # appended once, then replaced in place
        efficiency.main(["--out", str(changed), "--results-md", str(md)])
    text = md.read_text()
    assert text.count(efficiency.MD_BEGIN) == 1 and text.startswith("# Results\n")
    row = next(line for line in text.splitlines() if "(`train_ratio_tiny_vs_tsm`) |" in line)
    assert row.endswith("| 4.21x | **MET** |")


def test_efficiency_prose_agrees_with_the_measurement():
    """The hand-written reading of the tables on the Benchmarks page and in the memory_format docs
    (no figures, only directions) holds in bench/results/efficiency.json."""
    from actionlab.models.memory_format import PREFERRED

    _, payload = _efficiency()
    sections = payload["devices"]["cpu"]["sections"]
    t = {s: {r["variant"]: r["median_s"] for r in sections[s]["rows"]} for s in ("train", "compile", "formats3d")}
    assert t["compile"]["rubiks_tiny train compiled"] > t["compile"]["rubiks_tiny train eager"]  # compile off for training
    assert t["compile"]["rubiks_tiny compiled fused"] < t["compile"]["rubiks_tiny eager fused"]  # helps inference
    assert t["train"]["tsm_r50 channels_last"] < t["train"]["tsm_r50 contiguous"]  # TSM gains from channels-last
    # 3D models: auto follows the inference rows on CPU; the X3D-S train row favours channels_last
    assert PREFERRED["clips"]["cpu"] == "contiguous" and PREFERRED["frames"] == {"cpu": "channels_last", "cuda": "channels_last"}
    for model in ("x3d_m", "vov3d_m"):
        assert t["formats3d"][f"{model} infer contiguous"] <= t["formats3d"][f"{model} infer channels_last"]
    assert t["formats3d"]["x3d_s train channels_last"] < t["formats3d"]["x3d_s train contiguous"]
    profile = {r["variant"]: dict(r["top_ops_ms"]) for r in sections["profile"]["rows"]}
    old, new = profile["rubiks_tiny train today"], profile["rubiks_tiny train new"]
    assert new["actionlab::rubiks_shift_grad_shift"] > 1.5 * old["actionlab::rubiks_shift_grad_shift"]  # slower in channels-last
    # PyTorch's BN backward is much slower in channels-last (the BN + ReLU table), and the fused
    # kernel that replaces it in training is faster than it at Tiny's widths and in the train step
    # (the new profile has PyTorch's op where it was measured before the kernel existed).
    bn = {r["variant"]: r["median_s"] for r in sections["bn_relu"]["rows"]}
    for shape in ("54x80x80", "216x20x20"):
        tag = f"BN+ReLU {shape} N16"
        assert bn[f"{tag} | channels-last PyTorch"] > 1.2 * bn[f"{tag} | channels-last kernel"], shape
    assert bn["rubiks_tiny channels_last, BN + ReLU kernel"] < bn["rubiks_tiny channels_last, PyTorch BN + ReLU"]
    if "actionlab::bn_relu_backward" not in new:
        assert new["aten::native_batch_norm_backward"] > 1.5 * old["aten::native_batch_norm_backward"]


def test_released_weights_tables_come_from_the_registry():
    """The rows, protocols and printed commands are the registry's and the CLI's own."""
    from actionlab.data.views import PROTOCOLS
    from actionlab.pretrained import get, releases
    from actionlab.pretrained.__main__ import next_step, show

    hooks = _hooks()
    table = hooks.render("<!-- weights: srtg,mtnet -->")
    rows = [line for line in table.splitlines() if line.startswith("| `")][1:]  # after the header
    assert [row.split("`")[1] for row in rows] == [r.name for r in releases() if r.family in ("srtg", "mtnet")]
    assert "| `x3d_m_k400` | `x3d_m` | `kinetics400` | scratch | 16x256 | 10x3 `pyslowfast_10x3` | 76.2 (10 clips x 3 crops; PySlowFast MODEL_ZOO) |" in hooks.render("<!-- weights: x3d -->")
    protocols = hooks.render("<!-- weights-protocols: srtg -->")
    assert "| BGR, mean 0.4863/0.4588/0.4078, std 0.2348 | 16 frames 2 apart (source frames), short videos repeat |" in protocols
    assert get("srtg_r3d_34_hacs").protocol.reference in protocols
    assert show(get("x3d_m_k400")) in hooks.render("<!-- weights-show: x3d_m_k400 -->")
    fetched = hooks.render("<!-- weights-next: tokshift_b16_8x224_k400 -->")
    assert "fetch tokshift_b16_8x224_k400 --dir weights --file PATH" in fetched
    assert next_step(get("tokshift_b16_8x224_k400"), "weights/tokshift_b16_8x224_k400.ckpt") in fetched
    protocol_rows = [line for line in hooks.render("<!-- protocols: all -->").splitlines() if line.startswith("| `")][1:]
    assert [row.split("`")[1] for row in protocol_rows] == list(PROTOCOLS)
    assert "| `srtg_1x1` | 1 x 1 | `srtg` | 294 | `srtg` | `srtg` | `logits_mean` |" in "\n".join(protocol_rows)


def test_every_release_is_on_its_family_page():
    from actionlab.pretrained import releases

    listed = set()
    for page in (DOCS / "models").glob("*.md"):
        for spec in re.findall(r"^<!--\s*weights:\s*(.*?)\s*-->", page.read_text(), re.MULTILINE):
            listed |= set(spec.replace(",", " ").split())
    assert listed == {r.family for r in releases()}
    assert re.search(r"^<!-- weights: all -->$", (DOCS / "weights.md").read_text(), re.MULTILINE)


def test_the_evaluation_page_describes_every_view_rule():
    from actionlab.data.transforms import CROP_MODES, RESIZES
    from actionlab.data.views import SAMPLINGS

    text = (DOCS / "evaluation.md").read_text()
    assert "<!-- protocols: all -->" in text
    undescribed = [code for code in (*SAMPLINGS, *CROP_MODES, *RESIZES) if f"`{code}`" not in text]
    assert not undescribed, f"describe these rules on the Evaluation page: {undescribed}"


def _zoo_rows() -> set[str]:
    """Every ``model:classes:TxS`` item of a ``<!-- zoo: ... -->`` directive in the docs."""
    rows = set()
    for page in DOCS.rglob("*.md"):
        for spec in re.findall(r"^<!--\s*zoo:\s*(.*?)\s*-->", page.read_text(), re.MULTILINE):
            rows |= set(spec.split())
    return rows


def test_committed_model_profiles_are_the_codes_counts(monkeypatch):
    """docs/model_profiles.json holds the counts of exactly this code and exactly the zoo rows of
    the pages, so a fresh clone's strict build (CI's ``site`` fixture) counts nothing: a stale
    key silently recounts all 50 rows, about a minute of CI per build. One row is recounted here
    through the hook's own path to show that the stored numbers are what the code counts."""
    hooks = _hooks()
    committed = json.loads(hooks.COMMITTED.read_text())
    fix = "run `make docs` and commit docs/model_profiles.json"
    assert committed["key"] == hooks._code_hash(), f"docs/model_profiles.json was counted from other model code: {fix}"
    assert set(committed["rows"]) == _zoo_rows(), f"docs/model_profiles.json lists other rows than the pages: {fix}"
    # The hook disables the compiled op for the whole (mkdocs) process; here only for this test,
    # and a load() it triggers must not leave "disabled" cached for the rest of the session.
    from actionlab.ops import _extension

    monkeypatch.setenv(_extension.DISABLE_ENV, "1")
    monkeypatch.setattr(_extension, "_reason", _extension._reason)
    assert hooks.Profiles._profile("rubiks_tiny", 174, 8, 224) == committed["rows"]["rubiks_tiny:174:8x224"]


def test_every_model_config_has_a_row_in_a_zoo_table():
    rows = {item.split(":")[0] for item in _zoo_rows()}
    configs = {p.stem for p in (REPO / "conf" / "model").glob("*.yaml")}
    assert configs - rows == set(), "model configs without a row on their family page"
    assert rows - configs == set()


def test_every_top_level_module_is_in_the_api_reference():
    text = "\n".join(p.read_text() for p in (DOCS / "reference").glob("*.md"))
    documented = set(re.findall(r"^::: (actionlab\.\w+)\s*$", text, re.MULTILINE))
    modules = {f"actionlab.{m.name}" for m in pkgutil.iter_modules(actionlab.__path__)}
    assert modules - documented == set(), "add a '::: <module>' line to docs/reference/"


# -- notebooks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("source", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_executed_notebook_matches_its_source(source):
    executed = DOCS / "notebooks" / source.name
    assert executed.is_file(), f"{executed.relative_to(REPO)} is missing: run `make notebooks`"
    assert executed.stat().st_size < 2_000_000, f"{executed.name} is over 2 MB"
    code = [c.source for c in nbformat.read(source, 4).cells if c.cell_type == "code"]
    done = [c for c in nbformat.read(executed, 4).cells if c.cell_type == "code"]
    assert [c.source for c in done] == code, (
        f"{executed.relative_to(REPO)} was executed from another version of {source.name}: "
        "run `make notebooks` and commit docs/notebooks/"
    )
    outputs = [o for c in done for o in c.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]


# -- no paths outside the repository -------------------------------------------------------------
def test_no_file_refers_to_documents_outside_the_repository():
    # Spelled in pieces so that this file does not match itself.
    forbidden = ["shared" + "/design", "shared" + "/seeds", "../" + "shared", "/wo" + "rk/",
                 "ARCHITECTURE" + ".md", "practices" + ".md"]
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for rel in files:
        path = REPO / rel
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            hits += [f"{rel}:{n}: {word}" for word in forbidden if word in line]
    assert not hits, "references to paths outside the repository:\n" + "\n".join(hits)


# -- commands in the docs ------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    where: str
    line: str
    config: str
    overrides: tuple[str, ...]
    multirun: bool


def fenced_blocks() -> list[list[tuple[str, str]]]:
    """Every fenced code block of the docs and the README as ``(page:line, line)`` pairs."""
    blocks = []
    for page in sorted(DOCS.rglob("*.md")) + [REPO / "README.md"]:
        text = page.read_text()
        for match in FENCE.finditer(text):
            first = text[: match.start(2)].count("\n") + 1
            blocks.append([(f"{page.relative_to(REPO)}:{first + offset}", line)
                           for offset, line in enumerate(match.group(2).splitlines())])
    return blocks


def documented_commands() -> list[Command]:
    found = []
    for block in fenced_blocks():
        for where, line in block:
            command = parse_command(line)
            if command:
                config, overrides, multirun = command
                found.append(Command(where, line.strip(), config, tuple(overrides), multirun))
    return found


def parse_command(line: str) -> tuple[str, list[str], bool] | None:
    """``(config name, overrides, multirun)`` of a ``python train.py|eval.py|-m actionlab.predict``
    line, None for any other line. Environment assignments before ``python`` are allowed."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words = words[1:]
    if len(words) < 2 or words[0] not in ("python", "python3"):
        return None
    head = " ".join(words[1:3]) if words[1] == "-m" else words[1]
    if head not in ENTRY_POINTS:
        return None
    rest = words[3:] if words[1] == "-m" else words[2:]
    if any(word.startswith("[") for word in rest):
        return None  # a synopsis such as "python train.py [group=option ...]"
    overrides, multirun, skip = [], False, False
    for word in rest:
        if skip:
            skip = False
        elif word in ("-m", "--multirun"):
            multirun = True
        elif word in FLAGS:
            continue
        elif word in FLAGS_WITH_VALUE:
            skip = True
        elif word.startswith("-"):
            raise AssertionError(f"unknown Hydra flag {word!r} in: {line}")
        else:
            overrides.append(PLACEHOLDER.sub("PLACEHOLDER", word))
    return ENTRY_POINTS[head], overrides, multirun


def job_overrides(command: Command) -> list[list[str]]:
    """The override list of every job the command starts (a multirun sweep expands)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = OverridesParser.create().parse_overrides(list(command.overrides))
    if not any(o.is_sweep_override() for o in parsed):
        return [list(command.overrides)]
    assert command.multirun, f"{command.where}: a sweep ({command.line}) needs -m"
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def test_the_docs_and_readme_show_many_commands():
    commands = documented_commands()
    assert len(commands) >= 60, [c.line for c in commands]
    readme = [c for c in commands if c.where.startswith("README.md")]
    assert len(readme) >= 15
    assert {c.config for c in commands} == {"train", "eval", "predict"}
    assert any(c.multirun and "hydra/launcher=slurm" in c.overrides for c in commands)
    assert any("hparams_search=optuna" in c.overrides for c in commands)
    # The plugin's own config would skip the lab's request derivation and partition checks.
    raw = [f"{c.where}: {c.line}" for c in commands if "hydra/launcher=submitit_slurm" in c.overrides]
    assert not raw, "use hydra/launcher=slurm, not the plugin's submitit_slurm:\n" + "\n".join(raw)


def test_the_pages_show_the_sweep_and_slurm_commands_the_tests_run():
    """tests/test_sweeps.py and tests/test_slurm.py run these commands verbatim; the pages that
    teach them must show exactly those."""
    from test_slurm import COMMANDS
    from test_sweeps import GPU_RECIPE, LOCAL_SWEEP

    distributed = (DOCS / "training" / "distributed.md").read_text()
    sweeps = (DOCS / "training" / "sweeps.md").read_text()
    missing = [c for c in (*COMMANDS.values(), GPU_RECIPE) if c not in distributed]
    missing += [c for c in (LOCAL_SWEEP, COMMANDS["sweep"]) if c not in sweeps]
    assert not missing, f"the docs lost commands the tests run: {missing}"


def test_every_documented_command_composes():
    failures = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        for command in documented_commands():
            try:
                for overrides in job_overrides(command):
                    cfg = compose(command.config, overrides=overrides, return_hydra_config=True)
                    if command.config == "train":
                        # The groups a command names must be built from these keys.
                        assert cfg.model._target_ and cfg.data._target_ and cfg.trainer._target_
            except Exception as err:  # noqa: BLE001  (collect every failure, report them together)
                failures.append(f"{command.where}: {command.line}\n    {type(err).__name__}: {err}")
    GlobalHydra.instance().clear()
    assert not failures, "documented commands that do not compose:\n" + "\n".join(failures)


PRETRAINED = "python -m actionlab.pretrained "
CONVERT = "python -m actionlab.models.convert "


def test_documented_release_commands_name_real_entries(capsys):
    """``python -m actionlab.pretrained show|fetch NAME`` and ``convert ... --release NAME`` in
    the docs and README name registry entries (``--file`` exactly for the manual ones), and an
    ``eval.py`` line after ``fetch NAME --dir D`` in the same block starts with the command
    ``fetch`` prints (with the reader's data.root; overrides may follow)."""
    from actionlab.pretrained import REGISTRY
    from actionlab.pretrained.__main__ import main as pretrained_main

    problems, checked = [], 0
    for block in fenced_blocks():
        fetched = {}
        for where, line in block:
            if not line.startswith(("python -m actionlab.", "python eval.py")):
                continue
            words = shlex.split(line, comments=True)
            text = " ".join(words)
            if text.startswith(PRETRAINED):
                args = words[3:]
                if args[0] in ("show", "fetch"):
                    entry = REGISTRY.get(args[1])
                    if entry is None:
                        problems.append(f"{where}: no registry entry {args[1]!r}")
                        continue
                    if args[0] == "fetch":
                        if ("--file" in args) != entry.manual:
                            problems.append(f"{where}: --file is for the entries without a direct link")
                        folder = args[args.index("--dir") + 1] if "--dir" in args else "weights"
                        fetched[f"{folder}/{entry.name}.ckpt"] = entry
                elif args[0] == "list":
                    try:
                        pretrained_main(args)  # an empty filter exits
                    except SystemExit as err:
                        problems.append(f"{where}: {err}")
                checked += 1
            elif text.startswith(CONVERT) and "--release" in words:
                entry = REGISTRY.get(words[words.index("--release") + 1])
                if entry is None or entry.family != words[3]:
                    problems.append(f"{where}: --release names no {words[3]} entry")
                checked += 1
            elif text.startswith("python eval.py ckpt_path="):
                ckpt = words[2].split("=", 1)[1]
                if ckpt in fetched:
                    root = next((w.split("=", 1)[1] for w in words if w.startswith("data.root=")), None)
                    printed = fetched[ckpt].eval_command(ckpt, root)
                    if text != printed and not text.startswith(printed + " "):  # overrides may follow
                        problems.append(f"{where}: fetch prints {printed!r}")
                    checked += 1
    assert checked >= 30 and not problems, problems


def test_registry_eval_commands_compose():
    """What ``fetch`` prints composes with Hydra for every dataset of the registry."""
    from actionlab.pretrained import releases

    commands = {r.dataset: r.eval_command(f"weights/{r.name}.ckpt") for r in releases()}
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        for command in commands.values():
            config, overrides, _ = parse_command(command)
            cfg = compose(config, overrides=overrides)
            assert cfg.data._target_ and cfg.data.num_classes
    GlobalHydra.instance().clear()


def test_command_parser():
    assert parse_command("python train.py model=x3d_m  # comment") == ("train", ["model=x3d_m"], False)
    assert parse_command("WANDB_API_KEY=... python train.py -m a=1,2") == ("train", ["a=1,2"], True)
    assert parse_command("python -m actionlab.predict ckpt_path=x video=y") == (
        "predict", ["ckpt_path=x", "video=y"], False)
    assert parse_command("python train.py experiment=x --cfg job") == ("train", ["experiment=x"], False)
    assert parse_command("python -m actionlab.data.prepare ssv2 --src a --dst b") is None
    assert parse_command("make train") is None
    assert parse_command("python train.py [group=option ...]") is None
    assert parse_command("python eval.py ckpt_path=runs/<run>/last.ckpt")[1] == ["ckpt_path=runs/PLACEHOLDER/last.ckpt"]
    jobs = job_overrides(Command("x", "", "train", ("optimizer.lr=0.1,0.05", "model=rubiks_tiny,rubiks_small"), True))
    assert len(jobs) == 4 and ["optimizer.lr=0.1", "model=rubiks_tiny"] in jobs
