"""Issue 18's reads: wrapped, clamped and reflected reads, pad values, ``//`` and ``mod`` in
index positions, index comparisons as factors -- parsed, derived, run and compared with
references that owe nothing to einderive."""

from __future__ import annotations

import pytest

import einderive as ed
from einderive.errors import EinderiveError
from einderive.parse import SBinary, SCall, SCompare, parse


def test_the_syntax_of_the_new_constructs() -> None:
    (statement,) = parse("Y[c,i,j] = X[4*c + 2*mod(i, 2) + mod(j, 2), i // 2, j // 2]")
    first, second, _ = statement.rhs.indices
    assert isinstance(second, SBinary) and second.op == "//"
    calls = [t for t in first.terms if isinstance(t, SCall)]
    assert calls[0].name == "mod" and len(calls[0].arguments) == 2
    (causal,) = parse("S[i,j] = Q[i,d]*K[j,d]*(j <= i)")
    assert isinstance(causal.rhs.factors[-1], SCompare) and causal.rhs.factors[-1].op == "<="
    # // binds like * and /, from the left
    (chain,) = parse("Y[i] = X[2*i // 3]")
    assert chain.rhs.indices[0].op == "//"
    (pool,) = parse("Y[i] = max_{m}(X[2*i+m-1, pad=-inf])")
    assert pool.rhs.body.pad is not None and pool.rhs.body.pad.name == "pad"


BAD_SYNTAX = [
    ("Y[i] = X[i] <= 2", "a comparison of indices is a factor in parentheses", 13),
    ("Y[i] = X[i, pud=3]", "unknown keyword 'pud'", 13),
    ("Y[i] = mod(X[i], 2)", "written inside a tensor's brackets", 8),
    ("Y[i] = X[mod(i)]", "mod takes 2 arguments", 10),
    ("Y[i] = X[clamp(i, 0)]", "clamp takes 3 arguments", 10),
    ("Y[i, pad=0] = X[i]", "a pad value belongs to a read", 6),
    ("Y[i] = X[i] // 2", "'//' divides index positions", 8),
    ("Y[i] = exp(X[i], 2)", "a function takes one argument", 16),
    ("Y[i] = exp((i <= 3))", "an index comparison is a factor of a product", 12),
    ("Y[i] = X[i] / (i <= 3)", "an index comparison is a factor of a product", 15),
]


BAD_MEANING = [
    ("Y[i,j] = X[i // j]", "the divisor of '//' must be a number or a parameter, not an index", 17),
    ("Y[i,j] = X[mod(i, j)]", "the divisor of mod", 19),
    ("Y[i] = X[mod(i, 0)]", "must be positive", 17),
    ("Y[i] = X[clamp(i, 3, 1)]", "needs lo <= hi", 10),
    ("Y[i] = X[i]*(X[i] <= 2)", "a comparison compares index expressions", 14),
    ("Y[i] = X[i]*(mod(i, 2) == 0)", "a comparison compares index expressions", 14),
    ("Y[i] = X[i, pad=foo]", "a pad value is a number, inf or -inf", 17),
    ("Y[i // 2] = X[i]", "a left-hand side is written at affine positions", 3),
]


@pytest.mark.parametrize(("text", "message", "column"), BAD_MEANING)
def test_bad_meaning_points_at_its_column(text: str, message: str, column: int) -> None:
    with pytest.raises(EinderiveError, match=message) as caught:
        ed.derive(text)
    assert caught.value.column == column


def test_the_command_line_exits_2_on_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    from einderive.cli import run

    assert run(["Y[i,j] = X[i // j]"]) == 2
    assert "^" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message", "column"), BAD_SYNTAX)
def test_bad_syntax_points_at_its_column(text: str, message: str, column: int) -> None:
    with pytest.raises(EinderiveError, match=message) as caught:
        parse(text)
    assert caught.value.column == column


# ---- derived, verified, run everywhere, against PyTorch ---------------------------------------
#
# Each case is a notation with numeric shapes and the same layer written with PyTorch's own
# modules and functions (``torch.nn.Conv2d(padding_mode=...)``, ``max_pool2d``,
# ``interpolate``, ``pixel_shuffle``, a masked product): references that owe nothing to
# einderive, differentiated by ``torch.autograd`` in float64.

