"""``einderive table``: the convolution pullback cheat sheet, derived, verified, and compared
with a hand-written cheat sheet shipped in this package (``conv-pullback-table.txt``).

Each family is the 1-D single-channel generic convolution
``z = conv(x, w, padding=(p_l, p_r), stride=s, dilation=d, fill=f)``: ``x`` gets
``f - 1`` zeros between neighbouring samples, then ``p_l`` zeros before and ``p_r``
after (negative values crop), and ``z[j] = sum_m w[m] * x'[s*j + d*m]`` for every
window that fits; that is

    y[j] = sum_{m, i} [s*j + d*m - p_l = f*i] * w[m] * x[i],   j in [0, I)
    I = floor(((N-1)*f + 1 + p_l + p_r - d*(K-1) - 1) / s) + 1

with some of ``p_l, p_r, s, d, f, K`` fixed. einderive derives both pullbacks,
recognises each as a generic call, and the call's numbers are checked on every
configuration of a sweep against the pullbacks computed from this definition by
brute force. The cheat sheet's own rows are checked on the same sweep.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import cast

import numpy as np
import sympy

from . import ir
from .conv.calls import GenericConv
from .conv.recognise import ConvPullback, convolutions
from .derive import derivation as derive_record
from .model import Program

N, K = sympy.symbols("N K", integer=True, positive=True)
p_l, p_r = sympy.symbols("p_l p_r", integer=True, nonnegative=True)
s, d, f = sympy.symbols("s d f", integer=True, positive=True)
I = sympy.Symbol("I", integer=True, positive=True)  # noqa: E741 - the output's size

# the sweep of the issue: N 1..12, K 1..5, pads 0..3, s 1..4, d 1..3, f 1..3
SWEEP: dict[sympy.Symbol, range] = {
    N: range(1, 13),
    K: range(1, 6),
    p_l: range(0, 4),
    p_r: range(0, 4),
    s: range(1, 5),
    d: range(1, 4),
    f: range(1, 4),
}


@dataclass(frozen=True)
class SeedRow:
    """One row of the cheat sheet, as written there (formulas in N, K, p_l, p_r, s, d, f)."""

    x_cot: dict[str, object]
    w_cot: dict[str, object]


@dataclass(frozen=True)
class Family:
    key: str
    description: str
    fixed: dict[sympy.Symbol, int]
    primal: str = ""

    @property
    def seed(self) -> SeedRow:
        """The cheat sheet's row for this family."""
        return cheat_sheet()[self.description]


FAMILIES = [
    Family("valid", "Valid Padding, K=3", {K: 3, p_l: 0, p_r: 0, s: 1, d: 1, f: 1}),
    Family("kernel", "Valid Padding, Variable Kernel Size", {p_l: 0, p_r: 0, s: 1, d: 1, f: 1}),
    Family("padding", "Variable Padding & Kernel Size", {s: 1, d: 1, f: 1}),
    Family("strided-valid", "Strided Convolution, No Padding", {p_l: 0, p_r: 0, d: 1, f: 1}),
    Family("strided", "Strided Convolution", {d: 1, f: 1}),
    Family("dilated", "Dilated Convolution (=Atrous Convolution)", {s: 1, f: 1}),
    Family("transposed", "Transposed Convolution (Filled Convolution)", {s: 1, d: 1}),
    Family("general", "General Convolution", {}),
]

CHEAT_SHEET = "conv-pullback-table.txt"
"""The hand-written cheat sheet that ``table`` checks, shipped with the package."""


@functools.cache
def cheat_sheet() -> dict[str, SeedRow]:
    """The cheat sheet's rows by description, read from the file shipped in this package.

    Each row is four cells: the description, the primal, ``x_cot = conv(z_cot, w, ...)``
    and ``w_cot = conv(x, z_cot, ...)``; formulas are Python (``(N+K)%s``, ``a//s``).
    """
    text = resources.files(__package__).joinpath(CHEAT_SHEET).read_text(encoding="utf-8")
    cells = [cell.strip() for cell in text.split("|")]
    rows: dict[str, SeedRow] = {}
    for k, cell in enumerate(cells):
        if cell.startswith("x_cot = conv(") and k + 1 < len(cells):
            description = cells[k - 2].splitlines()[-1].strip()
            rows[description] = SeedRow(_sheet_call(cell), _sheet_call(cells[k + 1]))
    return rows


