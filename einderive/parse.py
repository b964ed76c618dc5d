"""Text -> syntax tree, with a source span on every node.

The grammar lives in ``grammar/einderive.lark`` at the top of the repository
and is shipped inside the wheel as ``einderive/_grammar/einderive.lark``; it is
loaded once, on first use.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IndexNotationError, NotationSyntaxError, Span
from .functions import FUNCTIONS

if TYPE_CHECKING:
    import lark

# What each terminal is called in an error message.
TERMINAL_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "REDUCER": "sum_/max_/min_/prod_/argmax_/argmin_",
    "EQUALS": "'='",
    "PLUS_EQUALS": "'+='",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "FLOORDIV": "'//'",
    "COMPARE": "a comparison ('<=', '<', '==', '!=', '>', '>=')",
    "POWER": "'**'",
    "LPAREN": "'('",
    "RPAREN": "')'",
    "LBRACKET": "'['",
    "RBRACKET": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COLON": "':'",
    "COMMA": "','",
    "_SEPARATOR": "a new statement (';' or a line break)",
    "$END": "the end of the input",
}

MAX_TEXT_LENGTH = 100_000
MAX_DEPTH = 200


@dataclass(frozen=True)
class SName:
    name: str
    span: Span


@dataclass(frozen=True)
class SNumber:
    text: str
    span: Span


@dataclass(frozen=True)
class SKeyword:
    """``pad=-inf`` at the end of a read's brackets."""

    name: str
    value: Any
    span: Span
    name_span: Span


@dataclass(frozen=True)
class SAccess:
    name: str
    indices: tuple[Any, ...]
    span: Span
    name_span: Span
    pad: SKeyword | None = None  # the value read out of range, if written


@dataclass(frozen=True)
class SCall:
    name: str
    arg: Any
    span: Span
    name_span: Span
    rest: tuple[Any, ...] = ()  # the arguments after the first: mod(e, n), clamp(e, lo, hi)

    @property
    def arguments(self) -> tuple[Any, ...]:
        return (self.arg, *self.rest)


@dataclass(frozen=True)
class SCompare:
    """``(left op right)``, an index comparison used as a factor: 1 where it holds, else 0."""

    op: str  # "<=", "<", "==", "!=", ">", ">="
    left: Any
    right: Any
    span: Span


@dataclass(frozen=True)
class STuple:
    """``(a, b)``: the position compared with an argmax of several indices."""

    items: tuple[Any, ...]
    span: Span


@dataclass(frozen=True)
class SReduce:
    op: str
    names: tuple[SName, ...]
    body: Any
    span: Span
    conditions: tuple[SCompare, ...] = ()  # prod_{k : k <= j - 1}: the domain's restrictions


@dataclass(frozen=True)
class SBinary:
    op: str  # "**" or "//" (sums and products are chains: SSum, SProduct)
    left: Any
    right: Any
    span: Span


@dataclass(frozen=True)
class SSum:
    """``a + b - c ...``: every term of a chain in one node; ``signs[k]`` is +1 or -1."""

    terms: tuple[Any, ...]
    signs: tuple[int, ...]
    span: Span


@dataclass(frozen=True)
class SProduct:
    """``a * b / c ...``: every factor of a chain in one node; ``divides[k]`` if it divides."""

    factors: tuple[Any, ...]
    divides: tuple[bool, ...]
    span: Span


@dataclass(frozen=True)
class SNeg:
    operand: Any
    span: Span


@dataclass(frozen=True)
class SStatement:
    target: SAccess | SName
    rhs: Any
    span: Span
    accumulates: bool = False  # written with `+=`: adds to the statement before, if same target


SExpr = SName | SNumber | SAccess | SCall | SReduce | SSum | SProduct | SBinary | SNeg | SCompare

# The indicators of an extremum's position: ``(e == argmax_{m}(body))`` is 1 where ``e`` is
# the first position (row-major) of the maximum of ``body`` over ``m``.
ARG_REDUCERS = {"argmax": "max", "argmin": "min"}


def is_argmax(node: Any) -> bool:
    """Whether ``node`` is ``argmax_{...}(...)`` or ``argmin_{...}(...)``."""
    return isinstance(node, SReduce) and node.op in ARG_REDUCERS


