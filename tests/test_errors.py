"""Bad input: every error is an EinderiveError that names the problem and points at its column."""

from __future__ import annotations

import contextlib
import re

import lark
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import einderive as ed
from einderive import ArgumentError, ExtentError, IndexNotationError, NotationSyntaxError
from einderive.cli import parse_params, parse_ranges, parse_shapes
from einderive.parse import TERMINAL_NAMES, grammar_path


def case(name, text, error, match, column, underlined, line=1, **kwargs):
    """derive(text, **kwargs) raises ``error`` matching ``match``; carets under ``underlined``."""
    return pytest.param(text, kwargs, error, match, line, column, underlined, id=name)


Syntax, Index, Extent = NotationSyntaxError, IndexNotationError, ExtentError
END = "unexpected end of input"

# fmt: off
BAD_TEXT = [
    # name, text, error class, regex of the message, column, the text under the carets
    # ---- syntax ----------------------------------------------------------------------
    case("unclosed-lhs", "Y[i = X[i]", Syntax,
         r"this '\[' is never closed: expected '\]' before '='", 2, "["),
    case("unclosed-rhs", "Y[i] = X[i", Syntax, r"this '\[' is never closed: expected '\]'", 9, "["),
    case("extra-bracket", "Y[i] = X[i]]", Syntax, r"unexpected '\]'", 12, "]"),
    case("unclosed-paren", "Y[i] = (X[i]", Syntax,
         r"this '\(' is never closed: expected '\)' before the end of the input", 8, "("),
    case("missing-equals", "Y[i] X[i]", Syntax, r"unexpected 'X'; expected .*'='", 6, "X"),
    case("stray-dollar", "Y[i] = X[i] $ 2", Syntax, r"unexpected character '\$'", 13, "$"),
    case("unknown-token-at", "Y[i] = X[i] @ W[i]", Syntax, r"unexpected character '@'", 13, "@"),
    case("unknown-token-hat", "Y[i] = X[i] ^ 2", Syntax, r"unexpected character '\^'", 13, "^"),
    case("empty", "", Syntax, r"the expression is empty", 1, ""),
    case("blank", "   ", Syntax, r"the expression is empty", 1, "   "),
    case("trailing-plus", "Y[i] = X[i] +", Syntax, rf"{END}; expected .*a name", 13, "+"),
    case("trailing-star", "Y[i] = W[m] *", Syntax, rf"{END}; expected .*a number", 13, "*"),
    case("empty-sum", "Y[i] = sum_{}(X[i])", Syntax, r"'\}'; expected a name \(line", 13, "}"),
    case("sum-of-nothing", "Y[i] = sum_{m}()", Syntax, r"unexpected '\)'", 16, ")"),
    case("sum-no-parens", "Y[i] = sum_{m}X[i+m]", Syntax, r"'X'; expected '\(' \(line", 15, "X"),
    case("second-line", "Y[i] = X[i]\nZ[i] = Y[i] +", Syntax, END, 13, "+", line=2),
    case("second-statement", "Y[i] = X[i]; Z[j] = Y[j] $", Syntax, r"'\$'", 26, "$"),
    # ---- the usual mistakes: the error says what was probably meant ---------------------
    case("sum-as-function", "Y = sum(X[i])", Index,
         r"'sum' is written with the indices it reduces: sum_\{i\}\(X\[i\]\)", 5, "sum"),
    case("max-as-function", "Y[b] = max(X[b,i,j])", Index, r"max_\{i,j\}\(X\[b,i,j\]\)", 8,
         "max"),
    case("max-of-three", "Y[i] = max(X[i], 0, W[i])", Syntax, r"max\(a, b\) takes two values",
         19, ","),
    case("softmax", "Y[i] = softmax(X[i])", Index,
         r"softmax is not a function of the notation; write it out: "
         r"exp\(X\[i\]\) / sum_\{j\}\(exp\(X\[j\]\)\)", 8, "softmax"),
    case("slice", "Y[i] = X[i:i+3]", Syntax,
         r"no slices; a window is an index with a range: X\[i\+k\]", 11, ":"),
    case("matmul", "Y[i,j] = A @ B", Syntax,
         r"a matrix product is written with indices.*A\[i,k\]\*B\[k,j\]", 12, "@"),
    case("caret-power", "Y[i] = X[i] ^ 2", Syntax, r"a power is written '\*\*'", 13, "^"),
    case("numpy-module", "Y[i] = np.tanh(X[i])", Syntax,
         r"functions are written without a module: tanh\(\.\.\.\), not np\.tanh", 10, "."),
    case("double-bracket", "Y[i,j] = X[i][j]", Syntax,
         r"indexed once, with commas: X\[i, j\], not X\[i\]\[j\]", 14, "["),
    case("round-brackets", "Y[i] = W[m]*X(i+m)", Index,
         r"'X' is read like a function; a tensor is read with square brackets: X\[i\+m\]", 13, "X"),
    case("times-sign", "Y[i] = X[i] × 2", Syntax, r"multiplication is written '\*'", 13, "×"),
    case("unclosed-call", "Y[i] = tanh(X[i] + 2", Syntax, r"this '\(' is never closed", 12, "("),
    case("unclosed-sum-line", "Y[i] = sum_{m}(W[m]*X[i+m]\nZ[i] = Y[i]", Syntax,
         r"this '\(' is never closed: expected '\)' before a line break", 15, "("),
    # ---- index expressions that are not affine -------------------------------------------
    case("index-times-index", "Y[i,j] = X[i*j]", Index, r"multiplies two index", 12, "i*j"),
    case("times-summed-index", "Y[i] = W[j]*X[i*j]", Index, r"multiplies two index", 15, "i*j"),
    case("index-power", "Y[i] = X[i**2]", Index, r"affine: a power is not", 10, "i**2"),
    # `/` in a bracket is exact division, by a number or a parameter (issue 17 item 4)
    case("index-division", "Y[i,j] = X[i/j]", Index,
         r"the divisor of '/' must be a number or a parameter, not an index", 12, "i/j"),
    case("index-division-by-zero", "Y[i] = X[i/0]", Index, r"a division by zero", 10, "i/0"),
    case("index-division-in-comparison", "Y[i] = X[i] * (i/2 <= 1)", Index,
         r"'/', '//', mod, clamp and reflect are for reads", 16, "i/2"),
    case("index-float", "Y[i] = X[1.5]", Index, r"take integers, not '1\.5'", 10, "1.5"),
    # a tensor in brackets is an index array (issue 19): then it is no value
    case("index-array-as-value", "Y[i] = X[W[i]] * W[i]", Index, r"also be read as a", 18, "W[i]"),
    case("call-in-index", "Y[i] = X[exp(i)]", Index, r"a function call cannot", 10, "exp(i)"),
    case("sum-in-index", "Y[i] = X[sum_{m}(i)]", Index, r"a reduction cannot", 10, "sum_{m}(i)"),
    case("second-line-index", "Y[i] = X[i]\nZ[j] = Y[j*j]", Index, r"two index", 10, "j*j",
         line=2),
    # ---- indices and extents ---------------------------------------------------------
    case("lhs-index-not-on-rhs", "Y[i,j] = X[i]", Index,
         r"index 'j' is on the left-hand side but not on the right", 5, "j"),
    case("no-extent-sum", "Y[i] = sum_{m}(X[i+m])", Extent,
         r"index 'm' has no extent: it indexes no tensor alone; "
         r"declare it \(ranges=\{'m': n\}, or --range m=n\)", 13, "m"),
    case("no-extent-max", "Y[i] = max_{m}(X[2*i+m])", Extent, r"'m' has no extent", 13, "m"),
    case("inconsistent-extents", "Y[i] = X[i]*W[i]", Extent,
         r"inconsistent extents: 'i' indexes axis 0 of 'W' \(3 vs 4\)", 15, "i",
         shapes={"X": (3,), "W": (4,)}),
    case("empty-output", "Y[i] = X[i]", Extent, r"the output 'Y' is empty", 1, "Y[i]",
         shapes={"X": (0,)}),
    # ---- tensors, names and functions ------------------------------------------------
    case("unknown-function", "Y[i] = foo(X[i])", Index,
         r"unknown function 'foo'; known: exp, log, sqrt, abs, tanh, sigmoid, relu", 8, "foo"),
    case("ranks-differ", "Y[i] = X[i] + X[i,i]", Index,
         r"'X' is read with 2 indices here but 1 elsewhere", 15, "X[i,i]"),
    case("ranks-differ-later", "Z[i] = X[i]\nY[i] = X[i,i]*Z[i]", Index,
         r"'X' is read with 2", 8, "X[i,i]", line=2),
    case("rank-differs-from-shape", "Y[i] = X[i]", Extent,
         r"'X' is read with 1 index but its shape \(3, 3\) has 2", 8, "X[i]",
         shapes={"X": (3, 3)}),
    case("tensor-and-index", "Y[i] = X[i]*W[X]", Index,
         r"'X' is used both as a tensor and as an index", 8, "X"),
    case("tensor-and-parameter", "Y[i] = X[i] * X", Index,
         r"'X' is used both as a tensor and as a parameter", 8, "X"),
    case("index-divides", "Y[i] = X[i]/i", Index, r"an index used as a value .* cannot divide",
         13, "i"),
    case("symbolic-exponent", "Y[i] = X[i]**s", Index, r"exponent of '\*\*' must be a number",
         14, "s"),
    case("self-reference", "Y[i] = Y[i]", Index, r"'Y' is read on the right-hand side of its own",
         8, "Y[i]"),
    case("written-twice", "Y[i] = X[i]; Y[i] = X[i]", Index, r"'Y' is written twice", 14, "Y[i]"),
    case("read-before-written", "Y[i] = Z[i]; Z[i] = X[i]", Index, r"'Z' is read before it is",
         14, "Z[i]"),
    case("rebound-index", "Y[i] = sum_{i}(X[i])", Index, r"index 'i' is already bound", 13, "i"),
    # ---- numbers and depth -----------------------------------------------------------
    case("unicode-digit", "Y[i] = X[i]*\uff11", Syntax, r"unexpected character '\uff11'", 13,
         "\uff11"),
    case("tiny-literal", "Y[i] = X[i]*1e-999", Index, r"1e-999 is too small \(the limit is 1e",
         13, "1e-999"),
    case("huge-literal", "Y[i] = X[i]*2e400", Index, r"2e400 is too large", 13, "2e400"),
    case("huge-power", "Y[i] = X[i]*10**400", Index,
         r"10\*\*400 is too large for a float \(about 1e\+400", 13, "10**400"),
    case("complex-constant", "Y[i] = X[i]*(-1)**0.5", Index, r"\(-1\)\*\*0\.5 is not a real",
         13, "(-1)**0.5"),
    case("folded-product", "Y[i] = X[i]*10**200*10**200", Index,
         r"\*10\*\*200 is too large for a float \(about 1e\+400", 8, "X[i]*10**200*10**200"),
]
# fmt: on

