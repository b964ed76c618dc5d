"""Issue 17 ("a newcomer's first hour"): programs and spellings a new user tries first.

Every numeric check is against an independent reference: central differences of a
forward written in NumPy in the test (not einderive's interpreter), or jax autodiff.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytest
import sympy

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


def emitted_pullbacks(
    derivation: ed.Derivation, kind: str, inputs: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    """Each ``pullback_<T>`` of the module ``derivation.source(kind)``, compiled and run."""
    convert: Callable[[np.ndarray], object] = np.asarray
    if kind == "torch":
        torch = pytest.importorskip("torch")
        convert = torch.from_numpy
    elif kind == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        convert = jax.numpy.asarray
    namespace: dict = {}
    source = derivation.source(kind)
    exec(compile(source, f"<{kind} source of {derivation.text}>", "exec"), namespace)
    arguments = [
        convert(np.asarray(inputs[name], dtype=np.float64)) for name in derivation.program.inputs
    ]
    return {
        name: np.asarray(namespace[f"pullback_{name}"](convert(cotangent), *arguments))
        for name in derivation.pullbacks
    }


EMITTED = ["loops", "numpy", "jax", "torch"]


# ---- item 3: nothing to differentiate ----------------------------------------------------


@pytest.mark.parametrize("text", ["Y = X*W", "Y = 2*3", "Y[i] = s*t"])
def test_a_program_without_a_tensor_input_says_there_is_nothing_to_differentiate(text):
    with pytest.raises(ed.ArgumentError, match="nothing to differentiate"):
        ed.derive(text, ranges={"i": 2} if "[i]" in text else None)
    with pytest.raises(ed.ArgumentError, match="nothing to differentiate"):
        ed.derive_jvp(text, ranges={"i": 2} if "[i]" in text else None)


@pytest.mark.parametrize("emit", ["text", "numpy", "jax", "torch", "numpy-loops", "json"])
def test_the_cli_exits_2_with_nothing_to_differentiate(emit, capsys):
    from einderive.cli import run

    assert run(["Y = X*W", "--emit", emit]) == 2
    err = capsys.readouterr().err
    assert "nothing to differentiate" in err and "W[]" in err
    assert "Traceback" not in err
    assert run(["Y = X*W", "--verify"]) == 2
    captured = capsys.readouterr()
    assert "0 of 0" not in captured.out + captured.err


# ---- item 6(c): a tensor whose reads fold away is still an input -----------------------


def test_a_tensor_multiplied_by_zero_is_still_read_and_its_pullback_is_zero():
    text = "I[i,j] = A[i+j] + 0*B[j]"
    rng = np.random.default_rng(5)
    inputs = {"A": rng.normal(size=6), "B": rng.normal(size=3)}

    def forward(A, B):
        out = np.zeros((4, 3))  # i: as far as A[i+j] stays inside A for every j
        for i in range(4):
            for j in range(3):
                out[i, j] = A[i + j]
        return out

    assert_vjp_matches(text, forward, inputs)
    derivation = ed.derive(text)
    assert derivation.program.inputs == ("A", "B")
    assert derivation.pullbacks["B"].notation() == "dB[p] = 0"


# ---- item 9: learnable scalars -------------------------------------------------------


PRELU = "Y[i] = relu(X[i]) - alpha*relu(-X[i])"


def _prelu(alpha, X):
    return np.maximum(X, 0) - alpha * np.maximum(-X, 0)


def test_an_array_for_a_parameter_used_as_a_value_makes_it_learnable():
    rng = np.random.default_rng(6)
    inputs = {"alpha": np.array(0.25), "X": rng.normal(size=7)}
    assert_vjp_matches(PRELU, _prelu, inputs)
    assert_vjp_matches(
        "Y[i] = alpha*X[i] + W[m]*X[i+m]",
        lambda alpha, X, W: alpha * X[:5] + _valid_correlation(W, X),
        {"alpha": np.array(-1.5), "X": rng.normal(size=7), "W": rng.normal(size=3)},
    )


@pytest.mark.parametrize("kind", EMITTED)
def test_every_emitted_module_gives_a_scalar_pullback(kind):
    derivation = ed.derive(PRELU, wrt=["alpha", "X"])
    assert derivation.program.shapes["alpha"] == ()
    assert str(derivation.pullbacks["alpha"]).startswith("dalpha = sum_{i}(")
    rng = np.random.default_rng(7)
    inputs = {"alpha": np.array(0.3), "X": rng.normal(size=6)}
    cotangent = rng.normal(size=6)
    expected = finite_difference_vjp(_prelu, inputs, cotangent)
    grads = emitted_pullbacks(derivation, kind, inputs, cotangent)
    assert grads["alpha"].shape == ()
    for name in ("alpha", "X"):
        np.testing.assert_allclose(
            grads[name], expected[name], atol=1e-6, err_msg=f"{kind} d{name}"
        )


def test_wrt_a_parameter_in_the_cli_and_its_verification(capsys):
    from einderive.cli import run

    assert run([PRELU, "--wrt", "alpha", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "dalpha = sum_{i}(" in out and "ok     dalpha" in out
    assert run(["Y[i] = X[s*i]", "--wrt", "s"]) == 2
    assert "'s'" in capsys.readouterr().err


def test_a_learnable_scalar_in_forward_mode_and_second_order():
    rng = np.random.default_rng(8)
    x = rng.normal(size=5)
    step = 1e-6
    tangent = ed.jvp(PRELU, {"alpha": np.array(0.3), "X": x}, {"alpha": np.array(1.0)})
    finite = (_prelu(0.3 + step, x) - _prelu(0.3 - step, x)) / (2 * step)
    np.testing.assert_allclose(tangent, finite, atol=1e-7)
    assert ed.derive_jvp(PRELU, wrt=["alpha"]).program.shapes["alpha"] == ()
    twice = ed.derive_twice("Y[i] = alpha*X[i]*X[i]", "X", ["alpha"])
    assert twice.program.shapes["alpha"] == ()
    assert ed.verify_twice("Y[i] = alpha*X[i]*X[i]", "X", ["alpha"], backends_to_check=["loops"]).ok


# ---- item 6(a): a summed index that no read has counts its points --------------------


@pytest.mark.parametrize("kind", EMITTED)
def test_a_summed_index_in_no_tensor_multiplies_by_its_extent(kind):
    text = "Y[i] = sum_{k}(X[i])"
    x = np.array([1.0, -2.0, 0.5])
    assert_vjp_matches(text, lambda X: 4 * X, {"X": x}, backends=[kind], ranges={"k": 4})
    derivation = ed.derive(text, ranges={"k": 4})
    np.testing.assert_allclose(emitted_pullbacks(derivation, kind, {"X": x}, np.ones(3))["X"], 4)
    two = "Y[i] = sum_{k,m}(W[m]*X[i+m])"
    rng = np.random.default_rng(9)
    inputs = {"W": rng.normal(size=2), "X": rng.normal(size=5)}
    assert_vjp_matches(
        two, lambda W, X: 3 * _valid_correlation(W, X), inputs, backends=[kind], ranges={"k": 3}
    )


# ---- item 6(e): no derivative term is evaluated at a read out of range ---------------


def _padded_terms(W, X):
    """The (i, m) pairs of ``Y[i] = ... W[m] ... X[i+m-1]`` whose read of X is inside X."""
    count = len(X) - len(W) + 2
    return count, [(i, m) for i in range(count) for m in range(len(W)) if 0 <= i + m - 1 < len(X)]


def _sqrt_of_product(W, X, np=np):
    # Y[i] = sum_m sqrt(W[m]*X[i+m-1]); a read out of range is zero, and sqrt(0) = 0
    count, pairs = _padded_terms(W, X)
    return np.stack(
        [
            sum((np.sqrt(W[m] * X[i + m - 1]) for (j, m) in pairs if j == i), 0.0 * W[0])
            for i in range(count)
        ]
    )


def _weighted_sqrt(W, X, np=np):
    count, pairs = _padded_terms(W, X)
    return np.stack(
        [
            sum((W[m] * np.sqrt(X[i + m - 1]) for (j, m) in pairs if j == i), 0.0 * W[0])
            for i in range(count)
        ]
    )


NAN_CASES = {
    "Y[i] = sqrt(W[m]*X[i+m-1])": _sqrt_of_product,
    "Y[i] = W[m]*sqrt(X[i+m-1])": _weighted_sqrt,
}
POSITIVE = {"W": np.array([0.5, 1.5, 2.0]), "X": np.array([1.0, 2.0, 0.5, 3.0])}


@pytest.mark.parametrize("text", NAN_CASES)
def test_pullbacks_at_padded_reads_are_finite_and_right(text):
    assert_vjp_matches(text, NAN_CASES[text], POSITIVE)
    derivation = ed.derive(text)
    cotangent = np.random.default_rng(10).normal(size=3)
    expected = finite_difference_vjp(NAN_CASES[text], POSITIVE, cotangent)
    for kind in EMITTED:
        grads = emitted_pullbacks(derivation, kind, POSITIVE, cotangent)
        for name in ("W", "X"):
            np.testing.assert_allclose(
                grads[name], expected[name], atol=1e-6, err_msg=f"{kind} d{name}"
            )


@pytest.mark.parametrize("text", NAN_CASES)
def test_tangents_at_padded_reads_are_finite_and_right(text):
    forward = NAN_CASES[text]
    step = 1e-6
    for moving in ("W", "X"):
        direction = np.random.default_rng(11).normal(size=POSITIVE[moving].shape)
        up = {**POSITIVE, moving: POSITIVE[moving] + step * direction}
        down = {**POSITIVE, moving: POSITIVE[moving] - step * direction}
        finite = (forward(**up) - forward(**down)) / (2 * step)
        tangent = ed.jvp(text, POSITIVE, {moving: direction})
        np.testing.assert_allclose(tangent, finite, atol=1e-6, err_msg=f"along {moving}")


def test_second_order_at_padded_reads_matches_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    text = "Y[i] = sqrt(W[m]*X[i+m-1])"
    W, X = (jnp.asarray(POSITIVE[n]) for n in ("W", "X"))
    dY = jnp.asarray(np.random.default_rng(12).normal(size=3))
    ddW = jnp.asarray(np.random.default_rng(13).normal(size=3))

    def penalty(W, X, dY):  # <ddW, dW(W, X, dY)>, dW by jax's own autodiff of the forward
        dW = jax.vjp(lambda w: _sqrt_of_product(w, X, np=jnp), W)[1](dY)[0]
        return jnp.sum(ddW * dW)

    expected = jax.grad(penalty, argnums=(0, 1, 2))(W, X, dY)
    from einderive.run.compile import run

    twice = ed.derive_twice(text, "W", shapes={"W": (3,), "X": (4,)})
    assert twice.program.inputs == ("W", "X", "dY")
    arrays = {"W": POSITIVE["W"], "X": POSITIVE["X"], "dY": np.asarray(dY)}
    for backend in BACKENDS:
        grads = run(backend, twice, arrays, np.asarray(ddW))
        for name, want in zip(("W", "X", "dY"), expected, strict=True):
            assert np.all(np.isfinite(grads[name])), (backend, name)
            np.testing.assert_allclose(
                grads[name], np.asarray(want), atol=1e-9, err_msg=f"{backend} dd{name}"
            )
    for kind in EMITTED:  # the emitted modules of the second derivation, too
        grads = emitted_pullbacks(twice, kind, arrays, np.asarray(ddW))
        for name, want in zip(("W", "X", "dY"), expected, strict=True):
            np.testing.assert_allclose(
                grads[name], np.asarray(want), atol=1e-9, err_msg=f"emitted {kind} dd{name}"
            )


# ---- item 6(f): a new index is never named like a tensor, a parameter or a size ------


def _index_names(statement) -> set[str]:
    from einderive import ir

    names = {v.name for v in statement.indices}
    for node in ir.walk(statement.rhs):
        if isinstance(node, ir.Reduce | ir.IsExtremum):
            names |= {v.name for v in node.variables}
    return names


@pytest.mark.parametrize(
    "text, first",
    [
        ("Y[i] = p[m]*q[i+m]", "q"),
        ("Y[i] = p[m]*q[i+m]", "p"),
        ("Y[i] = q[i]*p[i]", "q"),
        ("Y[i] = I[m]*p[i+m-s]", "p"),
    ],
)
def test_new_indices_never_take_a_tensor_parameter_or_size_name(text, first):
    twice = ed.derive_twice(text, first)
    program = twice.program
    reserved = (
        set(program.shapes)
        | {s.name for s in program.symbols}
        | {s.name for s in program.definitions}
        | set(twice.shapes)
    )
    for statement in (*program.statements, *twice.backward.statements):
        clash = _index_names(statement) & reserved
        assert not clash, f"{statement.target}: {clash}"
    namespace: dict = {}
    exec(compile(twice.source("loops"), "<loops>", "exec"), namespace)


def test_second_order_of_a_correlation_whose_kernel_is_named_p_matches_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    rng = np.random.default_rng(14)
    p, q = rng.normal(size=3), rng.normal(size=6)
    dY, ddq = rng.normal(size=4), rng.normal(size=6)

    def correlate(p, q):  # Y[i] = sum_m p[m] q[i+m]
        return jnp.stack([jnp.dot(p, q[i : i + 3]) for i in range(4)])

    def penalty(p, q, dY):
        dq = jax.vjp(lambda q: correlate(p, q), q)[1](dY)[0]
        return jnp.sum(ddq * dq)

    gradients = jax.grad(penalty, argnums=(0, 1, 2))(p, q, dY)
    expected = dict(zip(("p", "q", "dY"), gradients, strict=True))
    twice = ed.derive_twice("Y[i] = p[m]*q[i+m]", "q")
    namespace: dict = {}
    exec(compile(twice.source("loops"), "<loops>", "exec"), namespace)
    arguments = {"p": p, "q": q, "dY": dY}
    for name in twice.pullbacks:
        function = namespace[f"pullback_{name}"]
        got = function(ddq, *(arguments[n] for n in twice.program.inputs))
        np.testing.assert_allclose(got, np.asarray(expected[name]), atol=1e-12, err_msg=name)


# ---- item 7: an implicit sum outside a nonlinearity is pointed out ---------------------

GATED = "Y[b,o,t] = tanh(Wf[o,c,k]*X[b,c,t+2*k-4]) * sigmoid(Wg[o,c,k]*X[b,c,t+2*k-4])"
GATED_INSIDE = (
    "Y[b,o,t] = tanh(sum_{c,k}(Wf[o,c,k]*X[b,c,t+2*k-4])) * "
    "sigmoid(sum_{c,k}(Wg[o,c,k]*X[b,c,t+2*k-4]))"
)


def test_a_sum_outside_a_function_warns_with_the_form_that_sums_inside():
    import warnings

    with pytest.warns(ed.ImplicitSumWarning) as caught:
        ed.derive(GATED, shapes={"X": (2, 2, 7)})  # shapes: a fresh derivation, not a cached one
    (warning,) = caught
    message = str(warning.message)
    assert "sum_{c,k}(tanh(" in message
    assert message.endswith(f"write {GATED_INSIDE.split(' = ')[1]}")
    # the suggested form is what a gated convolution layer computes
    rng = np.random.default_rng(15)
    inputs = {
        "Wf": rng.normal(size=(3, 2, 3)),
        "Wg": rng.normal(size=(3, 2, 3)),
        "X": rng.normal(size=(2, 2, 7)),
    }

    def causal(weights, X):
        out = np.zeros((X.shape[0], weights.shape[0], X.shape[2]))
        for t in range(X.shape[2]):
            for k in range(weights.shape[2]):
                if 0 <= t + 2 * k - 4 < X.shape[2]:
                    out[:, :, t] += X[:, :, t + 2 * k - 4] @ weights[:, :, k].T
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("error", ed.ImplicitSumWarning)
        assert_vjp_matches(
            GATED_INSIDE,
            lambda Wf, Wg, X: np.tanh(causal(Wf, X)) * _sigmoid(causal(Wg, X)),
            inputs,
            backends=["loops", "numpy"],
        )


@pytest.mark.parametrize(
    "text",
    [
        "Y[i] = W[m]*X[i+m]",
        "Y[i] = W[m]*relu(X[i+m])",
        "Y[i] = relu(sum_{m}(W[m]*X[i+m]))",
        "Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))",
        "Z[o,i] = W[o,c]*X[c,i] + B[o]; A[o,i] = sigmoid(Z[o,i])",
    ],
)
def test_no_warning_where_a_summed_index_is_outside_every_function(text):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ed.ImplicitSumWarning)
        ed.derive(text, shapes={})


def test_the_cli_prints_the_note_once_on_stderr(capsys):
    from einderive.cli import run

    assert run(["Y[i] = relu(V[m]*X[i+m])", "--verify", "--trials", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("einderive: note: the implicit sum over m") == 1
    assert "write relu(sum_{m}(V[m]*X[i+m]))" in captured.err
    assert "note" not in captured.out


# ---- item 8: an extent named in an index expression -----------------------------------


def _causal(W, X, d):
    """``Y[t] = sum_k W[k] * X[t + d*k - d*(K-1)]``, zero outside X; as long as X."""
    K = len(W)
    out = np.zeros(len(X))
    for t in range(len(X)):
        for k in range(K):
            position = t + d * k - d * (K - 1)
            if 0 <= position < len(X):
                out[t] += W[k] * X[position]
    return out


@pytest.mark.parametrize("K, d", [(2, 1), (3, 2), (4, 3)])
def test_a_causal_dilated_convolution_names_the_kernel_size(K, d):
    text = "Y[t] = W[k]*X[t + d*k - d*(K-1)]"
    derivation = ed.derive(text)
    program = derivation.program
    assert [p.name for p in program.params] == ["d"]  # K is no parameter
    assert program.shapes["W"] == (sympy.Symbol("K", integer=True, positive=True),)
    assert program.shapes["Y"] == program.shapes["X"]  # causal: as long as the input
    rng = np.random.default_rng(16)
    inputs = {"W": rng.normal(size=K), "X": rng.normal(size=9)}
    assert_vjp_matches(text, lambda W, X: _causal(W, X, d), inputs, params={"d": d})
    numeric = ed.derive(text, params={"d": d}, shapes={"W": (K,), "X": (9,)})
    cotangent = rng.normal(size=9)
    expected = finite_difference_vjp(lambda W, X: _causal(W, X, d), inputs, cotangent)
    for kind in EMITTED:
        grads = emitted_pullbacks(numeric, kind, inputs, cotangent)
        for name in ("W", "X"):
            np.testing.assert_allclose(
                grads[name], expected[name], atol=1e-6, err_msg=f"{kind} d{name}"
            )


def test_a_tensor_axis_is_named_n_and_the_tensor():
    text = "Y[i] = X[i] - X[N_X - 1 - i]"
    assert ed.derive(text).program.params == ()
    x = np.random.default_rng(17).normal(size=6)
    assert_vjp_matches(text, lambda X: X - X[::-1], {"X": x})
    text = "Y[i,j] = A[i,j] * A[N_A0 - 1 - i, N_A1 - 1 - j]"
    a = np.random.default_rng(18).normal(size=(3, 4))
    assert_vjp_matches(text, lambda A: A * A[::-1, ::-1], {"A": a})


def test_a_name_given_as_a_parameter_stays_a_parameter():
    derivation = ed.derive("Y[t] = W[k]*X[t + k - K]", params={"K": None})
    assert [p.name for p in derivation.program.params] == ["K"]
    assert derivation.program.shapes["W"] != (sympy.Symbol("K", integer=True, positive=True),)


def test_the_warning_points_at_the_callers_line():
    with pytest.warns(ed.ImplicitSumWarning) as caught:
        ed.derive("Y[i] = sigmoid(U[m]*X[i+m])")
    assert caught[0].filename == __file__


def test_an_extent_named_and_replaced_by_a_number_leaves_its_name_to_no_other_size():
    program = ed.derive(
        "Y[t] = W[k]*X[t - K + 1 + k]; Z[j] = Y[j]*V[k]", shapes={"W": (3,)}
    ).program
    assert program.shapes["W"] == (3,)
    assert program.shapes["V"] != (3,)  # V's size is its own, not the K that meant 3
    assert "K" not in {s.name for s in program.sizes}


def test_wrt_an_index_parameter_says_it_is_an_integer():
    with pytest.raises(ed.ArgumentError, match="used in an index, a parameter is an integer"):
        ed.derive("Y[i] = X[s*i]", wrt=["s"])
