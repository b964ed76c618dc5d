"""NumPy loops: the forward and every pullback as standalone Python functions.

    dX[p, q] = sum_{i,j}(dY[i, j] * W[p - s*i + 1, q - s*j + 1])

becomes

    dX = np.zeros((N_X0, N_X1))
    for p in range(N_X0):
        for q in range(N_X1):
            acc = 0.0
            for i in range(max(0, -(-(p - M + 2) // s)), min(I, (p + 1) // s + 1)):
                for j in range(...):
                    acc += dY[i, j] * W[p - s*i + 1, q - s*j + 1]
            dX[p, q] = acc

Each statement is a zeroed array and one loop per index; each top-level
``sum_`` term is nested loops with the exact bounds of ``solve.loop_bounds``
and an ``if`` for the conditions left over. A read that may fall outside its
tensor is tested (it is zero there); a read the bounds keep inside is not.
Reductions inside an expression (the denominator of a softmax, ``max_``, the
argmax of a pooling pullback) are computed into a named local first, at the
outermost loop whose variables they use, and computed once.

The code is a tree of ``sympy.codegen.ast`` nodes (``For``, ``Assignment``,
``aug_assign``, ``CodeBlock``, ``Return``, plus ``If`` and ``PythonFunction``
here) printed by ``LoopsPrinter``, a ``PythonCodePrinter`` that adds the
statements the Python printers lack and the integer arithmetic of bounds
(``a // b`` for floor, ``-(-a // b)`` for ceiling).
"""

from __future__ import annotations

import functools
import itertools
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import sympy
from sympy.codegen.ast import (
    Assignment,
    AugmentedAssignment,
    CodeBlock,
    For,
    Return,
    String,
    Token,
    aug_assign,
    none,
)
from sympy.printing.pycode import PythonCodePrinter

from .. import ir
from ..affine import lowest, proves
from ..functions import FUNCTIONS
from ..solve import Bounds, definition_facts, quotient
from ..solve import loop_bounds as _loop_bounds
from .text import statement_text, variables_of

if TYPE_CHECKING:
    from ..model import Derivation

WIDTH = 99  # the longest line printed, indentation included
NodeT = TypeVar("NodeT", bound=ir.Node)


# ---- statements the Python printers lack -----------------------------------------------------


def _block(body: Any) -> CodeBlock:
    return body if isinstance(body, CodeBlock) else CodeBlock(*body)


class If(Token):
    """``if condition:`` and an indented body."""

    __slots__ = _fields = ("condition", "body")
    _construct_body = staticmethod(_block)


class Unpack(Token):
    """``M, N = W.shape`` (a ``_`` for a size already known)."""

    __slots__ = _fields = ("targets", "array")


class ShapeCheck(Token):
    """``assert X.shape == (7, 7)``, where an input's shape is fixed by the others."""

    __slots__ = _fields = ("array", "shape")


class Ranked(Token):
    """Statements whose index expressions list variables in ``order``: ``p - s*i + 1``."""

    __slots__ = _fields = ("order", "body")
    _construct_order = staticmethod(lambda order: sympy.Tuple(*order))
    _construct_body = staticmethod(_block)


class PythonFunction(Token):
    """``def name(positional, *, keywords):`` with a docstring and a body."""

    __slots__ = _fields = ("name", "parameters", "keywords", "docstring", "body")
    _construct_name = staticmethod(String)
    _construct_docstring = staticmethod(String)
    _construct_parameters = staticmethod(lambda names: sympy.Tuple(*names))
    _construct_keywords = staticmethod(lambda names: sympy.Tuple(*names))
    _construct_body = staticmethod(_block)


# ---- values and conditions -------------------------------------------------------------------


class _Value(sympy.Expr):
    is_commutative = True


class Where(_Value):
    """``value`` where ``condition`` holds, else zero: ``(value if condition else 0.0)``."""


class TrueDivide(_Value):
    """``a / b`` for an index that is compared, not read (a fraction never matches)."""


class AsNumber(_Value):
    """An index variable read as a number (``X[i] + i``): float arithmetic, not indexing."""


def index_value(value: sympy.Expr) -> sympy.Expr:
    """A constant with its integer symbols (indices, integer parameters) read as numbers."""
    integers = [s for s in value.free_symbols if s.is_integer]
    return value.xreplace({s: AsNumber(s) for s in integers}) if integers else value


class Called(_Value):
    """``function(a, b)``, the arguments in the order given: ``max(largest, X[i])``."""


class ElementwiseBase(sympy.Function):
    """A function of the notation applied to one value; ``notation`` names it.

    (sympy's printers dispatch a Function subclass to a base class only if its
    name ends in ``Base``.)
    """

    is_commutative = True
    notation = ""


ELEMENTWISE = {
    name: type(f"Notation_{name}", (ElementwiseBase,), {"notation": name}) for name in FUNCTIONS
}


class Condition(sympy.Basic):
    """A test in an ``if``."""


class Bounded(Condition):
    """``low <= index < stop``, either side left out when it is ``none``."""


class AtLeastZero(Condition):
    """An affine ``expr >= 0``, printed with the index terms on the left."""


class IsZero(Condition):
    """An affine ``expr == 0``."""


class Divides(Condition):
    """``expr % modulus == 0``."""


class AllOf(Condition):
    """``a and b and ...``."""


class AnyOf(Condition):
    """``a or b or ...``."""


class IsNone(Condition):
    """``name is None``: nothing found yet."""


def _all_of(conditions: Sequence[sympy.Basic]) -> sympy.Basic:
    return conditions[0] if len(conditions) == 1 else AllOf(*conditions)


# ---- the printer -----------------------------------------------------------------------------

# precedence levels, loosest first
ADD, UNARY, MUL, POW, ATOM = range(5)


def _negative(expr: sympy.Basic) -> bool:
    if isinstance(expr, sympy.Number):
        return bool(expr < 0)
    if isinstance(expr, sympy.Mul):
        first = expr.args[0]
        return isinstance(first, sympy.Number) and bool(first < 0)
    return False


def _negate(expr: sympy.Expr) -> sympy.Expr:
    """The magnitude of a negative term, keeping an unevaluated product unevaluated."""
    if isinstance(expr, sympy.Mul) and _is_value(expr):
        first, *rest = expr.args
        if first == -1:
            return rest[0] if len(rest) == 1 else sympy.Mul(*rest, evaluate=False)
        return sympy.Mul(-first, *rest, evaluate=False)
    return -expr


def _is_value(expr: sympy.Basic) -> bool:
    """A floating-point value (reads, locals, functions), not integer index arithmetic."""
    if expr.atoms(sympy.Indexed, _Value, ElementwiseBase):
        return True
    return any(not s.is_integer for s in expr.free_symbols)


def _inverse(power: sympy.Pow) -> sympy.Expr:
    """``1 / power`` for a negative exponent: ``x**-2 -> x**2``, ``x**-1 -> x``."""
    base, exponent = power.args
    return base if exponent == -1 else sympy.Pow(base, -exponent, evaluate=False)


