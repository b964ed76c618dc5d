"""Reads through integer index arrays: embeddings, gathers, scatter-adds and their pullbacks.

Every case is checked against ``torch.autograd`` of the same operation
(``embedding``, ``gather``, ``index_add``) in float64: the forward and every pullback,
on every backend and in every emitted module (loops, NumPy, JAX, PyTorch, the torch
autograd Function and the jax custom_vjp, under jit too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import einderive as ed
from einderive.errors import ArgumentError, EinderiveError
from einderive.run.load import load_source

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


@dataclass(frozen=True)
class Case:
    text: str
    inputs: dict[str, np.ndarray]
    reference: Callable[[dict[str, Any]], Any]  # the same operation in torch
    shapes: dict[str, tuple[int, ...]] | None = None

    @property
    def id(self) -> str:
        return self.text


_rng = np.random.default_rng(19)


def _zeros(*shape: int) -> Any:
    return torch.zeros(*shape, dtype=torch.float64)


_X = _rng.standard_normal((4, 5))
CASES = [
    Case(  # an embedding lookup, tokens repeated (their gradients add up)
        "Y[b,d] = E[tok[b], d]",
        {"E": _rng.standard_normal((7, 3)), "tok": np.array([0, 2, 2, 5, 1, 2, 6, 0, 0])},
        lambda t: torch.nn.functional.embedding(t["tok"], t["E"]),
    ),
    Case(  # torch.gather along axis 1
        "Y[i,j] = X[i, idx[i,j]]",
        {"X": _X, "idx": _rng.integers(0, 5, (4, 6))},
        lambda t: torch.gather(t["X"], 1, t["idx"]),
    ),
    Case(  # torch.gather along axis 0
        "Y[i,j] = X[idx[i,j], j]",
        {"X": _X, "idx": _rng.integers(0, 4, (3, 5))},
        lambda t: torch.gather(t["X"], 0, t["idx"]),
    ),
    Case(  # a scatter-add, positions repeated
        "Y[idx[i], d] = X[i, d]",
        {"X": _rng.standard_normal((6, 3)), "idx": np.array([1, 1, 0, 3, 1, 0])},
        lambda t: _zeros(4, 3).index_add(0, t["idx"], t["X"]),
        {"Y": (4, 3)},
    ),
    Case(  # a sparse COO matrix-vector product, in scatter form
        "Y[row[k]] = val[k] * X[col[k]]",
        {
            "val": _rng.standard_normal(8),
            "X": _rng.standard_normal(6),
            "row": np.array([0, 4, 4, 2, 0, 1, 4, 3]),
            "col": np.array([5, 0, 0, 2, 3, 3, 1, 5]),
        },
        lambda t: _zeros(5).index_add(0, t["row"], t["val"] * t["X"][t["col"]]),
        {"Y": (5,)},
    ),
    Case(  # a message-passing step of a graph network
        "M[e,d] = H[src[e], d] * W[d]; A[dst[e], d] = M[e, d]",
        {
            "H": _rng.standard_normal((5, 3)),
            "src": np.array([0, 1, 1, 4, 2, 0, 3]),
            "W": _rng.standard_normal(3),
            "dst": np.array([1, 1, 0, 2, 4, 4, 4]),
        },
        lambda t: _zeros(5, 3).index_add(0, t["dst"], t["H"][t["src"]] * t["W"]),
        {"A": (5, 3)},
    ),
    Case(  # the COO product with a comparison factor: the same scatter
        "Y[r] = sum_{k}(val[k] * X[col[k]] * (row[k] == r))",
        {
            "val": _rng.standard_normal(8),
            "X": _rng.standard_normal(6),
            "row": np.array([0, 4, 4, 2, 0, 1, 4, 3]),
            "col": np.array([5, 0, 0, 2, 3, 3, 1, 5]),
        },
        lambda t: _zeros(5).index_add(0, t["row"], t["val"] * t["X"][t["col"]]),
        {"Y": (5,)},
    ),
    Case(  # message passing, the aggregation written with a comparison
        "M[e,d] = H[src[e], d] * W[d]; A[v,d] = sum_{e}(M[e,d] * (dst[e] == v))",
        {
            "H": _rng.standard_normal((5, 3)),
            "src": np.array([0, 1, 1, 4, 2, 0, 3]),
            "W": _rng.standard_normal(3),
            "dst": np.array([1, 1, 0, 2, 4, 4, 4]),
        },
        lambda t: _zeros(5, 3).index_add(0, t["dst"], t["H"][t["src"]] * t["W"]),
        {"A": (5, 3)},
    ),
    Case(  # an index array plus an affine offset: a window at data-dependent starts
        "Y[i] = W[m] * X[idx[i] + m - 1]",
        {"W": _rng.standard_normal(3), "X": _rng.standard_normal(8), "idx": np.array([0, 3, 3, 7])},
        lambda t: (
            torch.nn.functional.pad(t["X"], (1, 2))[t["idx"][:, None] + torch.arange(3)[None, :]]
            * t["W"]
        ).sum(1),
    ),
]


@dataclass(frozen=True)
class Expected:
    forward: np.ndarray
    cotangent: np.ndarray
    grads: dict[str, np.ndarray]


def _expected(case: Case) -> Expected:
    tensors = {
        k: torch.tensor(v, dtype=torch.float64 if v.dtype.kind == "f" else torch.int64)
        for k, v in case.inputs.items()
    }
    for value in tensors.values():
        value.requires_grad_(value.dtype == torch.float64)
    output = case.reference(tensors)
    cotangent = np.random.default_rng(0).standard_normal(tuple(output.shape))
    floats = [k for k, v in tensors.items() if v.requires_grad]
    grads = torch.autograd.grad(output, [tensors[k] for k in floats], torch.tensor(cotangent))
    found = {k: g.numpy() for k, g in zip(floats, grads, strict=True)}
    return Expected(output.detach().numpy(), cotangent, found)


@pytest.mark.parametrize("backend", ["loops", "numpy", "jax", "torch"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backends_agree_with_torch_autograd(case: Case, backend: str) -> None:
    expected = _expected(case)
    compiled = ed.compile(case.text, shapes=case.shapes, backend=backend)
    np.testing.assert_allclose(np.asarray(compiled.forward(**case.inputs)), expected.forward)
    grads = compiled.vjp(expected.cotangent, **case.inputs)
    assert set(grads) == set(expected.grads)  # no gradient for an index array
    for name, grad in expected.grads.items():
        np.testing.assert_allclose(np.asarray(grads[name]), grad, atol=1e-12)


def _derivation(case: Case) -> ed.Derivation:
    shapes = {k: v.shape for k, v in case.inputs.items()} | (case.shapes or {})
    return ed.derive(case.text, shapes=shapes)


@pytest.mark.parametrize("kind", ["loops", "numpy", "jax", "torch"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_emitted_modules_agree_with_torch_autograd(case: Case, kind: str) -> None:
    expected = _expected(case)
    derivation = _derivation(case)
    module = load_source(derivation.source(kind), kind)
    convert: Callable[[Any], Any] = {
        "torch": torch.tensor,
        "jax": jnp.asarray,
    }.get(kind, lambda a: a)
    arrays = [convert(case.inputs[n]) for n in derivation.program.inputs]
    np.testing.assert_allclose(np.asarray(module["forward"](*arrays)), expected.forward)
    for name in derivation.pullbacks:
        grad = module[f"pullback_{name}"](convert(expected.cotangent), *arrays)
        np.testing.assert_allclose(np.asarray(grad), expected.grads[name], atol=1e-12)
    if kind != "loops":
        grads = module["vjp"](convert(expected.cotangent), *arrays)
        for name, grad in zip(derivation.pullbacks, grads, strict=True):
            np.testing.assert_allclose(np.asarray(grad), expected.grads[name], atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_framework_ops_agree_with_torch_autograd(case: Case) -> None:
    expected = _expected(case)
    derivation = _derivation(case)
    names = derivation.program.inputs
    floats = list(derivation.pullbacks)
    module = load_source(derivation.source("torch-function"), "torch-function")
    tensors = [torch.tensor(case.inputs[n], requires_grad=n in floats) for n in names]
    output = module["op"](*tensors)
    np.testing.assert_allclose(output.detach().numpy(), expected.forward)
    grads = torch.autograd.grad(
        output, [t for t in tensors if t.requires_grad], torch.tensor(expected.cotangent)
    )
    for name, grad in zip(floats, grads, strict=True):
        np.testing.assert_allclose(grad.numpy(), expected.grads[name], atol=1e-12)
    module = load_source(derivation.source("jax-custom-vjp"), "jax-custom-vjp")

    def op(*values: Any) -> Any:
        given = dict(zip(floats, values, strict=True))
        return module["op"](*[given.get(n, case.inputs[n]) for n in names])

    for function in (op, jax.jit(op)):
        primals = [jnp.asarray(case.inputs[n]) for n in floats]
        output, pull = jax.vjp(function, *primals)
        np.testing.assert_allclose(np.asarray(output), expected.forward)
        for name, grad in zip(floats, pull(jnp.asarray(expected.cotangent)), strict=True):
            np.testing.assert_allclose(np.asarray(grad), expected.grads[name], atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_verify_draws_index_arrays_with_repeats_and_positions_outside(case: Case) -> None:
    assert ed.verify(case.text, shapes=case.shapes).ok


def test_embedding_pullback_prints_as_a_scatter_and_says_why() -> None:
    derivation = ed.derive("Y[b,d] = E[tok[b], d]")
    assert set(derivation.pullbacks) == {"E"}
    pullback = derivation.pullbacks["E"]
    assert pullback.notation() == "dE[tok[b], q] += dY[b, q]"
    assert "scatter form: p = tok[b] cannot be solved for b" in str(pullback)
    assert "a gather would search every b" in str(derivation)


def test_the_pullback_of_a_scatter_add_is_a_gather() -> None:
    derivation = ed.derive("Y[idx[i], d] = X[i, d]")
    assert derivation.pullbacks["X"].notation() == "dX[p1, q1] = dY[idx[p1], q1]"


def test_gather_and_scatter_are_one_vectorized_operation() -> None:
    source = ed.derive("Y[b,d] = E[tok[b], d]").source("numpy")
    pullback = source[source.index("def pullback_E") :]
    assert "_scatter_add(" in pullback and "np.add.at" in source
    assert "_index(tok, b)" in source[source.index("def forward") :]
    torch_source = ed.derive("Y[b,d] = E[tok[b], d]").source("torch")
    assert ".index_add(" in torch_source
    jax_source = ed.derive("Y[b,d] = E[tok[b], d]").source("jax")
    assert ".at[clipped].add(" in jax_source


def test_loops_scatter_with_a_bounds_test() -> None:
    source = ed.derive("Y[b,d] = E[tok[b], d]").source("loops")
    assert "if 0 <= tok[b] < N_E0:\n                dE[tok[b], q] += dY[b, q]" in source


def test_out_of_range_index_values_read_zero() -> None:
    embedding = np.arange(6.0).reshape(3, 2)
    tok = np.array([-1, 0, 3, 2])
    for backend in ("loops", "numpy", "jax", "torch"):
        compiled = ed.compile("Y[b,d] = E[tok[b], d]", backend=backend)
        forward = np.asarray(compiled.forward(E=embedding, tok=tok))
        np.testing.assert_array_equal(forward, [[0, 0], [0, 1], [0, 0], [4, 5]])
        grad = np.asarray(compiled.vjp(np.ones((4, 2)), E=embedding, tok=tok)["E"])
        np.testing.assert_array_equal(grad, [[1, 1], [0, 0], [1, 1]])


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("Y[b] = E[tok[b,c]] + F[tok[b]]", "'tok' is read with 1 indices here but 2", 24),
        ("tok[b] = E[b]; Y[b] = F[tok[b]]", "it cannot also be written", 1),
        ("Y[b] = E[tok[b]] * tok[b]", "cannot also be read as a value", 20),
    ],
)
def test_bad_index_arrays_point_at_the_column(text: str, message: str, column: int) -> None:
    with pytest.raises(EinderiveError, match=message) as raised:
        ed.derive(text)
    assert raised.value.column == column


def test_an_index_array_has_no_gradient_and_holds_integers() -> None:
    with pytest.raises(ArgumentError, match="index array holds integer positions"):
        ed.derive("Y[b,d] = E[tok[b], d]", wrt=["tok"])
    with pytest.raises(ArgumentError, match="must hold integers, not float64"):
        ed.evaluate("Y[b,d] = E[tok[b], d]", {"E": np.ones((3, 2)), "tok": np.array([0.0, 1.0])})


def test_cli_says_why_and_exits_2_on_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    from einderive.cli import run

    assert run(["Y[b,d] = E[tok[b], d]"]) == 0
    assert "a gather would search every b" in capsys.readouterr().out
    assert run(["Y[b,d] = E[tok[b], d]", "--wrt", "tok"]) == 2
    assert run(["Y[b] = E[tok[b]] * tok[b]"]) == 2
    assert "^^^^^^" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["loops", "numpy", "torch"])
def test_out_of_range_raise_names_the_value_and_the_axis(backend: str) -> None:
    inputs = {"E": np.ones((3, 2)), "tok": np.array([0, 3, 1])}
    with pytest.raises(ArgumentError, match=r"tok\[1\] = 3 is outside axis 0 of 'E'"):
        ed.vjp(
            "Y[b,d] = E[tok[b], d]", inputs, np.ones((3, 2)), backend=backend, out_of_range="raise"
        )
    with pytest.raises(ArgumentError, match=r"idx\[1\] = -1 is outside axis 0 of 'Y'"):
        ed.evaluate(
            "Y[idx[i]] = X[i]",
            {"X": np.ones(3), "idx": np.array([0, -1, 1])},
            shapes={"Y": (2,)},
            out_of_range="raise",
        )
    inside = {"E": np.ones((3, 2)), "tok": np.array([0, 2, 2])}
    grads = ed.vjp(
        "Y[b,d] = E[tok[b], d]", inside, np.ones((3, 2)), backend=backend, out_of_range="raise"
    )
    np.testing.assert_array_equal(np.asarray(grads["E"]), [[1, 1], [0, 0], [2, 2]])


CALLS = {  # the statements each case computes with one indexing call, and their kinds
    "Y[b,d] = E[tok[b], d]": {"Y": "take", "dE": "scatter_add"},
    "Y[i,j] = X[i, idx[i,j]]": {"Y": "take_along_axis", "dX": "scatter_add_along_axis"},
    "Y[i,j] = X[idx[i,j], j]": {"Y": "take_along_axis", "dX": "scatter_add_along_axis"},
    "Y[idx[i], d] = X[i, d]": {"Y": "scatter_add", "dX": "take"},
    "M[e,d] = H[src[e], d] * W[d]; A[dst[e], d] = M[e, d]": {"A": "scatter_add"},
}


@pytest.mark.parametrize("case", [c for c in CASES if c.text in CALLS], ids=lambda c: c.id)
def test_printed_indexing_calls_run_and_agree(case: Case) -> None:
    from einderive.emit.conv import index_calls
    from einderive.run.interpret import run_statements

    jax.config.update("jax_enable_x64", True)  # float64, as the emitted modules ask
    derivation = _derivation(case)
    calls = index_calls(derivation)
    assert {name: call.kind for name, call in calls.items()} == CALLS[case.text]
    program = derivation.program
    values = run_statements(program.statements, program.shapes, dict(case.inputs))
    cotangent = _expected(case).cotangent
    values[derivation.backward.seeds[0]] = cotangent
    values = run_statements(derivation.backward.statements, derivation.shapes, values)
    for name, call in calls.items():
        torch_space: dict[str, Any] = {"torch": torch}
        jax_space: dict[str, Any] = {"jnp": jnp}
        for tensor, value in values.items():
            if tensor != name:
                torch_space[tensor] = torch.tensor(value)
                jax_space[tensor] = jnp.asarray(value)
        exec(call.torch(), torch_space)
        exec(call.jax(), jax_space)
        np.testing.assert_allclose(torch_space[name].numpy(), values[name], atol=1e-12)
        np.testing.assert_allclose(np.asarray(jax_space[name]), values[name], atol=1e-12)


def test_emit_conv_and_json_print_the_indexing_calls(capsys: pytest.CaptureFixture[str]) -> None:
    from einderive.cli import run
    from einderive.emit.outputs import as_data

    entry = as_data(ed.derive("Y[b,d] = E[tok[b], d]"))["pullbacks"]["E"]["conv"]
    assert entry["generic"] is None
    assert entry["indexing"]["torch"] == "dE = torch.zeros_like(E).index_add_(0, tok, dY)"
    assert entry["indexing"]["jax"] == 'dE = jnp.zeros_like(E).at[tok].add(dY, mode="drop")'
    assert run(["Y[b,d] = E[tok[b], d]", "--emit", "conv"]) == 0
    printed = capsys.readouterr().out
    assert "Y = torch.nn.functional.embedding(tok, E)" in printed
    assert 'Y = jnp.take(E, tok, axis=0, mode="fill", fill_value=0)' in printed


def test_forward_mode_moves_the_table_not_the_tokens() -> None:
    embedding, tok = np.arange(6.0).reshape(3, 2), np.array([2, 0, 2])
    tangent = ed.jvp("Y[b,d] = E[tok[b], d]", {"E": embedding, "tok": tok}, {"E": embedding})
    np.testing.assert_array_equal(tangent, embedding[tok])
    with pytest.raises(ArgumentError, match="an index array holds integer positions"):
        ed.jvp("Y[b,d] = E[tok[b], d]", {"E": embedding, "tok": tok}, {"tok": np.ones(3)})


@pytest.mark.parametrize(
    ("text", "first"),
    [("Y[b,d] = tanh(E[tok[b], d])", "E"), ("Y[i,j] = W[j] * X[i, idx[i,j]]", "X")],
)
def test_second_order_through_a_scatter(text: str, first: str) -> None:
    assert ed.verify_twice(text, first).ok


def test_a_scattered_axis_needs_its_size() -> None:
    inputs = {"X": np.ones((3, 2)), "idx": np.array([0, 1, 1])}
    with pytest.raises(ArgumentError, match=r"no array gives N_Y0; declare it"):
        ed.evaluate("Y[idx[i], d] = X[i, d]", inputs)
    np.testing.assert_array_equal(
        ed.evaluate("Y[idx[i], d] = X[i, d]", inputs, shapes={"Y": (2, 2)}), [[1, 1], [2, 2]]
    )
