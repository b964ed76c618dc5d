"""Indices as values, sin and cos, binary min/max and product reductions (issue 18 item 5).

Each construct is derived, verified (``ed.verify``), run on every backend and as every
emitted module, and compared, forward and pullbacks in float64, with the same computation
written in PyTorch ops (``torch.autograd``) and in JAX ops (``jax.vjp``): references that
owe nothing to einderive.
"""

from __future__ import annotations

import inspect
import re
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
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        return {"ranges": self.ranges or None, "shapes": self.shapes or None}


def _normal(**shapes: tuple[int, ...]) -> Callable[[np.random.Generator], dict[str, np.ndarray]]:
    return lambda rng: {name: rng.standard_normal(shape) for name, shape in shapes.items()}


def _positions(count: int) -> Any:
    return torch.arange(count, dtype=torch.float64)


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
    "cumulative product": Case(
        "Y[j] = prod_{k : k <= j}(X[k])",
        lambda rng: {"X": np.array([0.5, -2.0, 0.0, 1.5, 3.0, 0.0, -1.0])},
        lambda X: torch.cumprod(X, dim=0),
        lambda X: jnp.cumprod(X),
        shapes={"Y": (7,)},
    ),
    "cumulative sum": Case(
        "Y[j] = sum_{k : k <= j}(X[k])",
        _normal(X=(6,)),
        lambda X: torch.cumsum(X, dim=0),
        lambda X: jnp.cumsum(X),
        shapes={"Y": (6,)},
    ),
    "products before and after": Case(
        # the exclusive products themselves, as a user writes them
        "Y[j] = prod_{k : k < j}(X[k]) + 2 * prod_{k : k > j}(X[k])",
        lambda rng: {"X": np.array([1.5, 0.0, -2.0, 0.5, 0.0])},
        lambda X: torch.stack([torch.prod(X[:j]) + 2 * torch.prod(X[j + 1 :]) for j in range(5)]),
        lambda X: jnp.stack([jnp.prod(X[:j]) + 2 * jnp.prod(X[j + 1 :]) for j in range(5)]),
        shapes={"Y": (5,)},
    ),
    "index plus a value": Case(
        "Y[i] = 2*X[i] + i",
        _normal(X=(6,)),
        lambda X: 2 * X + _positions(6),
        lambda X: 2 * X + jnp.arange(6.0),
    ),
    "index values in a product and a sum": Case(
        "Y[i] = sum_{j}(X[i,j] * (j - i) / 2) * (2*i + 1)",
        _normal(X=(4, 5)),
        lambda X: (
            (X * (_positions(5)[None, :] - _positions(4)[:, None]) / 2).sum(1)
            * (2 * _positions(4) + 1)
        ),
        lambda X: (
            (X * (jnp.arange(5.0)[None, :] - jnp.arange(4.0)[:, None]) / 2).sum(1)
            * (2 * jnp.arange(4.0) + 1)
        ),
    ),
    "positional encoding, the issue's": Case(
        "P[i,d] = X[i,d] + sin(i / 100)",
        _normal(X=(7, 4)),
        lambda X: X + torch.sin(_positions(7) / 100)[:, None],
        lambda X: X + jnp.sin(jnp.arange(7.0) / 100)[:, None],
    ),
    "sinusoidal positional encoding": Case(
        # sin at even features, cos (a quarter turn later) at odd: F[k] = 10000**(-2k/D)
        "Y[i,k,c] = X[i,k,c] + sin(i * F[k] + c * 1.5707963267948966)",
        lambda rng: {
            "X": rng.standard_normal((6, 3, 2)),
            "F": 10000.0 ** (-2 * np.arange(3) / 6),
        },
        lambda X, F: (
            X
            + torch.stack(
                [
                    torch.sin(_positions(6)[:, None] * F),
                    torch.cos(_positions(6)[:, None] * F),
                ],
                dim=2,
            )
        ),
        lambda X, F: (
            X
            + jnp.stack(
                [jnp.sin(jnp.arange(6.0)[:, None] * F), jnp.cos(jnp.arange(6.0)[:, None] * F)],
                axis=2,
            )
        ),
    ),
    "max of two, with ties": Case(
        "Y[i] = max(X[i], W[i])",
        lambda rng: {
            "X": np.array([1.0, -2.0, 3.0, 0.5, 0.0]),
            "W": np.array([1.0, 2.0, 3.0, -1, 0]),
        },
        # torch.maximum and jnp.maximum split a tie's cotangent in halves; the notation sends
        # it to the first argument, as where(a >= b, a, b) does
        lambda X, W: torch.where(X >= W, X, W),
        lambda X, W: jnp.where(X >= W, X, W),
    ),
    "min of two, with ties": Case(
        "Y[i] = min(2 * X[i], W[i] - 1) + min(X[i], 0)",
        lambda rng: {
            "X": np.array([1.0, -2.0, 0.0, 0.5, 2.0]),
            "W": np.array([3.0, -3.0, 1.0, 2, 5]),
        },
        lambda X, W: torch.where(2 * X <= W - 1, 2 * X, W - 1) + torch.where(X <= 0, X, 0.0),
        lambda X, W: jnp.where(2 * X <= W - 1, 2 * X, W - 1) + jnp.where(X <= 0, X, 0.0),
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
    output = ed.evaluate(case.text, inputs, **case.options())
    cotangent = rng.standard_normal(np.shape(output))
    return inputs, cotangent


def _close(actual: Any, expected: np.ndarray, what: str) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == np.shape(expected), f"{what}: shape {actual.shape}"
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("case_id", CASES)
def test_verified(case_id: str) -> None:
    case = CASES[case_id]
    report = ed.verify(case.text, **case.options())
    assert report.ok, str(report)


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("case_id", CASES)
def test_every_backend_matches_the_frameworks_autodiff(case_id: str, framework: str) -> None:
    case = CASES[case_id]
    inputs, cotangent = _draw(case)
    output, pulled = _reference(case, inputs, cotangent, framework)
    _close(ed.evaluate(case.text, inputs, **case.options()), output, "evaluate")
    for backend in BACKENDS:
        grads = ed.vjp(case.text, inputs, cotangent, **case.options(), backend=backend)
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
    derivation = ed.derive(case.text, **case.options())
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


@pytest.mark.parametrize("case_id", CASES)
def test_printed_notation_round_trips(case_id: str) -> None:
    """The printed forward and every printed pullback, read back as notation, give the same
    values (the round-trip test's check, on these constructs)."""
    from test_roundtrip import _check_derivation

    case = CASES[case_id]
    inputs, _ = _draw(case)
    shapes = {**{name: np.shape(a) for name, a in inputs.items()}, **case.shapes}
    derivation = ed.derive(case.text, shapes=shapes, ranges=case.ranges or None)
    _check_derivation(derivation, inputs, {}, case.ranges)


PRINTED = [
    ("Y[i] = X[i] + i", "dX[p] = dY[p]"),
    ("Y[i] = sum_{j}(X[i,j] * j)", "dX[p, q] = q * dY[p]"),
    ("Y[i] = max(X[i], W[i])", "dW[p] = dY[p] * step(W[p] - X[p])"),
    ("Y[i] = max(X[i], W[i])", "dX[p] = dY[p] * (1 - step(W[p] - X[p]))"),
    ("Y[i] = min(X[i], W[i])", "dW[p] = dY[p] * step(X[p] - W[p])"),
    ("Y[i] = sin(X[i])", "dX[p] = dY[p] * cos(X[p])"),
    ("Y[i] = cos(X[i])", "dX[p] = -dY[p] * sin(X[p])"),
    ("Y[j] = sum_{k : k <= j}(X[k])", "dX[p] = sum_{j : j >= p}(dY[j])"),
    (
        "Y[i] = prod_{j}(X[i,j])",
        "dX[p, q] = dY[p] * prod_{j : j <= q - 1}(X[p, j]) * prod_{j5 : j5 >= q + 1}(X[p, j5])",
    ),
]


@pytest.mark.parametrize(("text", "printed"), PRINTED)
def test_printed_pullbacks(text: str, printed: str) -> None:
    derivation = ed.derive(text, shapes={"Y": (5,)} if "<=" in text else None)
    assert printed in [str(p).splitlines()[0] for p in derivation.pullbacks.values()]


def test_a_product_prints_its_conditions_in_latex() -> None:
    latex = ed.derive("Y[i] = prod_{j}(X[i,j])").pullbacks["X"].latex()
    assert r"\prod_{\substack{j \\ j \leq q - 1}} X_{p, j}" in latex


ERRORS = [
    ("Y[i] = X[i] / i", "cannot divide", 14, "i"),
    ("Y[i] = X[i] + i**0.5", "powers are whole numbers", 14, "i**0.5"),
    ("Y[i] = max(X[i], W[i], X[i])", "max(a, b) takes two values", 21, ","),
    ("Y[i] = max(X[i])", "max(a, b) takes two values", 7, "max"),
    ("Y[i] = sin(X[i], 2)", "a function takes one argument", 15, ","),
    ("Y[j] = prod_{k : k != j}(X[k])", "'!=' is not one", 17, "k != j"),
    ("Y[j] = prod_{k : k}(X[k])", "expected a comparison", 18, "}"),
    ("Y[i] = X[i:i+3]", "no slices", 10, ":"),
]


@pytest.mark.parametrize(("text", "message", "column", "underlined"), ERRORS)
def test_bad_input_points_at_the_column(
    text: str, message: str, column: int, underlined: str
) -> None:
    with pytest.raises(ed.EinderiveError, match=re.escape(message)) as caught:
        ed.derive(text)
    start, end = caught.value.span
    assert start == column and text[start:end] == underlined, (start, end, str(caught.value))