SYNTAX_TEXTS = [p.values[0] for p in BAD_TEXT if p.values[2] is Syntax]
INTERNAL_NAMES = ("__ANON", "$END", "_SEPARATOR", "NAME", "NUMBER", "REDUCER", "RBRACKET", "LSQB")


def _line(text: str, number: int) -> str:
    return text.splitlines()[number - 1] if text.strip() else text


@pytest.mark.parametrize("text, kwargs, error, match, line, column, underlined", BAD_TEXT)
def test_bad_text_names_the_problem_and_points_at_it(
    text, kwargs, error, match, line, column, underlined, caret
):
    with pytest.raises(error, match=match) as raised:
        ed.derive(text, **kwargs)
    assert isinstance(raised.value, ed.EinderiveError)
    assert (raised.value.line, raised.value.column) == (line, column)
    assert f"(line {line}, column {column})" in str(raised.value)
    assert caret(str(raised.value)) == (_line(text, line), column, underlined)
    # no lark or sympy exception shows in the traceback
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or raised.value.__suppress_context__


def test_nesting_is_refused_at_the_first_operation_past_the_limit():
    # the 201st minus sign (column 8 + 201) is the first one past MAX_DEPTH = 200
    with pytest.raises(NotationSyntaxError, match=r"nests more than 200 operations deep") as raised:
        ed.derive("Y[i] = " + "-" * 250 + "X[i]")
    assert (raised.value.line, raised.value.column) == (1, 209)
    assert str(ed.derive("Y[i] = " + "-" * 190 + "X[i]").pullbacks["X"]) == "dX[p] = dY[p]"


