"""``examples/walkthrough.ipynb`` runs top to bottom in a fresh kernel (issue 7, item 4).

The kernel is ``python3``, whose ``python`` jupyter_client replaces with
``sys.executable``: the interpreter running the tests. The test checks that, then
what the walkthrough shows: the steps in LaTeX, the notes' matrix, a picture, the
im2col code. Every check inside the notebook is an ``assert`` of its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install nbformat nbclient ipykernel")
nbclient = pytest.importorskip("nbclient", reason="pip install nbformat nbclient ipykernel")
pytest.importorskip("ipykernel", reason="pip install ipykernel")
pytest.importorskip("matplotlib", reason='pip install "einderive[plot]"')

ROOT = Path(__file__).parent.parent
NOTEBOOK = ROOT / "examples" / "walkthrough.ipynb"


def outputs(cell: dict, kind: str) -> str:
    """Everything a cell shows of one MIME type (or its printed text, for ``stream``)."""
    found = []
    for output in cell.get("outputs", []):
        if kind == "stream" and output["output_type"] == "stream":
            found.append(output["text"])
        elif kind in output.get("data", {}):
            found.append(output["data"][kind])
    return "\n".join(found)


@pytest.fixture(scope="module")
def executed() -> list[dict]:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    probe = nbformat.v4.new_code_cell("import sys, einderive\nprint(sys.executable)")
    notebook.cells.insert(0, probe)
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(ROOT)}}
    )
    with pytest.MonkeyPatch.context() as patch:
        # the kernel imports this checkout's einderive, installed or not
        patch.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")]))
        )
        client.execute()
    return notebook.cells


def test_kernel_is_this_python(executed):
    shown = outputs(executed[0], "stream").strip()
    assert Path(shown).resolve() == Path(sys.executable).resolve()


def test_no_cell_failed(executed):
    for cell in executed:
        assert not [o for o in cell.get("outputs", []) if o["output_type"] == "error"]


def test_walkthrough_shows_the_work(executed):
    code = [cell for cell in executed if cell["cell_type"] == "code"]
    latex = "\n".join(outputs(cell, "text/latex") for cell in code)
    text = "\n".join(outputs(cell, "stream") for cell in code)
    # the derivation and the steps, displayed in LaTeX
    assert r"\mathrm{dX}_{p, q}" in latex and r"\delta_{p,\, i + m - 1}" in latex
    # the strided steps as text: the substitution, the bounds, fill s
    assert "p = s*i + m - 1 is solved for m: m = p - s*i + 1" in text
    assert "0 <= m <= M - 1 becomes 0 <= p - s*i + 1 <= M - 1" in text
    assert "fill=(s, s), flip_kernel=True" in text
    # the notes' matrix, with nine entries in every row
    assert "k1 k2 0  k3 k4 0  0  0  0" in text and "0  0  0  0  k1 k2 0  k3 k4" in text
    assert r"k_{1} & k_{2} & 0 & k_{3}" in latex
    # a picture of the strided matrix, and the im2col view and code
    assert any(outputs(cell, "image/png") for cell in code)
    assert "X~[(c, m, n), (i, j)] = X[c, i + m, j + n]" in text
    assert "sliding_window_view(x, (3, 3), axis=(2, 3))" in text
