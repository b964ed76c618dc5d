"""Issue 17 ("a newcomer's first hour"): programs and spellings a new user tries first.

Every numeric check is against an independent reference: central differences of a
forward written in NumPy in the test (not einderive's interpreter), or jax autodiff.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

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