import inspect  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from einderive.run.load import load_source  # noqa: E402
from einderive.verify import available_backends  # noqa: E402

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

BACKENDS = ("loops", "numpy", "jax", "torch")
F = torch.nn.functional


@dataclass(frozen=True)
class Case:
    text: str
    shapes: dict[str, tuple[int, ...]]
    reference: Callable[..., Any]  # torch tensors in the order of ``shapes`` -> output
    ranges: dict[str, int] = field(default_factory=dict)
    negative: bool = False  # inputs all negative (max pooling over padded windows)


def _conv(mode: str, stride: int) -> Callable[..., Any]:
    def layer(w: Any, x: Any) -> Any:
        conv = torch.nn.Conv2d(2, 3, 3, stride=stride, padding=1, padding_mode=mode, bias=False)
        conv = conv.double()
        with torch.no_grad():
            conv.weight.zero_()
        # the weight as the given tensor, so that autograd reaches it
        conv.weight = None  # type: ignore[assignment]
        del conv._parameters["weight"]
        conv.weight = w
        return conv(x)

    return layer


READS = {
    "zeros": "X[b, c, {s}*i+m-1, {s}*j+n-1]",
    "circular": "X[b, c, mod({s}*i+m-1, N_X2), mod({s}*j+n-1, N_X3)]",
    "replicate": "X[b, c, clamp({s}*i+m-1, 0, N_X2-1), clamp({s}*j+n-1, 0, N_X3-1)]",
    "reflect": "X[b, c, reflect({s}*i+m-1, N_X2), reflect({s}*j+n-1, N_X3)]",
}