def _sheet_call(cell: str) -> dict[str, object]:
    """``conv( a, b, padding=(lo, hi) stride=s, ..., flip_kernel=True, )`` as keywords."""
    start = cell.index("padding=(") + len("padding=(")
    depth, position, split = 1, start, None
    while depth:
        character = cell[position]
        depth += {"(": 1, ")": -1}.get(character, 0)
        if character == "," and depth == 1:
            split = position
        position += 1
    if split is None:
        raise ValueError(f"the cheat sheet's padding is not a pair: {cell!r}")
    entry: dict[str, object] = {
        "padding": (cell[start:split].strip(), cell[split + 1 : position - 1].strip())
    }
    for name, value in re.findall(r"(\w+)=([^,\s()]+)", cell[position:]):
        entry[name] = value == "True" if value in ("True", "False") else value
    return entry


def _output_size(config: Mapping[sympy.Symbol, int]) -> int:
    span = (config[N] - 1) * config[f] + 1 + config[p_l] + config[p_r]
    return (span - config[d] * (config[K] - 1) - 1) // config[s] + 1


def output_size(values: Mapping[sympy.Symbol, sympy.Expr]) -> sympy.Expr:
    """``I`` of the generic call with these parameters."""
    expr = sympy.floor(((N - 1) * f + 1 + p_l + p_r - d * (K - 1) - 1) / s) + 1
    return expr.xreplace(dict(values))


def forward_program(family: Family) -> Program:
    """The family's forward as an IR program (it has a fill, which the notation cannot write).

    With a batch and channels, so that the calls' permutations are those of a real layer:
    ``Y[b,o,j] = sum_{c,m,i} [s*j + d*m - p_l = f*i] W[o,c,m] X[b,c,i]``.
    """
    fixed = {k: sympy.Integer(v) for k, v in family.fixed.items()}
    b, o, c, j, m, i = (sympy.Symbol(n, integer=True) for n in "bocjmi")
    B, C, O = sympy.symbols("B C O", integer=True, positive=True)
    kernel = K.xreplace(fixed)
    where = (
        *ir.box(c, C),
        *ir.box(m, kernel),
        *ir.box(i, N),
        ir.Constraint("eq", ir.expand((s * j + d * m - p_l - f * i).xreplace(fixed))),
    )
    body = ir.Mul((ir.Access("W", (o, c, m)), ir.Access("X", (b, c, i))))
    statement = ir.Statement("Y", (b, o, j), ir.Reduce("sum", (c, m, i), body, where))
    params = tuple(p for p in (p_l, s, d, f) if p not in fixed)
    sizes = tuple(n for n in (B, C, O, N, K) if n not in fixed)
    return Program(
        text=family.description,
        statements=(statement,),
        shapes={"X": (B, C, N), "W": (O, C, kernel), "Y": (B, O, I)},
        inputs=("X", "W"),
        params=params,
        sizes=sizes,
        definitions={I: output_size(fixed)},
        extents={b: B, o: O, c: C, m: kernel, i: N, j: I},
    )


@dataclass(frozen=True)
class Check:
    """A formula checked on the sweep: how many configurations, and the first that failed."""

    configurations: int
    counterexample: str | None = None

    @property
    def ok(self) -> bool:
        return self.counterexample is None


@dataclass(frozen=True)
class Row:
    family: Family
    x_cot: ConvPullback
    w_cot: ConvPullback
    derived: Check
    seed: dict[str, Check] = field(default_factory=dict)
    seed_interpretation: dict[str, str] = field(default_factory=dict)


def derived_calls(family: Family) -> tuple[ConvPullback, ConvPullback]:
    """The pullbacks as generic calls, derived by einderive, in N, K, p_l, p_r, s, d, f."""
    derivation = derive_record(forward_program(family))
    calls = []
    for name in ("X", "W"):
        recognition = convolutions(derivation)[name]
        if not isinstance(recognition, ConvPullback):
            raise AssertionError(f"{family.key}: d{name} is not a convolution: {recognition}")
        recognition = recognition.subs({I: output_size(family.fixed)})
        calls.append(replace(recognition, call=_simplified(recognition.call)))
    return calls[0], calls[1]