# The functions of index positions: X[mod(e, n)], X[clamp(e, lo, hi)], X[reflect(e, n)],
# by their number of arguments.
INDEX_FUNCTIONS = {"mod": 2, "clamp": 3, "reflect": 2}
INDEX_SPELLINGS = {"mod": "mod(e, n)", "clamp": "clamp(e, lo, hi)", "reflect": "reflect(e, n)"}
INDEX_EXAMPLES = {
    "mod": "mod(i - 1, N)",
    "clamp": "clamp(i - 1, 0, N - 1)",
    "reflect": "reflect(i - 1, N)",
}


def operands(node: Any) -> tuple[Any, ...]:
    """The operands of an arithmetic syntax node (none for a leaf, an access or a call)."""
    if isinstance(node, SSum):
        return node.terms
    if isinstance(node, SProduct):
        return node.factors
    if isinstance(node, SBinary | SCompare):
        return (node.left, node.right)
    if isinstance(node, SNeg):
        return (node.operand,)
    if isinstance(node, STuple):
        return node.items
    return ()


def syntax_nodes(node: Any, brackets: bool = True) -> Iterator[Any]:
    """Every node of a syntax tree, parents first; index positions too unless ``brackets``
    is False, nor the operands of a comparison (a read's pad value is not part of the tree:
    it is a number)."""
    yield node
    children = operands(node)
    if isinstance(node, SCompare) and not brackets:
        # a comparison's operands are index expressions, as in brackets; an argmax's body
        # is a value
        children = tuple(side for side in children if is_argmax(side))
    if isinstance(node, SCall):
        children = node.arguments
    elif isinstance(node, SReduce):
        children = (node.body,)
    elif isinstance(node, SAccess) and brackets:
        children = node.indices
    for child in children:
        yield from syntax_nodes(child, brackets)


def grammar_path() -> Path:
    """The grammar file: shipped in the wheel, or at the top of a source checkout."""
    shipped = Path(__file__).parent / "_grammar" / "einderive.lark"
    if shipped.exists():
        return shipped
    return Path(__file__).resolve().parent.parent / "grammar" / "einderive.lark"


@functools.cache
def _parser() -> lark.Lark:
    import lark

    return lark.Lark(
        grammar_path().read_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
    )


def _span(meta: Any) -> Span:
    return (meta.start_pos, meta.end_pos)


def _token_span(token: Any) -> Span:
    return (token.start_pos, token.end_pos)