def _conv_case(mode: str, stride: int) -> Case:
    size = (7 - 1) // stride + 1  # PyTorch's output: (7 + 2*1 - 3) // stride + 1
    return Case(
        f"Y[b,o,i,j] = W[o,c,m,n] * {READS[mode].format(s=stride)}",
        {"W": (3, 2, 3, 3), "X": (2, 2, 7, 6), "Y": (2, 3, size, (6 - 1) // stride + 1)},
        _conv(mode, stride),
    )


CASES = {
    **{
        f"conv2d {mode} stride {stride}": _conv_case(mode, stride)
        for mode in READS
        for stride in (1, 2)
    },
    "max_pool2d, -inf padding": Case(
        "Y[b,c,i,j] = max_{m,n}(X[b, c, 2*i+m-1, 2*j+n-1, pad=-inf])",
        {"X": (2, 2, 7, 6), "Y": (2, 2, 4, 3)},
        lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
        ranges={"m": 3, "n": 3},
        negative=True,
    ),
    "nearest upsampling": Case(
        "Y[b,c,i,j] = X[b, c, i // 2, j // 2]",
        {"X": (2, 3, 4, 5)},
        lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
    ),
    "pixel shuffle": Case(
        "Y[b,c,i,j] = X[b, 4*c + 2*mod(i, 2) + mod(j, 2), i // 2, j // 2]",
        {"X": (2, 8, 3, 4)},
        lambda x: F.pixel_shuffle(x, 2),
    ),
    "causal attention scores": Case(
        "S[i,j] = Q[i,d]*K[j,d]*(j <= i)",
        {"Q": (6, 4), "K": (6, 4)},
        lambda q, k: (q @ k.T) * torch.tril(torch.ones(6, 6, dtype=torch.float64)),
    ),
}


def _inputs(case: Case, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    names = [n for n in case.shapes if n not in case.text.split("=")[0]]
    inputs = {n: rng.standard_normal(case.shapes[n]) for n in names}
    if case.negative:
        inputs = {n: -np.abs(a) - 0.5 for n, a in inputs.items()}
    output = ed.evaluate(case.text, inputs, shapes=case.shapes, ranges=case.ranges or None)
    return inputs, rng.standard_normal(np.shape(output))


def _torch_reference(case: Case, inputs: dict[str, np.ndarray], cotangent: np.ndarray):
    tensors = {n: torch.tensor(a, requires_grad=True) for n, a in inputs.items()}
    output = case.reference(*tensors.values())
    grads = torch.autograd.grad(output, list(tensors.values()), torch.tensor(cotangent))
    return output.detach().numpy(), {n: g.numpy() for n, g in zip(tensors, grads, strict=True)}


def _close(actual: Any, expected: np.ndarray, what: str) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == np.shape(expected), f"{what}: shape {actual.shape}"
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("case_id", CASES)
def test_verified(case_id: str) -> None:
    case = CASES[case_id]
    report = ed.verify(case.text, shapes=case.shapes, ranges=case.ranges or None)
    assert report.ok, str(report)


@pytest.mark.parametrize("case_id", CASES)
def test_every_backend_matches_torch(case_id: str) -> None:
    case = CASES[case_id]
    inputs, cotangent = _inputs(case)
    output, pulled = _torch_reference(case, inputs, cotangent)
    given = {"shapes": case.shapes, "ranges": case.ranges or None}
    _close(ed.evaluate(case.text, inputs, **given), output, "evaluate")
    for backend in BACKENDS:
        grads = ed.vjp(case.text, inputs, cotangent, backend=backend, **given)
        for name, expected in pulled.items():
            _close(np.asarray(grads[name]), expected, f"{backend} d{name}")


def _converter(kind: str) -> Callable[[np.ndarray], Any]:
    if kind == "torch":
        return lambda a: torch.tensor(a, dtype=torch.float64)
    if kind == "jax":
        return jax.numpy.asarray
    return lambda a: a


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("case_id", CASES)
def test_every_emitted_module_matches_torch(case_id: str, kind: str) -> None:
    case = CASES[case_id]
    derivation = ed.derive(case.text, shapes=case.shapes, ranges=case.ranges or None)
    namespace = load_source(derivation.source(kind), kind)
    inputs, cotangent = _inputs(case)
    output, pulled = _torch_reference(case, inputs, cotangent)
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


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Y[i] = W[m]*X[clamp(i+m-1, 0, 7)]", "the edge X[0]"),
        ("Y[i] = W[m]*X[mod(i+m-1, 8)]", "folds the cotangent around"),
        ("Y[i] = W[m]*X[reflect(i+m-1, 8)]", "mirrors the cotangent"),
        ("Y[i] = X[i // 2]", "sums the cotangent over every position"),
        ("Y[i] = max_{m}(X[2*i+m-1, pad=-inf])", "reads -inf outside its shape"),
        ("S[i,j] = Q[i,d]*K[j,d]*(j <= i)", "(j <= i) is a condition"),
    ],
)
def test_explain_says_what_the_pullback_of_each_read_does(text: str, words: str) -> None:
    shapes = {"X": (8,), "Y": (8,), "W": (3,)} if "W[m]" in text else None
    ranges = {"m": 3} if "max_" in text else None
    explanation = ed.derive(text, shapes=shapes, ranges=ranges).explain()
    step = next(s for s in explanation.steps if s.title == "The reads, in pieces")
    assert any(words in line for line in step.lines), step.lines
    assert "as written" in "\n".join(explanation.steps[0].lines)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mode", ["circular", "replicate", "reflect"])
def test_a_padded_convolution_is_the_pytorch_call_and_jnp_pad(mode: str, stride: int) -> None:
    """The forward recognised as F.pad(mode) + conv2d (jnp.pad + conv_general_dilated), run
    here from the record; the pullbacks as that call's gradients, dX folded by the adjoint
    of the padding; all against einderive's own forward and pullbacks."""
    from einderive.conv.calls import jax_call
    from einderive.conv.padding import NUMPY_MODES, padded_convolution

    case = CASES[f"conv2d {mode} stride {stride}"]
    derivation = ed.derive(case.text, shapes=case.shapes)
    found = padded_convolution(derivation)
    assert not isinstance(found, str), found
    assert found.mode == mode and found.axes == (2, 3)
    inputs, cotangent = _inputs(case)
    expected = ed.evaluate(case.text, inputs, shapes=case.shapes)
    grads = ed.vjp(case.text, inputs, cotangent, shapes=case.shapes, backend="numpy")
    call = found.torch
    x = torch.tensor(inputs["X"], requires_grad=True)
    w = torch.tensor(inputs["W"], requires_grad=True)
    x_pad = F.pad(x, found.torch_pad(), mode=mode)
    y = getattr(F, call.function)(x_pad, w, **call.keywords())
    _close(y.detach().numpy(), expected, "F.pad + conv2d")
    d_pad, d_w = torch.autograd.grad(y, [x_pad, w], torch.tensor(cotangent))
    _close(d_w.numpy(), grads["W"], "the weight gradient on the padded input")
    _close(found.fold(d_pad.numpy()), grads["X"], "the folded input gradient")
    _close(found.fold(found.pad(inputs["X"])) * 0, np.zeros_like(inputs["X"]), "fold shape")
    padded = jax.numpy.pad(inputs["X"], found.widths(4), mode=NUMPY_MODES[mode])
    out = jax.lax.conv_general_dilated(padded, inputs["W"], **jax_call(found.conv.call).keywords())
    _close(np.asarray(out), expected, "jnp.pad + conv_general_dilated")
    step = next(s for s in derivation.explain().steps if "padding_mode" in s.title)
    assert any("folded by the adjoint of the padding" in line for line in step.lines)


SECOND = [
    (
        "Y[i] = W[m]*X[clamp(i+m-1, 0, N_X-1)]*X[i]",
        "X",
        {"shapes": {"Y": (5,)}, "ranges": {"m": 3}},
    ),
    ("S[i,j] = Q[i,d]*K[j,d]*(j <= i)*Q[i,d]", "Q", {}),
    ("Y[i] = X[i // 2]*X[mod(i, 3)]", "X", {}),
    ("Y[i] = max_{m}(X[2*i+m-1, pad=-inf])", "X", {"ranges": {"m": 3}}),
]


@pytest.mark.parametrize(("text", "first", "given"), SECOND)
def test_forward_mode_and_second_order(text: str, first: str, given: dict) -> None:
    from einderive.higher import verify_twice

    assert ed.verify_jvp(text, **given).ok
    if "max_" not in text:  # the derivative of an argmax indicator is zero: nothing to check
        assert verify_twice(text, first, **given).ok


def test_pieces_inside_another_node_print_their_conditions() -> None:
    text = "Y[i] = max_{m}(X[clamp(2*i+m-1, 0, 7)])"
    derivation = ed.derive(text, shapes={"X": (8,), "Y": (4,)}, ranges={"m": 3})
    printed = str(derivation.pullbacks["X"])
    # the middle piece's condition (m + 2*i >= 1) is its read's own: X[-1] is zero
    assert "(m + 2*i <= 0) * X[0] + X[m + 2*i - 1]" in printed
    padded = ed.derive("Y[i] = max_{m}(X[2*i+m-1, pad=-inf])", ranges={"m": 3})
    assert "argmax_{m}(X[2*i + m - 1, pad=-inf])" in str(padded.pullbacks["X"])


@pytest.mark.parametrize("text", ["Y[p] = X[p] * (2*(p // 2) == p)", "Y[p] = X[p] * (p <= p // 3)"])
def test_a_quotient_in_a_comparison_is_refused_at_its_column(text: str) -> None:
    with pytest.raises(ed.IndexNotationError, match="affine index expressions") as caught:
        ed.derive(text)
    assert caught.value.span is not None and "//" in text[slice(*caught.value.span)]


@pytest.mark.parametrize(
    ("text", "shapes", "padded"),
    [
        # every position of the output reads below the input's start: all pad
        ("Y[i] = W[m]*X[i+m-2, pad=2.0]", {"W": (1,), "X": (4,), "Y": (2,)}, [(2, 0)]),
        # one axis entirely out of range, the other partly
        (
            "Y[i, j] = X[i+m-1, 2*j+n, pad=0.5]*W[m, n]",
            {"W": (1, 3), "X": (4, 3), "Y": (1, 6)},
            [(1, 0), (0, 10)],
        ),
    ],
)
def test_a_pad_value_where_every_read_of_an_axis_is_out_of_range(
    text: str, shapes: dict, padded: list
) -> None:
    """The pad piece of a side the output's box lies wholly beyond is the whole read (seeds
    8000385 and 8000467 of the oracle sweep: the piece was dropped, reading zeros)."""
    rng = np.random.default_rng(0)
    inputs = {name: rng.normal(size=shape) for name, shape in shapes.items() if name != "Y"}
    pad = float(text.split("pad=")[1].split("]")[0])
    x = torch.tensor(np.pad(inputs["X"], padded, constant_values=pad), requires_grad=True)
    w = torch.tensor(inputs["W"], requires_grad=True)
    if len(shapes["X"]) == 1:  # Y[i] = W[m] * Xpad[i + m]
        y = torch.nn.functional.conv1d(x[None, None], w[None, None])[0, 0][: shapes["Y"][0]]
    else:  # Y[i, j] = W[m, n] * Xpad[i + m, 2*j + n]
        y = torch.nn.functional.conv2d(x[None, None], w[None, None], stride=(1, 2))[0, 0]
        y = y[: shapes["Y"][0], : shapes["Y"][1]]
    assert tuple(y.shape) == shapes["Y"]
    cotangent = rng.normal(size=shapes["Y"])
    y.backward(torch.tensor(cotangent))
    declared = {"Y": shapes["Y"]}
    np.testing.assert_allclose(ed.evaluate(text, inputs, shapes=declared), y.detach().numpy())
    for backend in BACKENDS:
        grads = ed.vjp(text, inputs, cotangent, shapes=declared, backend=backend)
        # the pad's own positions are constants: the input's gradient is the padded one's middle
        middle = tuple(slice(lo, lo + n) for (lo, _), n in zip(padded, shapes["X"], strict=True))
        np.testing.assert_allclose(grads["X"], x.grad.numpy()[middle], atol=1e-12)
        np.testing.assert_allclose(grads["W"], w.grad.numpy(), atol=1e-12)


# ---- exact division (issue 17 item 4: a printed divisibility condition reads back) ----------


def test_exact_division_reads_only_where_it_divides() -> None:
    x = np.array([1.0, 2.0, 3.0])
    # X = [a, b, c] gives [a, 0, b, 0, c]: the extent is the last position that divides
    np.testing.assert_array_equal(ed.evaluate("Y[p] = X[p / 2]", {"X": x}), [1, 0, 2, 0, 3])
    np.testing.assert_array_equal(
        ed.evaluate("Y[p] = X[(p + 1) / 3]", {"X": x}), [0, 0, 2, 0, 0, 3]
    )
    np.testing.assert_array_equal(
        ed.evaluate("Y[p] = X[p / s]", {"X": x}, params={"s": 3}), [1, 0, 0, 2, 0, 0, 3]
    )
    # zero where it does not divide, inside a function too (as a read out of range)
    np.testing.assert_allclose(
        ed.evaluate("Y[p] = exp(X[p / 2])", {"X": x}), np.exp([1, 0, 2, 0, 3])
    )
    assert ed.derive("Y[p] = X[2*p / 2]").pullbacks["X"].notation() == "dX[p1] = dY[p1]"


def test_exact_division_is_a_transposed_convolution_in_gather_form() -> None:
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(4), rng.standard_normal(3)
    text = "Y[p] = sum_{m}(W[m] * X[(p - m) / 2])"
    # the reference: the scatter Y[2*i + m] += W[m] * X[i], in NumPy
    expected = np.zeros(2 * 3 + 3)
    for i in range(4):
        expected[2 * i : 2 * i + 3] += w * x[i]
    got = ed.evaluate(text, {"X": x, "W": w}, shapes={"Y": (9,)})
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    dy = rng.standard_normal(9)
    for backend in available_backends():
        grads = ed.vjp(text, {"X": x, "W": w}, dy, shapes={"Y": (9,)}, backend=backend)
        # <dY, Y> is bilinear: its gradient in X is W's correlation with dY at stride 2
        dx = np.array([sum(w[m] * dy[2 * i + m] for m in range(3)) for i in range(4)])
        dw = np.array([sum(x[i] * dy[2 * i + m] for i in range(4)) for m in range(3)])
        np.testing.assert_allclose(np.asarray(grads["X"]), dx, rtol=1e-9, err_msg=backend)
        np.testing.assert_allclose(np.asarray(grads["W"]), dw, rtol=1e-9, err_msg=backend)
    assert ed.verify(text, shapes={"X": (4,), "W": (3,), "Y": (9,)}).ok


def test_the_forward_names_each_summed_index_once() -> None:
    """The pieces of a clamped read all sum over the written `m`: it is one summed index."""
    d = ed.derive("Y[i] = W[m]*X[clamp(i+m-1, 0, 7)]", shapes={"X": (8,), "Y": (8,), "W": (3,)})
    assert "free: i; summed: m\n" in str(d)
