"""Names and parameters: which identifier is an index, a tensor, a parameter or an extent.

The rules are those of the README's "The notation": an identifier in brackets is an
index variable if it is on a gather-form left-hand side, stands alone as a whole
position of some tensor, is bound by ``sum_{...}``/``max_{...}``/``min_{...}``, or has
a declared range; any other identifier is a parameter (``params=`` overrides the rule);
an upper-case index name or ``N_X``/``N_X<axis>`` in brackets names an extent.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sympy

from ..errors import ArgumentError, IndexNotationError, Span
from ..parse import SAccess, SName, SStatement
from .limits import MAX_RANK
from .syntax import (
    accesses,
    all_names,
    comparisons,
    condition_sides,
    is_gather_target,
    multiplied_names,
    names_in,
    reductions,
    value_names,
)

ParamValues = Mapping[str, int | float | None]
ShapeValues = Mapping[str, Sequence[int]]
RangeValues = Mapping[str, int]


def size_named(name: str) -> sympy.Symbol:
    """The symbol of a size (an extent), as the analysis names them."""
    return sympy.Symbol(name, integer=True, positive=True)


def shape_argument(name: str, shape: object) -> tuple[int, ...]:
    """A shape from the API: a sequence of non-negative integers."""
    if isinstance(shape, str | bytes) or not isinstance(shape, Iterable):
        raise ArgumentError(f"shape of {name!r} must be a sequence of sizes, not {shape!r}")
    sizes = tuple(shape)
    if not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and int(n) >= 0 for n in sizes
    ):
        raise ArgumentError(f"shape of {name!r} must be non-negative integers, not {shape!r}")
    return tuple(int(n) for n in sizes)


@dataclass(frozen=True)
class Arguments:
    """What the caller gives besides the text, checked: parameter values, shapes, ranges,
    and the names used as values that are read as 0-d input tensors, to be differentiated."""

    param_values: dict[str, int | float | None]
    shape_values: dict[str, tuple[int, ...]]
    range_values: dict[str, int]
    scalar_inputs: frozenset[str]

    @classmethod
    def of(
        cls,
        params: ParamValues | None,
        shapes: ShapeValues | None,
        ranges: RangeValues | None,
        scalars: Iterable[str] = (),
    ) -> Arguments:
        arguments = cls(
            dict(params or {}),
            {k: shape_argument(k, v) for k, v in (shapes or {}).items()},
            dict(ranges or {}),
            frozenset(scalars),
        )
        arguments.check()
        return arguments

    def check(self) -> None:
        """Values of the right kind: numbers for parameters, positive integers for ranges."""
        for name, value in self.param_values.items():
            if value is None:
                continue
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise ArgumentError(f"parameter {name!r} must be a number, not {value!r}")
            if not math.isfinite(value):
                raise ArgumentError(f"parameter {name!r} must be finite, not {value!r}")
        for name, extent in self.range_values.items():
            if not isinstance(extent, numbers.Integral) or isinstance(extent, bool) or extent < 1:
                raise ArgumentError(f"range of {name!r} must be a positive integer, not {extent!r}")
            if name in self.param_values:
                raise ArgumentError(f"{name!r} is declared both as a parameter and as a range")
        for name in sorted(self.scalar_inputs & set(self.param_values)):
            raise ArgumentError(
                f"{name!r} is differentiated, so it is an input (an array), "
                "not a parameter with a value"
            )


@dataclass
class Names:
    """Every identifier's role: per statement its index variables and the extents its
    brackets name; the parameters' symbols; the tensors; and every name taken so far
    (a fresh index or size name must differ from all of them)."""

    index_vars: list[set[str]]
    size_references: list[dict[str, tuple[str, int] | str]]
    param_symbols: dict[str, sympy.Symbol]
    tensors: set[str]
    taken: set[str]


def classify(statements: list[SStatement], arguments: Arguments, text: str) -> Names:
    """Decide, for every identifier, whether it is an index variable or a parameter."""
    index_vars: list[set[str]] = []
    param_symbols: dict[str, sympy.Symbol] = {}
    taken: set[str] = set()
    targets = {
        s.target.name if isinstance(s.target, SAccess) else s.target.name for s in statements
    }
    tensors = targets | {
        a.name for s in statements for a in accesses(s.rhs) + accesses(s.target)[1:]
    }
    coefficient_params: set[str] = set()
    index_params: set[str] = set()
    ranks = {a.name: len(a.indices) for s in statements for a in accesses(s.rhs)}
    # per statement: the names in it that name an extent (K for k's, N_X for X's axis)
    size_references: list[dict[str, tuple[str, int] | str]] = []
    for statement in statements:
        lone: set[str] = set()
        in_brackets: set[str] = set()
        multiplied: set[str] = set()
        reads = accesses(statement.rhs)
        if isinstance(statement.target, SAccess):  # and the index arrays read in it
            reads = accesses(statement.target) + reads
        for access in reads:
            if len(access.indices) > MAX_RANK:
                raise IndexNotationError(
                    f"{access.name!r} is read with {len(access.indices)} indices; "
                    f"the limit is {MAX_RANK} (NumPy's)",
                    access.span,
                    text,
                )
            for index in access.indices:
                if isinstance(index, SName):
                    lone.add(index.name)
                in_brackets |= names_in(index)
                multiplied |= multiplied_names(index)
        for compared in comparisons(statement.rhs):  # index positions too
            in_brackets |= names_in(compared)
            multiplied |= multiplied_names(compared)
        # a reduction's conditions are index expressions, as a bracket's positions
        for side in condition_sides(statement.rhs):
            in_brackets |= names_in(side)
            multiplied |= multiplied_names(side)
        bound = {n.name for r in reductions(statement.rhs) for n in r.names}
        variables = (lone | bound | (in_brackets & set(arguments.range_values))) - set(
            arguments.param_values
        )
        for name in variables & tensors:
            raise IndexNotationError(
                f"{name!r} is used both as a tensor and as an index",
                first_span(text, statement, name),
                text,
            )
        index_vars.append(variables)
        references = {
            name: reference
            for name in sorted(in_brackets - variables)
            if (reference := size_reference(name, variables, ranks, arguments.param_values))
            is not None
        }
        size_references.append(references)
        for name in in_brackets - variables - set(references):
            index_params.add(name)
            if name in multiplied:
                coefficient_params.add(name)
    for k, statement in enumerate(statements):
        for name in index_params & index_vars[k]:
            raise IndexNotationError(
                f"{name!r} is an index in one statement and a parameter in another",
                first_span(text, statement, name),
                text,
            )
    value_params: set[str] = set()
    for k, statement in enumerate(statements):
        for node in value_names(statement.rhs):
            if node.name in index_vars[k]:
                continue  # an index read as a number: X[i] + i
            if node.name not in targets and node.name not in size_references[k]:
                value_params.add(node.name)
    for name in sorted(arguments.scalar_inputs):
        if name in index_params:
            raise IndexNotationError(
                f"{name!r} is used in an index, so it is an integer and cannot be "
                "differentiated; only a parameter used as a value (alpha*X[i]) can",
                first_span(text, statements[0], name),
                text,
            )
        if name in value_params:
            # a learnable scalar: a 0-d input tensor read by its bare name
            value_params.discard(name)
            tensors.add(name)
        elif name not in tensors:
            raise ArgumentError(f"{name!r} is not used in the expression")
    for name in index_params | value_params | set(arguments.param_values):
        if name in tensors:
            raise IndexNotationError(
                f"{name!r} is used both as a tensor and as a parameter",
                first_span(text, statements[0], name),
                text,
            )
        if name in coefficient_params:
            symbol = sympy.Symbol(name, integer=True, positive=True)
        elif name in index_params:
            symbol = sympy.Symbol(name, integer=True)
        else:
            symbol = sympy.Symbol(name, real=True)
        param_symbols[name] = symbol
        taken.add(name)
    for variables in index_vars:
        taken |= variables
    taken |= tensors
    unused = set(arguments.range_values) - set().union(*index_vars)
    if unused:
        raise ArgumentError(f"ranges given for {sorted(unused)}, which are not indices")
    unknown_shapes = set(arguments.shape_values) - tensors
    if unknown_shapes:
        raise ArgumentError(f"shapes given for {sorted(unknown_shapes)}, which are not tensors")
    return Names(index_vars, size_references, param_symbols, tensors, taken)


def check_values(statements: list[SStatement], arguments: Arguments, names: Names) -> None:
    """Parameter values must fit their role: strides positive integers, offsets integers."""
    for name, value in arguments.param_values.items():
        if not any(name in all_names(s) for s in statements):
            raise ArgumentError(f"parameter {name!r} is not used in the expression")
        for statement in statements:
            target = statement.target
            lhs = (
                {i.name for i in target.indices if isinstance(i, SName)}
                if isinstance(target, SAccess)
                else set()
            )
            if is_gather_target(target) and name in lhs:
                raise ArgumentError(
                    f"{name!r} is an index of the left-hand side; it cannot be a parameter"
                )
        symbol = names.param_symbols[name]
        if value is None:
            continue
        if symbol.is_integer and value != int(value):
            raise ArgumentError(
                f"parameter {name!r} is used in an index, so it must be an integer, not {value}"
            )
        if symbol.is_positive and value <= 0:
            raise ArgumentError(
                f"parameter {name!r} multiplies an index (a stride or a dilation), "
                f"so it must be positive, not {value}"
            )


def size_reference(
    name: str, variables: set[str], ranks: Mapping[str, int], params: Mapping[str, object]
) -> tuple[str, int] | str | None:
    """What ``name`` in an index expression refers to, if it is the name einderive gives
    an extent: the upper case of an index of the statement (``K``: the extent of ``k``),
    or ``N_X`` / ``N_X<axis>`` (an axis of ``X``). None for a parameter."""
    if name in params or name in ranks:
        return None
    if name != name.lower() and name.lower() in variables:
        return name.lower()
    match = re.fullmatch(r"N_([A-Za-z_][A-Za-z0-9_]*?)([0-9]*)", name)
    if match is None:
        return None
    tensor, axis = match.groups()
    if ranks.get(tensor + axis) == 1:
        return (tensor + axis, 0)
    if axis and tensor in ranks and int(axis) < ranks[tensor]:
        return (tensor, int(axis))
    return None


def first_span(text: str, statement: SStatement, name: str) -> Span:
    """Where ``name`` first occurs as a whole identifier in a statement."""
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")
    found = pattern.search(text, statement.span[0], statement.span[1])
    return (found.start(), found.end()) if found else statement.span


# ---- index expressions -------------------------------------------------------------
