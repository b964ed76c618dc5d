"""Derivation that scales: flat chains, minima of extents by einderive's own rules, bounds.

A chain ``a + b - c ...`` (or ``a * b / c ...``) is one syntax node and one IR node
whatever its length; the depth limit counts real nesting; extents of many shifted
reads are a minimum built without sympy's pairwise comparisons (``affine``); large
inputs derive within a bound, in a child process so that a regression is a failure,
not a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import sympy

import einderive as ed
from einderive import affine
from einderive.errors import IndexNotationError, NotationSyntaxError
from einderive.parse import SProduct, SSum, parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shifted_sum(terms: int) -> str:
    """``Y[i] = X0[i+0] + X1[i+1] + ...``: distinct tensors, each read shifted."""
    return "Y[i] = " + " + ".join(f"X{k}[i+{k}]" for k in range(terms))


# ---- chains are flat ----------------------------------------------------------------------------


def test_a_chain_is_one_node_with_every_operand():
    (statement,) = parse("Y[i] = A[i] + B[i] - C[i] + D[i]*E[i]/F[i]*G[i]")
    assert isinstance(statement.rhs, SSum)
    assert statement.rhs.signs == (1, 1, -1, 1)
    product = statement.rhs.terms[3]
    assert isinstance(product, SProduct)
    assert product.divides == (False, False, True, False)
    assert [f.name for f in product.factors] == ["D", "E", "F", "G"]


def test_a_parenthesised_chain_is_a_child_and_keeps_its_meaning():
    text = "Y[i] = A[i] - (B[i] - C[i]) / D[i] / (E[i] * F[i]) - -A[i]*2"
    (statement,) = parse(text)
    assert isinstance(statement.rhs.terms[1], SProduct)
    assert isinstance(statement.rhs.terms[1].factors[0], SSum)
    rng = np.random.default_rng(0)
    arrays = {name: rng.uniform(0.5, 2.0, 5) for name in "ABCDEF"}
    a, b, c, d, e, f = (arrays[n] for n in "ABCDEF")
    expected = a - (b - c) / d / (e * f) + a * 2
    np.testing.assert_allclose(ed.evaluate(text, arrays), expected, rtol=1e-12)
    cotangent = rng.standard_normal(5)
    grads = ed.vjp(text, arrays, cotangent, backend="loops")
    np.testing.assert_allclose(grads["D"], cotangent * (b - c) / (d**2 * e * f), rtol=1e-12)


def test_a_long_sum_is_not_deep():
    program = ed.front.analyse(shifted_sum(600))
    (statement,) = program.statements
    assert len(statement.rhs.terms) == 600


def test_real_nesting_still_counts():
    with pytest.raises(NotationSyntaxError, match=r"nests more than 200 operations deep"):
        ed.derive("Y[i] = " + "(" * 250 + "X[i]" + ")" * 250)
    with pytest.raises(NotationSyntaxError, match=r"nests more than 200 operations deep"):
        ed.derive("Y[i] = " + "exp(" * 250 + "X[i]" + ")" * 250)


@pytest.mark.parametrize(
    "text, match, underlined",
    [
        ("Y[i] = W[m]*X[2*i*m*3]", "multiplies two index variables", "2*i*m"),
        ("Y[i,j] = X[i + 2*i/j]", "not an index", "2*i/j"),
        ("Y[i] = X[i]*1e200*1e200*1e-300", "too large for a float", "X[i]*1e200*1e200"),
        ("Y[i] = X[i] + 1/(2-2)", "division by zero", "2-2"),
    ],
)
def test_an_error_in_a_chain_points_at_the_chain_up_to_the_culprit(text, match, underlined):
    with pytest.raises((IndexNotationError, NotationSyntaxError), match=match) as raised:
        ed.derive(text)
    start, end = raised.value.span
    assert text[start:end] == underlined


# ---- minima and maxima of extents ------------------------------------------------------------

N, K, M = sympy.symbols("N K M", integer=True, positive=True)
P = sympy.Symbol("P", integer=True)


@pytest.mark.parametrize(
    "args, kept",
    [
        ([N, N - 1, N - 3, N + 2], [N - 3]),  # one shape: the smallest constant
        ([N, N - K + 1], [N - K + 1]),  # K >= 1: N - K + 1 <= N
        ([N - 1, N - K + 1], [N - 1, N - K + 1]),  # K = 1 makes N - K + 1 the larger
        ([7, 3, N + 1], [3, N + 1]),  # numbers folded; N = 1 makes N + 1 the smaller
        ([7, 3, N + 2], [3]),  # N + 2 >= 3
        ([P, P + 1, 0], [0, P]),  # P has no sign
        ([N, sympy.floor(N / 2)], [N, sympy.floor(N / 2)]),  # a floor is a term of its own
        ([N, sympy.floor(N / 2) + N], [N]),  # ... whose sign is known
    ],
)
def test_minimum_by_own_rules(args, kept):
    found = affine.minimum(args)
    assert set(sympy.Min.make_args(found)) == set(kept)
    assert isinstance(found, sympy.Min) == (len(kept) > 1)
    # the minimum of numbers substituted is the minimum of the numbers
    for values in ({N: 1, K: 1, P: -4}, {N: 9, K: 4, P: 5}, {N: 2, K: 7, P: 0}):
        numbers = [sympy.sympify(a).xreplace(values) for a in args]
        assert found.xreplace(values) == min(numbers)


def test_maximum_by_own_rules():
    assert set(sympy.Max.make_args(affine.maximum([0, P - K + 1, P - 2 * K]))) == {0, P - K + 1}
    assert affine.maximum([0, 3]) == 3
    assert affine.maximum([]) == -sympy.oo and affine.minimum([]) == sympy.oo


def test_a_minimum_rebuilt_by_substitution_follows_the_same_rules():
    sizes = [sympy.Symbol(f"N_X{k}", integer=True, positive=True) for k in range(300)]
    extent = affine.minimum([n - k for k, n in enumerate(sizes)])
    assert len(extent.args) == 300 and isinstance(extent, sympy.Min)
    started = time.process_time()
    partly = extent.xreplace({sizes[0]: 5, sizes[1]: 9})
    assert time.process_time() - started < 1.0
    assert len(partly.args) == 298 + 1 and 5 in partly.args
    assert extent.xreplace({n: 1000 for n in sizes}) == 1000 - 299


def test_a_minimum_of_a_thousand_sizes_is_linear():
    def cost(count: int) -> float:
        sizes = [sympy.Symbol(f"S{count}_{k}", integer=True, positive=True) for k in range(count)]
        started = time.process_time()
        affine.minimum([n - k for k, n in enumerate(sizes)])
        return time.process_time() - started

    cost(50)
    assert cost(1000) < 25 * max(cost(100), 0.01)


@pytest.mark.parametrize(
    "expr, low, high",
    [
        (N - 1, 0, None),
        (1 - N, None, 0),
        (2 * N + K - 3, 0, None),
        (P + N, None, None),
        (sympy.floor((N + 1) / 2), 1, None),
        (sympy.Min(N, 4) - 5, -4, -1),
        (N * K, 1, None),
    ],
)
def test_intervals(expr, low, high):
    assert affine.interval(expr) == (low, high)


def test_signs():
    s = sympy.Symbol("s", positive=True)
    assert affine.positive(s) and affine.positive(2 * s * N) and not affine.positive(s - 1)
    assert affine.negative(-N) and affine.nonpositive(1 - N) and affine.nonnegative(N - 1)
    assert not affine.nonnegative(P) and not affine.negative(P)


def test_the_extent_of_shifted_reads_drops_what_another_bounds():
    derivation = ed.derive("Y[i] = X[i] + W[m]*X[i+m] + X[i+1]")
    (definition,) = derivation.program.definitions.values()
    names = {s.name: s for s in definition.free_symbols}
    # X[i] (N_X) is bounded by both others; M = 1 makes N_X - M + 1 the larger of those
    assert set(definition.args) == {names["N_X"] - 1, names["N_X"] - names["M"] + 1}


def test_many_shifted_tensors_keep_every_size():
    text = "Y[i] = " + " + ".join(f"X{k}[i+{k}]" for k in range(1, 41))
    derivation = ed.derive(text, shapes={"X1": (50,)})
    (definition,) = derivation.program.definitions.values()
    assert set(definition.args) == {49} | {
        sympy.Symbol(f"N_X{k}", integer=True, positive=True) - k for k in range(2, 41)
    }
    sizes = {f"X{k}": (100 + k,) for k in range(1, 41)} | {"X7": (57,)}
    assert ed.derive(text, shapes=sizes).program.shapes["Y"] == (50,)


# ---- large inputs derive in bounded time ------------------------------------------------------

DERIVE = """
import sys, time
import einderive as ed
text = sys.stdin.read()
started = time.process_time()
derivation = ed.derive(text)
str(derivation)
derivation.convolutions
print(time.process_time() - started)
"""


def _cpu_seconds(text: str, timeout: float) -> float:
    finished = subprocess.run(
        [sys.executable, "-c", DERIVE],
        input=text,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    return float(finished.stdout.split()[-1])


def test_a_sum_of_two_hundred_shifted_tensors_derives_quickly():
    # the target is 2 s of wall time on an idle machine; CPU time is steadier here
    assert _cpu_seconds(shifted_sum(200), timeout=120) < 2.0


def test_a_product_of_a_hundred_factors_derives_quickly():
    # 100 pullbacks of 99 reads each; the target is 0.5 s (about 0.3 s of CPU today)
    text = "Y[i] = " + "*".join(f"X{k}[i+{k}]" for k in range(100))
    assert _cpu_seconds(text, timeout=120) < 1.0


def test_a_program_of_a_hundred_statements_derives_quickly():
    statements = [
        f"Z{k}[i] = W{k}[m]*Z{k - 1}[i+m]" if k % 2 else f"Z{k}[i] = relu(Z{k - 1}[i])"
        for k in range(1, 101)
    ]
    text = "Z0[i] = X[i]; " + "; ".join(statements)
    assert _cpu_seconds(text, timeout=120) < 5.0


@pytest.mark.sweep
def test_a_sum_of_a_thousand_shifted_tensors_derives_within_ten_seconds():
    assert _cpu_seconds(shifted_sum(1000), timeout=300) < 10.0
