"""IR building: each statement of the syntax tree, its names classified, becomes an
``ir.Statement`` whose index positions are affine sympy expressions and whose implicit
sums are explicit ``Reduce`` nodes over their boxes; the statements make a ``Program``.
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import sympy

from .. import affine, ir
from ..errors import ExtentError, ImplicitSumWarning, IndexNotationError, Span
from ..functions import FUNCTIONS
from ..ir import expand, fresh
from ..model import Program, substitute
from ..parse import (
    ARG_REDUCERS,
    INDEX_FUNCTIONS,
    SAccess,
    SBinary,
    SCall,
    SCompare,
    SKeyword,
    SName,
    SNeg,
    SNumber,
    SProduct,
    SReduce,
    SStatement,
    SSum,
    STuple,
    index_arrays,
    is_argmax,
    operands,
    syntax_nodes,
)
from ..reads import comparison, has_index_function, needs_rewrite, rewrite_statement
from ..solve import gather, implied_by_box
from .extents import Sizes
from .limits import MAX_EXPONENT, check_folded_power, checked_constant, number
from .names import Arguments, Names, check_values, classify, first_span, size_named
from .syntax import (
    accesses,
    comparisons,
    condition_sides,
    count,
    is_gather_target,
    names_in,
    output_names,
    plain_indices,
    reductions,
    top_terms,
    value_names,
)


def build(text: str, statements: list[SStatement], arguments: Arguments) -> Program:
    """The program of ``statements`` (parsed from ``text``); every problem an error at its text."""
    statements = [plain_indices(s) for s in statements]
    names = classify(statements, arguments, text)
    check_values(statements, arguments, names)
    return _Builder(text, arguments, names, index_arrays(statements, text)).run(statements)


class _Builder:
    """Builds the statements one by one; the sizes they share grow as they are read."""

    def __init__(
        self, text: str, arguments: Arguments, names: Names, arrays: tuple[str, ...]
    ) -> None:
        self.text = text
        self.index_arrays = arrays  # read inside brackets: integer inputs (tok in E[tok[b], d])
        self.arguments = arguments
        self.names = names
        self.sizes = Sizes(text, arguments, names.taken)
        # the extents the current statement's brackets name (K, N_X), set per statement
        self.references: Mapping[str, tuple[str, int] | str] = {}
        self._symbol_sets: dict[int, tuple[Mapping, frozenset[sympy.Symbol]]] = {}

    def _index_symbols(self, variables: Mapping[str, sympy.Symbol]) -> frozenset[sympy.Symbol]:
        """The statement's index variables as a set (computed once per statement)."""
        key = id(variables)
        if self._symbol_sets.get(key, (None,))[0] is not variables:
            self._symbol_sets[key] = (variables, frozenset(variables.values()))
        return self._symbol_sets[key][1]

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
                return size_named(node.name)
            return self.names.param_symbols[node.name]
        if isinstance(node, SNumber):
            if not node.text.isdigit():
                raise IndexNotationError(
                    f"index positions take integers, not {node.text!r}", node.span, self.text
                )
            return number(node, self.text)
        if isinstance(node, SNeg):
            return -self._index_expr(node.operand, variables)
        if isinstance(node, SBinary) and node.op == "//":
            numerator = self.index_expr(node.left, variables)
            return sympy.floor(numerator / self._divisor(node.right, variables, "'//'"))
        if isinstance(node, SCall) and node.name in INDEX_FUNCTIONS:
            return self._index_function(node, variables)
        if isinstance(node, SAccess) and node.name in self.index_arrays:
            positions = (self.index_expr(i, variables) for i in node.indices)
            return ir.index_array(node.name)(*positions)
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
            index_symbols = self._index_symbols(variables)
            product = self._index_expr(node.factors[0], variables)
            for factor, divides in zip(node.factors[1:], node.divides[1:], strict=True):
                chain = (node.span[0], factor.span[1])
                if divides:
                    # exact division: the read happens where the divisor divides (ir.Divide)
                    divisor = self._divisor(factor, variables, "'/'", chain)
                    product = ir.Divide(expand(product), divisor)
                    continue
                right = self._index_expr(factor, variables)
                if product.free_symbols & index_symbols and right.free_symbols & index_symbols:
                    raise IndexNotationError(
                        "index expressions must be affine: this multiplies two index variables",
                        chain,
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

    def _divisor(
        self,
        node: Any,
        variables: Mapping[str, sympy.Symbol],
        what: str,
        span: Span | None = None,
    ) -> sympy.Expr:
        """The divisor of ``/`` or ``//``, or the period of ``mod``/``reflect``: a positive
        number or a product of parameters and sizes, no index. An error points at ``span``
        (the chain up to the divisor, for ``/``) or at the divisor."""
        span = span or node.span
        value = self.index_expr(node, variables)
        if value.free_symbols & self._index_symbols(variables) or has_index_function(value):
            raise IndexNotationError(
                f"the divisor of {what} must be a number or a parameter, not an index",
                span,
                self.text,
            )
        if not affine.positive(value):
            zero = " (a division by zero)" if value == 0 else ""
            raise IndexNotationError(
                f"the divisor of {what} must be positive; {value} is not{zero}", span, self.text
            )
        return value

    def _index_function(self, node: SCall, variables: Mapping[str, sympy.Symbol]) -> sympy.Expr:
        """``mod(e, n)``, ``clamp(e, lo, hi)`` or ``reflect(e, n)`` in an index position."""
        argument = self.index_expr(node.arg, variables)
        if node.name == "mod":
            return sympy.Mod(argument, self._divisor(node.rest[0], variables, "mod(e, n)"))
        if node.name == "reflect":
            return ir.Reflect(argument, self._divisor(node.rest[0], variables, "reflect(e, n)"))
        low, high = (self.index_expr(bound, variables) for bound in node.rest)
        for bound, value in zip(node.rest, (low, high), strict=True):
            if value.free_symbols & self._index_symbols(variables) or has_index_function(value):
                raise IndexNotationError(
                    "the bounds of clamp(e, lo, hi) are numbers or parameters, not indices",
                    bound.span,
                    self.text,
                )
        if (low - high).is_number and low > high:
            raise IndexNotationError(
                f"clamp(e, lo, hi) needs lo <= hi; here {low} > {high}", node.span, self.text
            )
        return ir.Clamp(argument, low, high)

    def _pad_value(self, keyword: SKeyword) -> sympy.Expr:
        """``pad=v``: a number, ``inf`` or ``-inf``."""
        node, sign = keyword.value, 1
        while isinstance(node, SNeg):
            node, sign = node.operand, -sign
        if isinstance(node, SName) and node.name == "inf":
            return sign * sympy.oo
        if isinstance(node, SNumber):
            return sign * number(node, self.text)
        raise IndexNotationError(
            "a pad value is a number, inf or -inf (the value read out of range)",
            keyword.value.span,
            self.text,
        )

    def _condition_side(self, side: Any, variables: Mapping[str, sympy.Symbol]) -> sympy.Expr:
        """One side of a comparison or of a reduction's condition: affine, no index function."""
        expr = self.index_expr(side, variables)
        if has_index_function(expr):
            # a quotient or remainder in a condition would need a fresh quotient of its
            # own; reads have it, conditions do not (yet): refused here, not downstream
            raise IndexNotationError(
                "a comparison takes affine index expressions: '/', '//', mod, clamp and "
                "reflect are for reads (X[i // 2], X[p / 2]), not for conditions",
                side.span,
                self.text,
            )
        return expr

    def _comparison(self, node: SCompare, variables: Mapping[str, sympy.Symbol]) -> ir.Node:
        """``(left op right)`` of index expressions, as an indicator."""
        sides = []
        for side in (node.left, node.right):
            values = (SAccess, SCall, SReduce, SCompare)
            if any(
                isinstance(n, values)
                and not (isinstance(n, SAccess) and n.name in self.index_arrays)
                for n in syntax_nodes(side)
            ):
                raise IndexNotationError(
                    "a comparison compares index expressions (affine in the indices), "
                    "not values: (j <= i), (i == m), (i != j)",
                    side.span,
                    self.text,
                )
            sides.append(self._condition_side(side, variables))
        return comparison(node.op, *sides)

    # ---- shapes and extents ------------------------------------------------------------

    def statement(self, k: int, node: SStatement, written: set[str]) -> ir.Statement:
        names = self.names.index_vars[k]
        variables = {name: fresh(name, set()) for name in sorted(names)}
        self.references = self.names.size_references[k]
        for value in value_names(node.rhs):
            if value.name in self.arguments.scalar_inputs and value.name not in self.sizes.shapes:
                self.sizes.declare_tensor(SAccess(value.name, (), value.span, value.span), [])
        reads = accesses(node.rhs)
        target_access = node.target if isinstance(node.target, SAccess) else None
        if target_access is not None:  # index arrays read on the left: Y[idx[i], d]
            reads += accesses(target_access)[1:]
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
            for name in names_in(index)
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
            if access.name not in self.sizes.shapes:
                if access.name in written:
                    raise IndexNotationError(  # pragma: no cover - written implies shaped
                        f"{access.name!r} has no shape", access.span, self.text
                    )
                self.sizes.declare_tensor(access, lone)
            elif len(self.sizes.shapes[access.name]) != len(access.indices):
                raise IndexNotationError(
                    f"{access.name!r} is read with {len(access.indices)} indices here but "
                    f"{len(self.sizes.shapes[access.name])} elsewhere",
                    access.span,
                    self.text,
                )
        # extents of variables that index an axis alone, or are declared
        local_extents: dict[str, sympy.Expr] = {}
        for name in sorted(names):
            if name in self.arguments.range_values:
                local_extents[name] = sympy.Integer(self.arguments.range_values[name])
        # a declared range is the loop: it sizes an axis that has no size yet, and
        # otherwise reads past that axis are zero. An intermediate's extents are those
        # of its own definition: a left-hand-side index that reads it and an axis that
        # cannot be the same size ranges over the smaller (no read runs past its end);
        # two inputs' axes read alone by one index must be one size.
        lhs_inferred = (
            {i.name for i in target_access.indices} - set(self.arguments.range_values)
            if target_access and is_gather_target(target_access)
            else set()
        )
        other_lone_sizes: dict[str, list[sympy.Expr]] = {}
        reads_intermediate: set[str] = set()
        for access in reads:
            for axis, index in enumerate(access.indices):
                if isinstance(index, SName) and index.name in names:
                    size = self.sizes.shapes[access.name][axis]
                    if access.name in written:
                        reads_intermediate.add(index.name)
                    if index.name in local_extents:
                        soft = index.name in self.arguments.range_values or (
                            index.name in lhs_inferred and index.name in reads_intermediate
                        )
                        unified = self.sizes.unify(
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
        gather = is_gather_target(node.target)
        target_name = node.target.name
        lhs_vars = {i.name for i in target_access.indices} if gather and target_access else set()
        for name in sorted(names - lhs_vars):
            if name not in local_extents:
                raise ExtentError(
                    f"index {name!r} has no extent: it indexes no tensor alone; "
                    f"declare it (ranges={{'{name}': n}}, or --range {name}=n)",
                    first_span(self.text, node, name),
                    self.text,
                )
        bound_references: set[str] = set()
        known = {n: e for n, e in local_extents.items() if n not in lhs_inferred}
        self.sizes.bind_size_references(
            self.names.size_references[k], node, known, bound_references
        )
        if gather:
            lhs_names = [i.name for i in target_access.indices] if target_access else []
            self._check_lhs_used(node, lhs_names)
            declared = self.sizes.declared_extents(target_name, lhs_names)
            self.sizes.infer_lhs_extents(
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
                    first_span(self.text, node, name),
                    self.text,
                )
        self.sizes.bind_size_references(
            self.names.size_references[k], node, local_extents, bound_references
        )
        for name in local_extents:
            local_extents[name] = self.sizes.current(local_extents[name])
        for name, extent in local_extents.items():
            self.sizes.extents[variables[name]] = extent
        rhs = self._rhs(node, names, set(lhs_names), variables, local_extents)
        if gather:
            indices = tuple(variables[n] for n in lhs_names)
            shape = [local_extents[n] for n in lhs_names]
            statement = ir.Statement(target_name, indices, rhs, node.span)
        else:
            statement, shape = self._scatter(node, rhs, variables, local_extents, index_of)
        if target_name in self.arguments.shape_values:
            given = [sympy.Integer(n) for n in self.arguments.shape_values[target_name]]
            if len(given) != len(shape):
                raise ExtentError(
                    f"{target_name!r} has {count(len(shape), 'index')} "
                    f"but its shape has {len(given)} axes",
                    node.target.span,
                    self.text,
                )
            for axis, (declared, inferred) in enumerate(zip(given, shape, strict=True)):
                if declared != inferred:
                    shape[axis] = declared
                    if gather:
                        self.sizes.extents[statement.indices[axis]] = declared
        if any(n.is_number and n <= 0 for n in shape):
            raise ExtentError(
                f"the output {target_name!r} is empty (shape {tuple(shape)})",
                node.target.span,
                self.text,
            )
        self.sizes.shapes[target_name] = list(shape)
        return statement

    def _check_lhs_used(self, node: SStatement, lhs_names: list[str]) -> None:
        for name in lhs_names:
            used = (
                any(name in names_in(i) for a in accesses(node.rhs) for i in a.indices)
                or any(name in {n.name for n in r.names} for r in reductions(node.rhs))
                or any(name in names_in(c) for c in comparisons(node.rhs))
                or any(name == n.name for n in value_names(node.rhs))
                or any(name in names_in(side) for side in condition_sides(node.rhs))
            )
            if not used and name not in self.arguments.range_values:
                raise IndexNotationError(
                    f"index {name!r} is on the left-hand side but not on the right",
                    first_span(self.text, node, name),
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
        scatter = not is_gather_target(node.target)
        if scatter:
            assert isinstance(node.target, SAccess)
            outer = set().union(*(names_in(i) for i in node.target.indices)) & names
            # and those inside an index array's read: Y[idx[i], d] writes at every i
            outer |= {
                name
                for access in accesses(node.target)[1:]
                for i in access.indices
                for name in names_in(i)
            } & names
        else:
            outer = set(lhs_names)
        terms: list[ir.Node] = []
        for sign, term in top_terms(node.rhs):
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
                name for a in accesses(node) for i in a.indices for name in names_in(i)
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
            pending += operands(node)
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
            return ir.Const(number(node, self.text), node.span)
        if isinstance(node, SName):
            if node.name in self.sizes.shapes and not self.sizes.shapes[node.name]:
                return ir.Access(node.name, (), node.span)
            if node.name in self.names.tensors:
                raise IndexNotationError(
                    f"tensor {node.name!r} is used without its indices", node.span, self.text
                )
            if node.name in self.references:
                return ir.Const(size_named(node.name), node.span)
            if node.name in variables:
                return ir.Const(variables[node.name], node.span)  # an index read as a number
            return ir.Const(self.names.param_symbols[node.name], node.span)
        if isinstance(node, SAccess):
            if node.name in self.sizes.shapes and not self.sizes.shapes[node.name] and node.indices:
                raise IndexNotationError(
                    f"{node.name!r} is a scalar and takes no indices", node.span, self.text
                )
            indices = tuple(self.index_expr(i, variables) for i in node.indices)
            pad = None if node.pad is None else self._pad_value(node.pad)
            return ir.Access(node.name, indices, node.span, pad)
        if isinstance(node, SCompare) and is_argmax(node.right):
            return self._indicator(node, variables, extents, bound)
        if isinstance(node, SCompare):
            return self._comparison(node, variables)
        if isinstance(node, SSum | SProduct):
            return self._chain(node, variables, extents, bound)
        if isinstance(node, SNeg | SBinary):
            value = self._arithmetic(node, variables, extents, bound)
            return checked_constant(value, node.span, self.text)
        if isinstance(node, SCall):
            if node.name not in FUNCTIONS:
                raise IndexNotationError(
                    f"unknown function {node.name!r}; known: {', '.join(FUNCTIONS)}",
                    node.name_span,
                    self.text,
                )
            arguments = [self.value(a, variables, extents, bound) for a in node.arguments]
            return ir.Call(node.name, arguments[0], node.span, tuple(arguments[1:]))
        if isinstance(node, SReduce):
            reduced = self._reduced(node, bound)
            body = self.value(node.body, variables, extents, bound | set(reduced))
            symbols = tuple(variables[n] for n in reduced)
            where = tuple(c for v in symbols for c in ir.box(v, extents[v.name]))
            where += tuple(self._condition(c, variables) for c in node.conditions)
            return ir.Reduce(node.op, symbols, body, where, node.span)  # type: ignore[arg-type]
        raise IndexNotationError("unsupported expression", getattr(node, "span", None), self.text)

    def _reduced(self, node: SReduce, bound: set[str]) -> list[str]:
        """The names a reduction binds, each once and none bound outside it."""
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
        return reduced

    def _indicator(
        self,
        node: SCompare,
        variables: Mapping[str, sympy.Symbol],
        extents: Mapping[str, sympy.Expr],
        bound: set[str],
    ) -> ir.Node:
        """``(e == argmax_{m}(body))``: 1 where ``e`` is the first position (row-major in the
        reduced indices) of the maximum of ``body``, the node a max pullback builds."""
        extremum = node.right
        assert isinstance(extremum, SReduce)
        reduced = self._reduced(extremum, bound)
        body = self.value(extremum.body, variables, extents, bound | set(reduced))
        symbols = tuple(variables[n] for n in reduced)
        where = tuple(c for v in symbols for c in ir.box(v, extents[v.name]))
        where += tuple(self._condition(c, variables) for c in extremum.conditions)
        positions = node.left.items if isinstance(node.left, STuple) else (node.left,)
        at = tuple(self._condition_side(e, variables) for e in positions)
        op = ARG_REDUCERS[extremum.op]
        return ir.IsExtremum(op, symbols, body, where, at, node.span)  # type: ignore[arg-type]

    def _condition(self, node: SCompare, variables: Mapping[str, sympy.Symbol]) -> ir.Constraint:
        """A condition of a reduction's domain, ``k <= j - 1``, as an affine constraint."""
        left = self._condition_side(node.left, variables)
        right = self._condition_side(node.right, variables)
        # `!=` is refused by the parser: a domain is a conjunction of affine conditions
        difference = {
            "<=": right - left,
            "<": right - left - 1,
            ">=": left - right,
            ">": left - right - 1,
            "==": left - right,
        }[node.op]
        if node.op == "==":
            return ir.normalise(ir.Constraint("eq", expand(difference)))
        return ir.normalise(ir.Constraint("ge", expand(difference)))

    def _reads_an_index(self, node: ir.Node, variables: Mapping[str, sympy.Symbol]) -> bool:
        """Whether ``node``'s folded constant reads an index as a number (``2*i`` in
        ``2*i*X[i]``)."""
        parts = node.factors if isinstance(node, ir.Mul) else (node,)
        symbols = set(variables.values())
        return any(isinstance(p, ir.Const) and p.value.free_symbols & symbols for p in parts)

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
            if invert and not is_sum and self._reads_an_index(value, variables):
                raise IndexNotationError(
                    "an index used as a value is a polynomial of indices: it cannot divide "
                    "(i / 100 and i*j are values; 1/i is not, infinite at 0)",
                    operand.span,
                    self.text,
                )
            if invert and is_sum:
                value = ir.make_mul([ir.Const(sympy.Integer(-1)), value])
            elif invert:
                if isinstance(value, ir.Const) and value.value == 0:
                    raise IndexNotationError("division by zero", operand.span, self.text)
                value = ir.make_pow(value, sympy.Integer(-1))
            parts.append(value)
            # the operand's own constant, or that of a sum (product) in parentheses
            folded = ir.children(value) if isinstance(value, ir.Add if is_sum else ir.Mul) else ()
            constants = [
                part.value
                for part in folded or (value,)
                if isinstance(part, ir.Const) and part.value.is_number
            ]
            for part_value in constants:
                constant = constant + part_value if is_sum else constant * part_value
                checked_constant(ir.Const(constant), (node.span[0], operand.span[1]), self.text)
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
        if self._reads_an_index(left, variables) and not (
            right.value.is_integer and right.value >= 0
        ):
            raise IndexNotationError(
                "an index used as a value is a polynomial of indices: its powers are "
                "whole numbers (i**2, not i**0.5 or i**-1)",
                node.span,
                self.text,
            )
        if isinstance(left, ir.Const) and left.value.is_number and left.value != 0:
            check_folded_power(left.value, right.value, node, self.text)
        if abs(right.value) > MAX_EXPONENT:
            raise IndexNotationError(
                f"the exponent {right.value} is too large (the limit is {MAX_EXPONENT})",
                node.right.span,
                self.text,
            )
        return ir.make_pow(left, right.value)

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
        assert isinstance(node.target, SAccess)
        writes = [index_of(i) for i in node.target.indices]
        for index, write in zip(node.target.indices, writes, strict=True):
            if has_index_function(write):
                raise IndexNotationError(
                    "a left-hand side is written at affine positions; mod, clamp, reflect, "
                    "'//' and '/' are for reads",
                    index.span,
                    self.text,
                )
        outer = sorted(
            set().union(*(w.free_symbols for w in writes)) & set(variables.values()),
            key=lambda v: v.name,
        )
        shape: list[sympy.Expr] = []
        for axis, (index, write) in enumerate(zip(node.target.indices, writes, strict=True)):
            if ir.index_reads(write):
                # a write through an index array lands where the data says: the axis is
                # as long as declared (shapes=), else a size of its own
                shape.append(self.sizes.size_symbol(node.target.name, axis, len(writes), None))
                continue
            top = write
            for var in outer:
                c = ir.coefficient(write, var)
                if affine.nonnegative(c):
                    top = top.subs(var, extents[var.name] - 1)
                elif affine.nonpositive(c):
                    top = top.subs(var, 0)
                else:
                    raise ExtentError(
                        f"cannot size the output: the sign of {c} is unknown; declare its shape",
                        index.span,
                        self.text,
                    )
            shape.append(expand(top + 1))
        taken = set(self.names.taken) | {v.name for v in variables.values()}
        targets = tuple(fresh(name, taken) for name in output_names(len(writes)))
        where = tuple(c for v in outer for c in ir.box(v, extents[v.name]))
        rhs_gather = gather(targets, tuple(writes), rhs, tuple(outer), where)
        if isinstance(rhs_gather, ir.Reduce) and any(ir.index_reads(w) for w in writes):
            # through an index array, the target's other axes keep guards its shape implies
            boxes = dict(zip(targets, shape, strict=True))
            kept = tuple(
                c
                for c in rhs_gather.where
                if c.free_symbols & set(rhs_gather.variables) or not implied_by_box(c, boxes)
            )
            rhs_gather = replace(rhs_gather, where=kept)
        return ir.Statement(node.target.name, targets, rhs_gather, node.span), shape

    def _accumulate(
        self, before: ir.Statement, k: int, node: SStatement, written: set[str]
    ) -> ir.Statement:
        """``T[...] += rhs`` after a statement into ``T``: one statement, the sum of both
        (a pullback in scatter form prints a ``+=`` line per term; read back, they add up).
        The tensor holds every write: an axis is the larger of two numbers, or one size."""
        shape = self.sizes.shapes.pop(node.target.name)
        statement = self.statement(k, node, written)
        added = self.sizes.shapes[node.target.name]
        for axis, (first, second) in enumerate(zip(shape, added, strict=True)):
            if first.is_number and second.is_number:
                shape[axis] = max(first, second)
                continue
            unified = self.sizes.unify(first, second, "", node.target.span, soft=True)
            if unified is None:
                raise ExtentError(
                    f"the '+=' statements into {node.target.name!r} give axis {axis} the sizes "
                    f"{self.sizes.current(first)} and {self.sizes.current(second)}; declare its "
                    f"shape (shapes={{{node.target.name!r}: ...}}, or --shape "
                    f"{node.target.name}=...)",
                    node.target.span,
                    self.text,
                )
            shape[axis] = unified
        self.sizes.shapes[node.target.name] = shape
        for var, extent in zip(before.indices, shape, strict=True):
            self.sizes.extents[var] = extent
        renamed = ir.subs(statement.rhs, dict(zip(statement.indices, before.indices, strict=True)))
        span = (before.span[0], node.span[1]) if before.span is not None else node.span
        return replace(before, rhs=ir.make_add([before.rhs, renamed]), span=span)

    def run(self, statements: list[SStatement]) -> Program:
        written: set[str] = set()
        result: list[ir.Statement] = []
        for k, node in enumerate(statements):
            target = node.target.name
            if target in written:
                if node.accumulates and result[-1].target == target:
                    result[-1] = self._accumulate(result[-1], k, node, written)
                    continue
                raise IndexNotationError(
                    f"{target!r} is written twice (several '+=' statements into one tensor "
                    "add up when they follow one another)",
                    node.target.span,
                    self.text,
                )
            if target in self.sizes.shapes:
                raise IndexNotationError(
                    f"{target!r} is read before it is written", node.target.span, self.text
                )
            result.append(self.statement(k, node, written))
            written.add(target)
        # sizes substituted during unification must reach the statements too
        result = [replace(s, rhs=self.sizes.current_node(s.rhs)) for s in result]
        # reads with index functions or pad values, and comparisons, in affine pieces
        result = [
            rewrite_statement(
                s, self.sizes.shapes, self.sizes.extents, self.names.taken, self.written(s.span)
            )
            if s.span is not None and needs_rewrite(s.rhs)
            else s
            for s in result
        ]
        # every tensor read is an input, also one whose reads fold away (0*B[j]: its
        # pullback is zero), in the order of first reading
        inputs = tuple(name for name in self.sizes.shapes if name not in written)
        values: dict[str, int | float] = {}
        mapping: dict[sympy.Symbol, sympy.Expr] = {}
        for name, value in self.arguments.param_values.items():
            if value is None:
                continue
            symbol = self.names.param_symbols[name]
            values[name] = value
            mapping[symbol] = (
                sympy.Integer(int(value))
                if isinstance(value, numbers.Integral) or value == int(value)
                else sympy.nsimplify(float(value), rational=True)
            )
        params = tuple(s for n, s in sorted(self.names.param_symbols.items()) if s not in mapping)
        program = Program(
            text=self.text,
            statements=tuple(result),
            shapes={k: tuple(v) for k, v in self.sizes.shapes.items()},
            inputs=inputs,
            params=params,
            sizes=tuple(self.sizes.size_symbols),
            values=values,
            extents=dict(self.sizes.extents),
            definitions={k: self.sizes.current(v) for k, v in self.sizes.definitions.items()},
            index_arrays=self.index_arrays,
        )
        if not mapping:
            return program
        given = substitute(program, mapping)
        for before, after in zip(program.statements, given.statements, strict=True):
            self._check_real(before, after, mapping)
        return given

    def _check_real(
        self, before: ir.Statement, after: ir.Statement, mapping: Mapping[sympy.Symbol, sympy.Expr]
    ) -> None:
        """A constant that the parameters' values make complex (``(-alpha)**0.5`` with
        ``alpha = 0.7``) is refused at the statement, naming the constant and the values."""
        constants = [n for n in ir.walk(before.rhs) if isinstance(n, ir.Const)]
        for node in ir.walk(after.rhs):
            if not (isinstance(node, ir.Const) and node.value.is_number):
                continue
            if node.value.is_extended_real is False:
                values = ", ".join(
                    f"{name} = {value}"
                    for name, value in sorted(self.arguments.param_values.items())
                    if value is not None
                )
                # the constant as written in parameters, where substitution kept the tree
                written = next(
                    (
                        c
                        for c in constants
                        if c.value.free_symbols and c.value.xreplace(mapping) == node.value
                    ),
                    None,
                )
                what = f"the constant {written.value}" if written else "a constant"
                span = (written.span if written else None) or before.span
                raise IndexNotationError(
                    f"{what} is not a real number with {values} ({node.value})", span, self.text
                )


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside einderive: a warning points at the
    user's call, not at the analysis."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level
