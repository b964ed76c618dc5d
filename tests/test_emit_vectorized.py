"""The vectorized sources (NumPy, JAX, PyTorch): the printed text is compiled and run.

Every case of the core list (``test_pullbacks.CASES``) and of the programs list
(``test_programs.CASES``) is derived once, emitted as NumPy, compiled from the
text, run on random sizes, parameters and data, and compared with
``einderive.evaluate`` (the forward) and ``einderive.vjp(..., backend="loops")``
(every pullback). The JAX and PyTorch sources are run on the convolution cases
and a few others: one call of each costs far more than in NumPy.
"""

from __future__ import annotations

import ast
import functools
import inspect
import random
import sys
from pathlib import Path

import numpy as np
import pytest

import einderive as ed
from einderive.emit.vectorized import jax_source, numpy_source, torch_source
from einderive.verify import _positive_only, draw_values, instantiate

sys.path.insert(0, str(Path(__file__).parent))
import test_pullbacks  # noqa: E402

try:
    import test_programs  # noqa: E402

    PROGRAMS = [(name, text, p, s, r) for name, text, p, s, r in test_programs.CASES]
except ImportError:  # pragma: no cover - the programs list is optional
    PROGRAMS = []

TOLERANCE = 1e-10
SEED = test_pullbacks.SEED

# (id, text, params, shapes, ranges)
CASES = [
    (c.id, c.text, c.params or None, c.shapes or None, c.ranges or None)
    for c in test_pullbacks.CASES
] + [(f"program-{name}", text, p, s, r) for name, text, p, s, r in PROGRAMS]
BY_ID = {case[0]: case for case in CASES}

# jax and torch: every kind of statement once (convolutions of every shape of call,
# contractions, shifts and guards, divisibility, pooling, softmax, nonlinear programs)
FRAMEWORK_CASES = [
    "seed-symbolic",
    "seed-numeric",
    "notes-channels-bias",
    "conv1d-batch-channels-symbolic",
    "conv3d-strided-dilated-padded",
    "depthwise",
    "sum-of-two-convs",
    "transposed-conv-scatter",
    "matmul-chain",
    "x-times-shifted-x",
    "subsample-symbolic",
    "coupled-2i-3m",
    "program-cnn-block",
    "program-max-pool-2d-3x3",
    "program-softmax",
    "program-layer-norm-rows",
]
# JAX compiles every new operation shape on its first call: fewer cases, one of each kind
JAX_CASES = [
    case
    for case in FRAMEWORK_CASES
    if case not in ("conv1d-batch-channels-symbolic", "matmul-chain", "program-layer-norm-rows")
]

EMITTERS = {"numpy": numpy_source, "jax": jax_source, "torch": torch_source}


@functools.cache
def _derived(case_id: str) -> ed.Derivation:
    _, text, params, shapes, ranges = BY_ID[case_id]
    return ed.derive(text, params=params, shapes=shapes, ranges=ranges)


@functools.cache
def _module(case_id: str, kind: str) -> dict:
    """The emitted source of a case, compiled from its text and executed."""
    source = EMITTERS[kind](_derived(case_id))
    namespace: dict = {"__name__": f"emitted_{kind}"}
    exec(compile(source, f"<{kind} source of {case_id}>", "exec"), namespace)
    namespace["__source__"] = source
    return namespace


def _plain(value) -> int | float:
    return int(value) if value.is_Integer else float(value)


def _draw(case_id: str, seed: int):
    """Random sizes and parameters, inputs, a cotangent, and the reference results."""
    _, text, params, shapes, ranges = BY_ID[case_id]
    derivation = _derived(case_id)
    program = derivation.program
    values = draw_values(program, random.Random(seed))
    numeric = instantiate(derivation, values).program
    generator = np.random.default_rng(seed)
    inputs = {}
    for name in program.inputs:
        shape = tuple(int(n) for n in numeric.shapes[name])
        if _positive_only(program):
            inputs[name] = generator.uniform(0.5, 2.0, shape)
        else:
            inputs[name] = generator.standard_normal(shape)
    drawn = {symbol.name: _plain(value) for symbol, value in values.items()}
    given = {**(params or {}), **{p.name: drawn[p.name] for p in program.params}} or None
    output = ed.evaluate(text, inputs, params=given, shapes=shapes, ranges=ranges)
    cotangent = generator.standard_normal(np.shape(output))
    grads = ed.vjp(
        text, inputs, cotangent, params=given, shapes=shapes, ranges=ranges, backend="loops"
    )
    return drawn, inputs, cotangent, output, grads


def _keywords(function, drawn: dict) -> dict:
    """The keyword-only arguments of an emitted function (parameters, unread sizes)."""
    parameters = inspect.signature(function).parameters.values()
    return {p.name: drawn[p.name] for p in parameters if p.kind is p.KEYWORD_ONLY}