def _make_transformer() -> Any:
    import lark

    @lark.v_args(meta=True)
    class ToSyntax(lark.Transformer):  # type: ignore[misc]
        def start(self, meta: Any, children: list[Any]) -> list[SStatement]:
            return list(children)

        def statement(self, meta: Any, children: list[Any]) -> SStatement:
            target, operator, rhs = children
            return SStatement(target, rhs, _span(meta), _is_token(operator, "PLUS_EQUALS"))

        def scalar_target(self, meta: Any, children: list[Any]) -> SName:
            (token,) = children
            return SName(str(token), _token_span(token))

        def number(self, meta: Any, children: list[Any]) -> SNumber:
            (token,) = children
            return SNumber(str(token), _token_span(token))

        def name(self, meta: Any, children: list[Any]) -> SName:
            (token,) = children
            return SName(str(token), _token_span(token))

        def group(self, meta: Any, children: list[Any]) -> Any:
            return children[1]

        def access(self, meta: Any, children: list[Any]) -> SAccess:
            name = children[0]
            inside = [c for c in children[2:-1] if not _is_token(c, "COMMA")]
            pad = inside.pop() if inside and isinstance(inside[-1], SKeyword) else None
            return SAccess(str(name), tuple(inside), _span(meta), _token_span(name), pad)

        def keyword(self, meta: Any, children: list[Any]) -> SKeyword:
            name, _, value = children
            return SKeyword(str(name), value, _span(meta), _token_span(name))

        def call(self, meta: Any, children: list[Any]) -> SCall:
            name = children[0]
            arguments = [c for c in children[2:-1] if not _is_token(c, "COMMA")]
            return SCall(
                str(name), arguments[0], _span(meta), _token_span(name), tuple(arguments[1:])
            )

        def comparison(self, meta: Any, children: list[Any]) -> SCompare:
            _, left, op, right, _ = children
            return SCompare(str(op), left, right, _span(meta))

        def position(self, meta: Any, children: list[Any]) -> STuple:
            items = tuple(c for c in children[1:-1] if not _is_token(c, "COMMA"))
            return STuple(items, _span(meta))

        def reduction(self, meta: Any, children: list[Any]) -> SReduce:
            op = str(children[0]).rstrip("_")
            close = next(k for k, c in enumerate(children) if _is_token(c, "RBRACE"))
            names = tuple(
                SName(str(c), _token_span(c)) for c in children[2:close] if _is_token(c, "NAME")
            )
            conditions = tuple(c for c in children[2:close] if isinstance(c, SCompare))
            return SReduce(op, names, children[close + 2], _span(meta), conditions)

        def condition(self, meta: Any, children: list[Any]) -> SCompare:
            left, op, right = children
            return SCompare(str(op), left, right, _span(meta))

        def neg(self, meta: Any, children: list[Any]) -> SNeg:
            return SNeg(children[1], _span(meta))

        def pos(self, meta: Any, children: list[Any]) -> Any:
            return children[1]

        def sum(self, meta: Any, children: list[Any]) -> SSum:
            signs = (1, *(-1 if _is_token(c, "MINUS") else 1 for c in children[1::2]))
            return SSum(tuple(children[::2]), signs, _span(meta))

        def product(self, meta: Any, children: list[Any]) -> SProduct | SBinary:
            # ``//`` binds like ``*`` and ``/``, from the left: a*b // c is (a*b) // c
            chain: list[Any] = [children[0]]
            divides: list[bool] = [False]
            for op, operand in zip(children[1::2], children[2::2], strict=True):
                if _is_token(op, "FLOORDIV"):
                    left = chain[0] if len(chain) == 1 else _chain(chain, divides)
                    span = (left.span[0], operand.span[1])
                    chain, divides = [SBinary("//", left, operand, span)], [False]
                else:
                    chain.append(operand)
                    divides.append(_is_token(op, "SLASH"))
            if len(chain) == 1:
                return chain[0]
            return _chain(chain, divides)

        def pow(self, meta: Any, children: list[Any]) -> SBinary:
            left, _, right = children
            return SBinary("**", left, right, _span(meta))

    return ToSyntax()


def _chain(factors: list[Any], divides: list[bool]) -> SProduct:
    return SProduct(tuple(factors), tuple(divides), (factors[0].span[0], factors[-1].span[1]))


def _is_token(value: Any, kind: str) -> bool:
    return getattr(value, "type", None) == kind


def _expected(names: set[str]) -> str:
    readable = sorted({TERMINAL_NAMES.get(n, n) for n in names})
    return ", ".join(readable)


# What a character that the notation does not have probably meant.
_CHARACTER_HINTS = {
    ":": "the notation has no slices; a window is an index with a range: X[i+k], "
    "k from 0 to 2 (ranges={'k': 3}, or --range k=3)",
    "@": "a matrix product is written with indices, the shared one summed: Y[i,j] = A[i,k]*B[k,j]",
    "^": "a power is written '**': x**2",
    "×": "multiplication is written '*'",
    "·": "multiplication is written '*'",
    "∗": "multiplication is written '*'",
    "÷": "division is written '/'",
    "−": "minus is written '-'",
    "–": "minus is written '-'",
    "²": "a power is written '**': x**2",
    "Σ": "a sum is written sum_{i}(...)",
    "∑": "a sum is written sum_{i}(...)",
    "'": "a derivative is what einderive derives: write the forward expression",
}

_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_CLOSER_TERMINALS = {"(": "RPAREN", "[": "RBRACKET", "{": "RBRACE"}


