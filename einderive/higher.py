"""Higher order: a derived pullback is a program in the IR, so it can be differentiated again.

The pullback ``dX`` of ``Y = f(X, W)`` is the program

    <the forward statements the backward reads>
    <the cotangent statements that dX needs, ending with dX>

with inputs ``X, W`` and the cotangent seed ``dY``. Its own pullbacks are
second-order: for a cotangent ``ddX`` of ``dX``, ``ddW`` is the gradient of
``<ddX, dX>`` with respect to ``W`` (a gradient penalty's backward pass), and
``ddY`` with respect to the seed (a Jacobian-vector product of ``f``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np

from . import ir
from .api import Derivation, derive_program
from .emit.text import statement_text
from .errors import ArgumentError, EinderiveError
from .front import (
    ParamValues,
    RangeValues,
    ShapeValues,
    analyse,
    learnable_scalars,
)
from .model import Program
from .verify import (
    Check,
    Report,
    _check_draw,
    _plain,
    available_backends,
    draw_values,
    instantiate,
)


def _needed(statements: Iterable[ir.Statement], target: str) -> list[ir.Statement]:
    """The statements that ``target`` depends on (itself included), in their order."""
    ordered = list(statements)
    by_target = {s.target: s for s in ordered}
    wanted = {target}
    pending = [target]
    while pending:
        statement = by_target[pending.pop()]
        for access in ir.accesses(statement.rhs):
            if access.tensor in by_target and access.tensor not in wanted:
                wanted.add(access.tensor)
                pending.append(access.tensor)
    return [s for s in ordered if s.target in wanted]


def backward_program(derivation: Derivation, wrt: str) -> Program:
    """The pullback into ``wrt`` as a program: inputs the forward's and the seed, output ``d<wrt>``.

    >>> from einderive import derive
    >>> program = backward_program(derive("Y[i] = W[m]*X[i+m]"), "X")
    >>> program.inputs, program.output
    (('W', 'X', 'dY'), 'dX')
    """
    if wrt not in derivation.pullbacks:
        raise ArgumentError(
            f"no pullback into {wrt!r} to differentiate again; the pullbacks are into "
            f"{', '.join(derivation.pullbacks)}"
        )
    forward = derivation.program
    backward = derivation.backward
    seed = backward.seeds[0]
    statements = _needed(
        [*forward.statements, *backward.statements], derivation.pullbacks[wrt].name
    )
    shapes = dict(forward.shapes)
    shapes[seed] = forward.shapes[forward.output]
    for tensor, name in backward.cotangents.items():
        shapes[name] = forward.shapes[tensor]
    used = {s.target for s in statements} | {
        a.tensor for s in statements for a in ir.accesses(s.rhs)
    }
    inputs = (*forward.inputs, seed)
    return Program(
        # read back by whoever derives it again from its text: a bound narrower than a
        # read's axis must be in the line, so the printer is given the shapes
        text="; ".join(statement_text(s, with_domain=False, shapes=shapes) for s in statements),
        statements=tuple(statements),
        shapes={name: shape for name, shape in shapes.items() if name in used or name in inputs},
        inputs=inputs,
        params=forward.params,
        sizes=forward.sizes,
        values=dict(forward.values),
        extents=dict(forward.extents),
        definitions=dict(forward.definitions),
        index_arrays=forward.index_arrays,
    )


def _names(wrt: str | Iterable[str] | None) -> list[str] | None:
    if wrt is None:
        return None
    return [wrt] if isinstance(wrt, str) else list(wrt)


def twice_program(
    text: str,
    first: str,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    second: Iterable[str] | None = None,
) -> Program:
    """The program of the first pullback ``d<first>`` of ``text``, ready to be derived again."""
    try:
        scalars = learnable_scalars(text, [first, *(second or ())])
        program = analyse(text, params, shapes, ranges, scalars)
        return backward_program(derive_program(program, [first]), first)
    except EinderiveError as error:
        raise error.with_text(text) from None


def derive_twice(
    text: str,
    first: str,
    second: str | Iterable[str] | None = None,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
) -> Derivation:
    """The pullbacks of the pullback ``d<first>``: into the inputs ``second`` (default all).

    The seed of the second derivation is the cotangent of ``d<first>`` (``ddX``).

    >>> d = derive_twice("Y[i] = W[m]*X[i+m]", "X", "W")
    >>> print(d.pullbacks["W"].notation())
    dW[p1] = sum_{p}(ddX[p] * dY[p - p1])
    """
    program = twice_program(text, first, params, shapes, ranges, _names(second))
    try:
        return derive_program(program, _names(second))
    except EinderiveError as error:
        raise error.with_text(text) from None


def verify_twice(
    text: str,
    first: str,
    second: str | Iterable[str] | None = None,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    trials: int = 3,
    seed: int = 0,
    backends_to_check: Iterable[str] | None = None,
) -> Report:
    """Check the second-order pullbacks as ``verify`` checks first-order ones.

    For random sizes, inputs, a seed ``dY`` and a cotangent ``V`` of ``d<first>``,
    each second-order pullback must equal central differences of
    ``<V, d<first>(inputs, dY)>``, the first pullback computed by the interpreter;
    every other backend (default: all available) must agree with the interpreter.

    >>> verify_twice("Y[i] = W[m]*X[2*i+m]", "X", ["W", "dY"], backends_to_check=["loops"]).ok
    True
    """
    derivation = derive_twice(text, first, second, params, shapes, ranges)
    program = derivation.program
    names = list(backends_to_check) if backends_to_check is not None else available_backends()
    rng = random.Random(seed)
    generator = np.random.default_rng(seed)
    checks: list[Check] = []
    for trial in range(trials):
        values = draw_values(program, rng)
        given = {s.name: _plain(v) for s, v in values.items()}
        checks += _check_draw(instantiate(derivation, values), generator, trial, given, names)
    return Report(f"d{first} of {text}", tuple(checks))