@pytest.mark.parametrize("text", SYNTAX_TEXTS)
def test_syntax_errors_read_in_english(text):
    with pytest.raises(NotationSyntaxError) as raised:
        ed.derive(text)
    message = raised.value.message
    for internal in INTERNAL_NAMES:
        assert internal not in message
    assert "Token(" not in message and "lark" not in message.lower()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Y[i] = X[i,", "expected '(', '+', '-', a name, a number, sum_/max_/min_"),
        ("Y[i] = sum_{}(X[i])", "expected a name"),
        ("Y[i] = X[i] +", "a name, a number, sum_/max_/min_"),
        ("Y[i] X[i]", "'='"),
        ("Y[i] = X[i]]", "a new statement (';' or a line break), the end of the input"),
    ],
)
def test_expected_tokens_have_english_names(text, expected):
    with pytest.raises(NotationSyntaxError) as raised:
        ed.derive(text)
    assert expected in raised.value.message


def test_every_terminal_of_the_grammar_has_an_english_name():
    parser = lark.Lark(grammar_path().read_text(), parser="lalr")
    named = {t.name for t in parser.terminals if t.name not in parser.ignore_tokens}
    assert named <= set(TERMINAL_NAMES), named - set(TERMINAL_NAMES)


# ---- bad arguments: ArgumentError, no caret (nothing in the text to point at) -----------

