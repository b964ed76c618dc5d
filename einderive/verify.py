"""Numerical verification: every derived pullback against finite differences of the forward.

For random sizes and parameters (where they are symbolic), random inputs ``X``,
a random cotangent ``dY`` and random directions ``V``, the derived pullback
must satisfy the adjoint identity

    <dX, V> = d/dt <dY, f(X + t V)> at t = 0,

the right side by central differences of the forward interpreter in float64.
Each further backend is compared with the ``loops`` backend on the same data.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import sympy

from . import ir
from .derive import derivation as derive_record
from .errors import ArgumentError, EinderiveError
from .front import (
    ParamValues,
    RangeValues,
    ShapeValues,
    analyse,
    learnable_scalars,
)
from .model import Backward, Derivation, Program, index_positions, substitute
from .run.compile import installed, run
from .run.interpret import run_statements

STEP = 1e-6
TOLERANCE = 1e-6
ROUNDING = 16 * float(np.finfo(np.float64).eps)  # per unit of the summed magnitudes
BACKEND_TOLERANCE = 1e-10


@dataclass(frozen=True)
class Check:
    """One comparison: a pullback by one backend against its reference, for one draw."""

    tensor: str
    backend: str
    trial: int
    values: dict[str, int | float]
    error: float
    ok: bool
    reference: str
    prefix: str = "d"  # "d" for a pullback, "t" for a tangent

    def __str__(self) -> str:
        given = ", ".join(f"{k}={v}" for k, v in self.values.items()) or "as given"
        status = "ok" if self.ok else "FAILED"
        return (
            f"{status:6} {self.prefix + self.tensor:<7} {self.backend:6} vs {self.reference:18} "
            f"rel. error {self.error:.1e}  ({given})"
        )


@dataclass(frozen=True)
class Report:
    """The outcome of ``verify``: every check, and whether all passed."""

    text: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def __bool__(self) -> bool:
        return self.ok

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data: the outcome and every check."""
        return {
            "text": self.text,
            "ok": self.ok,
            "checks": [
                {
                    "tensor": c.tensor,
                    "name": c.prefix + c.tensor,
                    "backend": c.backend,
                    "reference": c.reference,
                    "trial": c.trial,
                    "values": {
                        k: float(v) if isinstance(v, float) else int(v) for k, v in c.values.items()
                    },
                    "relative_error": float(c.error),
                    "ok": bool(c.ok),
                }
                for c in self.checks
            ],
        }

    def __str__(self) -> str:
        head = f"verification of {self.text!r}: " + (
            "all checks passed" if self.ok else f"{len(self.failures)} of {len(self.checks)} FAILED"
        )
        return "\n".join([head, *("  " + str(c) for c in self.checks)])

    def __repr__(self) -> str:
        return f"Report(ok={self.ok}, checks={len(self.checks)})"


def _positive_only(program: Program) -> bool:
    """Whether the forward applies log, sqrt or a fractional power (inputs drawn positive)."""
    for statement in program.statements:
        for node in ir.walk(statement.rhs):
            if isinstance(node, ir.Call) and node.func in ("log", "sqrt"):
                return True
            if isinstance(node, ir.Pow) and not node.exponent.is_integer:
                return True
    return False


def draw_values(
    program: Program, rng: random.Random, attempts: int = 500
) -> dict[sympy.Symbol, sympy.Expr]:
    """Small random numbers for the symbolic parameters and sizes, with every shape non-empty."""
    for _ in range(attempts):
        values: dict[sympy.Symbol, sympy.Expr] = {}
        for symbol in program.params:
            if symbol.is_positive:
                values[symbol] = sympy.Integer(rng.randint(1, 3))
            elif symbol.is_integer:
                values[symbol] = sympy.Integer(rng.randint(0, 2))
            else:
                values[symbol] = sympy.Rational(rng.randint(2, 8), 4)
        for symbol in program.sizes:
            values[symbol] = sympy.Integer(rng.randint(1, 7))
        numeric = substitute(program, values)
        shapes = [n for shape in numeric.shapes.values() for n in shape]
        if all(n.is_number and n >= 1 for n in shapes):
            return values
    raise ArgumentError("found no sizes for which every tensor is non-empty; give shapes=")


def instantiate(derivation: Derivation, values: Mapping[sympy.Symbol, sympy.Expr]) -> Derivation:
    """The symbolic derivation with numbers for its parameters and sizes (not derived again)."""
    program = derivation.program
    # a derived size may be defined through an earlier one (N_P1 = floor(I/2))
    mapping = dict(values)
    for symbol, definition in program.definitions.items():
        mapping[symbol] = definition.xreplace(mapping)
    numeric = substitute(program, mapping)
    statements = tuple(
        ir.Statement(s.target, s.indices, ir.subs(s.rhs, mapping), s.span)
        for s in derivation.backward.statements
    )
    backward = Backward(statements, derivation.backward.cotangents, derivation.backward.seeds)
    pullbacks = {
        name: type(p)(name, next(s for s in statements if s.target == p.name), p.cotangent)
        for name, p in derivation.pullbacks.items()
    }
    return replace(derivation, program=numeric, backward=backward, pullbacks=pullbacks)