def _close(actual, expected, what: str) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == np.shape(expected), f"{what}: shape {actual.shape}"
    scale = float(np.max(np.abs(expected))) + 1e-12 if np.size(expected) else 1.0
    error = float(np.max(np.abs(actual - expected))) / scale if np.size(expected) else 0.0
    assert error <= TOLERANCE, f"{what}: relative error {error:.2e}"


def _check(case_id: str, kind: str, convert, trials: int) -> None:
    namespace = _module(case_id, kind)
    derivation = _derived(case_id)
    for trial in range(trials):
        drawn, inputs, cotangent, output, grads = _draw(case_id, trial)
        arrays = [convert(inputs[name]) for name in derivation.program.inputs]
        forward = namespace["forward"]
        _close(forward(*arrays, **_keywords(forward, drawn)), output, f"{kind} forward")
        for name in derivation.pullbacks:
            function = namespace[f"pullback_{name}"]
            result = function(convert(cotangent), *arrays, **_keywords(function, drawn))
            _close(result, grads[name], f"{kind} pullback_{name} ({drawn})")
        vjp = namespace["vjp"]
        results = vjp(convert(cotangent), *arrays, **_keywords(vjp, drawn))
        assert len(results) == len(derivation.pullbacks)
        for name, result in zip(derivation.pullbacks, results, strict=True):
            _close(result, grads[name], f"{kind} vjp, {name} ({drawn})")


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_numpy_source_matches_the_interpreter(case_id: str) -> None:
    # a second draw where there are sizes or parameters to draw
    trials = 2 if _derived(case_id).program.symbols else 1
    _check(case_id, "numpy", lambda a: a, trials=trials)


@pytest.mark.parametrize("case_id", JAX_CASES)
def test_jax_source_matches_the_interpreter(case_id: str) -> None:
    jnp = pytest.importorskip("jax.numpy")
    _module(case_id, "jax")  # switches on float64 before the inputs are made
    _check(case_id, "jax", jnp.asarray, trials=1)


@pytest.mark.parametrize("case_id", FRAMEWORK_CASES)
def test_torch_source_matches_the_interpreter(case_id: str) -> None:
    torch = pytest.importorskip("torch")
    _check(case_id, "torch", lambda a: torch.from_numpy(np.array(a)), trials=1)


def _functions(source: str) -> list[ast.FunctionDef]:
    tree = ast.parse(source)
    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and (node.name in ("forward", "vjp") or node.name.startswith("pullback_"))
    ]


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_numpy_source_has_no_loops_and_imports_only_numpy(case_id: str) -> None:
    source = _module(case_id, "numpy")["__source__"]
    tree = ast.parse(source)
    # NumPy, and the standard library the convolution kernel uses
    allowed = ("numpy", "__future__", "functools", "itertools", "collections", "typing")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] in allowed for a in node.names), ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.module.split(".")[0] in allowed, ast.unparse(node)
    for function in _functions(source):
        body = ast.get_source_segment(source, function)
        loops = (ast.For, ast.While, ast.comprehension)
        assert not any(isinstance(n, loops) for n in ast.walk(function)), body
        assert "for " not in body.split('"""')[-1], body


def test_a_pooling_pullback_reads_a_window_of_outputs_not_all_of_them() -> None:
    """For each input position only two outputs per axis can have it as their argmax: the
    sum runs over ``i = p//2 - k``, ``k`` in 0..1, not over every output ``i`` (a grid of
    inputs x outputs would be 64**2 * 31**2 * 9 elements here)."""
    text = "Y[i,j] = max_{a,b}(X[2*i+a, 2*j+b])"
    ranges = {"a": 3, "b": 3}
    derivation = ed.derive(text, shapes={"X": (64, 64)}, ranges=ranges)
    source = numpy_source(derivation)
    pullback = source[source.index("def pullback_X(") : source.index("def vjp(")]
    assert "k = np.arange(2)" in pullback and "i = np.arange(" not in pullback, pullback
    namespace: dict = {}
    exec(compile(source, "<numpy source of a pooling>", "exec"), namespace)
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((64, 64)), rng.standard_normal((31, 31))
    want = ed.vjp(text, {"X": x}, dy, ranges=ranges, backend="loops")["X"]
    _close(namespace["pullback_X"](dy, x), want, "pooling pullback")


def test_elementwise_statements_are_plain_array_expressions() -> None:
    source = numpy_source(ed.derive("Z[o,i] = W[o,c]*X[c,i]; A[o,i] = relu(Z[o,i])"))
    assert "dZ = dA * (Z > 0)" in source
    assert 'np.einsum("ac,cb->ab", W, X, optimize=True)' in source
    assert "np.arange" not in source


