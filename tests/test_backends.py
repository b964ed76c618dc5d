"""The jax and torch backends on the core's convolution cases: they run the recognised
convolution calls (not a fallback) and agree with the loops backend to 1e-10."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from test_pullbacks import CASES, Case

import einderive as ed
from einderive.conv.recognise import ConvPullback, NotConvolution
from einderive.lower.plan import Dense, Einsum, Terms, plans
from einderive.run.compile import run
from einderive.verify import draw_values, instantiate

CONV_CASES = [
    c
    for c in CASES
    if c.id.startswith(("seed", "notes", "im2col", "conv", "depthwise", "kernel-larger"))
]
# pullbacks into a bias are sums, not convolutions
BIASES = {"B", "b", "c"}


def test_there_are_conv_cases() -> None:
    assert len(CONV_CASES) >= 35


@pytest.mark.parametrize("case", CONV_CASES, ids=[c.id for c in CONV_CASES])
def test_conv_pullbacks_are_recognised(case: Case) -> None:
    derivation = ed.derive(case.text, case.params, case.shapes, case.ranges)
    for name, recognition in derivation.convolutions.items():
        if name in BIASES:
            assert isinstance(recognition, NotConvolution)
        else:
            assert isinstance(recognition, ConvPullback), str(recognition)


@pytest.mark.parametrize("backend", ["jax", "torch", "numpy"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[c.id for c in CONV_CASES])
def test_backends_agree_with_loops(case: Case, backend: str) -> None:
    derivation = ed.derive(case.text, case.params, case.shapes, case.ranges)
    import random

    rng = random.Random(7)
    generator = np.random.default_rng(7)
    for _ in range(2):
        numeric = instantiate(derivation, draw_values(derivation.program, rng))
        methods = plans(numeric)
        for name, pullback in numeric.pullbacks.items():
            method = methods[pullback.name]
            if name in BIASES:
                assert isinstance(method, Einsum | Dense)
            else:
                assert isinstance(method, ConvPullback | Einsum), f"{name}: {method}"
        program = numeric.program
        arrays = {
            name: generator.standard_normal(tuple(int(n) for n in program.shapes[name]))
            for name in program.inputs
        }
        shape = tuple(int(n) for n in program.shapes[program.output])
        cotangent = generator.standard_normal(shape)
        expected = run("loops", numeric, arrays, cotangent)
        actual = run(backend, numeric, arrays, cotangent)
        for name in expected:
            scale = max(1.0, float(np.max(np.abs(expected[name]), initial=0.0)))
            np.testing.assert_allclose(actual[name], expected[name], atol=1e-10 * scale, rtol=0)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_vjp_with_framework_backends(backend: str) -> None:
    rng = np.random.default_rng(0)
    inputs = {"X": rng.standard_normal((2, 3, 9, 8)), "W": rng.standard_normal((4, 3, 3, 3))}
    text = "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,2*i+m-1,2*j+n-1]"
    cotangent = rng.standard_normal((2, 4, 4, 4))
    expected = ed.vjp(text, inputs, cotangent, backend="loops")
    actual = ed.vjp(text, inputs, cotangent, backend=backend)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-10)


def test_against_torch_autograd() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 2))
    text = "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,2*i+2*m-1,3*j+n-2]"
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    # padding 1 and 2 on the left only: pad, then a strided dilated conv2d
    padded = torch.nn.functional.pad(xt, (2, 0, 1, 0))
    y = torch.nn.functional.conv2d(padded, wt, stride=(2, 3), dilation=(2, 1))
    cotangent = rng.standard_normal(tuple(y.shape))
    y.backward(torch.tensor(cotangent))
    np.testing.assert_allclose(ed.evaluate(text, {"X": x, "W": w}), y.detach().numpy(), atol=1e-12)
    grads = ed.vjp(text, {"X": x, "W": w}, cotangent, backend="numpy")
    np.testing.assert_allclose(grads["X"], xt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(grads["W"], wt.grad.numpy(), atol=1e-10)


def test_missing_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_jax(name: str, *args: object, **kwargs: object) -> object:
        if name == "jax" or name.startswith("jax."):
            raise ImportError("no jax here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jax)
    # `ed.vjp` compiles once per text and backend: an earlier test's jax build of the
    # same text would answer without importing jax
    from einderive.run import compile as compiled

    compiled._compiled.cache_clear()
    with pytest.raises(ed.BackendMissingError, match=r'pip install "einderive\[jax\]"'):
        ed.vjp("Y[i] = X[i]", {"X": np.ones(2)}, np.ones(2), backend="jax")


@pytest.mark.parametrize("backend", ["jax", "torch", "numpy"])
def test_a_sum_of_convolutions_is_computed_term_by_term(backend: str) -> None:
    case = next(c for c in CASES if c.id == "sum-of-two-convs")
    derivation = ed.derive(case.text, shapes=case.shapes)
    methods = plans(derivation)
    d_x = methods[derivation.pullbacks["X"].name]
    assert isinstance(d_x, Terms)
    assert [type(method) for _, method in d_x.parts] == [ConvPullback, ConvPullback]
    generator = np.random.default_rng(3)
    arrays = {name: generator.standard_normal(case.shapes[name]) for name in ("W", "X", "V")}
    cotangent = generator.standard_normal(case.shapes["Y"])
    expected = run("loops", derivation, arrays, cotangent)
    actual = run(backend, derivation, arrays, cotangent)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-10)


@pytest.mark.parametrize(
    ("text", "shapes", "kinds"),
    [
        (
            "Y[o,i,j] = W[o,c,m,n]*X[c,i+m,j+n] + B[o]",
            {"W": (3, 2, 3, 3), "X": (2, 6, 5)},
            [ConvPullback, Dense],
        ),
        ("y[i] = A[i,j]*x[j] + b[i]", {"A": (3, 4)}, [Einsum, Einsum]),
    ],
)
def test_forward_sums_with_a_fast_term_are_planned_term_by_term(text, shapes, kinds) -> None:
    from einderive.lower.plan import plan

    derivation = ed.derive(text, shapes=shapes)
    (statement,) = derivation.program.statements
    method = plan(statement, derivation.shapes)
    assert isinstance(method, Terms)
    assert [type(m) for _, m in method.parts] == kinds


def test_a_sum_of_dense_terms_stays_one_dense_grid() -> None:
    from einderive.lower.plan import plan

    derivation = ed.derive("Y[i] = X[i]*X[i+1] + X[i+1]*X[i+2]", shapes={"X": (6,)})
    (statement,) = derivation.program.statements
    assert isinstance(plan(statement, derivation.shapes), Dense)


def test_a_pooling_pullback_sums_over_a_window_of_outputs() -> None:
    """``dX[p] = sum_i dY[i] * [p - 2*i = argmax]`` with ``p - 2 <= 2*i <= p``: ``i`` is
    ``p//2`` or ``p//2 - 1``, and the dense evaluator's grid spans those two, not every
    output; it still agrees with the loops interpreter."""
    from einderive.lower.window import window_size

    text = "Y[i,j] = max_{a,b}(X[2*i+a, 2*j+b])"
    ranges = {"a": 3, "b": 3}
    derivation = ed.derive(text, shapes={"X": (65, 65)}, ranges=ranges)
    (statement,) = derivation.backward.statements
    p, q = statement.indices
    (i, j) = statement.rhs.variables
    assert window_size(i, statement.rhs, {p, q}) == (2, sympy.floor(p / 2))
    assert window_size(i, statement.rhs, set()) is None  # nothing around pins it
    rng = np.random.default_rng(4)
    x, dy = rng.standard_normal((65, 65)), rng.standard_normal((32, 32))
    expected = ed.vjp(text, {"X": x}, dy, ranges=ranges, backend="loops")["X"]
    for backend in ("numpy", "torch"):
        actual = ed.vjp(text, {"X": x}, dy, ranges=ranges, backend=backend)["X"]
        np.testing.assert_allclose(actual, expected, atol=1e-12)


def test_torch_tensors_in_torch_tensors_out() -> None:
    torch = pytest.importorskip("torch")
    text = "Y[i] = W[m]*X[i+m]"
    x = torch.arange(5.0, requires_grad=True)  # float32, as a model's parameter would be
    w = torch.tensor([1.0, -2.0], dtype=torch.float64)
    grads = ed.vjp(text, {"X": x, "W": w}, torch.ones(4, dtype=torch.float64), backend="torch")
    assert isinstance(grads["X"], torch.Tensor) and grads["X"].dtype == torch.float32
    assert isinstance(grads["W"], torch.Tensor) and grads["W"].dtype == torch.float64
    expected = ed.vjp(text, {"X": np.arange(5.0), "W": [1.0, -2.0]}, np.ones(4))
    np.testing.assert_allclose(grads["X"].numpy(), expected["X"], rtol=1e-6)
    np.testing.assert_allclose(grads["W"].numpy(), expected["W"])


def test_jax_arrays_in_jax_arrays_out() -> None:
    jax = pytest.importorskip("jax")
    text = "Y[i] = W[m]*X[i+m]"
    grads = ed.vjp(
        text, {"X": jax.numpy.arange(5.0), "W": np.array([1.0, -2.0])}, np.ones(4), backend="jax"
    )
    assert isinstance(grads["X"], jax.Array)
    assert isinstance(grads["W"], np.ndarray)  # given as NumPy, returned as NumPy
    expected = ed.vjp(text, {"X": np.arange(5.0), "W": [1.0, -2.0]}, np.ones(4))
    np.testing.assert_allclose(np.asarray(grads["X"]), expected["X"], rtol=1e-6)
