"""The NumPy loops: standalone source that runs with NumPy alone and matches the interpreter.

Every case is derived symbolically, emitted, and run in one fresh interpreter
(``python -I -S``) whose only importable package is NumPy; the forward and every
pullback function are compared with ``einderive.evaluate`` and
``einderive.vjp(..., backend="loops")`` on random sizes, parameters and data.
"""

from __future__ import annotations

import ast
import json
import math
import random
import subprocess
import sys
import textwrap
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import sympy

import einderive as ed
from einderive.emit.loops import LoopsPrinter, loops_source
from einderive.model import Program, substitute

# (text, params given to derive, ranges, largest size drawn, inputs drawn positive)
CASES = [
    ("Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]", {}, {}, 6, False),
    ("Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]", {"s": 1}, {}, 6, False),
    ("Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]", {"s": 2}, {}, 7, False),
    ("Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]", {"s": 3}, {}, 7, False),
    ("Y[i] = X[i,i]", {}, {}, 6, False),
    ("Y[i] = X[i]*X[i+1]", {}, {}, 7, False),
    ("Y[i,j] = X[i+j]", {}, {"j": 3}, 7, False),
    ("Y[i] = X[s*i]", {}, {}, 7, False),
    ("Y[i] = X[2*i+3*m]", {}, {"m": 3}, 12, False),
    ("Y[s*i+m] = X[i]*W[m]", {}, {}, 6, False),
    ("Y[2*i+m] = X[i]*W[m]", {}, {}, 6, False),
    ("Y[s*i+m, s*j+n] = X[i,j]*W[m,n]", {}, {}, 4, False),
    ("C[i,j] = A[i,k]*B[k,j]", {}, {}, 5, False),
    ("Y[i] = X[i] + X[9-i]", {}, {}, 12, False),
    ("Y[b,o,i,j] = W[o,c,m,n]*X[b,c,i+m-1,j+n-1] + B[o]", {}, {}, 3, False),
    ("Y[i] = W[m]*X[i + d*m]", {}, {}, 9, False),
    ("Y[b,o,i,j,k] = W[o,c,m,n,r]*X[b,c,s*i+d*m-p, s*j+d*n-p, s*k+d*r-p]", {}, {}, 3, False),
    ("Y[i] = W[m]*X[s*i + d*m - p]", {}, {}, 9, False),
    ("Y[i] = X[i + p]", {}, {}, 7, False),
    ("Z[o,i] = W[o,c]*X[c,i]; A[o,i] = relu(Z[o,i])", {}, {}, 5, False),
    ("H[i] = W[i,j]*X[j]; A[i] = tanh(H[i]); Y[k] = V[k,i]*A[i]", {}, {}, 5, False),
    ("Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))", {}, {}, 7, False),
    ("Y[i] = log(sum_{m}(exp(W[m]*X[i+m])))", {}, {}, 7, False),
    ("Y[i,j] = max_{m,n}(X[2*i+m, 2*j+n])", {}, {"m": 2, "n": 2}, 7, False),
    ("Y[i] = max_{m}(W[m]*X[2*i+m-1])", {}, {}, 7, False),
    ("Y[i] = max_{m}(X[i+m]) - min_{m}(X[i+m])", {}, {"m": 3}, 8, False),
    ("Y[i] = sigmoid(X[i])", {}, {}, 7, False),
    ("Y[i] = tanh(X[i])*W[i]", {}, {}, 7, False),
    ("Y[i] = log(X[i])", {}, {}, 7, True),
    ("Y[i] = sqrt(X[i]) + abs(X[i])", {}, {}, 7, True),
    ("Y[i] = X[i]**2", {}, {}, 7, False),
    ("Y[i] = X[i]**3 - 2*X[i]", {}, {}, 7, False),
    ("Y[i] = X[i]/W[i]", {}, {}, 7, True),
    ("Y[i] = a*X[i] - X[i+1]", {}, {}, 7, False),
    ("mu = sum_{j}(X[j])", {}, {}, 7, False),
    ("mu = sum_{j}(X[j]); Y[i] = X[i] - mu", {}, {}, 7, False),
    ("Y[i] = sum_{m}(X[i+m]) * sum_{n}(W[n]*X[i+n])", {}, {"m": 2}, 7, False),
]
SEED = "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"
DRAWS = 2
TOLERANCE = 1e-12