X3 = {"X": np.ones(3)}
BAD_ARGUMENTS = [
    pytest.param(
        lambda: ed.derive("Y[i] = X[i]", shapes={"X": (-1,)}),
        r"shape of 'X' must be non-negative integers, not \(-1,\)",
        id="negative-size",
    ),
    pytest.param(
        lambda: ed.derive("Y[i] = X[i]", shapes={"X": (2.5,)}),
        r"shape of 'X' must be non-negative integers",
        id="float-size",
    ),
    pytest.param(
        lambda: ed.derive("Y[i] = X[s*i]", params={"s": "a"}),
        r"parameter 's' must be a number, not 'a'",
        id="string-parameter",
    ),
    pytest.param(
        lambda: ed.derive("Y[i] = W[m]*X[i+m]", ranges={"m": 0}),
        r"range of 'm' must be a positive integer, not 0",
        id="zero-range",
    ),
    pytest.param(
        lambda: ed.derive("Y[i] = W[m]*X[i+m]", ranges={"m": 3.0}),
        r"range of 'm' must be a positive integer, not 3\.0",
        id="float-range",
    ),
    pytest.param(
        lambda: ed.derive("Y[i] = X[i]", shapes={"Z": (3,)}),
        r"shapes given for \['Z'\], which are not tensors",
        id="shape-of-unknown-tensor",
    ),
    pytest.param(
        lambda: ed.derive("Y[i] = X[i]", ranges={"k": 3}),
        r"ranges given for \['k'\], which are not indices",
        id="range-of-unknown-index",
    ),
    pytest.param(
        lambda: ed.derive("Y[i] = X[i+m]", params={"m": 1}, ranges={"m": 3}),
        r"'m' is declared both as a parameter and as a range",
        id="parameter-and-range",
    ),
    pytest.param(
        lambda: ed.derive("Y[i] = X[i]", wrt=["Z"]),
        r"cannot differentiate with respect to 'Z': the inputs are X",
        id="wrt-unknown",
    ),
    pytest.param(
        lambda: ed.evaluate("Y[i] = W[m]*X[i+m]", X3),
        r"no array given for 'W'",
        id="missing-array",
    ),
    pytest.param(
        lambda: ed.evaluate("Y[i] = X[i]", {"X": np.array(["a", "b"])}),
        r"'X' must be a numeric array",
        id="non-numeric-array",
    ),
    pytest.param(
        lambda: ed.evaluate("Y[i] = X[s*i]", X3),
        r"give a number for every parameter: params=\{\.\.\.\} for s",
        id="parameter-without-number",
    ),
    pytest.param(
        lambda: ed.vjp("Y[i] = X[i]", X3, np.ones(4)),
        r"the cotangent has shape \(4,\); the output 'Y' has shape \(3,\)",
        id="cotangent-shape",
    ),
    pytest.param(
        lambda: ed.vjp("Y[i] = X[i]", X3, np.ones(3), backend="bogus"),
        r"unknown backend 'bogus'",
        id="unknown-backend",
    ),
]


@pytest.mark.parametrize("call, match", BAD_ARGUMENTS)
def test_bad_arguments_raise_argument_error(call, match):
    with pytest.raises(ArgumentError, match=match) as raised:
        call()
    assert isinstance(raised.value, ed.EinderiveError)
    assert raised.value.span is None and raised.value.column is None
    assert str(raised.value) == raised.value.message