def _tidy(expr: sympy.Expr) -> sympy.Expr:
    """A formula in its shortest form among a few (``d*(K - 1) - p_l`` over ``K*d - d - p_l``)."""
    candidates = [sympy.simplify(expr), sympy.factor_terms(sympy.simplify(expr))]
    candidates += [sympy.collect(sympy.expand(expr), symbol) for symbol in (d, f, s)]
    return min(candidates, key=lambda e: (len(str(e)), str(e)))


def _simplified(call: GenericConv) -> GenericConv:
    padding = tuple((_tidy(lo), _tidy(hi)) for lo, hi in call.padding)
    return GenericConv(
        call.x,
        call.w,
        padding=padding,
        stride=call.stride,
        dilation=call.dilation,
        fill=call.fill,
        flip_kernel=call.flip_kernel,
        permute_kernel=call.permute_kernel,
        permute_input=call.permute_input,
        groups=call.groups,
        batch_groups=call.batch_groups,
    )


def configurations(family: Family) -> Iterator[dict[sympy.Symbol, int]]:
    """Every configuration of the sweep with this family's fixed values and a non-empty output."""
    free = [symbol for symbol in SWEEP if symbol not in family.fixed]
    for values in itertools.product(*(SWEEP[symbol] for symbol in free)):
        config = dict(family.fixed)
        config.update(zip(free, values, strict=True))
        size = (
            ((config[N] - 1) * config[f] + 1 + config[p_l] + config[p_r])
            - config[d] * (config[K] - 1)
            - 1
        )
        if size >= 0:
            yield config


Formula = Callable[..., int]
_ARGUMENTS = (N, K, p_l, p_r, s, d, f)


def _compile(expr: object) -> Formula:
    """A formula as a Python function of (N, K, p_l, p_r, s, d, f), exact in integers."""
    value = sympy.sympify(expr, locals={str(a): a for a in _ARGUMENTS})
    function = sympy.lambdify(_ARGUMENTS, value, modules=[{"floor": math.floor}, "math"])
    return lambda *args: int(function(*args))


