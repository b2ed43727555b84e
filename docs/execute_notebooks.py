"""Execute ``notebooks/*.ipynb`` and store the executed copies under ``docs/notebooks/``.

``make notebooks`` runs this. The site renders those copies with their outputs (mkdocs-jupyter,
``execute: false``): the docs build never runs a notebook. The sources in ``notebooks/`` stay
without outputs (``tests/test_notebooks.py``); ``tests/test_docs.py`` checks that every copy
holds the same code as its source, so an edited notebook without a fresh ``make notebooks``
fails the tests instead of showing stale outputs.

Outputs are made portable before they are written: the checkout's absolute path becomes ``.``
(the notebooks print result folders and warnings with file names), and execution timings are not
recorded. Usage::

    python docs/execute_notebooks.py [NAME ...] [--smoke NAME ...] [--timeout 7200]

``--smoke`` runs the named notebooks at the test suite's tiny sizes (``ACTIONLAB_NOTEBOOK_SMOKE=1``:
seconds instead of the full trainings, which take tens of minutes on a 2-core CPU) and says so in
a note at the top of the executed copy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "notebooks"
EXECUTED = REPO / "docs" / "notebooks"
# Work folder of the notebooks (synthetic data, runs): git-ignored, shared so the data is made once.
WORK = REPO / "logs" / "notebooks"
MAX_BYTES = 2_000_000


def scrub(nb: nbformat.NotebookNode) -> None:
    """Replace the checkout's absolute path by ``.`` in every text output."""
    root = str(REPO)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = out["text"].replace(root, ".")
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    out["data"][mime] = value.replace(root, ".")


SMOKE_NOTE = (
    "*Rendered from a run at the test suite's tiny sizes (`make notebooks ARGS=\"--smoke {name}\"`,"
    " `ACTIONLAB_NOTEBOOK_SMOKE=1`): a few clips and one epoch, so the curves and predictions"
    " show the mechanics, not a trained model. `make notebooks` runs it at full size.*"
)


def execute(source: Path, timeout: int, smoke: bool = False) -> Path:
    nb = nbformat.read(source, as_version=4)
    env = {
        "ACTIONLAB_NOTEBOOK_DIR": str(WORK),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        # The kernel is this interpreter (the project's venv) through the native python3 spec.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    os.environ.update(env)
    if smoke:
        os.environ["ACTIONLAB_NOTEBOOK_SMOKE"] = "1"
    else:
        os.environ.pop("ACTIONLAB_NOTEBOOK_SMOKE", None)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(source.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    scrub(nb)
    if smoke:
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(SMOKE_NOTE.format(name=source.stem)))
    EXECUTED.mkdir(parents=True, exist_ok=True)
    target = EXECUTED / source.name
    nbformat.write(nb, target)
    size = target.stat().st_size
    print(f"{source.name}: executed in {time.perf_counter() - start:.0f} s, {size / 1e6:.2f} MB -> "
          f"{target.relative_to(REPO)}", flush=True)
    if size > MAX_BYTES:
        raise SystemExit(f"{target} is {size / 1e6:.1f} MB; keep executed notebooks under "
                         f"{MAX_BYTES / 1e6:.0f} MB (fewer or smaller figures)")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all of notebooks/)")
    parser.add_argument("--smoke", nargs="*", default=[], help="run these at the tiny test sizes")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per cell")
    args = parser.parse_args(argv)
    sources = sorted(SOURCES.glob("*.ipynb"))
    if args.names or args.smoke:
        sources = [p for p in sources if p.stem in args.names or p.stem in args.smoke]
        if not sources:
            raise SystemExit(f"no notebook named {args.names} in {SOURCES}")
    WORK.mkdir(parents=True, exist_ok=True)
    for source in sources:
        execute(source, args.timeout, smoke=source.stem in args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