def _case_id(case: tuple) -> str:
    text, params, ranges, *_ = case
    given = ",".join(f"{k}={v}" for k, v in {**params, **ranges}.items())
    return f"{text} [{given}]" if given else text


def _draw(program: Program, rng: random.Random, largest: int) -> dict[sympy.Symbol, sympy.Expr]:
    """Small random parameters and sizes for which every tensor is non-empty."""
    for _ in range(500):
        values: dict[sympy.Symbol, sympy.Expr] = {}
        for symbol in program.params:
            if symbol.is_positive:
                values[symbol] = sympy.Integer(rng.randint(1, 3))
            elif symbol.is_integer:
                values[symbol] = sympy.Integer(rng.randint(0, 2))
            else:
                values[symbol] = sympy.Rational(rng.randint(2, 8), 4)
        for symbol in program.sizes:
            values[symbol] = sympy.Integer(rng.randint(1, largest))
        numeric = _numeric(program, values)
        if all(n.is_number and n >= 1 for shape in numeric.shapes.values() for n in shape):
            return values
    raise AssertionError("no sizes found")


def _numeric(program: Program, values: dict[sympy.Symbol, sympy.Expr]) -> Program:
    definitions = {k: v.xreplace(values) for k, v in program.definitions.items()}
    return substitute(program, {**values, **definitions})


def _plain(value: sympy.Expr) -> int | float:
    return int(value) if value.is_Integer else float(value)


@dataclass
class Prepared:
    """One case: its source, the calls to make, and what each call must return."""

    source: str = ""
    calls: list[dict] = field(default_factory=list)
    expected: dict[str, np.ndarray] = field(default_factory=dict)
    failure: str = ""  # why the case could not be prepared


def _prepare(index: int, case: tuple, arrays: dict[str, np.ndarray], prepared: Prepared) -> None:
    """The source of a case, its calls on random data, and their expected results."""
    text, params, ranges, largest, positive = case
    derivation = ed.derive(text, params=params, ranges=ranges)
    program = derivation.program
    prepared.source = loops_source(derivation)
    rng = random.Random(index)
    generator = np.random.default_rng(index)
    for draw in range(DRAWS):
        values = _draw(program, rng, largest)
        numeric = _numeric(program, values)
        keywords = {p.name: _plain(values[p]) for p in program.params}
        inputs = []
        for name in program.inputs:
            shape = tuple(int(n) for n in numeric.shapes[name])
            data = generator.uniform(0.5, 2.0, shape) if positive else generator.normal(size=shape)
            inputs.append(f"{index}-{draw}-{name}")
            arrays[inputs[-1]] = data
        given = {name: arrays[key] for name, key in zip(program.inputs, inputs, strict=True)}
        every = {**params, **keywords} or None
        output = ed.evaluate(text, given, params=every, ranges=ranges or None)
        cotangent = generator.normal(size=output.shape)
        arrays[f"{index}-{draw}-cotangent"] = cotangent
        grads = ed.vjp(text, given, cotangent, params=every, ranges=ranges or None, backend="loops")
        key = f"{index}-{draw}-forward"
        prepared.calls.append(
            {"key": key, "function": "forward", "args": inputs, "kwargs": keywords}
        )
        prepared.expected[key] = output
        for name in derivation.pullbacks:
            key = f"{index}-{draw}-pullback_{name}"
            args = [f"{index}-{draw}-cotangent", *inputs]
            prepared.calls.append(
                {"key": key, "function": f"pullback_{name}", "args": args, "kwargs": keywords}
            )
            prepared.expected[key] = grads[name]


# Runs in `python -I -S` with a path that holds NumPy and nothing else.
RUNNER = textwrap.dedent(
    """
    import json
    import sys
    import traceback

    directory = sys.argv[1]
    sys.path.insert(0, directory + "/site")
    import numpy as np

    try:
        import einderive  # noqa: F401
        standalone = False
    except ImportError:
        standalone = True
    with open(directory + "/manifest.json") as handle:
        manifest = json.load(handle)
    arrays = np.load(directory + "/inputs.npz")
    results, errors = {}, {}
    for case in manifest:
        try:
            with open(case["file"]) as handle:
                namespace = {"__name__": "emitted"}
                exec(compile(handle.read(), case["file"], "exec"), namespace)
            for call in case["calls"]:
                args = [arrays[key] for key in call["args"]]
                value = namespace[call["function"]](*args, **call["kwargs"])
                results[call["key"]] = np.asarray(value, dtype=np.float64)
        except Exception:
            errors[case["file"]] = traceback.format_exc()
    np.savez(directory + "/results.npz", **results)
    report = {"standalone": standalone, "errors": errors, "modules": sorted(sys.modules)}
    print(json.dumps(report))
    """
)


