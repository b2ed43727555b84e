"""The notebooks run top to bottom (tiny sizes) and are committed without outputs."""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist_without_outputs():
    assert {p.stem for p in NOTEBOOKS} == {"quickstart", "rubiks_shifts", "zoo"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code, path.name
        assert all(not c.outputs and c.execution_count is None for c in code), (
            f"{path.name} has outputs"
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("ACTIONLAB_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("ACTIONLAB_NOTEBOOK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    # The kernel is this interpreter (the project's venv) through the native python3 spec.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [
        o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]
    assert figures, f"{path.name} drew no figure"