def _character_hint(text: str, position: int) -> str | None:
    if text[position] == ".":
        module = re.search(r"([A-Za-z_][A-Za-z0-9_]*)$", text[:position])
        function = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[position + 1 :])
        if module and function:
            name = function.group(0)
            spelled = f"{name}(...)" if name in FUNCTIONS else f"one of {', '.join(FUNCTIONS)}"
            return (
                f"functions are written without a module: {spelled}, not {module.group(1)}.{name}"
            )
        return None
    return _CHARACTER_HINTS.get(text[position])


def _unclosed(text: str, end: int) -> int | None:
    """The position of the innermost bracket opened before ``end`` and not closed."""
    stack: list[int] = []
    for position, character in enumerate(re.sub(r"#[^\n]*", lambda m: " " * len(m[0]), text)[:end]):
        if character in _CLOSERS:
            stack.append(position)
        elif character in _CLOSERS.values() and stack:
            stack.pop()
    return stack[-1] if stack else None


def _token_error(text: str, token: Any, expected: set[str]) -> NotationSyntaxError:
    """A parse error at ``token``, saying what was probably meant where it can."""
    at_end = token.type == "$END"
    if at_end:
        position = len(text.rstrip())
        span = (max(0, position - 1), max(1, position))
        found = "end of input"
    else:
        position = token.start_pos
        span = (token.start_pos, token.end_pos if token.end_pos else token.start_pos + 1)
        found = repr(str(token)) if str(token).strip() else "a line break"
    opener = _unclosed(text, position)
    if (
        opener is not None
        and _CLOSER_TERMINALS[text[opener]] in expected
        and token.type in ("$END", "_SEPARATOR", "EQUALS", "PLUS_EQUALS")
    ):
        where = "the end of the input" if at_end else found
        return NotationSyntaxError(
            f"this {text[opener]!r} is never closed: expected {_CLOSERS[text[opener]]!r} "
            f"before {where}",
            (opener, opener + 1),
            text,
        )
    if token.type == "LBRACKET":
        double = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\[([^\[\]]*)\]\s*$", text[:position])
        second = re.match(r"\[([^\[\]]*)\]", text[position:])
        if double and second:
            name, first = double.group(1), double.group(2)
            return NotationSyntaxError(
                f"unexpected '[': a tensor is indexed once, with commas: "
                f"{name}[{first}, {second.group(1)}], not {name}[{first}][{second.group(1)}]",
                span,
                text,
            )
    if token.type == "COLON":
        return NotationSyntaxError(f"unexpected ':': {_CHARACTER_HINTS[':']}", span, text)
    if token.type == "COMPARE":
        return NotationSyntaxError(
            f"unexpected {found}: a comparison of indices is a factor in parentheses, "
            "(j <= i) * X[i, j]",
            span,
            text,
        )
    return NotationSyntaxError(f"unexpected {found}; expected {_expected(expected)}", span, text)


def index_arrays(statements: list[SStatement], text: str) -> tuple[str, ...]:
    """The tensors read inside brackets (``tok`` in ``E[tok[b], d]``, ``idx`` in
    ``Y[idx[i]] = X[i]``) or compared (``(row[k] == r)``), in order of first reading:
    integer inputs, never written, never read as values. (A tensor compared and also
    read as a value is no index array: the comparison's own check reports it.)"""
    inside: dict[str, SAccess] = {}
    compared: dict[str, SAccess] = {}
    for statement in statements:
        reads = [n for n in syntax_nodes(statement.rhs) if isinstance(n, SAccess)]
        if isinstance(statement.target, SAccess):
            reads.append(statement.target)
        sides = [
            side
            for node in syntax_nodes(statement.rhs)
            if isinstance(node, SCompare)
            for side in (node.left, node.right)
            if not is_argmax(side)  # its body holds values (syntax_nodes reads them so)
        ]
        for found, positions in (
            (inside, [position for access in reads for position in access.indices]),
            (compared, sides),
        ):
            for position in positions:
                for node in syntax_nodes(position):
                    if isinstance(node, SAccess):
                        found.setdefault(node.name, node)
    written = {s.target.name: s.target for s in statements}
    values: dict[str, SAccess] = {}  # each tensor's first read as a value
    for statement in statements:
        for node in syntax_nodes(statement.rhs, brackets=False):
            if isinstance(node, SAccess):
                values.setdefault(node.name, node)
    for name in inside:
        if name in written:
            raise IndexNotationError(
                f"{name!r} is read inside brackets, so it is an index array, an input of "
                "integers; it cannot also be written",
                written[name].span,
                text,
            )
        if name in values:
            raise IndexNotationError(
                f"{name!r} is read inside brackets, so it is an index array of "
                "integer positions; it cannot also be read as a value",
                values[name].span,
                text,
            )
    arrays = dict.fromkeys(inside)
    arrays.update(dict.fromkeys(n for n in compared if n not in written and n not in values))
    return tuple(arrays)