def test_seed_pullbacks_are_conv_calls_with_formulas_and_numbers() -> None:
    symbolic = numpy_source(ed.derive(SEED))
    assert "padding=((M - 2, N_X0 - I*s + s), (N - 2, N_X1 - J*s + s))," in symbolic
    assert "fill=(s, s)," in symbolic
    assert "dX = out[0, 0]" in symbolic
    numeric = numpy_source(ed.derive(SEED, params={"s": 2}, shapes={"X": (7, 7), "W": (3, 3)}))
    assert "padding=((1, 3), (1, 3))," in numeric
    assert "fill=(2, 2)," in numeric
    jax = jax_source(ed.derive(SEED))
    assert "lhs_dilation=(s, s)" in jax
    assert "jax.lax.rev(" in jax
    torch = torch_source(ed.derive(SEED, params={"s": 2}, shapes={"X": (7, 7), "W": (3, 3)}))
    assert "torch.nn.functional.conv" in torch


# (stride, dilation, left padding, input size, kernel size, extra outputs, fused in torch):
# 2-D convolution forwards whose vjp is one call. The output is declared, ``extra`` longer
# than the left padding alone gives; torch's padding is symmetric, so a forward whose
# right padding reaches an output the left one does not is left to the pullback functions
FUSED = [
    (1, 1, 1, 9, 3, 0, True),
    (2, 1, 1, 9, 3, 0, True),
    (2, 1, 0, 8, 3, 0, True),
    (3, 2, 2, 11, 3, 0, True),
    (2, 1, 1, 10, 2, 0, True),
    (1, 1, 0, 5, 5, 0, True),
    (2, 1, 2, 7, 3, 0, True),
    (1, 1, -1, 8, 3, 0, False),  # cropping: negative padding
    (1, 1, 0, 8, 3, 1, False),  # one zero of padding on the right only
    (2, 2, 1, 9, 2, 2, False),
]