class PullbackCalls(Token):
    """``return pullback_W(dY, W, X), pullback_X(dY, W, X)``: every pullback, one call each."""

    __slots__ = _fields = ("functions", "arguments", "keywords")
    _construct_functions = staticmethod(lambda names: sympy.Tuple(*map(String, names)))
    _construct_arguments = staticmethod(lambda names: sympy.Tuple(*names))
    _construct_keywords = staticmethod(lambda names: sympy.Tuple(*names))


class LoopsPrinter(PythonCodePrinter):
    """Python source for ``sympy.codegen.ast`` loops over NumPy arrays.

    ``order`` ranks index variables, so that ``p - s*i + 1`` reads in the order
    of the loops; floating-point values keep the order of the derivation.
    """

    # a name of the notation that Python or the emitted code needs gets a trailing "_"
    reserved_words = PythonCodePrinter.reserved_words | {"np", "math", "range", "max", "min", "abs"}

    def __init__(self, order: Sequence[sympy.Symbol] = ()) -> None:
        super().__init__({"fully_qualified_modules": True})
        self.ranks = {v: k for k, v in enumerate(dict.fromkeys(order))}
        self._depth = 0
        self._split_indices = False

    # ---- blocks ------------------------------------------------------------------------------

    def _indented(self, block: CodeBlock) -> str:
        self._depth += 1
        try:
            text = self._print(block)
        finally:
            self._depth -= 1
        return "\n".join(self.tab + line if line else line for line in text.split("\n"))

    def _print_CodeBlock(self, block: CodeBlock) -> str:
        return "\n".join(self._print(statement) for statement in block.args)

    def _fits(self, text: str, depth: int = 0) -> bool:
        indent = len(self.tab) * (self._depth + depth)
        return all(indent + len(line) <= WIDTH for line in text.split("\n"))

    def _print_PullbackCalls(self, node: PullbackCalls) -> str:
        arguments = [self._print(a) for a in node.arguments]
        arguments += [f"{self._print(k)}={self._print(k)}" for k in node.keywords]
        calls = [f"{f.text}({', '.join(arguments)})" for f in node.functions]
        line = "return " + ", ".join(calls) + ("," if len(calls) == 1 else "")
        if self._fits(line):
            return line
        return "return (\n" + "".join(f"{self.tab}{call},\n" for call in calls) + ")"

    def _wrap(self, head: str, pieces: Callable[[], list[str]], tail: str, joined: str) -> str:
        """``head joined tail`` on one line if it fits, else one piece a line inside brackets.

        A piece still too long has its reads broken, one index a line.
        """
        line = f"{head}{joined}{tail}"
        if self._fits(line):
            return line
        for split in (False, True):
            self._split_indices = split
            try:
                parts = pieces()
            finally:
                self._split_indices = False
            inner = "\n".join(textwrap.indent(part, self.tab) for part in parts)
            if self._fits(inner) or split:
                break
        if len(parts) < 2 and "\n" not in inner:
            return line
        return f"{head}(\n{inner}\n){tail}"

    def _print_PythonFunction(self, node: PythonFunction) -> str:
        parameters = [self._print(p) for p in node.parameters]
        if node.keywords:
            parameters += ["*", *(self._print(k) for k in node.keywords)]
        head = f"def {node.name.text}({', '.join(parameters)}):"
        docstring = String(f'"""{node.docstring.text}\n"""')
        return f"{head}\n{self._indented(CodeBlock(docstring, *node.body.args))}"

    def _print_For(self, node: For) -> str:
        start, stop, _ = node.iterable.args
        arguments = [self._print(stop)] if start == 0 else [self._print(start), self._print(stop)]
        head = f"for {self._print(node.target)} in range("
        line = f"{head}{', '.join(arguments)}):"
        if not self._fits(line):
            inner = ", ".join(arguments)
            if not self._fits(inner, 1):
                inner = ",\n".join(arguments) + ","
            line = f"{head}\n{textwrap.indent(inner, self.tab)}\n):"
        return f"{line}\n{self._indented(node.body)}"

    def _print_Ranked(self, node: Ranked) -> str:
        ranks = self.ranks
        self.ranks = {v: k for k, v in enumerate(node.order)}
        try:
            return self._print(node.body)
        finally:
            self.ranks = ranks

    def _conditions(self, condition: sympy.Basic) -> list[str]:
        if not isinstance(condition, AllOf):
            return [self._print(condition)]
        pieces = [self._print(c) for c in condition.args]
        return pieces[:1] + [f"and {p}" for p in pieces[1:]]

    def _print_If(self, node: If) -> str:
        condition = node.condition
        head = self._wrap("if ", lambda: self._conditions(condition), ":", self._print(condition))
        return f"{head}\n{self._indented(node.body)}"

    def _print_Unpack(self, node: Unpack) -> str:
        targets = ", ".join(self._print(t) for t in node.targets)
        if len(node.targets) == 1:
            targets = f"({targets},)"
        return f"{targets} = {self._print(node.array)}.shape"

    def _print_ShapeCheck(self, node: ShapeCheck) -> str:
        # the message names the tensor: an op called with a wrong shape says which
        array, shape = self._print(node.array), self._tuple(node.shape.args)
        message = f'f"{array} has shape {{tuple({array}.shape)}}, not {{{shape}}}"'
        line = f"assert {array}.shape == {shape}, {message}"
        if len(line) <= WIDTH - 8:  # inside a function and, perhaps, a loop
            return line
        return f"assert {array}.shape == {shape}, (\n    {message}\n)"

    def _tuple(self, items: Sequence[sympy.Basic]) -> str:
        printed = [self._print(item) for item in items]
        return f"({printed[0]},)" if len(printed) == 1 else f"({', '.join(printed)})"

    def _print_Return(self, node: Return) -> str:
        return f"return {self._print(node.args[0])}"

    def _print_String(self, node: String) -> str:
        return node.text

    def _print_Assignment(self, node: Assignment) -> str:
        return self._assign(node.lhs, "=", node.rhs)

    def _print_AugmentedAssignment(self, node: AugmentedAssignment) -> str:
        return self._assign(node.lhs, node.op, node.rhs)

    def _assign(self, lhs: sympy.Basic, op: str, rhs: sympy.Basic) -> str:
        if rhs == none:
            return f"{self._print(lhs)} {op} None"
        head = f"{self._print(lhs)} {op} "
        return self._wrap(head, lambda: self._pieces(rhs), "", self._print(rhs))

    def _pieces(self, expr: sympy.Basic) -> list[str]:
        """A long value broken before its top-level operators."""
        if isinstance(expr, sympy.Add) and _is_value(expr):
            terms = self._add_terms(expr)
            return [terms[0]] + [
                f"{op} {text}" for op, text in zip(*self._signs(terms), strict=True)
            ]
        if isinstance(expr, sympy.Mul) and _is_value(expr):
            sign, numerator, denominator = self._value_factors(expr)
            pieces = [f"{sign}{numerator[0]}"] + [f"* {f}" for f in numerator[1:]]
            return pieces + [f"/ {f}" for f in denominator]
        return [self._print(expr)]

    # ---- values ------------------------------------------------------------------------------

    def _precedence(self, expr: sympy.Basic) -> int:
        if isinstance(expr, sympy.Add):
            return ADD
        if isinstance(expr, sympy.Mul):
            return UNARY if _negative(expr) else MUL
        if isinstance(expr, sympy.Pow):
            return ATOM if expr.exp == sympy.S.Half else (MUL if expr.exp < 0 else POW)
        if isinstance(expr, TrueDivide):
            return MUL
        if isinstance(expr, sympy.floor | sympy.ceiling):
            # `-a // b` is not `-(a // b)`: a floor division takes brackets after a minus
            return UNARY
        if isinstance(expr, sympy.Rational) and not expr.is_Integer:
            return MUL
        if isinstance(expr, sympy.Number):
            return UNARY if expr < 0 else ATOM
        if isinstance(expr, ElementwiseBase) and not FUNCTIONS[expr.notation].is_atom(self.target):
            return MUL
        return ATOM

    def _operand(self, expr: sympy.Basic, level: int) -> str:
        """``expr`` in brackets where an operator of precedence ``level`` would bind it wrongly."""
        text = self._print(expr)
        return f"({text})" if self._precedence(expr) <= level else text

    def _add_terms(self, expr: sympy.Add) -> list[str]:
        """Each term printed with its sign: ``['p', '-s*i', '1']``."""
        if _is_value(expr):
            terms = list(expr.args)
        else:
            ordered = expr.as_ordered_terms()
            terms = sorted(ordered, key=lambda t: self._term_key(t, ordered.index(t)))
        # lead with a positive term: `9 - p`, not `-p + 9`
        leading = next((k for k, t in enumerate(terms) if not _negative(t)), 0)
        terms.insert(0, terms.pop(leading))
        printed = []
        for term in terms:
            if _negative(term):
                printed.append("-" + self._operand(_negate(term), UNARY))
            else:
                printed.append(self._print(term))
        return printed

    @staticmethod
    def _signs(terms: Sequence[str]) -> tuple[list[str], list[str]]:
        """The operator before each term after the first, and the term without its sign."""
        ops, texts = [], []
        for text in terms[1:]:
            negative = text.startswith("-")
            ops.append("-" if negative else "+")
            texts.append(text[1:] if negative else text)
        return ops, texts

    def _term_key(self, term: sympy.Expr, position: int) -> tuple[int, int]:
        """Index variables in loop order, then sizes and parameters, then the constant."""
        ranks = [self.ranks[s] for s in term.free_symbols if s in self.ranks]
        if ranks:
            return (0, min(ranks))
        return (2, 0) if term.is_number else (1, position)

    def _print_Add(self, expr: sympy.Add) -> str:
        terms = self._add_terms(expr)
        out = terms[0]
        for op, text in zip(*self._signs(terms), strict=True):
            out += f" {op} {text}"
        return out

    def _value_factors(self, expr: sympy.Mul) -> tuple[str, list[str], list[str]]:
        """Sign, numerator and denominator factors of a product of values, in their order."""
        sign = ""
        factors = list(expr.args)
        if _negative(expr):
            sign = "-"
            factors[0] = -factors[0]
        numerator: list[str] = []
        denominator: list[str] = []
        for factor in factors:
            if factor == 1:
                continue
            if isinstance(factor, sympy.Rational) and not factor.is_Integer:
                if factor.p != 1:
                    numerator.append(str(factor.p))
                denominator.append(str(factor.q))
            elif isinstance(factor, sympy.Pow) and factor.exp.is_number and factor.exp < 0:
                denominator.append(self._operand(_inverse(factor), MUL))
            else:
                numerator.append(self._operand(factor, MUL if numerator else UNARY))
        if not numerator:
            numerator = ["1"]
        if len(denominator) > 1:
            denominator = ["(" + " * ".join(denominator) + ")"]
        return sign, numerator, denominator

    def _print_Mul(self, expr: sympy.Mul) -> str:
        if _is_value(expr):
            sign, numerator, denominator = self._value_factors(expr)
            text = sign + " * ".join(numerator)
            return text + "".join(f" / {d}" for d in denominator)
        coefficient, rest = expr.as_coeff_Mul()
        if not coefficient.is_Integer:
            raise ValueError(f"{expr} is not integer arithmetic")
        factors = sorted(
            sympy.Mul.make_args(rest),
            key=lambda f: (f in self.ranks, self.ranks.get(f, 0), sympy.default_sort_key(f)),
        )
        parts = [self._operand(f, MUL) for f in factors]
        if coefficient == -1:
            return "-" + "*".join(parts)
        if coefficient != 1:
            parts.insert(0, str(coefficient))
        return "*".join(parts)

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        base, exponent = expr.args
        if exponent == sympy.S.Half:
            return f"{self._module_format('math.sqrt')}({self._print(base)})"
        if exponent.is_number and exponent < 0:
            return f"1 / {self._operand(_inverse(expr), MUL)}"
        power = str(exponent) if exponent.is_Integer else f"({exponent})"
        return f"{self._operand(base, POW)}**{power}"

    def _print_Integer(self, expr: sympy.Integer) -> str:
        return str(expr)

    def _print_Rational(self, expr: sympy.Rational) -> str:
        return f"{expr.p}/{expr.q}"

    def _print_Float(self, expr: sympy.Float) -> str:
        return repr(float(expr))

    def _print_NegativeInfinity(self, expr: sympy.Basic) -> str:
        return "-" + self._module_format("math.inf")

    def _print_Infinity(self, expr: sympy.Basic) -> str:
        return self._module_format("math.inf")

    def _print_Where(self, expr: Where) -> str:
        value, condition = expr.args
        return f"({self._print(value)} if {self._print(condition)} else 0.0)"

    def _print_AsNumber(self, expr: AsNumber) -> str:
        return self._print(expr.args[0])

    def _print_Called(self, expr: Called) -> str:
        function, *args = expr.args
        return f"{function.text}({', '.join(self._print(a) for a in args)})"

    def _print_Tuple(self, expr: sympy.Tuple) -> str:
        return self._tuple(expr.args)

    def _print_TrueDivide(self, expr: TrueDivide) -> str:
        numerator, denominator = expr.args
        return f"{self._operand(numerator, UNARY)} / {self._operand(denominator, MUL)}"

    target = "loops"  # the spelling of FUNCTIONS this printer uses

    def _print_ElementwiseBase(self, expr: ElementwiseBase) -> str:
        function = FUNCTIONS[expr.notation]
        spelling = getattr(function, self.target)
        if "math." in spelling:
            self._module_format("math." + expr.notation)  # the module imports math
        arg = expr.args[0]
        argument = {"x": self._print(arg)}
        if len(expr.args) > 1:
            argument["y"] = self._print(expr.args[1])
        if "{x_operand}" in spelling:
            argument["x_operand"] = self._operand(arg, MUL)
        if "{minus_x}" in spelling:
            argument["minus_x"] = self._print(sympy.Mul(-1, arg, evaluate=False))
        return function.spell(self.target, **argument)

    def _print_AppliedUndef(self, expr: sympy.Expr) -> str:
        # sympy dispatches the read of an index array (ir.IndexRead) as an AppliedUndef
        assert isinstance(expr, ir.IndexRead)
        return f"{expr.array}[{', '.join(self._print(a) for a in expr.args)}]"

    def _print_Indexed(self, expr: sympy.Indexed) -> str:
        indices = [self._print(i) for i in expr.indices]
        name = self._print(expr.base.label)
        line = f"{name}[{', '.join(indices)}]"
        # inside a wrapped statement: one piece a line, after an operator
        if self._split_indices and not self._fits(f"* {line}", 1):
            return f"{name}[\n" + "".join(f"{self.tab}{i},\n" for i in indices) + "]"
        return line

    # ---- integer arithmetic of bounds and indices --------------------------------------------

    def _numerator(self, expr: sympy.Expr) -> str:
        text = self._print(expr)
        simple = isinstance(expr, sympy.Symbol) or (expr.is_Integer and expr >= 0)
        return text if simple else f"({text})"

    def _print_floor(self, expr: sympy.floor) -> str:
        numerator, denominator = quotient(expr.args[0])
        if denominator == 1:
            return self._print(numerator)
        return f"{self._numerator(numerator)} // {self._operand(denominator, MUL)}"

    def _print_ceiling(self, expr: sympy.ceiling) -> str:
        numerator, denominator = quotient(expr.args[0])
        if denominator == 1:
            return self._print(numerator)
        # ceil(a / b) == -(-a // b)
        if all(_negative(t) for t in sympy.Add.make_args(numerator)):
            inner = self._numerator(-numerator)
        else:
            inner = "-" + self._numerator(numerator)
        return f"-({inner} // {self._operand(denominator, MUL)})"

    def _print_Max(self, expr: sympy.Max) -> str:
        return f"max({', '.join(self._print(a) for a in _numbers_first(expr.args))})"

    def _print_Min(self, expr: sympy.Min) -> str:
        return f"min({', '.join(self._print(a) for a in _numbers_first(expr.args))})"

    # ---- conditions --------------------------------------------------------------------------

    def _print_Bounded(self, cond: Bounded) -> str:
        low, index, stop = cond.args
        text = self._print(index)
        if low != none:
            text = f"{self._print(low)} <= {text}"
        if stop != none:
            text = f"{text} < {self._print(stop)}"
        return text

    def _sides(self, expr: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr, bool]:
        """``expr`` (>= or == 0) as ``left`` against ``right``, index terms with a plus sign left.

        The third value says whether the relation flips (``<=``).
        """
        expr = ir.expand(expr)
        terms = sympy.Add.make_args(expr)
        indexed = [t for t in terms if t.free_symbols & set(self.ranks)] or list(terms)
        indexed.sort(key=lambda t: self._term_key(t, 0))
        flipped = not any(not _negative(t) for t in indexed)
        if flipped:
            expr = -expr
            indexed = [-t for t in indexed]
        left = sympy.Add(*(t for t in indexed if not _negative(t)))
        return left, ir.expand(left - expr), flipped

    def _print_AtLeastZero(self, cond: AtLeastZero) -> str:
        left, right, flipped = self._sides(cond.args[0])
        return f"{self._print(left)} {'<=' if flipped else '>='} {self._print(right)}"

    def _print_IsZero(self, cond: IsZero) -> str:
        expr = cond.args[0]
        terms = sorted(sympy.Add.make_args(expr), key=lambda t: self._term_key(t, 0))
        # the first index positive: `p == q`, not `q == p`
        left, right, _ = self._sides(-expr if _negative(terms[0]) else expr)
        return f"{self._print(left)} == {self._print(right)}"

    def _print_Divides(self, cond: Divides) -> str:
        modulus, expr = cond.args
        return f"{self._numerator(expr)} % {self._operand(modulus, MUL)} == 0"

    def _print_AllOf(self, cond: AllOf) -> str:
        return " and ".join(self._print(c) for c in cond.args)

    def _print_AnyOf(self, cond: AnyOf) -> str:
        return " or ".join(self._print(c) for c in cond.args)

    def _print_IsNone(self, cond: IsNone) -> str:
        return f"{self._print(cond.args[0])} is None"

    def _print_Relational(self, cond: sympy.core.relational.Relational) -> str:
        return f"{self._print(cond.lhs)} {cond.rel_op} {self._print(cond.rhs)}"


