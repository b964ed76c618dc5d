"""Every script in ``examples/`` runs to the end and says "ok"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "examples").glob("*.py"))


def test_the_examples_are_found() -> None:
    names = {script.name for script in SCRIPTS}
    assert {"strided_conv_loops.py", "conv_layer_vs_torch.py", "conv_as_matrix.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_example_runs_and_says_ok(script: Path) -> None:
    if "torch" in script.name:
        pytest.importorskip("torch")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "ok" in completed.stdout.split(), completed.stdout