def index_array_names(text: str) -> tuple[str, ...]:
    """The index arrays of ``text`` (see ``index_arrays``)."""
    try:
        return index_arrays(parse(text), text)
    except IndexNotationError as error:
        raise error.with_text(text) from None


def _check_calls(statements: list[SStatement], text: str) -> None:
    """Refuse a call of anything but an elementwise function (or, inside brackets, an index
    function), with the wrong number of arguments, or a pad keyword that is not ``pad``,
    saying what was probably meant."""
    for statement in statements:
        if isinstance(statement.target, SAccess) and statement.target.pad is not None:
            raise IndexNotationError(
                "a pad value belongs to a read on the right-hand side, not to the left-hand side",
                statement.target.pad.span,
                text,
            )
        _check_comparisons(statement.rhs, True, text)
        _check_indicators(statement.rhs, text)
        for node in syntax_nodes(statement.rhs, brackets=False):
            if isinstance(node, SAccess):
                _check_brackets(node, text)
            if isinstance(node, SReduce):
                _check_conditions(node, text)
            if isinstance(node, SBinary) and node.op == "//":
                raise IndexNotationError(
                    "'//' divides index positions, inside a tensor's brackets (X[i // 2]); "
                    "a value is divided with '/'",
                    node.span,
                    text,
                )
            if isinstance(node, SCall) and node.name in INDEX_FUNCTIONS:
                raise IndexNotationError(
                    f"{node.name}(...) is a function of index positions: it is written inside "
                    f"a tensor's brackets, as in X[{INDEX_EXAMPLES[node.name]}]",
                    node.name_span,
                    text,
                )
            if (
                isinstance(node, SCall)
                and node.name in FUNCTIONS
                and len(node.arguments) > FUNCTIONS[node.name].arity
            ):
                raise _arguments_error(node, text)
            if isinstance(node, SCall) and (
                node.name not in FUNCTIONS or FUNCTIONS[node.name].arity != len(node.arguments)
            ):
                raise IndexNotationError(_call_hint(node, statement, text), node.name_span, text)


def _check_comparisons(node: Any, factor: bool, text: str) -> None:
    """An index comparison is a factor: of a product (not a divisor), a term, a whole
    right-hand side, a reduction's body; not an argument, a base or an exponent."""
    if isinstance(node, SCompare):
        if not factor:
            raise IndexNotationError(
                "an index comparison is a factor of a product, (j <= i) * X[i, j]; it is "
                "not the argument of a function, a divisor or a power",
                node.span,
                text,
            )
        return
    if isinstance(node, SProduct):
        for operand, divides in zip(node.factors, node.divides, strict=True):
            _check_comparisons(operand, not divides, text)
    elif isinstance(node, SSum | SNeg):
        for operand in operands(node):
            _check_comparisons(operand, True, text)
    elif isinstance(node, SReduce):
        _check_comparisons(node.body, True, text)
    elif isinstance(node, SCall | SBinary):
        for operand in node.arguments if isinstance(node, SCall) else operands(node):
            _check_comparisons(operand, False, text)


