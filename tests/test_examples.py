"""Every script in ``examples/`` runs to the end and says "ok"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "examples").glob("*.py"))
# the training examples, shortened (they compare with the framework's network every step)
ARGUMENTS = {"train_cnn_torch.py": ["--steps", "4"], "train_cnn_jax.py": ["--steps", "4"]}


def test_the_examples_are_found() -> None:
    names = {script.name for script in SCRIPTS}
    assert {"strided_conv_loops.py", "conv_layer_vs_torch.py", "conv_as_matrix.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_example_runs_and_says_ok(script: Path) -> None:
    if "torch" in script.name:
        pytest.importorskip("torch")
    if "jax" in script.name:
        pytest.importorskip("jax")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, str(script), *ARGUMENTS.get(script.name, [])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "ok" in completed.stdout.split(), completed.stdout
