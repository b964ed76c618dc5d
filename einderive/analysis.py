"""Syntax tree -> IR: index variables and parameters, affine index expressions, extents.

The rules are those of the README's "The notation":

* an identifier in brackets is an index variable if it is on a gather-form
  left-hand side, stands alone as a whole position of some tensor, is bound by
  ``sum_{...}``/``max_{...}``/``min_{...}``, or has a declared range; any other
  identifier is a parameter (``params=`` overrides the rule);
* an index ranges over ``[0, n)`` where ``n`` is the size of an axis it indexes
  alone; sizes are symbols unless ``shapes=`` gives numbers;
* a gather-form left-hand-side extent is declared, or the largest range for
  which no read runs past the upper end of a tensor;
* a scatter-form left-hand side is just large enough to hold every write.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import sympy

from . import affine, ir
from .errors import (
    ArgumentError,
    EinderiveError,
    ExtentError,
    ImplicitSumWarning,
    IndexNotationError,
    Span,
)
from .functions import FUNCTIONS
from .ir import expand, fresh
from .model import Program
from .parse import (
    SAccess,
    SBinary,
    SCall,
    SName,
    SNeg,
    SNumber,
    SProduct,
    SReduce,
    SStatement,
    SSum,
    parse,
)
from .parse import operands as _operands
from .parse import syntax_nodes as _syntax_nodes

ParamValues = Mapping[str, int | float | None]
ShapeValues = Mapping[str, Sequence[int]]
RangeValues = Mapping[str, int]


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside einderive: a warning points at the
    user's call, not at the analysis."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _size_symbol(name: str) -> sympy.Symbol:
    """The symbol of a size (an extent), as the analysis names them."""
    return sympy.Symbol(name, integer=True, positive=True)


def _names_in(node: Any) -> set[str]:
    if isinstance(node, SName):
        return {node.name}
    return set().union(*(_names_in(operand) for operand in _operands(node)))


def _multiplied_names(node: Any) -> set[str]:
    """Names that appear as a factor of a product inside an index expression.

    In ``a * b / c`` the names of ``a`` and ``b`` are multiplied; a divisor's are not
    (unless a later factor multiplies the quotient: ``a / c * b``).
    """
    inner = set().union(*(_multiplied_names(operand) for operand in _operands(node)))
    if isinstance(node, SProduct):
        multiplied = [k for k, divides in enumerate(node.divides) if k and not divides]
        if multiplied:
            inner |= set().union(*(_names_in(f) for f in node.factors[: multiplied[-1] + 1]))
    return inner


def _accesses(node: Any) -> list[SAccess]:
    """Every tensor read in a syntax tree, in source order (index positions included)."""
    return [n for n in _syntax_nodes(node) if isinstance(n, SAccess)]


def _reductions(node: Any) -> list[SReduce]:
    return [n for n in _syntax_nodes(node) if isinstance(n, SReduce)]


def _value_names(node: Any) -> list[SName]:
    """Names used as values (outside brackets)."""
    return [n for n in _syntax_nodes(node, brackets=False) if isinstance(n, SName)]


MAX_NUMBER_LENGTH = 64
MAX_RANK = 64
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 300  # a constant, literal or folded, lies within 1e-300..1e300 (a float64's)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("x") else f"{n} {noun}s"


def _shape_argument(name: str, shape: object) -> tuple[int, ...]:
    """A shape from the API: a sequence of non-negative integers."""
    if isinstance(shape, str | bytes) or not isinstance(shape, Iterable):
        raise ArgumentError(f"shape of {name!r} must be a sequence of sizes, not {shape!r}")
    sizes = tuple(shape)
    if not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and int(n) >= 0 for n in sizes
    ):
        raise ArgumentError(f"shape of {name!r} must be non-negative integers, not {shape!r}")
    return tuple(int(n) for n in sizes)


def _all_names(statement: SStatement) -> set[str]:
    """Every identifier a statement mentions (indices, parameters, tensors)."""
    names = set(_names_in(statement.target)) if isinstance(statement.target, SName) else set()
    for access in _accesses(statement.rhs) + (
        [statement.target] if isinstance(statement.target, SAccess) else []
    ):
        names.add(access.name)
        for index in access.indices:
            names |= _names_in(index)
    for reduction in _reductions(statement.rhs):
        names |= {n.name for n in reduction.names}
    names |= {n.name for n in _value_names(statement.rhs)}
    return names


def _written_value(node: Any) -> sympy.Expr | None:
    """An index position's value with every name a plain symbol (None if it is not a
    polynomial of names and integers: the analysis reports that at its text)."""
    if isinstance(node, SName):
        return sympy.Symbol(node.name)
    if isinstance(node, SNumber):
        usable = node.text.isdigit() and len(node.text) <= MAX_NUMBER_LENGTH
        return sympy.Integer(int(node.text)) if usable else None
    if isinstance(node, SNeg):
        operand = _written_value(node.operand)
        return None if operand is None else -operand
    if isinstance(node, SSum | SProduct) and not (isinstance(node, SProduct) and any(node.divides)):
        written = [_written_value(operand) for operand in _operands(node)]
        values = [value for value in written if value is not None]
        if len(values) < len(written):
            return None
        if isinstance(node, SSum):
            return sympy.Add(*(v * sign for v, sign in zip(values, node.signs, strict=True)))
        return sympy.Mul(*values)
    return None


def _plain_index(node: Any) -> Any:
    """An index position whose value is one name (``i+0``, ``1*i``, ``(i)``) as that name."""
    if isinstance(node, SName):
        return node
    value = _written_value(node)
    if value is not None and isinstance(value := sympy.expand(value), sympy.Symbol):
        return SName(value.name, node.span)
    return node


def _plain_indices(node: Any) -> Any:
    """The syntax tree with every index position that is one name spelled as that name:
    an index expression means its value, however it is spelled."""
    if isinstance(node, SAccess):
        return replace(node, indices=tuple(_plain_index(i) for i in node.indices))
    if isinstance(node, SSum):
        return replace(node, terms=tuple(_plain_indices(t) for t in node.terms))
    if isinstance(node, SProduct):
        return replace(node, factors=tuple(_plain_indices(f) for f in node.factors))
    if isinstance(node, SBinary):
        return replace(node, left=_plain_indices(node.left), right=_plain_indices(node.right))
    if isinstance(node, SNeg):
        return replace(node, operand=_plain_indices(node.operand))
    if isinstance(node, SCall):
        return replace(node, arg=_plain_indices(node.arg))
    if isinstance(node, SReduce):
        return replace(node, body=_plain_indices(node.body))
    if isinstance(node, SStatement):
        return replace(node, target=_plain_indices(node.target), rhs=_plain_indices(node.rhs))
    return node


def _is_gather_target(target: SAccess | SName) -> bool:
    if isinstance(target, SName):
        return True
    names = [i.name for i in target.indices if isinstance(i, SName)]
    return len(names) == len(target.indices) and len(set(names)) == len(names)


def _top_terms(node: Any, sign: int = 1) -> list[tuple[int, Any]]:
    """The top-level additive terms of a right-hand side, with their signs (a sum in
    parentheses among them is split too: ``a - (b + c)`` has the terms a, -b, -c)."""
    if isinstance(node, SSum):
        return [
            found
            for term, term_sign in zip(node.terms, node.signs, strict=True)
            for found in _top_terms(term, sign * term_sign)
        ]
    return [(sign, node)]


def _decimal_magnitude(literal: str) -> int | None:
    """The power of ten of a number literal's first significant digit (None for zero).

    >>> _decimal_magnitude("0.0025e-3"), _decimal_magnitude("12.5"), _decimal_magnitude("0.0")
    (-6, 1, None)
    """
    mantissa, _, exponent = literal.lower().partition("e")
    whole, _, fraction = mantissa.partition(".")
    whole = whole.lstrip("0")
    power = int(exponent or 0)
    if whole:
        return power + len(whole) - 1
    significant = fraction.lstrip("0")
    return power - (len(fraction) - len(significant)) - 1 if significant else None


class _Analyser:
    def __init__(
        self,
        text: str,
        params: ParamValues | None,
        shapes: ShapeValues | None,
        ranges: RangeValues | None,
        scalars: Iterable[str] = (),
    ) -> None:
        self.text = text
        self.param_values = dict(params or {})
        # names used as values that are read as 0-d input tensors, to be differentiated
        self.scalar_inputs = frozenset(scalars)
        self.shape_values = {k: _shape_argument(k, v) for k, v in (shapes or {}).items()}
        self.range_values = dict(ranges or {})
        self._check_arguments()
        self.taken: set[str] = set()
        self.shapes: dict[str, list[sympy.Expr]] = {}
        self.size_symbols: list[sympy.Symbol] = []
        self.param_symbols: dict[str, sympy.Symbol] = {}
        self.extents: dict[sympy.Symbol, sympy.Expr] = {}
        self.replacements: list[tuple[sympy.Symbol, sympy.Expr]] = []
        self.definitions: dict[sympy.Symbol, sympy.Expr] = {}
        self._expanded: dict[sympy.Symbol, sympy.Expr] = {}  # see _expansions
        self._expanded_at = 0
        self._symbol_sets: dict[int, tuple[Mapping, frozenset[sympy.Symbol]]] = {}
        self.references: Mapping[str, tuple[str, int] | str] = {}

    def _check_arguments(self) -> None:
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

    def _check_values(self, statements: list[SStatement]) -> None:
        """Parameter values must fit their role: strides positive integers, offsets integers."""
        for name, value in self.param_values.items():
            if not any(name in _all_names(s) for s in statements):
                raise ArgumentError(f"parameter {name!r} is not used in the expression")
            for statement in statements:
                target = statement.target
                lhs = (
                    {i.name for i in target.indices if isinstance(i, SName)}
                    if isinstance(target, SAccess)
                    else set()
                )
                if _is_gather_target(target) and name in lhs:
                    raise ArgumentError(
                        f"{name!r} is an index of the left-hand side; it cannot be a parameter"
                    )
            symbol = self.param_symbols[name]
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

    # ---- classification -------------------------------------------------------------

    def classify(self, statements: list[SStatement]) -> None:
        """Decide, for every identifier, whether it is an index variable or a parameter."""
        self.index_vars: list[set[str]] = []
        targets = {
            s.target.name if isinstance(s.target, SAccess) else s.target.name for s in statements
        }
        tensors = targets | {a.name for s in statements for a in _accesses(s.rhs)}
        self.tensor_names = tensors
        coefficient_params: set[str] = set()
        index_params: set[str] = set()
        ranks = {a.name: len(a.indices) for s in statements for a in _accesses(s.rhs)}
        # per statement: the names in it that name an extent (K for k's, N_X for X's axis)
        self.size_references: list[dict[str, tuple[str, int] | str]] = []
        for statement in statements:
            lone: set[str] = set()
            in_brackets: set[str] = set()
            multiplied: set[str] = set()
            reads = _accesses(statement.rhs)
            if isinstance(statement.target, SAccess):
                reads = [statement.target, *reads]
            for access in reads:
                if len(access.indices) > MAX_RANK:
                    raise IndexNotationError(
                        f"{access.name!r} is read with {len(access.indices)} indices; "
                        f"the limit is {MAX_RANK} (NumPy's)",
                        access.span,
                        self.text,
                    )
                for index in access.indices:
                    if isinstance(index, SName):
                        lone.add(index.name)
                    in_brackets |= _names_in(index)
                    multiplied |= _multiplied_names(index)
            bound = {n.name for r in _reductions(statement.rhs) for n in r.names}
            variables = (lone | bound | (in_brackets & set(self.range_values))) - set(
                self.param_values
            )
            for name in variables & tensors:
                raise IndexNotationError(
                    f"{name!r} is used both as a tensor and as an index",
                    self._first_span(statement, name),
                    self.text,
                )
            self.index_vars.append(variables)
            references = {
                name: reference
                for name in sorted(in_brackets - variables)
                if (reference := self._size_reference(name, variables, ranks)) is not None
            }
            self.size_references.append(references)
            for name in in_brackets - variables - set(references):
                index_params.add(name)
                if name in multiplied:
                    coefficient_params.add(name)
        for k, statement in enumerate(statements):
            for name in index_params & self.index_vars[k]:
                raise IndexNotationError(
                    f"{name!r} is an index in one statement and a parameter in another",
                    self._first_span(statement, name),
                    self.text,
                )
        value_params: set[str] = set()
        for k, statement in enumerate(statements):
            for node in _value_names(statement.rhs):
                if node.name in self.index_vars[k]:
                    raise IndexNotationError(
                        f"index {node.name!r} is used as a value; "
                        "only tensors, numbers and parameters can be",
                        node.span,
                        self.text,
                    )
                if node.name not in targets and node.name not in self.size_references[k]:
                    value_params.add(node.name)
        for name in sorted(self.scalar_inputs):
            if name in index_params:
                raise IndexNotationError(
                    f"{name!r} is used in an index, so it is an integer and cannot be "
                    "differentiated; only a parameter used as a value (alpha*X[i]) can",
                    self._first_span(statements[0], name),
                    self.text,
                )
            if name in value_params:
                # a learnable scalar: a 0-d input tensor read by its bare name
                value_params.discard(name)
                tensors.add(name)
            elif name not in tensors:
                raise ArgumentError(f"{name!r} is not used in the expression")
        for name in index_params | value_params | set(self.param_values):
            if name in tensors:
                raise IndexNotationError(
                    f"{name!r} is used both as a tensor and as a parameter",
                    self._first_span(statements[0], name),
                    self.text,
                )
            if name in coefficient_params:
                symbol = sympy.Symbol(name, integer=True, positive=True)
            elif name in index_params:
                symbol = sympy.Symbol(name, integer=True)
            else:
                symbol = sympy.Symbol(name, real=True)
            self.param_symbols[name] = symbol
            self.taken.add(name)
        for variables in self.index_vars:
            self.taken |= variables
        self.taken |= tensors
        unused = set(self.range_values) - set().union(*self.index_vars)
        if unused:
            raise ArgumentError(f"ranges given for {sorted(unused)}, which are not indices")
        unknown_shapes = set(self.shape_values) - tensors
        if unknown_shapes:
            raise ArgumentError(f"shapes given for {sorted(unknown_shapes)}, which are not tensors")

    def _size_reference(
        self, name: str, variables: set[str], ranks: Mapping[str, int]
    ) -> tuple[str, int] | str | None:
        """What ``name`` in an index expression refers to, if it is the name einderive gives
        an extent: the upper case of an index of the statement (``K``: the extent of ``k``),
        or ``N_X`` / ``N_X<axis>`` (an axis of ``X``). None for a parameter."""
        if name in self.param_values or name in ranks:
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

    def _bind_size_references(
        self, k: int, node: SStatement, extents: Mapping[str, sympy.Expr]
    ) -> None:
        """Each extent named in the statement's indices becomes what it names (those whose
        extent is known so far: a left-hand-side index's is known after its inference)."""
        for name, reference in self.size_references[k].items():
            symbol = _size_symbol(name)
            if isinstance(reference, str):
                if reference not in extents or name in self._bound_references:
                    continue
                self._bound_references.add(name)
                value = extents[reference]
                what = f"{name} names the extent of {reference!r}"
            else:
                what = f"{name} names axis {reference[1]} of {reference[0]!r}"
                if reference[0] not in self.shapes:
                    raise ExtentError(
                        f"{what}, which no statement so far reads or writes",
                        self._first_span(node, name),
                        self.text,
                    )
                value = self.shapes[reference[0]][reference[1]]
            value = self.current(value)
            if value == symbol:
                continue
            if symbol in self.expanded(value).free_symbols:
                raise ExtentError(
                    f"{what}, which is defined through {name} itself",
                    self._first_span(node, name),
                    self.text,
                )
            if symbol in self.size_symbols or symbol in self.definitions:
                self.unify(symbol, value, what, self._first_span(node, name))
            else:
                self.taken.add(name)  # no later size may take the name: it means this one
                self.replacements.append((symbol, value))
                mapping = {symbol: value}
                for tensor, shape in self.shapes.items():
                    self.shapes[tensor] = [e.xreplace(mapping) for e in shape]
                for var, extent in self.extents.items():
                    self.extents[var] = extent.xreplace(mapping)

    def _first_span(self, statement: SStatement, name: str) -> Span:
        """Where ``name`` first occurs as a whole identifier in a statement."""
        pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")
        found = pattern.search(self.text, statement.span[0], statement.span[1])
        return (found.start(), found.end()) if found else statement.span

    # ---- index expressions -------------------------------------------------------------

    def _index_symbols(self, variables: Mapping[str, sympy.Symbol]) -> frozenset[sympy.Symbol]:
        """The statement's index variables as a set (computed once per statement)."""
        key = id(variables)
        if self._symbol_sets.get(key, (None,))[0] is not variables:
            self._symbol_sets[key] = (variables, frozenset(variables.values()))
        return self._symbol_sets[key][1]

    def number(self, node: SNumber) -> sympy.Expr:
        """A literal as an exact sympy number; absurdly long or large ones are refused."""
        if len(node.text) > MAX_NUMBER_LENGTH:
            raise IndexNotationError(
                f"a number of {len(node.text)} characters; the limit is {MAX_NUMBER_LENGTH}",
                node.span,
                self.text,
            )
        if node.text.isdigit():
            return sympy.Integer(int(node.text))
        magnitude = _decimal_magnitude(node.text)
        if magnitude is not None and abs(magnitude) > MAX_MAGNITUDE:
            size = "large" if magnitude > 0 else "small"
            raise IndexNotationError(
                f"the number {node.text} is too {size} (the limit is 1e\u00b1{MAX_MAGNITUDE})",
                node.span,
                self.text,
            )
        return sympy.nsimplify(node.text, rational=True)

    def index_expr(self, node: Any, variables: Mapping[str, sympy.Symbol]) -> sympy.Expr:
        """An affine sympy expression for an index position, or an error at the offending text.

        Each index's coefficient is a number or a product of parameters (``s``,
        ``2*s*t``), whose sign is then known; ``(1 + 2*p)*i`` is refused.
        """
        expr = expand(self._index_expr(node, variables))
        for var in expr.free_symbols & self._index_symbols(variables):
            coefficient = ir.coefficient(expr, var)
            if len(sympy.Add.make_args(coefficient)) > 1:
                raise IndexNotationError(
                    f"the coefficient of {var} is {coefficient}: a coefficient must be a "
                    "number or a product of parameters",
                    node.span,
                    self.text,
                )
        return expr

    def _index_expr(self, node: Any, variables: Mapping[str, sympy.Symbol]) -> sympy.Expr:
        if isinstance(node, SName):
            if node.name in variables:
                return variables[node.name]
            if node.name in self.references:
                return _size_symbol(node.name)
            return self.param_symbols[node.name]
        if isinstance(node, SNumber):
            if not node.text.isdigit():
                raise IndexNotationError(
                    f"index positions take integers, not {node.text!r}", node.span, self.text
                )
            return self.number(node)
        if isinstance(node, SNeg):
            return -self._index_expr(node.operand, variables)
        if isinstance(node, SBinary):  # a power
            raise IndexNotationError(
                "index expressions must be affine: a power is not allowed in an index",
                node.span,
                self.text,
            )
        if isinstance(node, SSum):
            return sympy.Add(
                *(
                    self._index_expr(term, variables) * sign
                    for term, sign in zip(node.terms, node.signs, strict=True)
                )
            )
        if isinstance(node, SProduct):
            # an error points at the chain up to the offending factor, as written
            if True in node.divides:
                divisor = node.factors[node.divides.index(True)]
                raise IndexNotationError(
                    "index expressions must be affine: division is not allowed in an index",
                    (node.span[0], divisor.span[1]),
                    self.text,
                )
            index_symbols = self._index_symbols(variables)
            product = self._index_expr(node.factors[0], variables)
            for factor in node.factors[1:]:
                right = self._index_expr(factor, variables)
                if product.free_symbols & index_symbols and right.free_symbols & index_symbols:
                    raise IndexNotationError(
                        "index expressions must be affine: this multiplies two index variables",
                        (node.span[0], factor.span[1]),
                        self.text,
                    )
                product = expand(product * right)
            return product
        what = {
            SAccess: "a tensor",
            SCall: "a function call",
            SReduce: "a reduction",
        }.get(type(node), "this")
        raise IndexNotationError(
            f"index expressions must be affine: {what} cannot appear inside brackets",
            node.span,
            self.text,
        )

    # ---- shapes and extents ------------------------------------------------------------

    def size_symbol(self, tensor: str, axis: int, rank: int, lone: str | None) -> sympy.Symbol:
        if lone is not None and lone.upper() not in self.taken:
            name = lone.upper()
        else:
            name = f"N_{tensor}" if rank == 1 else f"N_{tensor}{axis}"
        symbol = fresh(name, self.taken)
        symbol = sympy.Symbol(symbol.name, integer=True, positive=True)
        self.size_symbols.append(symbol)
        return symbol

    def declare_tensor(self, access: SAccess, lone_names: list[str | None]) -> None:
        rank = len(access.indices)
        if access.name in self.shape_values:
            given = self.shape_values[access.name]
            if len(given) != rank:
                raise ExtentError(
                    f"{access.name!r} is read with {_count(rank, 'index')} but its shape "
                    f"{tuple(given)} has {len(given)}",
                    access.span,
                    self.text,
                )
            self.shapes[access.name] = [sympy.Integer(n) for n in given]
        else:
            self.shapes[access.name] = [
                self.size_symbol(access.name, k, rank, lone_names[k]) for k in range(rank)
            ]

    def unify(
        self, first: sympy.Expr, second: sympy.Expr, what: str, span: Span, soft: bool = False
    ) -> sympy.Expr | None:
        """Make two extents one, or raise (``soft``: return None) if they cannot be.

        A free size symbol gives way to the other extent, unless that extent is defined
        in terms of the symbol itself (``I = N_X - K + 1`` against ``N_X``: two different
        sizes). Two derived extents are one if their definitions are, possibly after a
        free size gives way to another (``N_X - K + 1`` and ``N_X - N_V + 1``: ``N_V = K``).
        """
        first, second = self.current(first), self.current(second)
        if first == second or expand(first - second) == 0:
            return first
        for symbol, value in ((second, first), (first, second)):
            if self._is_free_size(symbol) and symbol not in self.expanded(value).free_symbols:
                self.substitute_size(symbol, value)
                return value
        if self._equate_definitions(first, second):
            return self.current(first)
        if soft:
            return None
        raise ExtentError(f"inconsistent extents: {what} ({first} vs {second})", span, self.text)

    def _is_free_size(self, expr: sympy.Expr) -> bool:
        return isinstance(expr, sympy.Symbol) and expr in self.size_symbols

    def expanded(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` in free sizes and parameters only: derived extents replaced by definitions."""
        expr = self.current(expr)
        if defined := expr.free_symbols & self.definitions.keys():
            expansions = self._expansions()
            expr = expr.xreplace({s: expansions[s] for s in defined})
        return expand(expr)

    def _expansions(self) -> dict[sympy.Symbol, sympy.Expr]:
        """Every derived extent in free sizes and parameters, each computed once: a program
        of n statements chains n definitions, and expanding each anew is quadratic.

        Kept until a unification changes what the definitions mean (a new replacement);
        a new definition is added to them.
        """
        if self._expanded_at != len(self.replacements):
            self._expanded.clear()
            self._expanded_at = len(self.replacements)
        for symbol, definition in self.definitions.items():
            if symbol in self._expanded:
                continue
            value = self.current(definition)
            # definitions refer to earlier ones; a later one (after a unification) is
            # replaced level by level
            while defined := value.free_symbols & self.definitions.keys():
                value = value.xreplace(
                    {s: self._expanded.get(s, self.current(self.definitions[s])) for s in defined}
                )
            self._expanded[symbol] = expand(value)
        return self._expanded

    def _equate_definitions(self, first: sympy.Expr, second: sympy.Expr) -> bool:
        """Whether two extents are one size; equal definitions make their names one name."""
        difference = expand(self.expanded(first) - self.expanded(second))
        if difference != 0:
            # one free size giving way to another makes them equal (never a size to a number)
            latest_first = sorted(
                difference.free_symbols & set(self.size_symbols),
                key=self.size_symbols.index,
                reverse=True,
            )
            for symbol in latest_first:
                coefficient = difference.coeff(symbol)
                rest = expand(difference - coefficient * symbol)
                if coefficient != 0 and not rest.has(symbol):
                    value = expand(-rest / coefficient)
                    if self._is_free_size(value):
                        self.substitute_size(symbol, value)
                        break
            else:
                return False
        first, second = self.current(first), self.current(second)
        if first in self.definitions and second in self.definitions and first != second:
            self.substitute_size(second, first)
        return True

    def smallest(self, bounds: Sequence[sympy.Expr]) -> sympy.Expr:
        """The minimum of extents, without those that another is provably no larger than
        (compared in free sizes: a derived extent by its definition)."""
        current = list(dict.fromkeys(self.current(b) for b in bounds))
        if len(current) == 1:
            return current[0]
        return affine.minimum(current, compared=[self.expanded(b) for b in current])

    def current(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` with every size unification so far applied."""
        for symbol, value in self.replacements:
            expr = expr.xreplace({symbol: value})
        return expr

    def current_node(self, node: ir.Node) -> ir.Node:
        """``node`` with every size unification so far applied, in one pass."""
        if not self.replacements:
            return node
        composed = {symbol: self.current(symbol) for symbol, _ in self.replacements}
        return ir.subs(node, composed)

    def substitute_size(self, symbol: sympy.Symbol, value: sympy.Expr) -> None:
        """Replace a free size (or a derived extent's name) by ``value`` everywhere."""
        if symbol in self.definitions:
            del self.definitions[symbol]
        else:
            self.size_symbols.remove(symbol)
        self.replacements.append((symbol, value))
        mapping = {symbol: value}
        for name, shape in self.shapes.items():
            self.shapes[name] = [e.xreplace(mapping) for e in shape]
        for var, extent in self.extents.items():
            self.extents[var] = extent.xreplace(mapping)

    # ---- statements --------------------------------------------------------------------

    def statement(self, k: int, node: SStatement, written: set[str]) -> ir.Statement:
        names = self.index_vars[k]
        variables = {name: fresh(name, set()) for name in sorted(names)}
        self.references = self.size_references[k]
        for value in _value_names(node.rhs):
            if value.name in self.scalar_inputs and value.name not in self.shapes:
                self.declare_tensor(SAccess(value.name, (), value.span, value.span), [])
        reads = _accesses(node.rhs)
        target_access = node.target if isinstance(node.target, SAccess) else None
        lhs_lone = (
            {i.name for i in target_access.indices if isinstance(i, SName)}
            if target_access
            else set()
        )
        shifted = lhs_lone & {
            name
            for access in reads
            for index in access.indices
            if not isinstance(index, SName)
            for name in _names_in(index)
        }
        for access in reads:
            if access.name == (
                target_access.name if target_access else getattr(node.target, "name", None)
            ):
                raise IndexNotationError(
                    f"{access.name!r} is read on the right-hand side of its own definition",
                    access.span,
                    self.text,
                )
            # an input axis is named after the index that reads it alone (M for W[m]), unless
            # that index is a left-hand side whose extent its shifted reads will decide
            lone = [
                i.name if isinstance(i, SName) and i.name in names - shifted else None
                for i in access.indices
            ]
            if access.name not in self.shapes:
                if access.name in written:
                    raise IndexNotationError(  # pragma: no cover - written implies shaped
                        f"{access.name!r} has no shape", access.span, self.text
                    )
                self.declare_tensor(access, lone)
            elif len(self.shapes[access.name]) != len(access.indices):
                raise IndexNotationError(
                    f"{access.name!r} is read with {len(access.indices)} indices here but "
                    f"{len(self.shapes[access.name])} elsewhere",
                    access.span,
                    self.text,
                )
        # extents of variables that index an axis alone, or are declared
        local_extents: dict[str, sympy.Expr] = {}
        for name in sorted(names):
            if name in self.range_values:
                local_extents[name] = sympy.Integer(self.range_values[name])
        # a declared range is the loop: it sizes an axis that has no size yet, and
        # otherwise reads past that axis are zero. An intermediate's extents are those
        # of its own definition: a left-hand-side index that reads it and an axis that
        # cannot be the same size ranges over the smaller (no read runs past its end);
        # two inputs' axes read alone by one index must be one size.
        lhs_inferred = (
            {i.name for i in target_access.indices} - set(self.range_values)
            if target_access and _is_gather_target(target_access)
            else set()
        )
        other_lone_sizes: dict[str, list[sympy.Expr]] = {}
        reads_intermediate: set[str] = set()
        for access in reads:
            for axis, index in enumerate(access.indices):
                if isinstance(index, SName) and index.name in names:
                    size = self.shapes[access.name][axis]
                    if access.name in written:
                        reads_intermediate.add(index.name)
                    if index.name in local_extents:
                        soft = index.name in self.range_values or (
                            index.name in lhs_inferred and index.name in reads_intermediate
                        )
                        unified = self.unify(
                            local_extents[index.name],
                            size,
                            f"{index.name!r} indexes axis {axis} of {access.name!r}",
                            index.span,
                            soft=soft,
                        )
                        if unified is not None:
                            local_extents[index.name] = unified
                        elif index.name in lhs_inferred:
                            other_lone_sizes.setdefault(index.name, []).append(size)
                    else:
                        local_extents[index.name] = size
        # resolve after unification may have substituted symbols
        exprs: dict[int, sympy.Expr] = {}

        def index_of(n: Any) -> sympy.Expr:
            key = id(n)
            if key not in exprs:
                exprs[key] = self.index_expr(n, variables)
            return exprs[key]

        for access in reads:
            for index in access.indices:
                index_of(index)
        gather = _is_gather_target(node.target)
        target_name = node.target.name
        lhs_vars = {i.name for i in target_access.indices} if gather and target_access else set()
        for name in sorted(names - lhs_vars):
            if name not in local_extents:
                raise ExtentError(
                    f"index {name!r} has no extent: it indexes no tensor alone; "
                    f"declare it (ranges={{'{name}': n}}, or --range {name}=n)",
                    self._first_span(node, name),
                    self.text,
                )
        self._bound_references: set[str] = set()
        known = {n: e for n, e in local_extents.items() if n not in lhs_inferred}
        self._bind_size_references(k, node, known)
        if gather:
            lhs_names = [i.name for i in target_access.indices] if target_access else []
            self._check_lhs_used(node, lhs_names)
            declared = self._declared_extents(target_name, lhs_names)
            self._infer_lhs_extents(
                lhs_names,
                local_extents,
                other_lone_sizes,
                reads,
                variables,
                index_of,
                node,
                declared,
            )
            for name in lhs_names:
                if name not in variables:  # pragma: no cover - classified as index above
                    raise IndexNotationError(f"{name!r} is not an index", node.span, self.text)
        else:
            lhs_names = []
            assert target_access is not None
            for index in target_access.indices:
                index_of(index)
        for name in names:
            if name not in local_extents:
                raise ExtentError(
                    f"index {name!r} has no extent: it indexes no tensor alone; "
                    f"declare it (ranges={{'{name}': n}}, or --range {name}=n)",
                    self._first_span(node, name),
                    self.text,
                )
        self._bind_size_references(k, node, local_extents)
        for name in local_extents:
            local_extents[name] = self.current(local_extents[name])
        for name, extent in local_extents.items():
            self.extents[variables[name]] = extent
        rhs = self._rhs(node, names, set(lhs_names), variables, local_extents)
        if gather:
            indices = tuple(variables[n] for n in lhs_names)
            shape = [local_extents[n] for n in lhs_names]
            statement = ir.Statement(target_name, indices, rhs, node.span)
        else:
            statement, shape = self._scatter(node, rhs, variables, local_extents, index_of)
        if target_name in self.shape_values:
            given = [sympy.Integer(n) for n in self.shape_values[target_name]]
            if len(given) != len(shape):
                raise ExtentError(
                    f"{target_name!r} has {_count(len(shape), 'index')} "
                    f"but its shape has {len(given)} axes",
                    node.target.span,
                    self.text,
                )
            for axis, (declared, inferred) in enumerate(zip(given, shape, strict=True)):
                if declared != inferred:
                    shape[axis] = declared
                    if gather:
                        self.extents[statement.indices[axis]] = declared
        if any(n.is_number and n <= 0 for n in shape):
            raise ExtentError(
                f"the output {target_name!r} is empty (shape {tuple(shape)})",
                node.target.span,
                self.text,
            )
        self.shapes[target_name] = list(shape)
        return statement

    def _infer_lhs_extents(
        self,
        lhs_names: list[str],
        extents: dict[str, sympy.Expr],
        other_lone_sizes: Mapping[str, list[sympy.Expr]],
        reads: list[SAccess],
        variables: Mapping[str, sympy.Symbol],
        index_of: Any,
        node: SStatement,
        declared: Mapping[str, sympy.Expr],
    ) -> None:
        # the largest range for which no read runs past the upper end of a tensor: an index
        # that also stands alone (X[i] in X[i]*X[i+1]) is bounded by its shifted reads too
        lone = {n: extents[n] for n in lhs_names if n in extents}
        pending = [n for n in lhs_names if n not in self.range_values]
        for name in pending:
            extents.pop(name, None)
        for name, size in declared.items():  # the output's declared shape (the README's "Extents")
            if name in pending:
                extents[name] = size
                pending.remove(name)
        while pending:
            progressed = False
            for name in list(pending):
                var = variables[name]
                bounds: list[sympy.Expr] = [lone[name]] if name in lone else []
                bounds += other_lone_sizes.get(name, [])
                blocked = False
                for access in reads:
                    for axis, index in enumerate(access.indices):
                        expr = index_of(index)
                        coefficient = ir.coefficient(expr, var)
                        if coefficient == 0 or not expr.has(var) or expr == var:
                            continue
                        others = [
                            s for s in expr.free_symbols if s in variables.values() and s != var
                        ]
                        if any(o.name not in extents and o.name not in lone for o in others):
                            blocked = True
                            continue
                        if coefficient.is_nonpositive:
                            continue
                        if not coefficient.is_positive:
                            raise ExtentError(
                                f"cannot infer the extent of {name!r}: the sign of its "
                                f"coefficient {coefficient} is unknown; declare it",
                                index.span,
                                self.text,
                            )
                        rest = expr - coefficient * var
                        top = rest
                        for other in others:
                            c = ir.coefficient(rest, other)
                            if c.is_nonnegative:
                                known = extents.get(other.name, lone.get(other.name))
                                assert known is not None  # blocked above otherwise
                                top = top.subs(other, known - 1)
                            elif c.is_nonpositive:
                                top = top.subs(other, 0)
                            else:
                                raise ExtentError(
                                    f"cannot infer the extent of {name!r}: the sign of "
                                    f"{c} is unknown; declare it",
                                    index.span,
                                    self.text,
                                )
                        size = self.shapes[access.name][axis]
                        if coefficient == 1:  # the common case, without a floor to simplify
                            bounds.append(expand(size - top))
                        else:
                            bounds.append(sympy.floor((size - 1 - top) / coefficient) + 1)
                if blocked:
                    continue
                if not bounds:
                    raise ExtentError(
                        f"cannot infer the extent of {name!r}: no read bounds it from above; "
                        f"declare it (ranges={{'{name}': n}}, or --range {name}=n)",
                        self._first_span(node, name),
                        self.text,
                    )
                extent = self.smallest(bounds)
                if not extent.is_number and not isinstance(extent, sympy.Symbol):
                    # a derived extent gets a name of its own, defined once
                    axis = lhs_names.index(name)
                    symbol = self.size_symbol(node.target.name, axis, len(lhs_names), name)
                    self.size_symbols.remove(symbol)
                    self.definitions[symbol] = extent
                    extent = symbol
                extents[name] = extent
                pending.remove(name)
                progressed = True
            if not progressed:
                raise ExtentError(
                    f"cannot infer the extents of {', '.join(map(repr, pending))} jointly; "
                    "declare one of them with ranges= (--range)",
                    self._first_span(node, pending[0]),
                    self.text,
                )

    def _declared_extents(self, target: str, lhs_names: list[str]) -> dict[str, sympy.Expr]:
        """The extents that the target's declared shape gives its left-hand-side indices."""
        given = self.shape_values.get(target)
        if given is None or len(given) != len(lhs_names):
            return {}  # no shape, or a wrong rank (reported with the shapes below)
        return {name: sympy.Integer(n) for name, n in zip(lhs_names, given, strict=True)}

    def _check_lhs_used(self, node: SStatement, lhs_names: list[str]) -> None:
        for name in lhs_names:
            used = any(name in _names_in(i) for a in _accesses(node.rhs) for i in a.indices) or any(
                name in {n.name for n in r.names} for r in _reductions(node.rhs)
            )
            if not used and name not in self.range_values:
                raise IndexNotationError(
                    f"index {name!r} is on the left-hand side but not on the right",
                    self._first_span(node, name),
                    self.text,
                )

    def _rhs(
        self,
        node: SStatement,
        names: set[str],
        lhs_names: set[str],
        variables: Mapping[str, sympy.Symbol],
        extents: Mapping[str, sympy.Expr],
    ) -> ir.Node:
        scatter = not _is_gather_target(node.target)
        if scatter:
            assert isinstance(node.target, SAccess)
            outer = set().union(*(_names_in(i) for i in node.target.indices)) & names
        else:
            outer = set(lhs_names)
        terms: list[ir.Node] = []
        for sign, term in _top_terms(node.rhs):
            value = self.value(term, variables, extents, bound=set(outer))
            used = ir.free_index_symbols(value) & set(variables.values())
            summed = tuple(sorted((v for v in used if v.name not in outer), key=lambda v: v.name))
            if summed:
                self._note_sums_outside_functions(term, {v.name for v in summed})
                where = tuple(c for v in summed for c in ir.box(v, extents[v.name]))
                value = ir.Reduce("sum", summed, value, where)
            terms.append(value if sign > 0 else ir.make_mul([ir.Const(sympy.Integer(-1)), value]))
        return ir.make_add(terms)

    def _note_sums_outside_functions(self, term: Any, summed: set[str]) -> None:
        """Warn when a term's implicit sum has its indices only inside elementwise functions
        (``tanh(W[c,k]*X[c,t+k])``): the sum wraps the function, as the notation says, but
        a layer usually means the sum inside. The warning shows that explicit form."""

        def mentions(node: Any) -> set[str]:
            return summed & {
                name for a in _accesses(node) for i in a.indices for name in _names_in(i)
            }

        calls: list[SCall] = []
        pending = [term]
        while pending:  # the outermost calls whose arguments use a summed index
            node = pending.pop()
            if isinstance(node, SCall):
                if mentions(node.arg):
                    calls.append(node)
                continue
            if isinstance(node, SAccess) and mentions(node):
                return  # a summed index outside every function: a plain contraction
            if isinstance(node, SReduce):
                continue
            pending += _operands(node)
        if not calls:
            return
        replacements = []
        for call in calls:
            while isinstance(call.arg, SCall) and mentions(call.arg.arg) == mentions(call.arg):
                call = call.arg  # the sum goes around the innermost argument that holds it
            inner = ",".join(sorted(mentions(call.arg)))
            replacements.append((call.arg.span, f"sum_{{{inner}}}({self.written(call.arg.span)})"))
        start, end = term.span
        explicit = self.text[start:end]
        for (left, right), text in sorted(replacements, reverse=True):
            explicit = explicit[: left - start] + text + explicit[right - start :]
        written = self.written(term.span)
        warnings.warn(
            f"the implicit sum over {', '.join(sorted(summed))} wraps the whole term, "
            f"functions included: {written} is read as "
            f"sum_{{{','.join(sorted(summed))}}}({written}); to sum inside the "
            f"function{'s' if len(calls) > 1 else ''}, write {explicit}",
            ImplicitSumWarning,
            stacklevel=_caller_level(),
        )

    def value(
        self,
        node: Any,
        variables: Mapping[str, sympy.Symbol],
        extents: Mapping[str, sympy.Expr],
        bound: set[str],
    ) -> ir.Node:
        """The IR of a value expression (right-hand side)."""
        if isinstance(node, SNumber):
            return ir.Const(self.number(node), node.span)
        if isinstance(node, SName):
            if node.name in self.shapes and not self.shapes[node.name]:
                return ir.Access(node.name, (), node.span)
            if node.name in self.tensor_names:
                raise IndexNotationError(
                    f"tensor {node.name!r} is used without its indices", node.span, self.text
                )
            if node.name in self.references:
                return ir.Const(_size_symbol(node.name), node.span)
            return ir.Const(self.param_symbols[node.name], node.span)
        if isinstance(node, SAccess):
            if node.name in self.shapes and not self.shapes[node.name] and node.indices:
                raise IndexNotationError(
                    f"{node.name!r} is a scalar and takes no indices", node.span, self.text
                )
            indices = tuple(self.index_expr(i, variables) for i in node.indices)
            return ir.Access(node.name, indices, node.span)
        if isinstance(node, SSum | SProduct):
            return self._chain(node, variables, extents, bound)
        if isinstance(node, SNeg | SBinary):
            value = self._arithmetic(node, variables, extents, bound)
            return self._checked_constant(value, node.span)
        if isinstance(node, SCall):
            if node.name not in FUNCTIONS:
                raise IndexNotationError(
                    f"unknown function {node.name!r}; known: {', '.join(FUNCTIONS)}",
                    node.name_span,
                    self.text,
                )
            return ir.Call(node.name, self.value(node.arg, variables, extents, bound), node.span)
        if isinstance(node, SReduce):
            reduced = []
            for name in node.names:
                if name.name in bound:
                    raise IndexNotationError(
                        f"index {name.name!r} is already bound outside this reduction",
                        name.span,
                        self.text,
                    )
                reduced.append(name.name)
            if len(set(reduced)) != len(reduced):
                raise IndexNotationError(
                    "an index is listed twice in this reduction", node.span, self.text
                )
            body = self.value(node.body, variables, extents, bound | set(reduced))
            symbols = tuple(variables[n] for n in reduced)
            where = tuple(c for v in symbols for c in ir.box(v, extents[v.name]))
            return ir.Reduce(node.op, symbols, body, where, node.span)  # type: ignore[arg-type]
        raise IndexNotationError("unsupported expression", getattr(node, "span", None), self.text)

    def _chain(
        self,
        node: SSum | SProduct,
        variables: Mapping[str, sympy.Symbol],
        extents: Mapping[str, sympy.Expr],
        bound: set[str],
    ) -> ir.Node:
        """The IR of a sum or a product chain: one Add or Mul, constants folded.

        The folded constant is checked after each operand, so that one past a float's
        range is refused at the part of the chain that made it (``X[i]*1e200*1e200``)
        before folding goes on.
        """
        is_sum = isinstance(node, SSum)
        operands = node.terms if isinstance(node, SSum) else node.factors
        inverted = (
            tuple(sign < 0 for sign in node.signs) if isinstance(node, SSum) else node.divides
        )
        parts: list[ir.Node] = []
        constant: sympy.Expr = sympy.Integer(0 if is_sum else 1)
        for operand, invert in zip(operands, inverted, strict=True):
            value = self.value(operand, variables, extents, bound)
            if invert and is_sum:
                value = ir.make_mul([ir.Const(sympy.Integer(-1)), value])
            elif invert:
                if isinstance(value, ir.Const) and value.value == 0:
                    raise IndexNotationError("division by zero", operand.span, self.text)
                value = ir.make_pow(value, sympy.Integer(-1))
            parts.append(value)
            # the operand's own constant, or that of a sum (product) in parentheses
            folded = ir.children(value) if isinstance(value, ir.Add if is_sum else ir.Mul) else ()
            numbers = [
                part.value
                for part in folded or (value,)
                if isinstance(part, ir.Const) and part.value.is_number
            ]
            for number in numbers:
                constant = constant + number if is_sum else constant * number
                self._checked_constant(ir.Const(constant), (node.span[0], operand.span[1]))
        return ir.make_add(parts) if is_sum else ir.make_mul(parts)

    def _arithmetic(
        self,
        node: SNeg | SBinary,
        variables: Mapping[str, sympy.Symbol],
        extents: Mapping[str, sympy.Expr],
        bound: set[str],
    ) -> ir.Node:
        """The IR of a negation or a power (constants folded)."""
        if isinstance(node, SNeg):
            return ir.make_mul(
                [ir.Const(sympy.Integer(-1)), self.value(node.operand, variables, extents, bound)]
            )
        left = self.value(node.left, variables, extents, bound)
        right = self.value(node.right, variables, extents, bound)
        if not isinstance(right, ir.Const) or not right.value.is_number:
            raise IndexNotationError(
                "the exponent of '**' must be a number", node.right.span, self.text
            )
        if isinstance(left, ir.Const) and left.value == 0 and right.value < 0:
            raise IndexNotationError("zero to a negative power", node.span, self.text)
        if isinstance(left, ir.Const) and left.value.is_number and left.value != 0:
            self._check_folded_power(left.value, right.value, node)
        if abs(right.value) > MAX_EXPONENT:
            raise IndexNotationError(
                f"the exponent {right.value} is too large (the limit is {MAX_EXPONENT})",
                node.right.span,
                self.text,
            )
        return ir.make_pow(left, right.value)

    def _check_folded_power(self, base: sympy.Expr, exponent: sympy.Expr, node: SBinary) -> None:
        """Refuse ``base**exponent`` of two numbers before sympy folds it, if it is unusable."""
        if base.is_negative and not exponent.is_integer:
            raise IndexNotationError(
                f"{self.written(node.span)} is not a real number", node.span, self.text
            )
        self._check_magnitude(float(exponent) * math.log10(abs(float(base))), node.span)

    def _checked_constant(self, value: ir.Node, span: Span) -> ir.Node:
        """A folded constant, if it is a real number a float64 can hold; an error otherwise.

        The constant is the node itself, or the folded factor or term of a product or sum.
        """
        parts = (
            value.factors
            if isinstance(value, ir.Mul)
            else value.terms
            if isinstance(value, ir.Add)
            else (value,)
        )
        for part in parts:
            if isinstance(part, ir.Const) and part.value.is_number and part.value != 0:
                if part.value.is_extended_real is False:
                    raise IndexNotationError(
                        f"{self.written(span)} is not a real number", span, self.text
                    )
                number = abs(part.value)
                if number.is_Rational:  # exactly, past a float's range too
                    magnitude = math.log10(number.p) - math.log10(number.q)
                else:
                    try:
                        magnitude = math.log10(float(number))
                    except (OverflowError, TypeError, ValueError):
                        magnitude = math.inf
                self._check_magnitude(magnitude, span)
        return value

    def _check_magnitude(self, magnitude: float, span: Span) -> None:
        """Refuse a constant of about ``10**magnitude`` beyond a float64's range (as a literal:
        its first significant digit at a power of ten within +-MAX_MAGNITUDE)."""
        if abs(math.floor(magnitude + 1e-9)) > MAX_MAGNITUDE:
            size = "large" if magnitude > 0 else "small"
            raise IndexNotationError(
                f"{self.written(span)} is too {size} for a float ("
                + (f"about 1e{magnitude:+.0f}; " if math.isfinite(magnitude) else "")
                + f"the limit is 1e\u00b1{MAX_MAGNITUDE})",
                span,
                self.text,
            )

    def written(self, span: Span) -> str:
        """The text at ``span``, as the user wrote it."""
        return self.text[span[0] : span[1]]

    def _scatter(
        self,
        node: SStatement,
        rhs: ir.Node,
        variables: Mapping[str, sympy.Symbol],
        extents: Mapping[str, sympy.Expr],
        index_of: Any,
    ) -> tuple[ir.Statement, list[sympy.Expr]]:
        """``Y[L(v)] = rhs(v)`` as a gather: ``Y[u] = sum_v [u = L(v)] rhs(v)``."""
        from .solve import gather

        assert isinstance(node.target, SAccess)
        writes = [index_of(i) for i in node.target.indices]
        outer = sorted(
            set().union(*(w.free_symbols for w in writes)) & set(variables.values()),
            key=lambda v: v.name,
        )
        shape: list[sympy.Expr] = []
        for index, write in zip(node.target.indices, writes, strict=True):
            top = write
            for var in outer:
                c = ir.coefficient(write, var)
                if c.is_nonnegative:
                    top = top.subs(var, extents[var.name] - 1)
                elif c.is_nonpositive:
                    top = top.subs(var, 0)
                else:
                    raise ExtentError(
                        f"cannot size the output: the sign of {c} is unknown; declare its shape",
                        index.span,
                        self.text,
                    )
            shape.append(expand(top + 1))
        taken = set(self.taken) | {v.name for v in variables.values()}
        targets = tuple(fresh(name, taken) for name in _output_names(len(writes)))
        where = tuple(c for v in outer for c in ir.box(v, extents[v.name]))
        rhs_gather = gather(targets, tuple(writes), rhs, tuple(outer), where)
        return ir.Statement(node.target.name, targets, rhs_gather, node.span), shape

    def run(self, statements: list[SStatement]) -> Program:
        statements = [_plain_indices(s) for s in statements]
        self.classify(statements)
        self._check_values(statements)
        written: set[str] = set()
        result: list[ir.Statement] = []
        for k, node in enumerate(statements):
            target = node.target.name
            if target in written:
                raise IndexNotationError(
                    f"{target!r} is written twice", node.target.span, self.text
                )
            if target in self.shapes:
                raise IndexNotationError(
                    f"{target!r} is read before it is written", node.target.span, self.text
                )
            result.append(self.statement(k, node, written))
            written.add(target)
        # sizes substituted during unification must reach the statements too
        result = [
            ir.Statement(s.target, s.indices, self.current_node(s.rhs), s.span) for s in result
        ]
        # every tensor read is an input, also one whose reads fold away (0*B[j]: its
        # pullback is zero), in the order of first reading
        inputs = tuple(name for name in self.shapes if name not in written)
        values: dict[str, int | float] = {}
        mapping: dict[sympy.Symbol, sympy.Expr] = {}
        for name, value in self.param_values.items():
            if value is None:
                continue
            symbol = self.param_symbols[name]
            values[name] = value
            mapping[symbol] = (
                sympy.Integer(int(value))
                if isinstance(value, numbers.Integral) or value == int(value)
                else sympy.nsimplify(float(value), rational=True)
            )
        params = tuple(s for n, s in sorted(self.param_symbols.items()) if s not in mapping)
        program = Program(
            text=self.text,
            statements=tuple(result),
            shapes={k: tuple(v) for k, v in self.shapes.items()},
            inputs=inputs,
            params=params,
            sizes=tuple(self.size_symbols),
            values=values,
            extents=dict(self.extents),
            definitions={k: self.current(v) for k, v in self.definitions.items()},
        )
        return substitute(program, mapping) if mapping else program


def _output_names(rank: int) -> list[str]:
    letters = ["p", "q", "r", "t", "u", "v", "w"]
    return letters[:rank] if rank <= len(letters) else [f"p{k}" for k in range(rank)]


def substitute(program: Program, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Program:
    """The program with numbers (or expressions) in place of parameters and sizes."""
    statements = tuple(
        ir.Statement(s.target, s.indices, ir.subs(s.rhs, mapping), s.span)
        for s in program.statements
    )
    shapes = {k: tuple(e.xreplace(mapping) for e in v) for k, v in program.shapes.items()}
    definitions = {k: v.xreplace(mapping) for k, v in program.definitions.items()}
    settled = {k: v for k, v in definitions.items() if v.is_number}
    if settled:
        # a derived extent that became a number is replaced by it everywhere
        return substitute(
            replace(
                program, definitions={k: v for k, v in definitions.items() if k not in settled}
            ),
            {**mapping, **settled},
        )
    extents = {k: v.xreplace(mapping) for k, v in program.extents.items()}
    return Program(
        text=program.text,
        statements=statements,
        shapes=shapes,
        inputs=program.inputs,
        params=tuple(p for p in program.params if p not in mapping),
        sizes=tuple(s for s in program.sizes if s not in mapping),
        values=program.values,
        extents=extents,
        definitions=definitions,
    )


def learnable_scalars(text: str, names: Iterable[str] | None) -> tuple[str, ...]:
    """Those of ``names`` that ``text`` uses as values but does not index (nor write):
    parameters, unless they are to be differentiated, as 0-d tensors."""
    if names is None:
        return ()
    statements = parse(text)
    tensors = {s.target.name for s in statements} | {
        a.name for s in statements for a in _accesses(s.rhs)
    }
    values = {n.name for s in statements for n in _value_names(s.rhs)}
    return tuple(n for n in dict.fromkeys(names) if n in values and n not in tensors)


def input_names(text: str) -> list[str]:
    """The tensors a program reads without writing them (from the syntax alone)."""
    statements = parse(text)
    written = {s.target.name for s in statements}
    read = [a.name for s in statements for a in _accesses(s.rhs)]
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
        return _Analyser(text, params, shapes, ranges, scalars).run(statements)
    except EinderiveError as error:
        raise error.with_text(text) from None