@pytest.mark.parametrize(
    ("stride", "dilation", "padding", "size", "kernel", "extra", "torch_fused"), FUSED
)
def test_vjp_of_a_2d_convolution_is_one_call(
    stride, dilation, padding, size, kernel, extra, torch_fused
):
    torch = pytest.importorskip("torch")
    text = (
        f"Y[b,o,i,j] = W[o,c,m,n]*X[b,c,{stride}*i+{dilation}*m-({padding}),"
        f"{stride}*j+{dilation}*n-({padding})]"
    )
    outputs = [
        (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 + extra
        for n in (size, size + 1)
    ]
    shapes = {"X": (2, 3, size, size + 1), "W": (4, 3, kernel, kernel), "Y": (2, 4, *outputs)}
    derivation = ed.derive(text, shapes=shapes)
    rng = np.random.default_rng(stride * 100 + dilation * 10 + padding + 1)
    inputs = {name: rng.standard_normal(shapes[name]) for name in ("W", "X")}
    cotangent = rng.standard_normal(shapes["Y"])
    want = ed.vjp(text, inputs, cotangent, shapes=shapes, backend="loops")
    for kind, convert, call in (
        ("numpy", np.asarray, "_conv2d_vjp("),
        ("torch", torch.from_numpy, "torch.ops.aten.convolution_backward("),
    ):
        source = EMITTERS[kind](derivation)
        vjp_source = source[source.index("def vjp(") :]
        fused = kind == "numpy" or torch_fused
        assert (call in vjp_source) == fused, vjp_source
        namespace: dict = {}
        exec(compile(source, f"<{kind} source of {text}>", "exec"), namespace)
        grads = namespace["vjp"](convert(cotangent), *(convert(inputs[n]) for n in ("W", "X")))
        for name, grad in zip(("W", "X"), grads, strict=True):
            _close(grad, want[name], f"{kind} vjp of {text}, d{name}")


def test_a_convolution_with_a_bias_is_a_call_plus_the_bias() -> None:
    """The forward is the convolution call plus the broadcast bias (not a dense grid over
    the summed indices), and ``vjp`` computes dX and dW by the one call, dB by its own."""
    torch = pytest.importorskip("torch")
    text = "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,2*i+m-1,2*j+n-1] + B[o]"
    shapes = {"X": (2, 3, 9, 8), "W": (4, 3, 3, 3), "B": (4,), "Y": (2, 4, 5, 4)}
    derivation = ed.derive(text, shapes=shapes)
    rng = np.random.default_rng(5)
    inputs = {name: rng.standard_normal(shapes[name]) for name in ("W", "X", "B")}
    cotangent = rng.standard_normal(shapes["Y"])
    output = ed.evaluate(text, inputs, shapes=shapes)
    want = ed.vjp(text, inputs, cotangent, shapes=shapes, backend="loops")
    for kind, convert, conv, fused in (
        ("numpy", np.asarray, "conv = _conv(", "_conv2d_vjp("),
        ("torch", torch.from_numpy, "conv = torch.nn.functional.conv2d(", "convolution_backward("),
    ):
        source = EMITTERS[kind](derivation)
        forward = source[source.index("def forward(") : source.index("def pullback_")]
        assert conv in forward and "Y = conv + rest" in forward, forward
        assert "c = " not in forward, forward  # no grid over the summed channels
        vjp_source = source[source.index("def vjp(") :]
        assert fused in vjp_source and "dB = pullback_B(dY, W, X, B)" in vjp_source, vjp_source
        namespace: dict = {}
        exec(compile(source, f"<{kind} source of {text}>", "exec"), namespace)
        arrays = [convert(inputs[name]) for name in ("W", "X", "B")]
        _close(namespace["forward"](*arrays), output, f"{kind} forward")
        grads = namespace["vjp"](convert(cotangent), *arrays)
        for name, grad in zip(("W", "X", "B"), grads, strict=True):
            _close(grad, want[name], f"{kind} vjp of {text}, d{name}")


@pytest.mark.parametrize("stride", [1, 2])
def test_jitted_jax_vjp_compiles_to_the_convolutions_of_jax_vjp(stride: int) -> None:
    """Under ``jax.jit`` the emitted ``vjp`` of a 2-D convolution is the program that
    ``jax.vjp`` of ``lax.conv_general_dilated`` gives: the same convolutions (windows,
    paddings, dilations, layouts) -- so any gap the benchmark shows is its noise."""
    jax = pytest.importorskip("jax")
    import re

    from jax import lax

    x_shape, w_shape = (2, 4, 12, 12), (5, 4, 3, 3)
    y_shape = (2, 5, 12 // stride, 12 // stride)
    text = f"Y[b,o,i,j] = W[o,c,m,n]*X[b,c,{stride}*i+m-1,{stride}*j+n-1]"
    source = jax_source(ed.derive(text, shapes={"X": x_shape, "W": w_shape, "Y": y_shape}))
    namespace: dict = {}
    exec(compile(source, f"<jax source of {text}>", "exec"), namespace)

    def conv(x, w):  # type: ignore[no-untyped-def]
        spec = ("NCHW", "OIHW", "NCHW")
        return lax.conv_general_dilated(
            x, w, (stride, stride), [(1, 1)] * 2, dimension_numbers=spec
        )

    x, w, dy = (np.ones(s, np.float32) for s in (x_shape, w_shape, y_shape))
    theirs = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)).lower(x, w, dy)
    ours = jax.jit(lambda dy, w, x: namespace["vjp"](dy, w, x)).lower(dy, w, x)

    def convolutions(lowered) -> list[str]:  # type: ignore[no-untyped-def]
        text = lowered.compile().as_text()
        calls = re.findall(
            r"= (\S+) convolution\([^)]*\), (window=\{[^}]*\}, dim_labels=\S+)", text
        )
        return sorted(f"{shape} {window}" for shape, window in calls)

    assert len(convolutions(theirs)) == 2
    assert convolutions(ours) == convolutions(theirs)


def test_the_conv_kernel_is_the_runtime_module_verbatim() -> None:
    from einderive.emit import runtime
    from einderive.emit.runtime import numpy_conv

    source = numpy_source(ed.derive("Y[i] = W[m]*X[i+m]", shapes={"X": (9,), "W": (3,)}))
    for name in ("_conv", "_generic_conv", "_fill_pad", "_Call"):
        assert inspect.getsource(getattr(numpy_conv, name)) in source + "\n"
    imports, definitions = runtime.definitions(("numpy_helpers", "numpy_conv"), ("_conv",))
    assert "import numpy as np" in imports
    assert not any("einderive" in line for line in imports)


def test_a_pooling_pullback_compares_with_the_first_argmax() -> None:
    text = "Y[i] = max_{m}(X[2*i+m])"
    source = numpy_source(ed.derive(text, ranges={"m": 3}))
    assert "_argmax(" in source
    emitted: dict = {}
    exec(compile(source, "pool", "exec"), emitted)
    x = np.array([1.0, 3.0, 3.0, 0.0, 2.0, 2.0, 2.0])  # ties: the first position wins
    dy = np.array([1.0, 10.0, 100.0])
    expected = ed.vjp(text, {"X": x}, dy, ranges={"m": 3}, backend="loops")["X"]
    np.testing.assert_array_equal(emitted["pullback_X"](dy, x), expected)
