"""Extents: the size of every tensor axis and the range of every index variable.

Sizes are symbols (``N_X``, ``K``) unless ``shapes=`` gives numbers; an index ranges
over ``[0, n)`` where ``n`` is the size of an axis it indexes alone; two sizes that
must be one are unified (a free size gives way to the other); a gather-form
left-hand-side extent is declared, or the largest range for which no read runs past
the upper end of a tensor, named once as a derived extent (``I = N_X - K + 1``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sympy

from .. import affine, ir
from ..errors import ExtentError, Span
from ..ir import expand, fresh
from ..parse import SAccess, SName, SStatement
from ..reads import bounding
from .names import Arguments, first_span, size_named
from .syntax import count


class Sizes:
    """The sizes known so far, and the unifications that made some of them one."""

    def __init__(self, text: str, arguments: Arguments, taken: set[str]) -> None:
        self.text = text
        self.arguments = arguments
        self.taken = taken  # shared with the IR builder: fresh names avoid every one
        self.shapes: dict[str, list[sympy.Expr]] = {}
        self.size_symbols: list[sympy.Symbol] = []
        self.extents: dict[sympy.Symbol, sympy.Expr] = {}
        self.replacements: list[tuple[sympy.Symbol, sympy.Expr]] = []
        self.definitions: dict[sympy.Symbol, sympy.Expr] = {}
        self._expanded: dict[sympy.Symbol, sympy.Expr] = {}  # see _expansions
        self._expanded_at = 0

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
        if access.name in self.arguments.shape_values:
            given = self.arguments.shape_values[access.name]
            if len(given) != rank:
                raise ExtentError(
                    f"{access.name!r} is read with {count(rank, 'index')} but its shape "
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
        self._replace(symbol, value)

    def _replace(self, symbol: sympy.Symbol, value: sympy.Expr) -> None:
        """``symbol`` is ``value`` from now on: in every shape and extent so far, and in
        whatever ``current`` is asked later."""
        self.replacements.append((symbol, value))
        mapping = {symbol: value}
        for name, shape in self.shapes.items():
            self.shapes[name] = [e.xreplace(mapping) for e in shape]
        for var, extent in self.extents.items():
            self.extents[var] = extent.xreplace(mapping)

    def bind_size_references(
        self,
        references: Mapping[str, tuple[str, int] | str],
        node: SStatement,
        extents: Mapping[str, sympy.Expr],
        bound: set[str],
    ) -> None:
        """Each extent named in the statement's indices becomes what it names (those whose
        extent is known so far: a left-hand-side index's is known after its inference)."""
        for name, reference in references.items():
            symbol = size_named(name)
            if isinstance(reference, str):
                if reference not in extents or name in bound:
                    continue
                bound.add(name)
                value = extents[reference]
                what = f"{name} names the extent of {reference!r}"
            else:
                what = f"{name} names axis {reference[1]} of {reference[0]!r}"
                if reference[0] not in self.shapes:
                    raise ExtentError(
                        f"{what}, which no statement so far reads or writes",
                        first_span(self.text, node, name),
                        self.text,
                    )
                value = self.shapes[reference[0]][reference[1]]
            value = self.current(value)
            if value == symbol:
                continue
            if symbol in self.expanded(value).free_symbols:
                raise ExtentError(
                    f"{what}, which is defined through {name} itself",
                    first_span(self.text, node, name),
                    self.text,
                )
            if symbol in self.size_symbols or symbol in self.definitions:
                self.unify(symbol, value, what, first_span(self.text, node, name))
            else:
                self.taken.add(name)  # no later size may take the name: it means this one
                self._replace(symbol, value)

    def infer_lhs_extents(
        self,
        lhs_names: list[str],
        extents: dict[str, sympy.Expr],
        other_lone_sizes: Mapping[str, list[sympy.Expr]],
        reads: list[SAccess],
        variables: Mapping[str, sympy.Symbol],
        index_of: Callable[[Any], sympy.Expr],
        node: SStatement,
        declared: Mapping[str, sympy.Expr],
    ) -> None:
        # the largest range for which no read runs past the upper end of a tensor: an index
        # that also stands alone (X[i] in X[i]*X[i+1]) is bounded by its shifted reads too
        lone = {n: extents[n] for n in lhs_names if n in extents}
        pending = [n for n in lhs_names if n not in self.arguments.range_values]
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
                # a wrapped, clamped or reflected position never runs past its tensor;
                # X[i // 2] on N is i on 2*N (reads.bounding)
                limits = [
                    (expr, size, index)
                    for access in reads
                    for index, axis_size in zip(
                        access.indices, self.shapes[access.name], strict=True
                    )
                    for expr, size in bounding(index_of(index), axis_size)
                ]
                for expr, size, index in limits:
                    coefficient = ir.coefficient(expr, var)
                    alone = expr == var and isinstance(index, SName)  # sized as a lone index
                    if coefficient == 0 or not expr.has(var) or alone:
                        continue
                    others = [s for s in expr.free_symbols if s in variables.values() and s != var]
                    if any(o.name not in extents and o.name not in lone for o in others):
                        blocked = True
                        continue
                    if affine.nonpositive(coefficient):
                        continue
                    if not affine.positive(coefficient):
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
                        if affine.nonnegative(c):
                            known = extents.get(other.name, lone.get(other.name))
                            assert known is not None  # blocked above otherwise
                            top = top.subs(other, known - 1)
                        elif affine.nonpositive(c):
                            top = top.subs(other, 0)
                        else:
                            raise ExtentError(
                                f"cannot infer the extent of {name!r}: the sign of "
                                f"{c} is unknown; declare it",
                                index.span,
                                self.text,
                            )
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
                        first_span(self.text, node, name),
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
                    first_span(self.text, node, pending[0]),
                    self.text,
                )

    def declared_extents(self, target: str, lhs_names: list[str]) -> dict[str, sympy.Expr]:
        """The extents that the target's declared shape gives its left-hand-side indices."""
        given = self.arguments.shape_values.get(target)
        if given is None or len(given) != len(lhs_names):
            return {}  # no shape, or a wrong rank (reported with the shapes below)
        return {name: sympy.Integer(n) for name, n in zip(lhs_names, given, strict=True)}