@dataclass
class Run:
    prepared: list[Prepared]
    results: dict[str, np.ndarray]
    report: dict


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    directory = tmp_path_factory.mktemp("loops")
    site = directory / "site"
    site.mkdir()
    packages = Path(np.__file__).parent.parent
    for name in ("numpy", "numpy.libs"):
        if (packages / name).exists():
            (site / name).symlink_to(packages / name)
    arrays: dict[str, np.ndarray] = {}
    prepared = [Prepared() for _ in CASES]
    for index, case in enumerate(CASES):
        try:
            _prepare(index, case, arrays, prepared[index])
        except Exception:
            prepared[index].failure = traceback.format_exc()
    manifest = []
    for index, case in enumerate(prepared):
        path = directory / f"case_{index}.py"
        path.write_text(case.source)
        manifest.append({"file": str(path), "calls": case.calls})
    (directory / "manifest.json").write_text(json.dumps(manifest))
    np.savez(directory / "inputs.npz", **arrays)
    (directory / "runner.py").write_text(RUNNER)
    completed = subprocess.run(
        [sys.executable, "-I", "-S", str(directory / "runner.py"), str(directory)],
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    with np.load(directory / "results.npz") as loaded:
        results = {key: loaded[key] for key in loaded.files}
    return Run(prepared, results, report)


def test_runs_with_numpy_alone(run: Run) -> None:
    assert run.report["standalone"], "einderive was importable in the clean interpreter"
    assert not [m for m in run.report["modules"] if m.split(".")[0] in ("einderive", "sympy")]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_case_id(c) for c in CASES])
def test_matches_evaluate_and_vjp(run: Run, index: int) -> None:
    prepared = run.prepared[index]
    assert not prepared.failure, prepared.failure
    errors = run.report["errors"]
    assert not any(f"case_{index}.py" in name for name in errors), "\n".join(errors.values())
    for call in prepared.calls:
        expected = prepared.expected[call["key"]]
        got = run.results[call["key"]]
        assert got.shape == expected.shape, call["key"]
        scale = float(np.max(np.abs(expected), initial=0.0)) + 1.0
        assert float(np.max(np.abs(got - expected), initial=0.0)) <= TOLERANCE * scale, call


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_case_id(c) for c in CASES])
def test_source_imports_numpy_only(run: Run, index: int) -> None:
    source = run.prepared[index].source
    assert source, run.prepared[index].failure
    tree = ast.parse(source)
    compile(source, "<loops>", "exec")
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= {"numpy", "math"}
    assert "import einderive" not in source and "from einderive" not in source
    assert max(len(line) for line in source.splitlines()) <= 100


def test_seed_reads_top_to_bottom() -> None:
    source = loops_source(ed.derive(SEED))
    assert "def forward(W, X, *, s):" in source
    assert "def pullback_X(dY, W, X, *, s):" in source
    assert "def pullback_W(dY, W, X, *, s):" in source
    assert "    I = (N_X0 - M + 1) // s + 1\n" in source
    pullback_x = source[source.index("def pullback_X") :]
    # the exact bounds keep W's reads inside W: no test, one line to read
    assert (
        "            for i in range(max(0, -(-(p - M + 2) // s)), min(I, (p + 1) // s + 1)):\n"
        "                for j in range(max(0, -(-(q - N + 2) // s)), min(J, (q + 1) // s + 1)):\n"
        "                    acc += dY[i, j] * W[p - s*i + 1, q - s*j + 1]\n"
        "            dX[p, q] = acc\n"
    ) in pullback_x
    # the forward pads: reads before the start of X are tested
    assert "if 0 <= s*i + m - 1 and 0 <= s*j + n - 1:" in source