@dataclass(frozen=True)
class _CompiledCall:
    x: str
    w: str
    lo: Formula
    hi: Formula
    stride: Formula
    dilation: Formula
    fill: Formula
    flip: bool

    def numbers(self, args: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """(lo, hi, stride, dilation, fill) for one configuration."""
        return (
            self.lo(*args),
            self.hi(*args),
            self.stride(*args),
            self.dilation(*args),
            self.fill(*args),
        )


def _compiled(call: GenericConv) -> _CompiledCall:
    ((lo, hi),) = call.padding
    return _CompiledCall(
        call.x,
        call.w,
        _compile(lo),
        _compile(hi),
        _compile(call.stride[0]),
        _compile(call.dilation[0]),
        _compile(call.fill[0]),
        call.flip_kernel,
    )


def _seed_call(entry: Mapping[str, object], x: str, w: str) -> _CompiledCall:
    lo, hi = cast(tuple[str, str], entry["padding"])
    return _CompiledCall(
        x,
        w,
        _compile(lo),
        _compile(hi),
        _compile(entry.get("stride", 1)),
        _compile(entry.get("dilation", 1)),
        _compile(entry.get("fill", 1)),
        bool(entry.get("flip_kernel", False)),
    )


def reference(
    config: Mapping[sympy.Symbol, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random operands and both pullbacks computed from the forward's definition by brute force."""
    n, k = config[N], config[K]
    size = _output_size(config)
    j = np.arange(size)[:, None, None]
    m = np.arange(k)[None, :, None]
    i = np.arange(n)[None, None, :]
    delta = (config[s] * j + config[d] * m - config[p_l] == config[f] * i).astype(float)
    x, w, dy = rng.standard_normal(n), rng.standard_normal(k), rng.standard_normal(size)
    return {
        "X": x,
        "W": w,
        "dY": dy,
        "x_cot": np.einsum("jmi,j,m->i", delta, dy, w),
        "w_cot": np.einsum("jmi,j,i->m", delta, dy, x),
    }


def _failure(
    compiled: _CompiledCall,
    which: str,
    config: Mapping[sympy.Symbol, int],
    data: Mapping[str, np.ndarray],
    interpret: Callable[..., tuple[int, ...]] | None = None,
) -> str | None:
    """Why the formula's call misses the brute-force pullback here, or None if it does not."""
    args = tuple(config[a] for a in _ARGUMENTS)
    if interpret is not None:
        args = interpret(*args)
    lo, hi, stride, dilation, fill = compiled.numbers(args)
    if min(stride, dilation, fill) < 1:
        return f"{_config(config)}: stride, dilation and fill must be positive"
    kernel = data[compiled.w][::-1] if compiled.flip else data[compiled.w]
    result = conv1d(data[compiled.x], kernel, lo, hi, stride, dilation, fill)
    expected = data[which]
    padding = f"padding=({lo}, {hi})"
    if result.shape != expected.shape:
        return (
            f"{_config(config)}: {padding} gives {result.shape[0]} values, "
            f"the pullback has {expected.shape[0]}"
        )
    if not np.allclose(result, expected, atol=1e-10):
        return f"{_config(config)}: {padding} gives wrong values"
    return None


def conv1d(
    x: np.ndarray, w: np.ndarray, lo: int, hi: int, stride: int, dilation: int, fill: int
) -> np.ndarray:
    """The 1-D single-channel generic call (kernel already flipped), by index arithmetic."""
    length = (len(x) - 1) * fill + 1 + lo + hi if len(x) else lo + hi
    outputs = (length - dilation * (len(w) - 1) - 1) // stride + 1
    if outputs <= 0 or len(w) == 0:
        return np.zeros(max(outputs, 0))
    # position t of the filled, padded input holds x[(t - lo) / fill] where that is an index
    t = stride * np.arange(outputs)[:, None] + dilation * np.arange(len(w))[None, :]
    source = t - lo
    valid = (source % fill == 0) & (source >= 0) & (source // fill < len(x))
    values = np.where(valid, x[np.clip(source // fill, 0, max(len(x) - 1, 0))], 0.0)
    return values @ w


Sample = tuple[dict[sympy.Symbol, int], dict[str, np.ndarray]]


def samples(family: Family) -> tuple[Sample, ...]:
    """Every configuration of the family's sweep with random operands and exact pullbacks."""
    return _samples(family.key)


@functools.cache
def _samples(key: str) -> tuple[Sample, ...]:
    family = next(f for f in FAMILIES if f.key == key)
    rng = np.random.default_rng(0)
    return tuple((config, reference(config, rng)) for config in configurations(family))


def check_all(
    formulas: Mapping[str, tuple[_CompiledCall, str]],
    family: Family,
    interpret: Callable[..., tuple[int, ...]] | None = None,
) -> dict[str, Check]:
    """Every formula against the brute-force pullbacks on the whole sweep; the first failure."""
    counts = dict.fromkeys(formulas, 0)
    failures: dict[str, str] = {}
    for config, data in samples(family):
        for key, (compiled, which) in formulas.items():
            if key in failures:
                continue
            counts[key] += 1
            failure = _failure(compiled, which, config, data, interpret)
            if failure is not None:
                failures[key] = failure
    return {key: Check(counts[key], failures.get(key)) for key in formulas}


def _config(config: Mapping[sympy.Symbol, int]) -> str:
    return ", ".join(f"{symbol}={config[symbol]}" for symbol in SWEEP)


def _dilated_kernel(n: int, k: int, *rest: int) -> tuple[int, ...]:
    """Read K as the dilated kernel size (K-1)*d + 1."""
    pl, pr, stride, dilation, fill = rest
    return (n, (k - 1) * dilation + 1, pl, pr, stride, dilation, fill)


def _filled_input(n: int, k: int, *rest: int) -> tuple[int, ...]:
    """Read N as the filled input size (N-1)*f + 1."""
    pl, pr, stride, dilation, fill = rest
    return ((n - 1) * fill + 1, k, pl, pr, stride, dilation, fill)


def _both(n: int, k: int, *rest: int) -> tuple[int, ...]:
    return _filled_input(*_dilated_kernel(n, k, *rest))


INTERPRETATIONS: dict[str, Callable[..., tuple[int, ...]]] = {
    "K means the dilated kernel size (K-1)*d + 1": _dilated_kernel,
    "N means the filled input size (N-1)*f + 1": _filled_input,
    "K means the dilated kernel size (K-1)*d + 1 and N the filled input size (N-1)*f + 1": _both,
}


def build() -> list[Row]:
    rows = []
    for family in FAMILIES:
        x_cot, w_cot = derived_calls(family)
        formulas = {
            "derived x_cot": (_compiled(x_cot.call), "x_cot"),
            "derived w_cot": (_compiled(w_cot.call), "w_cot"),
            "x_cot": (_seed_call(family.seed.x_cot, "dY", "W"), "x_cot"),
            "w_cot": (_seed_call(family.seed.w_cot, "X", "dY"), "w_cot"),
        }
        results = check_all(formulas, family)
        derived_x, derived_w = results["derived x_cot"], results["derived w_cot"]
        derived = Check(
            derived_x.configurations + derived_w.configurations,
            derived_x.counterexample or derived_w.counterexample,
        )
        interpretations: dict[str, str] = {}
        for which in ("x_cot", "w_cot"):
            if results[which].ok:
                continue
            for meaning, interpret in INTERPRETATIONS.items():
                if check_all({which: formulas[which]}, family, interpret)[which].ok:
                    interpretations[which] = meaning
                    break
        seeds = {which: results[which] for which in ("x_cot", "w_cot")}
        rows.append(Row(family, x_cot, w_cot, derived, seeds, interpretations))
    return rows


def primal(family: Family) -> str:
    fixed = {k: v for k, v in family.fixed.items()}
    parts = [f"padding=({fixed.get(p_l, 'p_l')}, {fixed.get(p_r, 'p_r')})"]
    for symbol, name in ((s, "stride"), (d, "dilation"), (f, "fill")):
        parts.append(f"{name}={fixed.get(symbol, symbol)}")
    return f"z = conv(x, w, {', '.join(parts)})"


def _row_call(conv: ConvPullback, out: str, x: str, w: str) -> str:
    """One call in the cheat sheet's form (1-D: scalars, not tuples)."""
    call = conv.call
    ((lo, hi),) = call.padding
    parts = [
        x,
        w,
        f"padding=({lo}, {hi})",
        f"stride={call.stride[0]}",
        f"dilation={call.dilation[0]}",
        f"fill={call.fill[0]}",
    ]
    parts += [
        f"{flag}=True"
        for flag in ("flip_kernel", "permute_kernel", "permute_input")
        if getattr(call, flag)
    ]
    text = f"{out} = conv({', '.join(parts)})"
    if conv.transpose is not None:
        text += ", then the first two axes of the result swapped"
    return text


def _seed_text(row: Row, which: str) -> str:
    result = row.seed[which]
    if result.ok:
        return f"agrees ({result.configurations} configurations)"
    if which in row.seed_interpretation:
        return (
            f"holds only if {row.seed_interpretation[which]}; as written: {result.counterexample}"
        )
    return f"WRONG: {result.counterexample}"


def render_text(rows: list[Row]) -> str:
    lines = [
        "The convolution pullback table, derived by einderive: 1-D, x of shape (B, C, N), w of",
        "shape (O, C, K), z = conv(x, w) of shape (B, O, I), where conv is the generic call",
        "(einderive table --help defines it). Each row is checked on every configuration of",
        "the sweep N 1..12, K 1..5, p_l, p_r 0..3, s 1..4, d 1..3, f 1..3 with a non-empty",
        "output; so is the row of the hand-written cheat sheet shipped with einderive.",
        "",
    ]
    for row in rows:
        status = "verified" if row.derived.ok else f"FAILED: {row.derived.counterexample}"
        lines += [
            f"{row.family.description}",
            f"  primal:        {primal(row.family)}",
            f"  into input:    {_row_call(row.x_cot, 'x_cot', 'z_cot', 'w')}",
            f"  into filter:   {_row_call(row.w_cot, 'w_cot', 'x', 'z_cot')}",
            f"  einderive:     {status} on {row.derived.configurations} configurations",
            f"  sheet x_cot:   {_seed_text(row, 'x_cot')}",
            f"  sheet w_cot:   {_seed_text(row, 'w_cot')}",
            "",
        ]
    return "\n".join(lines)


def render_markdown(rows: list[Row]) -> str:
    lines = [
        "| Description | Primal | Pullback into input | Pullback into filter | Cheat sheet's row |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        seed = "; ".join(f"{which}: {_seed_text(row, which)}" for which in ("x_cot", "w_cot"))
        lines.append(
            f"| {row.family.description} | `{primal(row.family)}` | "
            f"`{_row_call(row.x_cot, 'x_cot', 'z_cot', 'w')}` | "
            f"`{_row_call(row.w_cot, 'w_cot', 'x', 'z_cot')}` | {seed} |"
        )
    return "\n".join(lines)
