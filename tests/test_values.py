"""Indices as values, sin and cos, binary min/max and product reductions (issue 18 item 5).

Each construct is derived, verified (``ed.verify``), run on every backend and as every
emitted module, and compared, forward and pullbacks in float64, with the same computation
written in PyTorch ops (``torch.autograd``) and in JAX ops (``jax.vjp``): references that
owe nothing to einderive.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import einderive as ed
from einderive.run.load import load_source

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

BACKENDS = ("loops", "numpy", "jax", "torch")


@dataclass(frozen=True)
class Case:
    """A notation, its inputs, and the same computation in torch ops and in jax ops (the
    inputs in the order of ``names``)."""

    text: str
    inputs: Callable[[np.random.Generator], dict[str, np.ndarray]]
    torch_forward: Callable[..., Any]
    jax_forward: Callable[..., Any]
    ranges: dict[str, int] = field(default_factory=dict)


def _normal(**shapes: tuple[int, ...]) -> Callable[[np.random.Generator], dict[str, np.ndarray]]:
    return lambda rng: {name: rng.standard_normal(shape) for name, shape in shapes.items()}


def _with_zeros(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Rows with no zero, one zero and two zeros: the pullback of a product at each."""
    x = rng.uniform(0.5, 1.5, (4, 5)) * rng.choice([-1.0, 1.0], (4, 5))
    x[1, 2] = 0.0
    x[2, 0] = x[2, 4] = 0.0
    return {"X": x}


def _one_zero(rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = rng.uniform(0.5, 1.5, (3, 4))
    x[1, 3] = 0.0
    return {"X": x}


CASES = {
    "prod with zeros": Case(
        "Y[i] = prod_{j}(X[i,j])",
        _with_zeros,
        lambda X: torch.prod(X, dim=1),
        lambda X: jnp.prod(X, axis=1),
    ),
    "prod of all, one zero": Case(
        "Y = prod_{j,k}(X[j,k])",
        _one_zero,
        lambda X: torch.prod(X),
        lambda X: jnp.prod(X),
    ),
    "prod of a window": Case(
        "Y[i] = prod_{m}(X[i+m] + W[m])",
        lambda rng: {"X": np.array([1.0, 0.0, 2.0, -1.0, 0.5, 3.0]), "W": np.array([0, 1.0, -2])},
        lambda X, W: torch.prod(X.unfold(0, 3, 1) + W, dim=1),
        lambda X, W: jnp.prod(jnp.stack([X[m : m + 4] for m in range(3)], axis=1) + W, axis=1),
    ),
    "sin and cos": Case(
        "Y[i] = sin(X[i]) * cos(W[i]) + cos(sin(X[i]))",
        _normal(X=(6,), W=(6,)),
        lambda X, W: torch.sin(X) * torch.cos(W) + torch.cos(torch.sin(X)),
        lambda X, W: jnp.sin(X) * jnp.cos(W) + jnp.cos(jnp.sin(X)),
    ),
}


def _reference(case: Case, inputs: dict[str, np.ndarray], cotangent: np.ndarray, framework: str):
    """The forward and the pullbacks of the framework's own ops, as NumPy arrays."""
    arrays = list(inputs.values())
    if framework == "torch":
        tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
        output = case.torch_forward(*tensors)
        grads = torch.autograd.grad(output, tensors, torch.tensor(cotangent), allow_unused=True)
        pulled = [
            np.zeros_like(a) if g is None else g.numpy() for a, g in zip(arrays, grads, strict=True)
        ]
        return output.detach().numpy(), dict(zip(inputs, pulled, strict=True))
    output, pullback = jax.vjp(case.jax_forward, *[jnp.asarray(a) for a in arrays])
    pulled = pullback(jnp.asarray(cotangent))
    return np.asarray(output), {k: np.asarray(g) for k, g in zip(inputs, pulled, strict=True)}


def _draw(case: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    inputs = case.inputs(rng)
    output = ed.evaluate(case.text, inputs, ranges=case.ranges or None)
    cotangent = rng.standard_normal(np.shape(output))
    return inputs, cotangent


def _close(actual: Any, expected: np.ndarray, what: str) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == np.shape(expected), f"{what}: shape {actual.shape}"
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("case_id", CASES)
def test_verified(case_id: str) -> None:
    case = CASES[case_id]
    report = ed.verify(case.text, ranges=case.ranges or None)
    assert report.ok, str(report)


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("case_id", CASES)
def test_every_backend_matches_the_frameworks_autodiff(case_id: str, framework: str) -> None:
    case = CASES[case_id]
    inputs, cotangent = _draw(case)
    output, pulled = _reference(case, inputs, cotangent, framework)
    _close(ed.evaluate(case.text, inputs, ranges=case.ranges or None), output, "evaluate")
    for backend in BACKENDS:
        grads = ed.vjp(case.text, inputs, cotangent, ranges=case.ranges or None, backend=backend)
        for name, expected in pulled.items():
            _close(np.asarray(grads[name]), expected, f"{backend} d{name} vs {framework}")


def _converter(kind: str) -> Callable[[np.ndarray], Any]:
    if kind == "torch":
        return lambda a: torch.tensor(a, dtype=torch.float64)
    if kind == "jax":
        return jnp.asarray
    return lambda a: a


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("case_id", CASES)
def test_every_emitted_module_matches_torch_autograd(case_id: str, kind: str) -> None:
    case = CASES[case_id]
    derivation = ed.derive(case.text, ranges=case.ranges or None)
    namespace = load_source(derivation.source(kind), kind)
    inputs, cotangent = _draw(case)
    output, pulled = _reference(case, inputs, cotangent, "torch")
    convert = _converter(kind)
    arrays = [convert(inputs[name]) for name in derivation.program.inputs]
    forward = namespace["forward"]
    assert not [
        p for p in inspect.signature(forward).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    _close(forward(*arrays), output, f"{kind} forward")
    for name in derivation.pullbacks:
        result = namespace[f"pullback_{name}"](convert(cotangent), *arrays)
        _close(result, pulled[name], f"{kind} pullback_{name}")


def test_the_pullback_of_a_product_is_the_product_of_the_others() -> None:
    derivation = ed.derive("Y[i] = prod_{j}(X[i,j])")
    assert str(derivation.pullbacks["X"]) == (
        "dX[p, q] = dY[p] * prod_{j : j <= q - 1}(X[p, j]) * prod_{j5 : j5 >= q + 1}(X[p, j5])"
    )
    assert r"\prod_{\substack{j \\ j \leq q - 1}}" in derivation.pullbacks["X"].latex()