def _numbers_first(args: Sequence[sympy.Expr]) -> list[sympy.Expr]:
    return sorted(args, key=lambda a: (not a.is_number, sympy.default_sort_key(a)))


# ---- from IR to loops ------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def loop_bounds(
    variables: tuple[sympy.Symbol, ...], where: tuple[ir.Constraint, ...]
) -> tuple[list[Bounds], list[ir.Constraint]]:
    """``solve.loop_bounds``, once per domain (a reduction is printed in several places)."""
    return _loop_bounds(variables, where)


def _canonical(node: ir.Node, depth: int = 0) -> ir.Node:
    """``node`` with bound variables renamed by position, so equal reductions compare equal."""
    if isinstance(node, ir.Reduce | ir.IsExtremum):
        mapping = {
            v: sympy.Symbol(f"_{depth}_{k}", integer=True) for k, v in enumerate(node.variables)
        }
        return replace(
            node,
            variables=tuple(mapping.values()),
            body=_canonical(ir.subs(node.body, mapping), depth + 1),
            where=tuple(c.subs(mapping) for c in node.where),
        )
    if isinstance(node, ir.Add):
        return replace(node, terms=tuple(_canonical(t, depth) for t in node.terms))
    if isinstance(node, ir.Mul):
        return replace(node, factors=tuple(_canonical(f, depth) for f in node.factors))
    if isinstance(node, ir.Pow):
        return replace(node, base=_canonical(node.base, depth))
    if isinstance(node, ir.Call):
        return ir.map_children(node, lambda child: _canonical(child, depth))
    return node