@pytest.mark.parametrize(
    "parse, values, match",
    [
        (parse_params, ["s=1", "s=2"], r"parameter 's' is given twice"),
        (parse_params, ["s=abc"], r"--param s: 'abc' is not a number"),
        (parse_params, ["3=4"], r"--param '3=4': expected NAME=VALUE"),
        (parse_shapes, ["X=7x7", "X=3x3"], r"the shape of 'X' is given twice"),
        (parse_shapes, ["X=7y"], r"--shape X=7y: sizes are integers, like 7x7"),
        (parse_shapes, ["X"], r"--shape X: expected X=7x7"),
        (parse_ranges, ["m=x"], r"--range m: expected m=3 \(a positive integer\)"),
        (parse_ranges, ["m=3", "m=4"], r"the range of 'm' is given twice"),
    ],
)
def test_bad_cli_values_raise_argument_error(parse, values, match):
    with pytest.raises(ArgumentError, match=match):
        parse(values)


# ---- every entry point carries the text and the column --------------------------------

ENTRY_POINTS = {
    "derive": lambda text: ed.derive(text),
    "evaluate": lambda text: ed.evaluate(text, {"X": np.ones(4)}),
    "vjp": lambda text: ed.vjp(text, {"X": np.ones(4)}, np.ones(4)),
    "verify": lambda text: ed.verify(text, trials=1),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize(
    "text, error, column, underlined",
    [
        ("Y[i] = X[i] $", NotationSyntaxError, 13, "$"),
        ("Y[i] = X[i*i]", IndexNotationError, 10, "i*i"),
        ("Y[i] = X[i] + X[i,i]", IndexNotationError, 15, "X[i,i]"),
        ("Y[i] = sum_{m}(X[i+m])", ExtentError, 13, "m"),
    ],
)
def test_every_entry_point_reports_the_text(entry, text, error, column, underlined, caret):
    with pytest.raises(error) as raised:
        ENTRY_POINTS[entry](text)
    assert raised.value.text == text
    assert raised.value.column == column
    assert caret(str(raised.value)) == (text, column, underlined)


# ---- nothing but EinderiveError escapes, whatever the text ----------------------------

# Fragments that make valid, invalid and odd texts when strung together; the literal 0
# is left out (division by zero is a known bug, below).
FRAGMENTS = [
    "X[i]", "W[m]", "X[i+m]", "X[s*i+m-1]", "W[m,n]", "X[", "i", "m", "s", "]", ",", "+", "-",
    "*", "/", "**2", "2", "1.5", "(", ")", "exp(", "relu(", "sum_{m}(", "max_{m,n}(", "=",
    ";", "\n", "$", "Z[i] = ",
]  # fmt: skip

# Texts that parse: index expressions of any degree, values of any shape.
INDEX = st.recursive(
    st.sampled_from(["i", "j", "m", "n", "s", "1", "2"]),
    lambda inner: st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map("".join),
    max_leaves=3,
)
ACCESS = st.builds(
    lambda name, positions: f"{name}[{','.join(positions)}]",
    st.sampled_from(["X", "W"]),
    st.lists(INDEX, min_size=1, max_size=2),
)
VALUE = st.recursive(
    st.one_of(ACCESS, st.sampled_from(["2", "s", "1.5"])),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" + ", " - ", " * ", " / "]), inner).map("".join),
        st.builds("{}({})".format, st.sampled_from(["exp", "relu", "sum_{m}", "max_{m,n}"]), inner),
        inner.map("({})**2".format),
    ),
    max_leaves=4,
)
LHS = st.sampled_from(["Y[i] = ", "Y[i,j] = ", "Y = ", "Y[2*i] = ", "Y[i+m] = "])


def _derive_and_print(text: str) -> None:
    """Derive and print ``text``; an EinderiveError must carry the text and a readable message."""
    try:
        str(ed.derive(text))
    except ed.EinderiveError as error:
        assert error.text == text
        assert not any(internal in str(error) for internal in ("__ANON", "$END"))
        if error.span is not None:
            assert f"column {error.column})" in str(error)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.one_of(LHS, st.just("")), st.lists(st.sampled_from(FRAGMENTS)))
def test_random_fragments_raise_only_einderive_errors(lhs, fragments):
    _derive_and_print(lhs + "".join(fragments))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(LHS, VALUE)
def test_random_expressions_raise_only_einderive_errors(lhs, value):
    _derive_and_print(lhs + value)