def _check_indicators(rhs: Any, text: str) -> None:
    """``argmax_``/``argmin_`` only as the right side of ``==`` whose left is the position
    (an index expression, or a tuple of them, one per reduced index); a tuple only there."""
    placed: set[int] = set()
    for node in syntax_nodes(rhs):
        if isinstance(node, SCompare) and node.op == "==" and is_argmax(node.right):
            placed.add(id(node.right))
            count = len(node.left.items) if isinstance(node.left, STuple) else 1
            if count != len(node.right.names):
                raise IndexNotationError(
                    f"the position compared with {node.right.op}_ has {count} "
                    f"{'index' if count == 1 else 'indices'}, one per reduced index: "
                    f"{len(node.right.names)} here",
                    node.left.span,
                    text,
                )
            placed.add(id(node.left))
    for node in syntax_nodes(rhs):
        if is_argmax(node) and id(node) not in placed:
            raise IndexNotationError(
                f"{node.op}_ is an indicator of the position of the "
                f"{ARG_REDUCERS[node.op]}imum: it is written compared with that position, "
                f"((p - 2*i) == {node.op}_{{m}}(X[2*i + m])), 1 there and 0 elsewhere",
                node.span,
                text,
            )
        if isinstance(node, STuple) and id(node) not in placed:
            raise IndexNotationError(
                "a tuple of positions is compared with an argmax of as many indices: "
                "((p - 2*i, q - 2*j) == argmax_{m,n}(...))",
                node.span,
                text,
            )


def _check_conditions(reduction: SReduce, text: str) -> None:
    """A reduction's domain is a conjunction of affine conditions: no ``!=``."""
    for condition in reduction.conditions:
        if condition.op == "!=":
            raise IndexNotationError(
                "a reduction's domain is a conjunction of affine conditions, and '!=' is not "
                "one: split the reduction in two (k <= j - 1 and k >= j + 1), or multiply its "
                "body by the comparison factor (k != j) in a sum",
                condition.span,
                text,
            )


def _check_brackets(access: SAccess, text: str) -> None:
    """Inside a read's brackets: only index functions, each with its number of arguments; a
    keyword only ``pad``."""
    if access.pad is not None and access.pad.name != "pad":
        raise IndexNotationError(
            f"unknown keyword {access.pad.name!r} in a read; the only one is pad "
            "(the value read out of range: X[i-1, pad=-inf])",
            access.pad.name_span,
            text,
        )
    for index in access.indices:
        for node in syntax_nodes(index):
            if not isinstance(node, SCall):
                continue
            expected = INDEX_FUNCTIONS.get(node.name)
            if expected is None:
                known = ", ".join(f"{name}(...)" for name in INDEX_FUNCTIONS)
                raise IndexNotationError(
                    "index expressions must be affine: a function call cannot appear inside "
                    f"brackets, except the index functions {known}",
                    node.span,
                    text,
                )
            if len(node.arguments) != expected:
                raise IndexNotationError(
                    f"{node.name} takes {expected} arguments, {INDEX_SPELLINGS[node.name]}; "
                    f"here it has {len(node.arguments)}",
                    node.span,
                    text,
                )


def _arguments_error(node: SCall, text: str) -> NotationSyntaxError:
    """An elementwise function given several arguments."""
    arity = FUNCTIONS[node.name].arity
    if node.name in ("max", "min"):
        message = (
            f"{node.name}(a, b) takes two values; {node.name}_{{m}}(...) takes the "
            f"{node.name}imum over an index"
        )
    else:
        message = f"a function takes one argument, {node.name}(x)"
    extra = node.arguments[arity]
    comma = text.rfind(",", node.arguments[arity - 1].span[1], extra.span[0])
    return NotationSyntaxError(f"unexpected ',': {message}", (comma, comma + 1), text)


def _index_names(node: Any) -> list[str]:
    """The names that stand alone in a bracket of ``node``, in order."""
    names: list[str] = []
    for access in syntax_nodes(node):
        if isinstance(access, SAccess):
            names += [
                i.name for i in access.indices if isinstance(i, SName) and i.name not in names
            ]
    return names


