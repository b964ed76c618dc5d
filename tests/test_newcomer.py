"""Issue 17 ("a newcomer's first hour"): programs and spellings a new user tries first.

Every numeric check is against an independent reference: central differences of a
forward written in NumPy in the test (not einderive's interpreter), or jax autodiff.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytest

import einderive as ed

BACKENDS = ["loops", "numpy", "jax", "torch"]


def finite_difference_vjp(
    forward: Callable[..., np.ndarray],
    inputs: Mapping[str, np.ndarray],
    cotangent: np.ndarray,
    step: float = 1e-6,
) -> dict[str, np.ndarray]:
    """``d <cotangent, forward(**inputs)> / d input`` by central differences, per element."""
    grads: dict[str, np.ndarray] = {}
    for name, value in inputs.items():
        value = np.asarray(value, dtype=np.float64)
        grad = np.zeros_like(value)
        for position in np.ndindex(*value.shape) if value.shape else [()]:
            shifted = {k: np.array(v, dtype=np.float64) for k, v in inputs.items()}
            shifted[name][position] += step
            up = float(np.sum(cotangent * forward(**shifted)))
            shifted[name][position] -= 2 * step
            down = float(np.sum(cotangent * forward(**shifted)))
            grad[position] = (up - down) / (2 * step)
        grads[name] = grad
    return grads


def assert_vjp_matches(
    text: str,
    forward: Callable[..., np.ndarray],
    inputs: Mapping[str, np.ndarray],
    backends: list[str] = BACKENDS,
    **options: object,
) -> None:
    """Every backend's vjp agrees with central differences of ``forward`` (written in NumPy)."""
    output = forward(**inputs)
    np.testing.assert_allclose(ed.evaluate(text, inputs, **options), output, atol=1e-12)
    cotangent = np.random.default_rng(1).normal(size=output.shape)
    expected = finite_difference_vjp(forward, inputs, cotangent)
    for backend in backends:
        grads = ed.vjp(text, inputs, cotangent, backend=backend, **options)
        assert set(grads) == set(expected), backend
        for name in expected:
            np.testing.assert_allclose(
                np.asarray(grads[name]), expected[name], atol=1e-6, err_msg=f"{backend}: d{name}"
            )


# ---- item 9: learnable scalars -------------------------------------------------------


def test_a_zero_dimensional_tensor_is_written_with_empty_brackets():
    rng = np.random.default_rng(0)
    inputs = {"alpha": np.array(0.7), "X": rng.normal(size=5)}
    assert_vjp_matches("Y[i] = alpha[] * X[i]", lambda alpha, X: alpha * X, inputs)
    derivation = ed.derive("Y[i] = alpha[] * X[i]")
    assert derivation.program.shapes["alpha"] == ()
    assert set(derivation.pullbacks) == {"alpha", "X"}


# ---- item 1: an intermediate's extents are those of its own definition ---------------


