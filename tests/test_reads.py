"""Issue 18's reads: wrapped, clamped and reflected reads, pad values, ``//`` and ``mod`` in
index positions, index comparisons as factors -- parsed, derived, run and compared with
references that owe nothing to einderive."""

from __future__ import annotations

import pytest

from einderive.errors import EinderiveError
from einderive.parse import SBinary, SCall, SCompare, parse


def test_the_syntax_of_the_new_constructs() -> None:
    (statement,) = parse("Y[c,i,j] = X[4*c + 2*mod(i, 2) + mod(j, 2), i // 2, j // 2]")
    first, second, _ = statement.rhs.indices
    assert isinstance(second, SBinary) and second.op == "//"
    calls = [t for t in first.terms if isinstance(t, SCall)]
    assert calls[0].name == "mod" and len(calls[0].arguments) == 2
    (causal,) = parse("S[i,j] = Q[i,d]*K[j,d]*(j <= i)")
    assert isinstance(causal.rhs.factors[-1], SCompare) and causal.rhs.factors[-1].op == "<="
    # // binds like * and /, from the left
    (chain,) = parse("Y[i] = X[2*i // 3]")
    assert chain.rhs.indices[0].op == "//"


BAD_SYNTAX = [
    ("Y[i] = X[i] <= 2", "a comparison of indices is a factor in parentheses", 13),
    ("Y[i] = X[i, pud=3]", "unknown keyword 'pud'", 13),
    ("Y[i] = mod(X[i], 2)", "written inside a tensor's brackets", 8),
    ("Y[i] = X[mod(i)]", "mod takes 2 arguments", 10),
    ("Y[i] = X[clamp(i, 0)]", "clamp takes 3 arguments", 10),
    ("Y[i, pad=0] = X[i]", "a pad value belongs to a read", 6),
    ("Y[i] = X[i] // 2", "'//' divides index positions", 8),
    ("Y[i] = exp(X[i], 2)", "a function takes one argument", 16),
]


@pytest.mark.parametrize(("text", "message", "column"), BAD_SYNTAX)
def test_bad_syntax_points_at_its_column(text: str, message: str, column: int) -> None:
    with pytest.raises(EinderiveError, match=message) as caught:
        parse(text)
    assert caught.value.column == column