def _summed(term: ir.Node) -> tuple[sympy.Expr, ir.Reduce] | None:
    """A top-level term ``c * sum_{...}(...)`` as its coefficient and its sum, else None."""
    coefficient: sympy.Expr = sympy.Integer(1)
    if (
        isinstance(term, ir.Mul)
        and len(term.factors) == 2
        and isinstance(term.factors[0], ir.Const)
    ):
        coefficient, term = term.factors[0].value, term.factors[1]
    if isinstance(term, ir.Reduce) and term.op == "sum" and term.variables:
        return coefficient, term
    return None


def _plus_one(high: sympy.Expr) -> sympy.Expr:
    """The stop of ``range`` for an inclusive bound: ``min(I - 1, f) + 1 = min(I, f + 1)``."""
    if isinstance(high, sympy.Min):
        return sympy.Min(*(ir.expand(a + 1) for a in high.args))
    return ir.expand(high + 1)


def _nonempty(variables: Sequence[sympy.Symbol], where: Sequence[ir.Constraint]) -> bool:
    """Whether a domain is provably non-empty (a box of positive extents)."""
    bounds, conditions = loop_bounds(tuple(variables), tuple(where))
    if conditions:
        return False
    for bound in bounds:
        try:
            low = lowest(bound.high - bound.low)
        except ValueError:
            return False
        if low is None or low < 0:
            return False
    return True