def _valid_correlation(kernel: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """``out[i] = sum_k kernel[k] * signal[i+k]`` over the positions where the window fits."""
    count = signal.shape[-1] - kernel.shape[-1] + 1
    return np.array([kernel @ signal[i : i + kernel.shape[-1]] for i in range(count)])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_a_two_branch_program_derives_and_matches_finite_differences():
    text = "F[i] = W[k]*X[i+k]; G[i] = V[k]*X[i+k]; Y[i] = tanh(F[i])*sigmoid(G[i])"
    derivation = ed.derive(text)
    shapes = derivation.program.shapes
    assert shapes["F"] == shapes["G"] == shapes["Y"]
    assert shapes["V"] == shapes["W"]  # both kernels one size: the branches are one length
    rng = np.random.default_rng(0)
    inputs = {"W": rng.normal(size=3), "V": rng.normal(size=3), "X": rng.normal(size=8)}

    def forward(W, V, X):
        return np.tanh(_valid_correlation(W, X)) * _sigmoid(_valid_correlation(V, X))

    assert_vjp_matches(text, forward, inputs)


def test_two_branches_with_kernels_of_different_sizes_give_the_shorter_output():
    text = "F[i] = W[k]*X[i+k]; G[i] = V[k]*X[i+k]; Y[i] = tanh(F[i])*sigmoid(G[i])"
    rng = np.random.default_rng(1)
    inputs = {"W": rng.normal(size=3), "V": rng.normal(size=5), "X": rng.normal(size=9)}

    def forward(W, V, X):
        return np.tanh(_valid_correlation(W, X)[:5]) * _sigmoid(_valid_correlation(V, X))

    assert_vjp_matches(text, forward, inputs)


def test_a_gated_convolution_layer_as_a_program():
    text = (
        "F[b,o,t] = Wf[o,c,k]*X[b,c,t+2*k-4]; G[b,o,t] = Wg[o,c,k]*X[b,c,t+2*k-4]; "
        "Y[b,o,t] = tanh(F[b,o,t])*sigmoid(G[b,o,t])"
    )
    derivation = ed.derive(text)
    assert derivation.program.shapes["F"] == derivation.program.shapes["G"]
    rng = np.random.default_rng(2)
    inputs = {
        "Wf": rng.normal(size=(3, 2, 3)),
        "Wg": rng.normal(size=(3, 2, 3)),
        "X": rng.normal(size=(2, 2, 6)),
    }

    def causal(weights, X):
        # out[b,o,t] = sum_{c,k} w[o,c,k] * X[b,c,t+2k-4], zero outside X; t over X's length
        out = np.zeros((X.shape[0], weights.shape[0], X.shape[2]))
        for t in range(X.shape[2]):
            for k in range(weights.shape[2]):
                if 0 <= t + 2 * k - 4 < X.shape[2]:
                    out[:, :, t] += X[:, :, t + 2 * k - 4] @ weights[:, :, k].T
        return out

    def forward(Wf, Wg, X):
        return np.tanh(causal(Wf, X)) * _sigmoid(causal(Wg, X))

    assert_vjp_matches(text, forward, inputs)


# ---- item 2: names of sizes never clash ----------------------------------------------


def test_an_intermediate_read_beside_an_input_keeps_two_size_names():
    derivation = ed.derive("F[i] = W[k]*X[i+k]; Y[i] = F[i]*X[i]")
    program = derivation.program
    (x_size,) = program.shapes["X"]
    (f_size,) = program.shapes["F"]
    assert x_size != f_size
    for symbol, definition in program.definitions.items():
        assert symbol not in definition.free_symbols, f"{symbol} = {definition}"
    assert program.shapes["Y"] == program.shapes["F"]  # the shorter of the two
    assert "I = I" not in str(derivation)
    rng = np.random.default_rng(3)
    inputs = {"W": rng.normal(size=3), "X": rng.normal(size=7)}
    assert_vjp_matches(
        "F[i] = W[k]*X[i+k]; Y[i] = F[i]*X[i]",
        lambda W, X: _valid_correlation(W, X) * X[:5],
        inputs,
    )


# ---- item 6: an index means its value; declared ranges are loops ---------------------


@pytest.mark.parametrize("spelling", ["i+0", "0+i", "1*i", "(i)", "i+1-1", "2*i-i"])
def test_an_index_means_its_value_however_it_is_spelled(spelling):
    plain = ed.derive("D[i] = A[i] + B[i]")
    spelled = ed.derive(f"D[i] = A[i] + B[{spelling}]")
    assert str(spelled) == str(plain)
    with pytest.raises(ed.ExtentError, match="inconsistent extents"):
        ed.evaluate(f"D[i] = A[i] + B[{spelling}]", {"A": np.ones(10), "B": np.ones(4)})
    np.testing.assert_array_equal(ed.evaluate(f"Y[i] = X[{spelling}]", {"X": [1.0, 2.0]}), [1, 2])


def test_a_declared_range_may_be_shorter_than_the_axis_it_reads_alone():
    text = "Y = sum_{i,k}(A[i+1,k] - A[i,k])"
    A = np.random.default_rng(4).normal(size=(3, 4))
    assert_vjp_matches(text, lambda A: np.sum(A[1] - A[0]), {"A": A}, ranges={"i": 1})
    text = "Y[i] = A[i+1] - A[i]"
    assert_vjp_matches(text, lambda A: A[1:3] - A[0:2], {"A": np.arange(5.0) ** 2}, ranges={"i": 2})
