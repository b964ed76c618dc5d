"""Every LaTeX string einderive produces renders in a real renderer: KaTeX under Node.

``tests/katex`` is a small Node project (``npm ci --prefix tests/katex`` installs
KaTeX); its ``render.js`` reads JSON lines of LaTeX and renders each with
``throwOnError`` and ``strict: "error"``, in one process for all of them. The
LaTeX comes from the derivation, each pullback, the explanation, the Jacobian
and the im2col view of a table of expressions: the conv cases of
test_pullbacks.py and the programs (relu, sigmoid, softmax, max pooling) of
test_programs.py. The test skips only where ``node`` is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_programs import CASES as PROGRAMS
from test_pullbacks import CASES as PULLBACKS
from test_values import CASES as VALUES

import einderive as ed
from einderive.explain import explain
from einderive.matrix import im2col, jacobian

KATEX = Path(__file__).parent / "katex"

# repeats that add nothing new to the LaTeX: the conv2d sweep but one, other sizes or strides
REPEATS = re.compile(
    r"conv2d-k(?!3-s2-d2)|seed-s[13]|.*-sized$|.*-odd$|layer-norm-5|transposed-conv-[3s]"
)
EXPRESSIONS = (
    [
        (case.id, case.text, case.params, case.shapes, case.ranges)
        for case in PULLBACKS
        if not REPEATS.match(case.id)
    ]
    + [
        (f"program-{id_}", text, p or {}, s or {}, r or {})
        for id_, text, p, s, r in PROGRAMS
        if not REPEATS.match(id_)
    ]
    + [(f"values-{id_}", case.text, {}, case.shapes, case.ranges) for id_, case in VALUES.items()]
)

MATRICES = [
    ("Y[i,j] = K[p,q]*X[i+p,j+q]", {}, {"X": (3, 3), "K": (2, 2)}, "X"),
    ("Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]", {"s": 2}, {"X": (5, 5), "W": (3, 3)}, "X"),
    ("Y[i] = relu(W[m]*X[i+m])", {}, {"X": (5,), "W": (2,)}, "X"),
]
IM2COL = [
    ("Y[o,i,j] = W[o,c,m,n]*X[c,i+m,j+n] + b[o]", {}, {}),
    ("Y[b,o,i] = W[o,c,m]*X[b,c,s*i+d*m-p] + B[o]", {}, {}),
    ("Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]", {"s": 2}, {"X": (7, 7), "W": (3, 3)}),
]


def _math(display: str) -> str:
    """A ``_repr_latex_`` string without its ``$`` or ``$$`` delimiters."""
    match = re.fullmatch(r"\$\$(.*)\$\$|\$(.*)\$", display, flags=re.DOTALL)
    assert match, f"not delimited by $ or $$: {display[:60]}"
    return match.group(1) if match.group(1) is not None else match.group(2)


def collect() -> list[tuple[str, str]]:
    """(where it comes from, LaTeX) for everything the table produces."""
    found = []
    # each _repr_latex_ is its object's .latex() in delimiters: rendering it covers both
    for id_, text, params, shapes, ranges in EXPRESSIONS:
        derivation = ed.derive(text, params, shapes, ranges)
        found.append((f"{id_}: derivation", _math(derivation._repr_latex_())))
        for name, pullback in derivation.pullbacks.items():
            found.append((f"{id_}: pullback {name}", _math(pullback._repr_latex_())))
        explanation = explain(derivation)
        found.append((f"{id_}: explain", _math(explanation._repr_latex_())))
        found += [
            (f"{id_}: step {k}", _math(step._repr_latex_()))
            for k, step in enumerate(explanation.steps[:3], 1)
        ]
    for text, params, shapes, wrt in MATRICES:
        matrix = jacobian(text, wrt, params=params, shapes=shapes)
        found.append((f"jacobian of {text}", matrix.latex()))
    for text, params, shapes in IM2COL:
        found.append((f"im2col of {text}", im2col(text, params, shapes).latex()))
    return found


def render(latex: list[str]) -> list[dict]:
    """Render every string in one Node process: one result per string, in order."""
    if not (KATEX / "node_modules" / "katex").is_dir():
        pytest.fail(f"KaTeX is not installed: run `npm ci --prefix {KATEX}`")
    lines = "".join(json.dumps(text) + "\n" for text in latex)
    process = subprocess.run(
        ["node", str(KATEX / "render.js")],
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode in (0, 1), process.stderr
    results = [json.loads(line) for line in process.stdout.splitlines()]
    assert len(results) == len(latex), process.stderr
    return results


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_every_latex_string_renders_in_katex():
    assert len(EXPRESSIONS) >= 30
    found = collect()
    results = render([latex for _, latex in found])
    failures = [
        f"{where}: {result['error']}\n    {latex[:200]}"
        for (where, latex), result in zip(found, results, strict=True)
        if not result["ok"]
    ]
    assert not failures, "\n".join(failures)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_renderer_rejects_bad_latex():
    # the check has teeth: an unknown macro and an unbalanced \left are errors
    results = render([r"\frac{a}{b}", r"\foo{x}", r"\left( x", r"\text{\$}"])
    assert [r["ok"] for r in results] == [True, False, False, True]
    assert "Undefined control sequence" in results[1]["error"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_underscored_tensor_names_render():
    derivation = ed.derive("Y_out[i] = W_k[m]*X_in[i+m]")
    results = render([derivation.latex(), explain(derivation).latex()])
    assert all(result["ok"] for result in results), results
