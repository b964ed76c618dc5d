"""The core: every expression's pullbacks, derived symbolically and verified numerically.

Each case is derived once (symbolic where sizes are not given) and checked by
``ed.verify`` on several random draws of sizes and parameters: the adjoint
identity against central differences of the forward interpreter in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

import einderive as ed

SEED = "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"
# jax and torch are checked on these cases in test_backends.py
BACKENDS = ("loops", "numpy")


@dataclass(frozen=True)
class Case:
    text: str
    params: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)
    id: str = ""


def conv2d(k: int, s: int, d: int) -> Case:
    return Case(
        f"Y[i,j] = W[m,n]*X[{s}*i+{d}*m, {s}*j+{d}*n]",
        shapes={"X": (9, 8), "W": (k, k)},
        id=f"conv2d-k{k}-s{s}-d{d}",
    )


CASES = [
    # the seed thread, stride symbolic and numeric
    Case(SEED, id="seed-symbolic"),
    *(Case(SEED, params={"s": s}, id=f"seed-s{s}") for s in (1, 2, 3)),
    Case(SEED, params={"s": 2}, shapes={"X": (7, 7), "W": (3, 3)}, id="seed-numeric"),
    # seeds/conv2d-forward-backward-notes.txt: the four forward configurations
    Case("Y[i,j] = W[m,n]*X[i+m-1, j+n-1]", shapes={"W": (3, 3)}, id="notes-pad1"),
    Case("Y[i,j] = W[m,n]*X[2*i+m, 2*j+n]", shapes={"W": (3, 3)}, id="notes-stride2"),
    Case("Y[i,j] = W[m,n]*X[i+2*m, j+2*n]", shapes={"W": (3, 3)}, id="notes-dilation2"),
    Case(
        "Y[o,i,j] = W[o,c,m,n]*X[c,i+m,j+n] + B[o]",
        shapes={"W": (3, 2, 3, 3), "X": (2, 6, 5)},
        id="notes-channels-bias",
    ),
    # two convolutions of one input summed: dX is computed term by term
    Case(
        "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,i+m,j+n] + V[o,c,p,q]*X[b,c,2*i+p,2*j+q]",
        shapes={"X": (2, 3, 12, 11), "W": (4, 3, 3, 3), "V": (4, 3, 2, 2), "Y": (2, 4, 5, 5)},
        id="sum-of-two-convs",
    ),
    # seeds/conv-multichannel-im2col-notes.txt
    Case("Y[c,i,j] = W[c,k,m,n]*X[k,i+m,j+n] + b[c]", id="im2col-multichannel-bias"),
    # seeds/conv-as-matrix-notes.txt
    Case("z[b,o] = W[o,n]*x[b,n] + c[o]", id="linear-layer"),
    Case("Y[i,j] = K[p,q]*X[i+p,j+q]", shapes={"X": (3, 3), "K": (2, 2)}, id="conv-as-matrix"),
    Case("Y[i,j] = K[p,q]*X[i+p,j+q]", id="conv-as-matrix-symbolic"),
    # a 2-D convolution sweep: kernel 1/2/3 x stride 1/2/3 x dilation 1/2/3
    *(conv2d(k, s, d) for k in (1, 2, 3) for s in (1, 2, 3) for d in (1, 2, 3)),
    # dilation, stride and padding all symbolic
    Case("Y[i] = W[m]*X[s*i+d*m-p]", id="conv1d-s-d-p-symbolic"),
    Case("Y[b,o,i] = W[o,c,m]*X[b,c,s*i+d*m-p] + B[o]", id="conv1d-batch-channels-symbolic"),
    Case(
        "Y[b,o,i,j,k] = W[o,c,l,m,n]*X[b,c,2*i+l-1,2*j+2*m-1,k+n] + B[o]",
        shapes={"X": (1, 2, 6, 7, 4), "W": (2, 2, 2, 2, 2)},
        id="conv3d-strided-dilated-padded",
    ),
    Case("Y[c,i,j] = W[c,m,n]*X[c,i+m-1,j+n-1]", id="depthwise"),
    # matrix products and chains
    Case("C[i,j] = A[i,k]*B[k,j]", id="matmul"),
    Case("D[i,l] = A[i,j]*B[j,k]*C[k,l]", id="matmul-chain"),
    Case("C[b,i,j] = A[b,i,k]*B[b,k,j]", id="batched-matmul"),
    Case("y[i] = A[i,j]*x[j] + b[i]", id="matvec-bias"),
    Case("s = x[i]*y[i]", id="dot-scalar"),
    Case("C[i,j] = A[i,k]*B[k,j] + A[j,k]*B[k,i]", ranges={}, id="matmul-plus-transpose"),
    # repeated reads, diagonals, Hankel, subsampling, coupled reads
    Case("Y[i] = X[i]*X[i+1]", id="x-times-shifted-x"),
    Case("Y[i] = X[i]*X[i+1]*X[i+2]", id="x-cubed-shifts"),
    Case("Y[i] = X[i,i]", id="diagonal"),
    Case("Y[i,j] = X[i,j,i]", id="diagonal-3d"),
    Case("Y[i,j] = X[i+j]", ranges={"j": 3}, id="hankel"),
    Case("Y[i] = X[s*i]", id="subsample-symbolic"),
    Case("Y[i] = X[2*i+3*m]", ranges={"m": 3}, id="coupled-2i-3m"),
    Case("Y[i] = X[i] + X[9-i]", shapes={"X": (12,)}, id="reversal"),
    Case("Y[i,j] = X[j,i]", id="transpose"),
    Case("Y[i,j] = X[i]*Z[j]", id="outer-product"),
    Case("Y[i] = X[i,j]", id="row-sum"),
    # a kernel larger than the input; an output that reads only padding
    Case("Y[i] = W[m]*X[i+m-4]", shapes={"X": (3,), "W": (6,)}, id="kernel-larger-than-input"),
    Case("Y[i] = W[m]*X[3*i+m-2]", shapes={"X": (1,), "W": (1,)}, id="reads-only-padding"),
    # transposed convolution (scatter form), bias and scaling by parameters
    Case("Y[s*i+m] = X[i]*W[m]", id="transposed-conv-scatter"),
    Case("Y[i] = alpha*X[i] + beta", id="affine-scalars"),
    Case("Y[i] = 2*W[m]*X[i+m] - X[i+1]", ranges={}, id="two-terms"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pullbacks_verify(case: Case) -> None:
    report = ed.verify(
        case.text, case.params, case.shapes, case.ranges, trials=3, backends_to_check=BACKENDS
    )
    assert report.ok, str(report)


def test_enough_cases() -> None:
    assert len(CASES) >= 40


def test_seed_gather_form() -> None:
    derivation = ed.derive(SEED)
    assert derivation.pullbacks["X"].notation() == (
        "dX[p, q] = sum_{i,j}(dY[i, j] * W[p - s*i + 1, q - s*j + 1])"
    )
    assert derivation.pullbacks["W"].notation() == (
        "dW[p, q] = sum_{i,j}(dY[i, j] * X[p + s*i - 1, q + s*j - 1])"
    )
    text = str(derivation)
    assert "parameters: s" in text
    assert "i from max(0, ceil(" in text


def test_diagonal_keeps_its_guard() -> None:
    pullback = ed.derive("Y[i] = X[i,i]").pullbacks["X"]
    assert "p = q" in str(pullback)
    grads = ed.vjp("Y[i] = X[i,i]", {"X": np.ones((3, 3))}, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(grads["X"], np.diag([1.0, 2.0, 3.0]))


def test_subsample_has_a_divisibility_condition() -> None:
    pullback = ed.derive("Y[i] = X[s*i]").pullbacks["X"]
    assert pullback.notation() == "dX[p] = dY[p / s]"
    assert "s divides p" in str(pullback)


def test_each_occurrence_contributes() -> None:
    pullback = ed.derive("Y[i] = X[i]*X[i+1]").pullbacks["X"]
    assert len(pullback.terms) == 2


def test_exact_bounds_of_the_strided_pullback() -> None:
    # dX of a stride-2 1-D convolution: i runs exactly over the windows that cover p
    pullback = ed.derive("Y[i] = W[m]*X[2*i+m]", shapes={"X": (9,), "W": (3,)}).pullbacks["X"]
    assert str(pullback).splitlines()[1].strip() == (
        "i from max(0, ceil(p/2) - 1) to min(3, floor(p/2))"
    )


def test_output_reading_only_padding_has_zero_pullback() -> None:
    text = "Y[i] = W[m]*X[3*i+m-2]"
    grads = ed.vjp(text, {"X": np.ones(1), "W": np.ones(1)}, np.ones(1))
    np.testing.assert_array_equal(grads["X"], [0.0])
    np.testing.assert_array_equal(grads["W"], [0.0])


def test_evaluate_and_vjp_match_numpy_on_matmul() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    np.testing.assert_allclose(ed.evaluate("C[i,j] = A[i,k]*B[k,j]", {"A": a, "B": b}), a @ b)
    cotangent = rng.standard_normal((3, 2))
    grads = ed.vjp("C[i,j] = A[i,k]*B[k,j]", {"A": a, "B": b}, cotangent)
    np.testing.assert_allclose(grads["A"], cotangent @ b.T)
    np.testing.assert_allclose(grads["B"], a.T @ cotangent)


def test_evaluate_pads_with_zeros() -> None:
    x = np.arange(1.0, 6.0)
    y = ed.evaluate("Y[i] = W[m]*X[i+m-1]", {"W": np.array([1.0, 10.0, 100.0]), "X": x})
    # Y[0] reads X[-1] (zero), X[0], X[1]; the right end is not padded
    np.testing.assert_allclose(y, [0 + 10 * 1 + 100 * 2, 1 + 20 + 300, 2 + 30 + 400, 3 + 40 + 500])


def test_symbolic_extent_of_the_seed_output() -> None:
    program = ed.derive(SEED).program
    assert [str(n) for n in program.shapes["Y"]] == ["I", "J"]
    assert str(program.definitions[program.shapes["Y"][0]]) == "floor((-M + N_X0 + 1)/s) + 1"


def test_printable() -> None:
    derivation = ed.derive(SEED, params={"s": 2})
    assert repr(derivation).startswith("Derivation(")
    assert "\n" not in repr(derivation.pullbacks["X"])
    assert derivation._repr_latex_().startswith("$")
    assert r"\sum" in derivation.pullbacks["X"].latex()
