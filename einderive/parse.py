"""Text -> syntax tree, with a source span on every node.

The grammar lives in ``grammar/einderive.lark`` at the top of the repository
and is shipped inside the wheel as ``einderive/_grammar/einderive.lark``; it is
loaded once, on first use.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NotationSyntaxError, Span

if TYPE_CHECKING:
    import lark

# What each terminal is called in an error message.
TERMINAL_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "REDUCER": "sum_/max_/min_",
    "EQUALS": "'='",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "POWER": "'**'",
    "LPAREN": "'('",
    "RPAREN": "')'",
    "LBRACKET": "'['",
    "RBRACKET": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
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
class SAccess:
    name: str
    indices: tuple[Any, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class SCall:
    name: str
    arg: Any
    span: Span
    name_span: Span


@dataclass(frozen=True)
class SReduce:
    op: str
    names: tuple[SName, ...]
    body: Any
    span: Span


@dataclass(frozen=True)
class SBinary:
    op: str  # one of + - * / **
    left: Any
    right: Any
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


SExpr = SName | SNumber | SAccess | SCall | SReduce | SBinary | SNeg


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


def _binary(op: str) -> Any:
    def build(self: Any, meta: Any, children: list[Any]) -> SBinary:
        left, _, right = children
        return SBinary(op, left, right, _span(meta))

    return build


def _make_transformer() -> Any:
    import lark

    @lark.v_args(meta=True)
    class ToSyntax(lark.Transformer):  # type: ignore[misc]
        def start(self, meta: Any, children: list[Any]) -> list[SStatement]:
            return list(children)

        def statement(self, meta: Any, children: list[Any]) -> SStatement:
            target, _, rhs = children
            return SStatement(target, rhs, _span(meta))

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
            indices = tuple(c for c in children[2:-1] if not _is_token(c, "COMMA"))
            return SAccess(str(name), indices, _span(meta), _token_span(name))

        def call(self, meta: Any, children: list[Any]) -> SCall:
            name, _, arg, _ = children
            return SCall(str(name), arg, _span(meta), _token_span(name))

        def reduction(self, meta: Any, children: list[Any]) -> SReduce:
            op = str(children[0]).rstrip("_")
            close = next(k for k, c in enumerate(children) if _is_token(c, "RBRACE"))
            names = tuple(
                SName(str(c), _token_span(c)) for c in children[2:close] if _is_token(c, "NAME")
            )
            return SReduce(op, names, children[close + 2], _span(meta))

        def neg(self, meta: Any, children: list[Any]) -> SNeg:
            return SNeg(children[1], _span(meta))

        def pos(self, meta: Any, children: list[Any]) -> Any:
            return children[1]

        add = _binary("+")
        sub = _binary("-")
        mul = _binary("*")
        div = _binary("/")
        pow = _binary("**")

    return ToSyntax()


def _is_token(value: Any, kind: str) -> bool:
    return getattr(value, "type", None) == kind


def _expected(names: set[str]) -> str:
    readable = sorted({TERMINAL_NAMES.get(n, n) for n in names})
    return ", ".join(readable)


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
        allowed = _expected(set(error.allowed or ()))
        raise NotationSyntaxError(
            f"unexpected character {character!r}" + (f"; expected {allowed}" if allowed else ""),
            (position, position + 1),
            text,
        ) from None
    except lark.UnexpectedToken as error:
        token = error.token
        if token.type == "$END":
            position = len(text.rstrip())
            span = (max(0, position - 1), max(1, position))
            found = "end of input"
        else:
            span = (token.start_pos, token.end_pos if token.end_pos else token.start_pos + 1)
            found = repr(str(token)) if str(token).strip() else "a line break"
        raise NotationSyntaxError(
            f"unexpected {found}; expected {_expected(set(error.expected))}", span, text
        ) from None
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
        return _make_transformer().transform(tree)
    except lark.exceptions.VisitError as error:  # pragma: no cover - the depth is checked
        raise NotationSyntaxError(
            f"the expression cannot be read ({type(error.orig_exc).__name__})", (0, len(text)), text
        ) from None


def _check_depth(tree: Any, text: str) -> None:
    """Refuse a tree nested deeper than MAX_DEPTH, at the first operation past the limit.

    Every operation counts: a parenthesis, a call, a unary minus, and each operator
    of a chain (``a + b + c`` nests two deep), so that nothing downstream recurses
    further than Python allows.
    """
    import lark

    stack = [(tree, -2)]  # the statement and its right-hand side sit at -1 and 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            meta = node.meta
            start = getattr(meta, "start_pos", 0)
            raise NotationSyntaxError(
                f"the expression nests more than {MAX_DEPTH} operations deep (each operator "
                "of a chain counts); split it into statements",
                (start, max(start + 1, getattr(meta, "end_pos", start + 1))),
                text,
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, lark.Tree))