def test_given_parameters_are_baked_in() -> None:
    source = loops_source(ed.derive(SEED, params={"s": 2}, shapes={"X": (7, 7), "W": (3, 3)}))
    assert "def forward(W, X):" in source
    assert "Derived with s = 2." in source
    assert "assert X.shape == (7, 7)" in source
    namespace: dict = {}
    exec(compile(source, "<loops>", "exec"), namespace)
    generator = np.random.default_rng(3)
    w, x = generator.normal(size=(3, 3)), generator.normal(size=(7, 7))
    cotangent = generator.normal(size=(3, 3))
    grads = ed.vjp(SEED, {"W": w, "X": x}, cotangent, params={"s": 2})
    np.testing.assert_allclose(namespace["pullback_X"](cotangent, w, x), grads["X"], atol=1e-12)
    with pytest.raises(AssertionError):
        namespace["forward"](w, x[:6])


def test_divisibility_and_exact_quotients() -> None:
    source = loops_source(ed.derive("Y[i] = X[s*i]"))
    assert "if p <= I*s - s and p % s == 0:\n            dX[p] = dY[p // s]" in source


# The integer arithmetic of bounds: floor and ceiling as `//`, exact for every sign.
p, q = sympy.symbols("p q", integer=True)
s, n = sympy.symbols("s n", integer=True, positive=True)
BOUNDS = [
    sympy.floor((p + 1) / s),
    sympy.ceiling((p - n + 2) / s),
    sympy.ceiling(-p / s),
    sympy.floor(p / 2 - sympy.Rational(7, 2)) + 1,
    sympy.Max(0, sympy.ceiling((p - q) / 3) + 1),
    sympy.Min(n - 1, sympy.floor((2 * p + q) / s)),
    n - 2 * sympy.floor((p + q) / s),
    3 * sympy.ceiling((q - p) / (2 * s)) - p,
]


@pytest.mark.parametrize("expr", BOUNDS, ids=str)
def test_integer_arithmetic(expr: sympy.Expr) -> None:
    code = LoopsPrinter([p, q]).doprint(expr)
    assert "math" not in code and "/ " not in code.replace("//", "")
    rng = random.Random(0)
    for _ in range(200):
        values = {p: rng.randint(-20, 20), q: rng.randint(-20, 20)}
        values |= {s: rng.randint(1, 5), n: rng.randint(1, 9)}
        expected = int(expr.subs(values))
        assert eval(code, {"math": math}, {k.name: v for k, v in values.items()}) == expected, code


def test_names_python_reserves_get_an_underscore() -> None:
    text = "Y[i] = np[i]*lambda + max[i+1]"
    source = loops_source(ed.derive(text))
    assert "def forward(np_, max_, *, lambda_):" in source
    namespace: dict = {}
    exec(compile(source, "<loops>", "exec"), namespace)
    inputs = {"np": np.arange(4.0), "max": np.linspace(1.0, 2.0, 6)}
    expected = ed.evaluate(text, inputs, params={"lambda": 0.5})
    np.testing.assert_allclose(
        namespace["forward"](inputs["np"], inputs["max"], lambda_=0.5), expected
    )


def test_a_read_times_zero_is_still_an_input_whose_pullback_is_zero() -> None:
    source = loops_source(ed.derive("Y[i] = X[i] * 0"))
    assert "def forward(X):" in source
    namespace: dict = {}
    exec(compile(source, "<loops>", "exec"), namespace)
    np.testing.assert_array_equal(namespace["forward"](np.ones(3)), np.zeros(3))
    np.testing.assert_array_equal(namespace["pullback_X"](np.ones(3), np.ones(3)), np.zeros(3))


def test_vjp_returns_every_pullback_as_autodiff_does() -> None:
    """The loops module's ``vjp`` against jax.vjp of the forward written with jax ops."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    text = "H[i] = W[m]*X[s*i+m]; Y[i] = tanh(H[i]) * B[i]"
    module: dict = {}
    exec(compile(ed.derive(text).source("loops"), "<loops>", "exec"), module)
    rng = np.random.default_rng(3)
    w, x, b, dy = rng.normal(size=3), rng.normal(size=10), rng.normal(size=4), rng.normal(size=4)

    def forward(w, x, b):
        windows = jnp.stack([x[2 * i : 2 * i + 3] for i in range(4)])
        return jnp.tanh(windows @ w) * b

    _, pullback = jax.vjp(forward, w, x, b)
    expected = pullback(dy)
    got = module["vjp"](dy, w, x, b, s=2)
    assert len(got) == 3
    for mine, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(mine, np.asarray(theirs), rtol=1e-12, atol=1e-12)