def _assignment(target: sympy.Basic, op: str, value: sympy.Expr) -> sympy.Basic:
    if op == "=":
        return Assignment(target, value)
    return aug_assign(target, op[0], value)


@dataclass
class _Block:
    """The statements of one loop body (or ``if`` body) being built.

    ``bound`` are the index variables in scope, outermost first; ``facts`` the affine
    conditions known to
    hold there (``>= 0`` each), ``divisors`` the divisibility ones; ``cache`` the
    reductions already computed into a local.
    """

    statements: list[sympy.Basic]
    bound: tuple[sympy.Symbol, ...] = ()
    facts: tuple[sympy.Expr, ...] = ()
    divisors: tuple[ir.Constraint, ...] = ()
    cache: dict[ir.Node, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Loop:
    var: sympy.Symbol
    start: sympy.Expr
    stop: sympy.Expr
    facts: tuple[ir.Constraint, ...] = ()


@dataclass(frozen=True)
class _Test:
    conditions: tuple[ir.Constraint, ...]
    facts: tuple[ir.Constraint, ...] = ()


class _Builder:
    """Lowers IR statements to ``sympy.codegen.ast`` statements, one function at a time."""

    def __init__(
        self,
        shapes: dict[str, tuple[sympy.Expr, ...]],
        definitions: dict[sympy.Symbol, sympy.Expr],
        taken: set[str],
    ) -> None:
        self.shapes = shapes
        # sizes defined without floor are replaced by their definition, the others give facts
        self.exact = {
            s: d
            for s, d in definitions.items()
            if not d.has(sympy.floor, sympy.ceiling, sympy.Min, sympy.Max)
        }
        facts = [f for s, d in definitions.items() for f in definition_facts(s, d)]
        self.taken = set(taken)
        self.chain = [_Block([], facts=tuple(ir.expand(f.xreplace(self.exact)) for f in facts))]
        self._accumulator: sympy.Symbol | None = None

    # ---- scopes ------------------------------------------------------------------------------

    def fresh(self, stem: str) -> sympy.Symbol:
        for k in itertools.count(1):
            name = stem if k == 1 else f"{stem}{k}"
            if name not in self.taken:
                self.taken.add(name)
                return sympy.Symbol(name, real=True)
        raise AssertionError  # pragma: no cover

    @property
    def accumulator(self) -> sympy.Symbol:
        if self._accumulator is None:
            self._accumulator = self.fresh("acc")
        return self._accumulator

    def emit(self, *statements: sympy.Basic) -> None:
        self.chain[-1].statements.extend(statements)

    @contextmanager
    def scope(
        self, variables: Sequence[sympy.Symbol] = (), facts: Sequence[ir.Constraint] = ()
    ) -> Iterator[_Block]:
        parent = self.chain[-1]
        ge: list[sympy.Expr] = []
        divisors: list[ir.Constraint] = []
        for fact in facts:
            fact = ir.normalise(fact)
            expr = ir.expand(fact.expr.xreplace(self.exact))
            if fact.kind == "ge":
                ge.append(expr)
            elif fact.kind == "eq":
                ge += [expr, -expr]
            else:
                divisors.append(fact)
        block = _Block(
            [],
            parent.bound + tuple(v for v in variables if v not in parent.bound),
            tuple(dict.fromkeys(parent.facts + tuple(ge))),
            parent.divisors + tuple(divisors),
        )
        self.chain.append(block)
        try:
            yield block
        finally:
            self.chain.pop()

    def nest(self, steps: Sequence[_Loop | _Test], inner: Callable[[], None]) -> None:
        """Loops and tests, outermost first, around what ``inner`` emits."""
        if not steps:
            inner()
            return
        step = steps[0]
        variables = (step.var,) if isinstance(step, _Loop) else ()
        with self.scope(variables, step.facts) as block:
            self.nest(steps[1:], inner)
        if isinstance(step, _Loop):
            self.emit(For(step.var, sympy.Range(step.start, step.stop), block.statements))
        else:
            conditions = [self.condition(c) for c in step.conditions]
            self.emit(If(_all_of(conditions), block.statements))

    def loop_steps(
        self, variables: Sequence[sympy.Symbol], where: Sequence[ir.Constraint]
    ) -> list[_Loop | _Test]:
        """The exact loops over a domain, each leftover condition right after its last variable."""
        bounds, conditions = loop_bounds(tuple(variables), tuple(where))
        level = {v: k for k, v in enumerate(variables)}
        by_level: dict[int, list[ir.Constraint]] = {}
        for condition in conditions:
            deepest = max((level[s] for s in condition.free_symbols if s in level), default=-1)
            by_level.setdefault(deepest, []).append(condition)
        steps: list[_Loop | _Test] = []
        if -1 in by_level:
            steps.append(_Test(tuple(by_level[-1]), tuple(by_level[-1])))
        for k, bound in enumerate(bounds):
            if not bound.lower or not bound.upper:
                raise ValueError(f"the domain of {bound.var} is unbounded")
            steps.append(_Loop(bound.var, bound.low, _plus_one(bound.high)))
            if k in by_level:
                steps.append(_Test(tuple(by_level[k])))
        # inside the innermost loop every constraint of the domain holds
        last = steps[-1]
        steps[-1] = replace(last, facts=last.facts + tuple(where))
        return steps

    # ---- conditions and reads ----------------------------------------------------------------

    def holds(self, constraint: ir.Constraint) -> bool:
        block = self.chain[-1]
        expr = ir.expand(ir.normalise(constraint).expr.xreplace(self.exact))
        if expr in block.facts:  # tested already (0 <= tok[b], which the prover cannot read)
            return True
        return proves(expr, block.facts, block.bound)

    def divisible(self, numerator: sympy.Expr, denominator: sympy.Expr) -> bool:
        for fact in self.chain[-1].divisors:
            if not sympy.simplify(fact.modulus / denominator).is_integer:
                continue
            if ir.expand(numerator - fact.expr) == 0 or ir.expand(numerator + fact.expr) == 0:
                return True
        return False

    def condition(self, constraint: ir.Constraint) -> Condition:
        if constraint.kind == "ge":
            return AtLeastZero(constraint.expr)
        if constraint.kind == "eq":
            return IsZero(constraint.expr)
        return Divides(constraint.modulus, constraint.expr)

    def integer_index(self, expr: sympy.Expr) -> tuple[sympy.Expr, Condition | None]:
        """An index as integer arithmetic, and the divisibility test it needs (if not known)."""
        numerator, denominator = quotient(expr)
        if denominator == 1:
            return ir.expand(expr), None
        index = sympy.floor(numerator / denominator, evaluate=False)
        if self.divisible(numerator, denominator):
            return index, None
        return index, Divides(denominator, numerator)

    def read_tests(self, access: ir.Access) -> tuple[list[Condition], list[ir.Constraint]]:
        """What a read must pass to be inside its tensor, and the facts that follow from it
        (first those of the index arrays it reads through: ``tok[b]`` inside ``tok``)."""
        tests: list[Condition] = []
        facts: list[ir.Constraint] = []
        inner = sorted(
            {read for e in access.indices for read in ir.index_reads(e)}, key=lambda r: str(r)
        )
        for read in inner:
            found = self.read_tests(ir.Access(read.array, tuple(read.args)))
            tests += found[0]
            facts += found[1]
        for expr, size in zip(access.indices, self.shapes[access.tensor], strict=True):
            index, divisibility = self.integer_index(expr)
            if divisibility is not None:
                tests.append(divisibility)
                facts.append(ir.Constraint("div", *reversed(divisibility.args)))
            low = ir.Constraint("ge", expr)
            high = ir.Constraint("ge", ir.expand(size - 1 - expr))
            check_low, check_high = not self.holds(low), not self.holds(high)
            if check_low or check_high:
                tests.append(Bounded(0 if check_low else none, index, size if check_high else none))
                facts += [low, high]
        return tests, facts

    def read(self, access: ir.Access) -> sympy.Expr:
        if not access.indices:
            return sympy.Symbol(access.tensor, real=True)
        tests, _ = self.read_tests(access)
        base = sympy.IndexedBase(access.tensor, shape=self.shapes[access.tensor])
        read = sympy.Indexed(base, *(self.integer_index(e)[0] for e in access.indices))
        return Where(read, _all_of(tests)) if tests else read

    # ---- values ------------------------------------------------------------------------------

    def value(self, node: ir.Node) -> sympy.Expr:
        """A sympy expression for ``node``; reductions are computed into locals first."""
        if isinstance(node, ir.Const):
            return index_value(node.value)
        if isinstance(node, ir.Access):
            return self.read(node)
        if isinstance(node, ir.Add):
            return sympy.Add(*(self.value(t) for t in node.terms), evaluate=False)
        if isinstance(node, ir.Mul):
            return sympy.Mul(*(self.value(f) for f in node.factors), evaluate=False)
        if isinstance(node, ir.Pow):
            return sympy.Pow(self.value(node.base), node.exponent, evaluate=False)
        if isinstance(node, ir.Call):
            return ELEMENTWISE[node.func](*(self.value(a) for a in node.args), evaluate=False)
        if isinstance(node, ir.Reduce):
            if node.variables:
                return self.hoisted(node, self.reduction)
            body = self.value(node.body)
            if not node.where:
                return body
            return Where(body, _all_of([self.condition(c) for c in node.where]))
        if isinstance(node, ir.IsExtremum):
            return Where(sympy.Float(1.0), self.is_extremum(node))
        raise TypeError(f"unknown node {node!r}")  # pragma: no cover

    def hoisted(self, node: NodeT, compute: Callable[[NodeT], sympy.Symbol]) -> sympy.Symbol:
        """``compute(node)`` emitted once, in the outermost loop whose variables it uses."""
        key = _canonical(node)
        for block in reversed(self.chain):
            if key in block.cache:
                return block.cache[key]
        free = ir.free_index_symbols(node) & set(self.chain[-1].bound)
        level = next(k for k, block in enumerate(self.chain) if free <= set(block.bound))
        chain = self.chain
        self.chain = chain[: level + 1]
        try:
            result = compute(node)
        finally:
            self.chain = chain
        chain[level].cache[key] = result
        return result

    def reduction(self, node: ir.Reduce) -> sympy.Symbol:
        if node.op == "sum":
            total = self.fresh("total")
            self.emit(Assignment(total, sympy.Float(0.0)))
            self.sum_loops(total, sympy.Integer(1), node)
            return total
        if node.op == "prod":
            # every factor, a read outside its tensor as zero: no test skips one
            product = self.fresh("product")
            self.emit(Assignment(product, sympy.Float(1.0)))
            self.nest(
                self.loop_steps(node.variables, node.where),
                lambda: self.emit(aug_assign(product, "*", self.value(node.body))),
            )
            return product
        name = self.fresh("largest" if node.op == "max" else "smallest")
        start = -sympy.oo if node.op == "max" else sympy.oo
        self.emit(Assignment(name, start))

        def update() -> None:
            self.emit(Assignment(name, Called(String(node.op), name, self.value(node.body))))

        self.nest(self.loop_steps(node.variables, node.where), update)
        if not _nonempty(node.variables, node.where):
            # an empty window is zero, as every read outside a tensor
            empty = sympy.Eq(name, start, evaluate=False)
            self.emit(If(empty, [Assignment(name, sympy.Float(0.0))]))
        return name

    def is_extremum(self, node: ir.IsExtremum) -> sympy.Basic:
        """``argmax == at``, the first (row-major) extremum found by a search emitted before."""
        position = self.hoisted(replace(node, at=()), self.search)
        at = []
        for expr in node.at:
            numerator, denominator = quotient(expr)
            if denominator == 1 or self.divisible(numerator, denominator):
                at.append(self.integer_index(expr)[0])
            else:
                at.append(TrueDivide(numerator, denominator))
        return sympy.Eq(position, at[0] if len(at) == 1 else sympy.Tuple(*at), evaluate=False)

    def search(self, node: ir.IsExtremum) -> sympy.Symbol:
        best = self.fresh("best")
        position = self.fresh(f"arg{node.op}")
        value = self.fresh("value")
        self.emit(Assignment(best, none), Assignment(position, none))
        variables = node.variables
        where = variables[0] if len(variables) == 1 else sympy.Tuple(*variables)

        def update() -> None:
            relation = sympy.Gt if node.op == "max" else sympy.Lt
            better = AnyOf(IsNone(best), relation(value, best, evaluate=False))
            self.emit(
                Assignment(value, self.value(node.body)),
                If(better, [Assignment(best, value), Assignment(position, where)]),
            )

        self.nest(self.loop_steps(variables, node.where), update)
        return position

    # ---- statements --------------------------------------------------------------------------

    def sum_loops(self, target: sympy.Symbol, coefficient: sympy.Expr, node: ir.Reduce) -> None:
        body = ir.make_mul([ir.Const(coefficient), node.body])
        self.nest(
            self.loop_steps(node.variables, node.where), lambda: self.store(target, body, "+=")
        )

    def tested(self, term: ir.Node) -> bool:
        """Whether ``store`` would put ``term`` under an ``if``."""
        if isinstance(term, ir.Reduce) and not term.variables:
            return True
        factors = term.factors if isinstance(term, ir.Mul) else (term,)
        return any(
            isinstance(f, ir.IsExtremum)
            or (isinstance(f, ir.Access) and f.indices and self.read_tests(f)[0])
            for f in factors
        )

    def store(
        self, target: sympy.Basic, node: ir.Node, op: str, written: ir.Access | None = None
    ) -> None:
        """``target op node``, under an ``if`` for the factors that are zero outside a test.

        A read outside its tensor, a guard, or a position that is not the argmax makes
        the whole product zero, so the test guards the statement instead of each read.
        A scatter's position (``written``) is tested as a read of the target would be.
        """
        where: tuple[ir.Constraint, ...] = ()
        if isinstance(node, ir.Reduce) and not node.variables:
            where, node = node.where, node.body
        factors = list(node.factors) if isinstance(node, ir.Mul) else [node]
        tests: list[sympy.Basic] = [self.condition(c) for c in where]
        facts = list(where)
        if written is not None:
            position_tests, position_facts = self.read_tests(written)
            tests += position_tests
            facts += position_facts
        kept: list[ir.Node] = []
        with self.scope(facts=where):
            for factor in factors:
                if isinstance(factor, ir.Access) and factor.indices:
                    read_tests, read_facts = self.read_tests(factor)
                    tests += read_tests
                    facts += read_facts
                    kept.append(factor)
                elif isinstance(factor, ir.IsExtremum):
                    tests.append(self.is_extremum(factor))
                else:
                    kept.append(factor)
        product = ir.make_mul(kept)
        if op == "+=" and isinstance(product, ir.Mul | ir.Const):
            first = product.factors[0] if isinstance(product, ir.Mul) else product
            if isinstance(first, ir.Const) and first.value.is_number and first.value < 0:
                op = "-="
                product = ir.make_mul([ir.Const(sympy.Integer(-1)), product])
        if not tests:
            self.emit(_assignment(target, op, self.value(product)))
            return
        if op == "=" and isinstance(target, sympy.Symbol):
            self.emit(Assignment(target, sympy.Float(0.0)))
        with self.scope(facts=facts) as block:
            self.emit(_assignment(target, op, self.value(product)))
        self.emit(If(_all_of(list(dict.fromkeys(tests))), block.statements))

    def point(self, target: sympy.Basic, rhs: ir.Node) -> None:
        """The value of one element of a statement: its terms, summed in ``acc``."""
        terms = list(rhs.terms) if isinstance(rhs, ir.Add) else [rhs]
        if len(terms) == 1 and _summed(terms[0]) is None:
            self.store(target, terms[0], "=")
            return
        if not any(_summed(t) or self.tested(t) for t in terms):
            self.emit(Assignment(target, self.value(rhs)))
            return
        scalar = isinstance(target, sympy.Symbol)
        acc = target if scalar else self.accumulator
        for k, term in enumerate(terms):
            summed = _summed(term)
            if summed is None:
                self.store(acc, term, "=" if k == 0 else "+=")
                continue
            if k == 0:
                self.emit(Assignment(acc, sympy.Float(0.0)))
            self.sum_loops(acc, *summed)
        if not scalar:
            self.emit(Assignment(target, acc))

    def scattered(self, statement: ir.Statement) -> bool:
        """A statement with terms that write through index arrays, one loop nest per term:
        ``for b: for q: if 0 <= tok[b] < V: dE[tok[b], q] += dY[b, q]`` for a scatter."""
        terms = statement.rhs.terms if isinstance(statement.rhs, ir.Add) else (statement.rhs,)
        scatters = [ir.scatter(term, statement.indices) for term in terms]
        if not any(scatters):
            return False
        shape = self.shapes[statement.target]
        base = sympy.IndexedBase(statement.target, shape=shape)
        boxes = dict(zip(statement.indices, shape, strict=True))
        for term, found in zip(terms, scatters, strict=True):
            steps: list[_Loop | _Test]
            if found is None:
                steps = [_Loop(v, sympy.Integer(0), n, ir.box(v, n)) for v, n in boxes.items()]
                target = sympy.Indexed(base, *statement.indices)
                self.nest(steps, functools.partial(self.add_term, target, term))
                continue
            free = [v for v in statement.indices if v not in found.writes]
            # conditions on the target's own variables are tested inside their loops
            outer = [c for c in found.where if not c.free_symbols & set(free)]
            inner = tuple(c for c in found.where if c.free_symbols & set(free))
            steps = self.loop_steps(found.variables, outer)
            steps += [_Loop(v, sympy.Integer(0), boxes[v], ir.box(v, boxes[v])) for v in free]
            if inner:
                steps.append(_Test(inner, inner))
            positions = found.positions(statement.indices)
            written = ir.Access(statement.target, positions)
            target = sympy.Indexed(base, *(self.integer_index(e)[0] for e in positions))
            self.nest(steps, functools.partial(self.store, target, found.body, "+=", written))
        return True

    def add_term(self, target: sympy.Basic, term: ir.Node) -> None:
        """``target += term`` at one point (a sum's loops inside)."""
        summed = _summed(term)
        if summed is None:
            self.store(target, term, "+=")
        else:
            self.sum_loops(target, *summed)

    def statement(self, statement: ir.Statement) -> None:
        shape = self.shapes[statement.target]
        if statement.indices:
            zeros = Called(String("np.zeros"), sympy.Tuple(*shape))
            self.emit(Assignment(sympy.Symbol(statement.target), zeros))
            base = sympy.IndexedBase(statement.target, shape=shape)
            target: sympy.Basic = sympy.Indexed(base, *statement.indices)
            if self.scattered(statement):
                return
        else:
            target = sympy.Symbol(statement.target, real=True)
        if statement.rhs == ir.ZERO:
            if not statement.indices:
                self.emit(Assignment(target, sympy.Float(0.0)))
            return
        steps = [
            _Loop(v, sympy.Integer(0), n, ir.box(v, n))
            for v, n in zip(statement.indices, shape, strict=True)
        ]
        self.nest(steps, lambda: self.point(target, statement.rhs))

    def ranked_statement(self, statement: ir.Statement) -> None:
        """``statement`` and what it hoists before its loops, printed in its own variable order."""
        outer = self.chain[0].statements
        start = len(outer)
        self.statement(statement)
        outer[start:] = [Ranked(variables_of(statement), outer[start:])]

    def body(self) -> list[sympy.Basic]:
        return self.chain[0].statements


# ---- functions and the module ----------------------------------------------------------------


_RESERVED = {"np", "math", "range", "max", "min", "abs", "None", "_"}


def _symbols_of(statement: ir.Statement) -> set[sympy.Symbol]:
    found = set(ir.free_index_symbols(statement.rhs))
    for node in ir.walk(statement.rhs):
        if isinstance(node, ir.Const):
            found |= node.value.free_symbols
    return found


@dataclass
class _Source:
    """What every function of one derivation shares."""

    derivation: Derivation
    printer: LoopsPrinter
    shapes: dict[str, tuple[sympy.Expr, ...]]
    taken: set[str]

    @property
    def program(self) -> Any:
        return self.derivation.program

    def shape_text(self, tensor: str) -> str:
        name = self.printer.doprint(sympy.Symbol(tensor))
        shape = self.shapes[tensor]
        return f"{name} {self.printer.doprint(sympy.Tuple(*shape)) if shape else '()'}"

    def docstring(
        self,
        title: str,
        arrays: Sequence[str],
        result: str,
        statements: Sequence[ir.Statement],
    ) -> str:
        program = self.program
        lines = [*_fill(title), ""]
        for statement in statements:
            first, *domain = statement_text(statement).splitlines()
            lines += _fill(first, "    ", "            ")
            parts = [part for line in domain for part in line.strip().split("; ")]
            lines += [line for part in parts for line in _fill(part, "        ", "            ")]
        lines.append("")
        inputs = ", ".join(self.shape_text(t) for t in arrays)
        shapes = [self.shapes[t] for t in [*arrays, result]]
        used = sympy.Tuple(*itertools.chain(*shapes)).free_symbols
        defined = [s for s in program.definitions if s in used]
        where = ", where" if defined else "."
        shape = f"{inputs} -> {self.shape_text(result)}" if inputs else self.shape_text(result)
        lines += _fill(f"Shapes: {shape}{where}")
        for symbol in defined:
            definition = self.printer.doprint(program.definitions[symbol])
            lines.append(f"    {symbol.name} = {definition}")
        if program.values:
            given = ", ".join(f"{k} = {v}" for k, v in program.values.items())
            lines.append(f"Derived with {given}.")
        lines.append("Reads outside a tensor are zero.")
        return "\n".join(lines)

    def functions(self) -> list[PythonFunction]:
        """``forward``, then one ``pullback_<T>`` per pullback, in the derivation's order."""
        program, backward = self.program, self.derivation.backward
        statements = [*program.statements, *backward.statements]
        functions = [
            self.function(
                "forward",
                None,
                program.statements,
                program.output,
                f"The forward of `{program.text}`.",
            )
        ]
        seed = backward.seeds[0]
        for tensor, pullback in self.derivation.pullbacks.items():
            functions.append(
                self.function(
                    f"pullback_{tensor}",
                    seed,
                    _needed(statements, pullback.name),
                    pullback.name,
                    f"The pullback of `{program.text}` into {tensor}: "
                    f"{pullback.name} = dL/d{tensor} given {seed} = dL/d{program.output}.",
                )
            )
        return functions

    def vjp(self, pullbacks: Sequence[PythonFunction]) -> PythonFunction:
        """``vjp``: every pullback at once, in the order of the ``pullback_*`` functions."""
        program, derivation = self.program, self.derivation
        names = [pullback.name for pullback in derivation.pullbacks.values()]
        seed = derivation.backward.seeds[0]
        title = (
            f"Every pullback of `{program.text}` at once: ({', '.join(names)}"
            f"{',' if len(names) == 1 else ''}) given {seed} = dL/d{program.output}."
        )
        keywords: list[sympy.Basic] = []
        for function in pullbacks:
            keywords += [k for k in function.keywords if k not in keywords]
        calls = PullbackCalls([f.name.text for f in pullbacks], pullbacks[0].parameters, keywords)
        docstring = "\n".join([*_fill(title), "", "Shapes and bounds: see the pullback functions."])
        return PythonFunction("vjp", pullbacks[0].parameters, keywords, docstring, [calls])

    def function(
        self,
        name: str,
        cotangent: str | None,
        statements: Sequence[ir.Statement],
        result: str,
        title: str,
    ) -> PythonFunction:
        program = self.program
        builder = _Builder(self.shapes, dict(program.definitions), self.taken)
        used: set[sympy.Symbol] = set()
        for statement in statements:
            used |= _symbols_of(statement)
            tensors = [statement.target, *(a.tensor for a in ir.accesses(statement.rhs))]
            used |= sympy.Tuple(*(n for t in tensors for n in self.shapes[t])).free_symbols
        known: set[sympy.Symbol] = set()
        checks = []
        for tensor in program.inputs:
            shape = self.shapes[tensor]
            targets = []
            for size in shape:
                if isinstance(size, sympy.Symbol) and size in program.sizes and size not in known:
                    known.add(size)
                    targets.append(size)
                else:
                    targets.append(sympy.Symbol("_"))
            if known & set(targets):
                builder.emit(Unpack(sympy.Tuple(*targets), sympy.Symbol(tensor)))
            if any(t.name == "_" for t in targets):
                checks.append(ShapeCheck(sympy.Symbol(tensor), sympy.Tuple(*shape)))
                used |= sympy.Tuple(*shape).free_symbols
        definitions = program.definitions
        for symbol in reversed(list(definitions)):
            if symbol in used:
                used |= definitions[symbol].free_symbols
        # a size no input has (nothing is read along it) is asked for, as a parameter is
        unread = sorted(used & set(program.sizes) - known, key=lambda s: s.name)
        for symbol, definition in definitions.items():
            if symbol in used:
                builder.emit(Assignment(symbol, definition))
        builder.emit(*checks)
        for statement in statements:
            builder.ranked_statement(statement)
        builder.emit(Return(sympy.Symbol(result)))
        arrays = ([cotangent] if cotangent else []) + list(program.inputs)
        return PythonFunction(
            name,
            [sympy.Symbol(a) for a in arrays],
            [sympy.Symbol(p.name) for p in [*program.params, *unread]],
            self.docstring(title, arrays, result, statements),
            builder.body(),
        )


def _fill(text: str, indent: str = "", hanging: str = "") -> list[str]:
    """``text`` wrapped to fit a docstring inside a function."""
    return textwrap.wrap(
        text,
        WIDTH - 8,
        initial_indent=indent,
        subsequent_indent=hanging or indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _needed(statements: Sequence[ir.Statement], result: str) -> list[ir.Statement]:
    """The statements that ``result`` depends on, in order."""
    wanted = {result}
    chosen = []
    for statement in reversed(statements):
        if statement.target in wanted:
            chosen.append(statement)
            wanted |= {a.tensor for a in ir.accesses(statement.rhs)}
    return chosen[::-1]


def loops_source(derivation: Derivation) -> str:
    """A Python module of plain loops: ``forward`` and one ``pullback_<input>`` per pullback.

    The module imports only NumPy (and ``math`` where used). Sizes are read from
    the arrays; parameters are keyword-only arguments, and those given a value
    when deriving are numbers in the code.

    >>> import numpy as np
    >>> from einderive import derive
    >>> emitted = {}
    >>> exec(loops_source(derive("Y[i] = W[m]*X[i+m]")), emitted)
    >>> emitted["pullback_X"](np.ones(2), np.array([1.0, 2.0]), np.array([1.0, 0.0, 3.0]))
    array([1., 3., 2.])
    """
    program = derivation.program
    backward = derivation.backward
    shapes = dict(program.shapes)
    for tensor, name in backward.cotangents.items():
        shapes[name] = program.shapes[tensor]
    shapes[backward.seeds[0]] = program.shapes[program.output]
    statements = [*program.statements, *backward.statements]
    order: list[sympy.Symbol] = []
    taken = set(_RESERVED) | set(shapes) | {s.name for s in program.symbols}
    taken |= {s.name for s in program.definitions}
    for statement in statements:
        order += variables_of(statement)
    taken |= {v.name for v in order}
    printer = LoopsPrinter(order)
    source = _Source(derivation, printer, shapes, taken)
    functions = source.functions()
    functions.append(source.vjp(functions[1:]))
    texts = [printer.doprint(f) for f in functions]
    imports = ["import math"] if "math" in printer.module_imports else []
    imports.append("import numpy as np")
    summary = "\n".join(_fill(f"The forward and the pullbacks of `{program.text}`, as loops."))
    header = f'"""{summary}\n\nEmitted by einderive; they need only NumPy.\n"""'
    return "\n\n\n".join([header + "\n\n" + "\n".join(imports), *texts]) + "\n"