# ---- known bugs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda: str(ed.derive("Y[i] = X[i] / 0")),
            id="division-by-zero",
        ),
        pytest.param(
            lambda: str(ed.derive("Y[i] = X[i+s]", params={"s": float("nan")})),
            id="nan-parameter",
        ),
        pytest.param(
            lambda: ed.derive("Y[i] = X[i]", shapes={"X": np.array([3])}),
            id="shape-as-array",
        ),
        pytest.param(
            lambda: ed.derive("Y[i] = X[i+s]", params={"s": {}}),
            id="unhashable-parameter",
        ),
        pytest.param(
            lambda: ed.derive("Y[i] = X[i]", shapes={"X": 3}),
            id="shape-not-a-sequence",
        ),
        pytest.param(
            lambda: ed.derive("Y[i] = X[i]", params={"i": 1}),
            id="lhs-index-declared-parameter",
        ),
        pytest.param(
            lambda: ed.evaluate("Y[i] = X[i]", {"X": [[1.0], [2.0, 3.0]]}),
            id="ragged-input",
        ),
        pytest.param(
            lambda: ed.vjp("Y[i] = X[i]", {"X": np.ones(2)}, "ab"),
            id="non-numeric-cotangent",
        ),
        pytest.param(
            lambda: ed.derive("Y[i] = W[i+2+2*i*p]"),
            id="coefficient-one-plus-parameter",
        ),
    ],
)
def test_no_foreign_exception_escapes(call):
    # succeeding or raising an EinderiveError both pass; any other exception fails
    with contextlib.suppress(ed.EinderiveError):
        call()


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(
            lambda: ed.derive("Y[i] = X[s*i]", params={"s": 0}),
            r"'s'",
            id="zero-stride",
        ),
        pytest.param(
            lambda: ed.derive("Y[i] = X[s*i]", params={"s": -1}),
            r"'s'",
            id="negative-stride",
        ),
        pytest.param(
            lambda: ed.derive("Y[i] = X[i+s]", params={"s": 1.5}),
            r"'s'",
            id="fractional-offset",
        ),
        pytest.param(
            lambda: ed.derive("Y[i] = X[i]", params={"t": 1}),
            r"parameter 't' is not used in the expression",
            id="unused-parameter",
        ),
        pytest.param(
            lambda: ed.verify("Y[i] = X[i]", trials=0),
            r"trials",
            id="zero-trials",
        ),
    ],
)
def test_meaningless_arguments_are_rejected(call, match):
    with pytest.raises(ArgumentError, match=match):
        call()


def test_an_extra_array_is_named_as_an_array():
    with pytest.raises(ArgumentError, match=r"arrays given for 'Z', which the expression does not"):
        ed.evaluate("Y[i] = X[i]", {**X3, "Z": np.ones(3)})


def test_numpy_integers_are_numbers():
    # sizes used nowhere else: derive's cache treats np.int64(n) and n as one key
    text = "Y[i] = X[s*i+1]"
    numpy = ed.derive(text, params={"s": np.int64(3)}, shapes={"X": (np.int64(11),)})
    plain = ed.derive(text, params={"s": 3}, shapes={"X": (11,)})
    assert numpy.pullbacks["X"].notation() == plain.pullbacks["X"].notation()


def test_lhs_index_missing_on_the_right_says_so():
    with pytest.raises(ed.EinderiveError, match=r"index 'j' is on the left-hand side but not"):
        ed.derive("Y[i,j] = X[i]")


def test_caret_keeps_the_tabs_of_the_source_line():
    text = "Y[i] =\tX[i] $"
    with pytest.raises(NotationSyntaxError) as raised:
        ed.derive(text)
    padding = re.sub(r"[^\t]", " ", text[: raised.value.span[0]])
    assert str(raised.value).splitlines()[-1] == f"    {padding}^"


@pytest.mark.parametrize(
    "text", ["Y[i] = (-alpha)**0.5 * X[i]", "Y[i] = X[i] + X[i]*(-alpha)**0.5"]
)
def test_a_parameter_value_that_makes_a_constant_complex_is_refused(text: str) -> None:
    message = r"sqrt\(-alpha\) is not a real number with alpha = 0.7"
    with pytest.raises(ed.IndexNotationError, match=message):
        ed.derive(text, params={"alpha": 0.7})
    assert ed.derive(text, params={"alpha": -0.7}).pullbacks  # real: derived as before
