"""The front end: text -> Program (``analyse``), and what the API asks of the text alone.

The jobs are split by module: ``syntax`` (questions asked of the syntax tree),
``limits`` (the input limits), ``names`` (indices, parameters and the caller's
arguments), ``extents`` (sizes and their unification) and ``build`` (the IR).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import EinderiveError
from ..model import Program
from ..parse import parse
from .build import build
from .names import Arguments, ParamValues, RangeValues, ShapeValues
from .syntax import accesses, value_names

__all__ = [
    "ParamValues",
    "RangeValues",
    "ShapeValues",
    "analyse",
    "input_names",
    "learnable_scalars",
]


def learnable_scalars(text: str, names: Iterable[str] | None) -> tuple[str, ...]:
    """Those of ``names`` that ``text`` uses as values but does not index (nor write):
    parameters, unless they are to be differentiated, as 0-d tensors."""
    if names is None:
        return ()
    statements = parse(text)
    tensors = {s.target.name for s in statements} | {
        a.name for s in statements for a in accesses(s.rhs)
    }
    values = {n.name for s in statements for n in value_names(s.rhs)}
    return tuple(n for n in dict.fromkeys(names) if n in values and n not in tensors)


def input_names(text: str) -> list[str]:
    """The tensors a program reads without writing them (from the syntax alone)."""
    statements = parse(text)
    written = {s.target.name for s in statements}
    read = [a.name for s in statements for a in accesses(s.rhs) + accesses(s.target)[1:]]
    return [name for name in dict.fromkeys(read) if name not in written]


def analyse(
    text: str,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    scalars: Iterable[str] = (),
) -> Program:
    """Parse and analyse ``text`` into a Program; every problem is an EinderiveError.

    ``scalars`` names parameters used as values (``alpha`` in ``alpha*X[i]``) that are
    read as 0-d input tensors instead, so that they have a pullback.
    """
    statements = parse(text)
    try:
        return build(text, statements, Arguments.of(params, shapes, ranges, scalars))
    except EinderiveError as error:
        raise error.with_text(text) from None