def _call_hint(node: SCall, statement: SStatement, text: str) -> str:
    name = node.name
    argument = text[node.arg.span[0] : node.arg.span[1]]
    target = statement.target
    free = (
        [i.name for i in target.indices if isinstance(i, SName)]
        if isinstance(target, SAccess)
        else []
    )
    summed = [n for n in _index_names(node.arg) if n not in free] or ["i"]
    if name in ("sum", "max", "min", "prod"):
        two = f"; {name}(a, b) takes two values" if name in ("max", "min") else ""
        return (
            f"'{name}' is written with the indices it reduces: "
            f"{name}_{{{','.join(summed)}}}({argument}){two}"
        )
    if name in ("softmax", "log_softmax"):
        inside = [n for n in _index_names(node.arg) if n in free]
        if isinstance(node.arg, SAccess) and len(inside) == 1:
            fresh = next(
                c for c in "jklmnpqrs" if c not in free and c not in _index_names(node.arg)
            )
            renamed = re.sub(rf"\b{inside[0]}\b", fresh, argument)
        else:
            argument, fresh, renamed = "X[i]", "j", "X[j]"
        total = f"sum_{{{fresh}}}(exp({renamed}))"
        recipe = f"exp({argument}) / {total}" if name == "softmax" else f"{argument} - log({total})"
        return f"{name} is not a function of the notation; write it out: {recipe}"
    if name == "mean":
        return (
            f"'mean' is a sum divided by the count: sum_{{{','.join(summed)}}}({argument}) / N "
            "(N a parameter, --param N=...)"
        )
    if not any(isinstance(n, SAccess | SCall | SReduce) for n in syntax_nodes(node.arg)):
        return (
            f"{name!r} is read like a function; a tensor is read with square brackets: "
            f"{name}[{argument}]"
        )
    return f"unknown function {name!r}; known: {', '.join(FUNCTIONS)}"


def parse(text: str) -> list[SStatement]:
    """Parse the notation into syntax-tree statements; raise NotationSyntaxError on bad text."""
    import lark

    if len(text) > MAX_TEXT_LENGTH:
        raise NotationSyntaxError(
            f"the expression is {len(text)} characters long; the limit is {MAX_TEXT_LENGTH}",
            (MAX_TEXT_LENGTH, len(text)),
            text,
        )
    if not re.sub(r"#[^\n]*|[;\s]", "", text):
        raise NotationSyntaxError("the expression is empty", (0, max(1, len(text))), text)
    try:
        tree = _parser().parse(text)
    except lark.UnexpectedCharacters as error:
        position = error.pos_in_stream or 0
        character = text[position]
        hint = _character_hint(text, position)
        allowed = _expected(set(error.allowed or ()))
        raise NotationSyntaxError(
            f"unexpected character {character!r}"
            + (f": {hint}" if hint else f"; expected {allowed}" if allowed else ""),
            (position, position + 1),
            text,
        ) from None
    except lark.UnexpectedToken as error:
        raise _token_error(text, error.token, set(error.expected)) from None
    except lark.UnexpectedInput as error:  # pragma: no cover - other lark input errors
        position = getattr(error, "pos_in_stream", 0) or 0
        raise NotationSyntaxError(
            "the expression cannot be parsed", (position, position + 1), text
        ) from None
    except RecursionError:
        raise NotationSyntaxError(
            "the expression is nested too deeply", (0, len(text)), text
        ) from None
    _check_depth(tree, text)
    try:
        statements: list[SStatement] = _make_transformer().transform(tree)
    except lark.exceptions.VisitError as error:  # pragma: no cover - the depth is checked
        raise NotationSyntaxError(
            f"the expression cannot be read ({type(error.orig_exc).__name__})", (0, len(text)), text
        ) from None
    _check_calls(statements, text)
    return statements


def _check_depth(tree: Any, text: str) -> None:
    """Refuse a tree nested deeper than MAX_DEPTH, at the first operation past the limit.

    Real nesting counts: a parenthesis, a call, a reduction, a unary minus, a power,
    an operand of a chain; a chain itself (``a + b + c + ...``, any length) is one
    level, so that nothing downstream recurses further than Python allows while a
    long flat sum is no deeper than a short one.
    """
    import lark

    stack = [(tree, -2)]  # the statement and its right-hand side sit at -1 and 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            meta = node.meta
            start = getattr(meta, "start_pos", 0)
            raise NotationSyntaxError(
                f"the expression nests more than {MAX_DEPTH} operations deep "
                "(parentheses, calls, reductions, signs and powers); split it into statements",
                (start, max(start + 1, getattr(meta, "end_pos", start + 1))),
                text,
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, lark.Tree))