def _forward(program: Program, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The forward by the interpreter, over the forward statements (not by any pullback)."""
    return run_statements(program.statements, program.shapes, arrays)[program.output]


def available_backends() -> list[str]:
    return installed()


def verify(
    text: str,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    trials: int = 3,
    seed: int = 0,
    backends_to_check: Iterable[str] | None = None,
    wrt: Iterable[str] | None = None,
) -> Report:
    """Check every pullback of ``text`` numerically, on ``trials`` random draws.

    ``wrt`` may name parameters used as values, which are then inputs (0-d tensors)
    whose pullbacks are checked too.

    >>> verify("Y[i] = W[m]*X[2*i+m]").ok
    True
    """
    if not isinstance(trials, int) or trials < 1:
        raise ArgumentError(f"trials must be a positive integer, not {trials!r}")
    try:
        program = analyse(text, params, shapes, ranges, learnable_scalars(text, wrt))
        derivation = derive_record(program)
    except EinderiveError as error:
        raise error.with_text(text) from None
    names = list(backends_to_check) if backends_to_check is not None else available_backends()
    rng = random.Random(seed)
    generator = np.random.default_rng(seed)
    checks: list[Check] = []
    for trial in range(trials):
        values = draw_values(program, rng)
        numeric = instantiate(derivation, values)
        given = {s.name: _plain(v) for s, v in values.items()}
        checks += _check_draw(numeric, generator, trial, given, names)
    return Report(text, tuple(checks))


def _plain(value: sympy.Expr) -> int | float:
    return int(value) if value.is_Integer else float(value)


def index_bound(program: Program, array: str) -> int:
    """How many positions an index array's values choose among: the smallest axis it
    stands as a whole position of (``index_positions``); else the largest size."""
    found = [int(size) for size, _ in index_positions(program).get(array, [])]
    if found:
        return min(found)
    return max((int(n) for shape in program.shapes.values() for n in shape), default=1)


def _random_inputs(program: Program, generator: np.random.Generator) -> dict[str, np.ndarray]:
    positive = _positive_only(program)
    arrays: dict[str, np.ndarray] = {}
    for name in program.inputs:
        shape = tuple(int(n) for n in program.shapes[name])
        if name in program.index_arrays:
            # repeated positions, and one past each end (those reads are zero)
            arrays[name] = generator.integers(-1, index_bound(program, name) + 1, shape)
        elif positive:
            arrays[name] = generator.uniform(0.5, 2.0, shape)
        else:
            arrays[name] = generator.standard_normal(shape)
    return arrays


def _check_draw(
    derivation: Derivation,
    generator: np.random.Generator,
    trial: int,
    given: dict[str, int | float],
    names: Sequence[str],
) -> list[Check]:
    program = derivation.program
    arrays = _random_inputs(program, generator)
    output_shape = tuple(int(n) for n in program.shapes[program.output])
    cotangent = generator.standard_normal(output_shape)
    reference = run("loops", derivation, arrays, cotangent)
    checks = []
    for name in derivation.pullbacks:
        errors, passes = [], []
        for _ in range(2):
            direction = generator.standard_normal(arrays[name].shape)

            def objective(
                t: float, name: str = name, direction: np.ndarray = direction
            ) -> np.ndarray:
                moved = dict(arrays)
                moved[name] = arrays[name] + t * direction
                return cotangent * _forward(program, moved)

            ahead, behind = objective(STEP), objective(-STEP)
            finite = float(np.sum(ahead) - np.sum(behind)) / (2 * STEP)
            derived = float(np.sum(reference[name] * direction))
            scale = float(np.sum(np.abs(reference[name] * direction))) + abs(finite) + 1e-12
            # what rounding in the two sums can put into the difference quotient: a
            # discrepancy up to that is no evidence against the pullback (it matters when
            # the derivative is tiny next to the output, as dB of a few outputs can be)
            rounding = ROUNDING * float(np.sum(np.abs(ahead)) + np.sum(np.abs(behind))) / STEP
            errors.append(abs(derived - finite) / scale)
            passes.append(errors[-1] <= TOLERANCE or abs(derived - finite) <= rounding)
        error = max(errors)
        reference_name = "finite differences"
        if error > TOLERANCE and all(passes):
            reference_name += " (within their rounding)"
        checks.append(Check(name, "loops", trial, given, error, all(passes), reference_name))
    for backend in names:
        if backend == "loops":
            continue
        result = run(backend, derivation, arrays, cotangent)
        for name in derivation.pullbacks:
            expected = reference[name]
            scale = float(np.max(np.abs(expected))) + 1e-12
            error = float(np.max(np.abs(result[name] - expected))) / scale if expected.size else 0.0
            checks.append(
                Check(name, backend, trial, given, error, error <= BACKEND_TOLERANCE, "loops")
            )
    return checks
