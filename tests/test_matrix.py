"""``einderive.matrix``: the convolution as a matrix, and im2col (issue 7, items 2 and 3).

The Jacobian is computed from the forward alone (unit steps of each input
element); the pullback must be its transpose. The symbolic entries are checked
against the layout of seeds/conv-as-matrix-notes.txt, corrected: the notes'
matrix is 4 x 9, but their first three rows show only 8 entries.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy

import einderive as ed
from einderive.cli import run
from einderive.matrix import im2col, jacobian, matrix_report

NOTES = "Y[i,j] = K[p,q]*X[i+p,j+q]"
NOTES_SHAPES = {"X": (3, 3), "K": (2, 2)}
SEED = "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"


def test_notes_matrix_rows():
    J = jacobian(NOTES, "X", shapes=NOTES_SHAPES)
    assert J.shape == (4, 9)
    assert J.text().splitlines()[-4:] == [
        "k1 k2 0  k3 k4 0  0  0  0",
        "0  k1 k2 0  k3 k4 0  0  0",
        "0  0  0  k1 k2 0  k3 k4 0",
        "0  0  0  0  k1 k2 0  k3 k4",
    ]
    k1, k2, k3, k4 = sympy.symbols("k1:5")
    assert list(J.entries.row(0)) == [k1, k2, 0, k3, k4, 0, 0, 0, 0]
    assert J.symbols["K"] == (k1, k2, k3, k4)
    assert "k1 ... k4: the elements of K 2x2" in J.text()


def test_symbolic_entries_give_the_numeric_matrix_and_its_transpose_is_the_pullback():
    J = jacobian(NOTES, "X", shapes=NOTES_SHAPES, seed=3)
    assert J.affine
    np.testing.assert_allclose(J.at(J.point), J.matrix, atol=1e-12)
    assert J.transpose_error(trials=3) < 1e-12
    assert J.transpose_error(trials=1, backend="numpy") < 1e-12


def test_kernel_jacobian_holds_the_input_windows():
    J = jacobian(NOTES, "K", shapes=NOTES_SHAPES)
    x = sympy.symbols("x1:10")
    assert list(J.entries.row(0)) == [x[0], x[1], x[3], x[4]]
    assert list(J.entries.row(3)) == [x[4], x[5], x[7], x[8]]
    # J wrt the kernel is the unfolded input, transposed: X~ of im2col
    view = im2col(NOTES, shapes=NOTES_SHAPES)
    namespace: dict = {}
    exec(view.source(), namespace)
    np.testing.assert_allclose(namespace["unfold_X"](J.point["X"]).T, J.matrix, atol=1e-12)


def test_strided_padded_seed():
    J = jacobian(SEED, "X", params={"s": 2}, shapes={"X": (7, 7), "W": (3, 3)})
    assert J.shape == (9, 49)
    w = sympy.symbols("w1:10")
    first = [0] * 49
    first[0], first[1], first[7], first[8] = w[4], w[5], w[7], w[8]  # X[-1..1, -1..1] padded
    assert list(J.entries.row(0)) == first
    assert J.transpose_error() < 1e-12
    assert "too wide to print" in J.text(max_columns=40)


def test_derivation_in_and_bias():
    derivation = ed.derive(
        "Y[o,i] = W[o,c,m]*X[c,i+m] + B[o]", shapes={"X": (2, 4), "W": (3, 2, 2)}
    )
    J = jacobian(derivation, "B")
    assert J.matrix.shape == (9, 3)
    assert all(e in (0, 1) for e in J.entries)  # the bias enters with coefficient one
    JX = jacobian(derivation, "X")
    assert JX.transpose_error() < 1e-12
    assert set(JX.symbols) == {"W", "B"} and not JX.entries.has(*JX.symbols["B"])


def test_nonlinear_forward_is_differentiated_at_a_point():
    text = "Z[o,i] = W[o,c,m]*X[c,i+m]; A[o,i] = relu(Z[o,i])"
    point = {"X": np.abs(np.arange(10.0).reshape(2, 5)) + 1, "W": np.ones((2, 2, 2))}
    point["W"][1] *= -1  # one output channel positive, one negative
    J = jacobian(text, "X", shapes={"X": (2, 5), "W": (2, 2, 2)}, inputs=point)
    assert not J.affine and J.entries is None
    assert np.count_nonzero(J.matrix[:4]) == 16 and not np.any(J.matrix[4:])
    assert J.transpose_error() < 1e-6
    assert "to first order" in J.text()
    pooled = jacobian("Y[i] = max_{m}(X[2*i+m])", "X", shapes={"X": (7,)}, ranges={"m": 3})
    assert sorted(set(pooled.matrix.round(6).ravel())) == [0.0, 1.0]
    assert pooled.transpose_error() < 1e-6


def test_needs_numbers_and_an_input():
    with pytest.raises(ed.ArgumentError, match="give the shape of"):
        jacobian(SEED, "X", params={"s": 1})
    with pytest.raises(ed.ArgumentError, match="give a value to s"):
        jacobian(SEED, "X", shapes={"X": (5, 5), "W": (3, 3)})
    with pytest.raises(ed.ArgumentError, match="not an input"):
        jacobian(NOTES, "Y", shapes=NOTES_SHAPES)


def test_latex_and_picture(tmp_path):
    pytest.importorskip("matplotlib")
    J = jacobian(NOTES, "X", shapes=NOTES_SHAPES)
    assert J.latex().startswith(
        r"\frac{\partial \operatorname{vec} Y}{\partial \operatorname{vec} X}"
    )
    assert r"k_{1} & k_{2} & 0 & k_{3} & k_{4} & 0 & 0 & 0 & 0 \\" in J.latex()
    path = tmp_path / "jacobian.png"
    data = J.png(str(path))
    assert data.startswith(b"\x89PNG") and path.read_bytes() == data
    numeric = jacobian("Y[i] = relu(W[m]*X[i+m])", "X", shapes={"X": (6,), "W": (2,)})
    assert numeric.png().startswith(b"\x89PNG")


def test_matrix_report(tmp_path):
    pytest.importorskip("matplotlib")
    derivation = ed.derive(NOTES, shapes=NOTES_SHAPES)
    report = matrix_report(derivation, png=str(tmp_path / "j.png"))
    assert report.ok
    assert "check: max |dX - J^T dY| = " in str(report) and "(ok)" in str(report)
    assert (tmp_path / "j-X.png").exists() and (tmp_path / "j-K.png").exists()


def test_transpose_is_the_pullbacks_matrix():
    J = jacobian(NOTES, "X", shapes=NOTES_SHAPES)
    text = J.text(transpose=True)
    assert "J^T, the pullback's own matrix: 9 x 4" in text
    rows = text.splitlines()[-9:]
    assert rows[0].split() == ["k1", "0", "0", "0"]
    assert rows[4].split() == ["k4", "k3", "k2", "k1"]
    # the pullback, applied to each unit cotangent, gives J^T's columns
    kernel = np.arange(1.0, 5.0).reshape(2, 2)
    point = {"X": np.zeros((3, 3)), "K": kernel}
    for column in range(4):
        unit = np.zeros(4)
        unit[column] = 1.0
        pulled = ed.vjp(NOTES, point, unit.reshape(2, 2))["X"].ravel()
        np.testing.assert_allclose(pulled, J.at({"K": kernel}).T[:, column])


def test_cli_transpose(capsys):
    argv = [NOTES, "--shape", "X=3x3", "--shape", "K=2x2", "--wrt", "X", "--matrix", "--transpose"]
    assert run(argv) == 0
    assert "J^T, the pullback's own matrix: 9 x 4" in capsys.readouterr().out
    assert run([NOTES, "--transpose"]) == 2


def _is_whole(values) -> bool:
    return all(float(v).is_integer() for v in values)


@pytest.mark.parametrize("transpose", [False, True])
def test_picture_has_whole_ticks_and_a_legend(transpose):
    pytest.importorskip("matplotlib")
    # 1-D, 40 outputs x 42 inputs: too many cells to write the names in them
    J = jacobian("Y[i] = W[m]*X[i+m]", "X", shapes={"X": (42,), "W": (3,)})
    figure = J.figure(transpose=transpose)
    axes = figure.axes[0]
    assert _is_whole(axes.get_xticks()) and _is_whole(axes.get_yticks())
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["w1", "w2", "w3"]
    assert len(axes.texts) == 0  # the cells are unlabelled; the legend names the colours
    assert "J^T" in axes.get_title() if transpose else axes.get_title().startswith("J:")


# ---- im2col ---------------------------------------------------------------------------------

IM2COL = [
    (SEED, {"s": 2}, {"X": (7, 7), "W": (3, 3)}, {}),
    ("Y[o,i,j] = W[o,c,m,n]*X[c,i+m,j+n] + b[o]", {}, {"X": (2, 5, 4), "W": (3, 2, 2, 2)}, {}),
    ("Y[b,o,i] = W[o,c,m]*X[b,c,s*i+d*m-p] + B[o]", {"s": 2, "d": 2, "p": 1},
     {"X": (2, 3, 9), "W": (2, 3, 2)}, {}),
    ("Y[b,o,i,j,k] = W[o,c,l,m,n]*X[b,c,2*i+l-1,2*j+2*m-1,k+n] + B[o]", {},
     {"X": (1, 2, 6, 7, 4), "W": (2, 2, 2, 2, 2)}, {}),
    ("Y[i] = W[m]*X[i-m+2]", {}, {"X": (6,), "W": (3,)}, {}),
    ("Y[i,o] = X[c,i+m]*W[c,o,m]", {}, {"X": (2, 6), "W": (2, 3, 3)}, {}),
    ("Y[i] = W[m]*X[i+m-4]", {}, {"X": (3,), "W": (6,)}, {}),
]  # fmt: skip


@pytest.mark.parametrize("text, params, shapes, ranges", IM2COL)
def test_im2col_source_computes_the_forward(text, params, shapes, ranges):
    view = im2col(text, params, shapes, ranges)
    namespace: dict = {}
    exec(view.source(), namespace)
    program = view.derivation.program
    rng = np.random.default_rng(0)
    arrays = {
        n: rng.standard_normal(tuple(int(k) for k in program.shapes[n])) for n in program.inputs
    }
    expected = ed.evaluate(text, arrays, params, shapes, ranges)
    computed = namespace["forward"](*(arrays[n] for n in program.inputs))
    np.testing.assert_allclose(computed, expected, atol=1e-12)
    unfolded = namespace[f"unfold_{view.x.tensor}"](arrays[view.x.tensor])
    assert unfolded.shape == tuple(int(n) for n in view.x_shape)


def test_unfolded_input_is_its_definition_and_gives_the_kernel_pullback():
    view = im2col(SEED, {"s": 2}, {"X": (7, 7), "W": (3, 3)})
    assert view.lines()[1] == "X~[(m, n), (i, j)] = X[2*i + m - 1, 2*j + n - 1]    (zero outside X)"
    namespace: dict = {}
    exec(view.source(), namespace)
    X = np.random.default_rng(1).standard_normal((7, 7))
    # the definition, evaluated by einderive's interpreter
    ranges = {"m": 3, "n": 3, "i": 3, "j": 3}
    definition = ed.evaluate("U[m,n,i,j] = X[2*i+m-1, 2*j+n-1]", {"X": X}, ranges=ranges)
    unfolded = namespace["unfold_X"](X)
    np.testing.assert_allclose(unfolded, definition.reshape(9, 9))
    # backward: dW~ = dY~ X~^T
    W = np.random.default_rng(2).standard_normal((3, 3))
    dY = np.random.default_rng(3).standard_normal((3, 3))
    grads = ed.vjp(SEED, {"W": W, "X": X}, dY, params={"s": 2})
    np.testing.assert_allclose((dY.reshape(1, 9) @ unfolded.T).reshape(3, 3), grads["W"])


def test_im2col_text_in_symbols():
    view = im2col("Y[c,i,j] = W[c,k,m,n]*X[k,i+m,j+n] + b[c]")
    lines = view.lines()
    assert lines[0] == "im2col: Y = W~ X~ + bias"
    assert lines[1] == "X~[(k, m, n), (i, j)] = X[k, i + m, j + n]    (zero outside X)"
    assert lines[2].startswith("    shape (K*M*N) x (I*J): a row per kernel position (k, m, n)")
    assert lines[3] == "W~[c, (k, m, n)] = W[c, k, m, n]"
    assert lines[5] == "Y[c, i, j] = (W~ X~)[c, (i, j)] + b[c]"
    assert r"\tilde{X}_{\left(k, m, n\right), \left(i, j\right)} = X_{k, i + m, j + n}" in (
        view.latex()
    )
    with pytest.raises(ed.ArgumentError, match="needs numbers"):
        view.source()


def test_im2col_refuses_what_is_not_a_convolution():
    with pytest.raises(ed.ArgumentError, match="not a convolution"):
        im2col("Y[i] = X[i,i]")
    with pytest.raises(ed.ArgumentError, match="grouped"):
        im2col("Y[c,i,j] = W[c,m,n]*X[c,i+m-1,j+n-1]")
