"""An oracle that owes nothing to einderive: random programs, their forward, their pullbacks.

A random :class:`Case` is built from templates with random sizes, strides, dilations,
offsets and signs: convolutions (batch, channels, depthwise, grouped, a kernel per
output position, reversed reads, flipped kernels), diagonals (a position index in two
operands' reads), scatter-form left-hand sides, declared output shapes bounding
indices that no read bounds, and programs where any of these is an intermediate.

The case carries its statements as data (affine index expressions), computes every
extent itself from CONTRACT section 1, and :func:`reference_forward` evaluates it
with NumPy index grids and a zero-padded gather (scatter-added into the left-hand
side), written here. Reference pullbacks are ``jax.vjp`` of that forward.
:func:`check` compares with it every backend, the four emitted modules (forward,
each ``pullback_<T>``, ``vjp``) and every reported convolution call, run by calls
built here from the reported parameters (the generic record through
``jax.lax.conv_general_dilated``, the JAX record, the PyTorch record).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TOLERANCE = 1e-8

# ---- the cases as data -----------------------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """``sum(coefficient * variable) + constant``, printed in the order it was built."""

    terms: tuple[tuple[str, int], ...]
    constant: int = 0
    constant_first: bool = False  # "7-j-n" rather than "-j-n+7"

    @property
    def lone(self) -> str | None:
        if self.constant == 0 and len(self.terms) == 1 and self.terms[0][1] == 1:
            return self.terms[0][0]
        return None

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(v for v, c in self.terms if c != 0)

    def coefficient(self, variable: str) -> int:
        return sum(c for v, c in self.terms if v == variable)

    def text(self) -> str:
        pieces: list[str] = []
        if self.constant_first or not self.terms:
            pieces.append(str(self.constant))
        for variable, coefficient in self.terms:
            if coefficient == 0:
                continue
            magnitude = "" if abs(coefficient) == 1 else f"{abs(coefficient)}*"
            sign = "-" if coefficient < 0 else ("+" if pieces else "")
            pieces.append(f"{sign}{magnitude}{variable}")
        if not self.constant_first and self.constant and self.terms:
            pieces.append(f"{self.constant:+d}")
        return "".join(pieces)

    def value(self, grids: Mapping[str, np.ndarray]) -> np.ndarray:
        total: Any = np.int64(self.constant)
        for variable, coefficient in self.terms:
            total = total + coefficient * grids[variable]
        return total

    def largest(self, extents: Mapping[str, int]) -> int:
        """The largest value over the box of ``extents``."""
        return self.constant + sum(
            c * (extents[v] - 1) for v, c in self.terms if c > 0 and v in extents
        )


def var(name: str) -> Affine:
    return Affine(((name, 1),))


@dataclass(frozen=True)
class Wrapped:
    """An index function of an affine position (issue 18), as NumPy computes it:
    ``mod`` (``np.mod``), ``clamp`` to ``[0, n-1]`` (``np.clip``), ``reflect`` (PyTorch's:
    ``-e`` below 0, ``2n-2-e`` above ``n-1``, once) and ``div`` (``np.floor_divide``)."""

    kind: str
    inner: Affine
    n: int

    def text(self) -> str:
        inner = self.inner.text()
        if self.kind == "div":
            return f"({inner}) // {self.n}"
        if self.kind == "clamp":
            return f"clamp({inner}, 0, {self.n - 1})"
        return f"{self.kind}({inner}, {self.n})"

    def value(self, grids: Mapping[str, np.ndarray]) -> np.ndarray:
        e = self.inner.value(grids)
        if self.kind == "mod":
            return np.mod(e, self.n)
        if self.kind == "clamp":
            return np.clip(e, 0, self.n - 1)
        if self.kind == "reflect":
            return np.where(e < 0, -e, np.where(e > self.n - 1, 2 * self.n - 2 - e, e))
        return np.floor_divide(e, self.n)

    def extreme(self, coefficient: int) -> int:
        """The largest value of ``coefficient * self`` whatever the position (not ``div``)."""
        return coefficient * (self.n - 1) if coefficient > 0 else 0


@dataclass(frozen=True)
class Composite:
    """``affine + sum(coefficient * wrapped)``: ``4*c + 2*mod(i, 2) + mod(j, 2)``."""

    affine: Affine
    parts: tuple[tuple[int, Wrapped], ...]

    lone = None

    @property
    def variables(self) -> tuple[str, ...]:
        found = list(self.affine.variables)
        for _, part in self.parts:
            found += [v for v in part.inner.variables if v not in found]
        return tuple(found)

    def text(self) -> str:
        pieces = [self.affine.text()] if self.affine.terms or self.affine.constant else []
        for coefficient, part in self.parts:
            factor = "" if coefficient == 1 else f"{coefficient}*"
            pieces.append(f"{factor}{part.text()}")
        return " + ".join(pieces)

    def value(self, grids: Mapping[str, np.ndarray]) -> np.ndarray:
        total = self.affine.value(grids)
        for coefficient, part in self.parts:
            total = total + coefficient * part.value(grids)
        return total


def wrapped(kind: str, inner: Affine, n: int, coefficient: int = 1) -> Composite:
    return Composite(Affine(()), ((coefficient, Wrapped(kind, inner, n)),))


Index = Affine | Composite


def bounding(index: Index, size: int) -> list[tuple[Affine, int]]:
    """The affine reads that bound the output's indices (README, "Extents"): ``e // n`` on
    ``N`` is ``e`` on ``n*N``; a wrapped, clamped or reflected part takes its largest
    value, and alone bounds nothing."""
    if isinstance(index, Affine):
        return [(index, size)]
    divisions = [p for _, p in index.parts if p.kind == "div"]
    if divisions:
        assert len(index.parts) == 1 and not index.affine.terms, "not drawn"
        (part,) = divisions
        return [(part.inner, part.n * size)]
    if not index.affine.terms:
        return []
    top = sum(part.extreme(c) for c, part in index.parts)
    return [(dataclasses.replace(index.affine, constant=index.affine.constant + top), size)]


@dataclass(frozen=True)
class Read:
    tensor: str
    axes: tuple[Index, ...]
    pad: float | None = None  # the value read out of range (zero if None)

    def text(self) -> str:
        axes = [a.text() for a in self.axes]
        if self.pad is not None:
            axes.append(f"pad={self.pad}")
        return f"{self.tensor}[{', '.join(axes)}]"


@dataclass(frozen=True)
class Condition:
    """``(left op right)``: an index comparison as a factor."""

    left: Affine
    op: str
    right: Affine

    def text(self) -> str:
        return f"({self.left.text()} {self.op} {self.right.text()})"

    def value(self, grids: Mapping[str, np.ndarray]) -> np.ndarray:
        compare = {
            "<=": np.less_equal,
            "<": np.less,
            ">=": np.greater_equal,
            ">": np.greater,
            "==": np.equal,
            "!=": np.not_equal,
        }[self.op]
        return compare(self.left.value(grids), self.right.value(grids))


@dataclass(frozen=True)
class Statement:
    target: str
    axes: tuple[Affine, ...]
    reads: tuple[Read, ...]
    function: str | None = None  # applied to the product (no summed index: elementwise)
    conditions: tuple[Condition, ...] = ()
    reduce: str | None = None  # "max": over every index not on the left

    def text(self) -> str:
        product = "*".join([r.text() for r in self.reads] + [c.text() for c in self.conditions])
        rhs = f"{self.function}({product})" if self.function else product
        if self.reduce is not None:
            lhs = set(self.lhs_variables())
            reduced = [v for v in self.variables() if v not in lhs]
            rhs = f"{self.reduce}_{{{','.join(reduced)}}}({rhs})"
        return f"{self.target}[{', '.join(a.text() for a in self.axes)}] = {rhs}"

    def lhs_variables(self) -> list[str]:
        return [v for a in self.axes for v in a.variables]

    @property
    def scatter(self) -> bool:
        return any(a.lone is None for a in self.axes)

    def variables(self) -> list[str]:
        seen: list[str] = []
        compared = [a for c in self.conditions for a in (c.left, c.right)]
        for affine in [*self.axes, *(a for r in self.reads for a in r.axes), *compared]:
            for v in affine.variables:
                if v not in seen:
                    seen.append(v)
        return seen


class UnboundedError(Exception):
    """A generated statement leaves an index without an extent: draw another."""


@dataclass
class Case:
    family: str
    statements: tuple[Statement, ...]
    inputs: dict[str, tuple[int, ...]]
    declared: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ranges: dict[str, int] = field(default_factory=dict)
    symbolic: bool = False  # also derive with the inputs' sizes symbolic
    negative: bool = False  # inputs all negative (max pooling over padded windows)
    extents: list[dict[str, int]] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "; ".join(s.text() for s in self.statements)

    @property
    def output(self) -> str:
        return self.statements[-1].target

    def given_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**self.inputs, **self.declared}

    def call(self) -> str:
        """The ``ed.derive`` call that reproduces the case."""
        ranges = f", ranges={self.ranges}" if self.ranges else ""
        return f"ed.derive({self.text!r}, shapes={self.given_shapes()}{ranges})"

    def resolve(self) -> None:
        """Every index's extent and every tensor's shape, from CONTRACT section 1."""
        shapes = dict(self.inputs)
        self.extents = []
        for statement in self.statements:
            extents: dict[str, int] = {}
            lhs = {v for a in statement.axes for v in a.variables}
            for variable in statement.variables():
                if variable in self.ranges:
                    extents[variable] = self.ranges[variable]
            declared = self.declared.get(statement.target)
            if declared is not None and not statement.scatter:
                for affine, size in zip(statement.axes, declared, strict=True):
                    extents.setdefault(affine.lone or "", size)
            # an index that indexes a dimension alone ranges over it
            for read in statement.reads:
                for affine, size in zip(read.axes, shapes[read.tensor], strict=True):
                    lone = affine.lone
                    if lone is not None and lone not in lhs:
                        extents.setdefault(lone, size)
            # a left-hand-side index: the largest range from 0 with no read past the end
            for variable in statement.variables():
                if variable in extents or variable not in lhs:
                    continue
                bounds = []
                for read in statement.reads:
                    limits = [
                        limit
                        for index, axis_size in zip(read.axes, shapes[read.tensor], strict=True)
                        for limit in bounding(index, axis_size)
                    ]
                    for affine, size in limits:
                        step = affine.coefficient(variable)
                        if step <= 0:
                            continue
                        others = [v for v in affine.variables if v != variable]
                        if any(affine.coefficient(v) > 0 and v in lhs for v in others):
                            raise UnboundedError(
                                f"{variable} shares a read with another output index"
                            )
                        rest = dataclasses.replace(
                            affine, terms=tuple(t for t in affine.terms if t[0] != variable)
                        )
                        bounds.append((size - 1 - rest.largest(extents)) // step + 1)
                if not bounds:
                    raise UnboundedError(f"nothing bounds {variable}")
                extents[variable] = min(bounds)
            missing = [v for v in statement.variables() if v not in extents]
            if missing:
                raise UnboundedError(f"no extent for {missing}")
            if any(n <= 0 for n in extents.values()):
                raise UnboundedError(f"an empty extent in {extents}")
            if statement.scatter or declared is None:
                shape = tuple(a.largest(extents) + 1 for a in statement.axes)
                if declared is not None:
                    shape = declared
            else:
                shape = declared
            if any(n <= 0 for n in shape):
                raise UnboundedError(f"an empty shape {shape}")
            shapes[statement.target] = shape
            self.extents.append(extents)
        self.shapes = shapes


_TERM = re.compile(r"([+-]?)(?:(\d+)\*)?([a-z]\w*)|([+-]?\d+)")


def parse_affine(text: str) -> Affine:
    """``"7-j-n"`` as an :class:`Affine` (integers, letters, ``c*v``; nothing else)."""
    compact = text.replace(" ", "")
    terms, constant, position = [], 0, 0
    for match in _TERM.finditer(compact):
        assert match.start() == position, f"cannot read {text!r}"
        position = match.end()
        sign, coefficient, variable, number = match.groups()
        if variable:
            terms.append((variable, (-1 if sign == "-" else 1) * int(coefficient or 1)))
        else:
            constant += int(number)
    assert position == len(compact), f"cannot read {text!r}"
    return Affine(tuple(terms), constant, compact[:1].isdigit())


def _parse_access(text: str) -> tuple[str, tuple[Affine, ...]]:
    name, _, rest = text.strip().partition("[")
    return name, tuple(parse_affine(a) for a in rest.rstrip("]").split(","))


def parse_case(
    text: str,
    inputs: Mapping[str, tuple[int, ...]],
    declared: Mapping[str, tuple[int, ...]] | None = None,
    ranges: Mapping[str, int] | None = None,
) -> Case:
    """A case from a program of products of reads, optionally inside one function call."""
    statements = []
    for line in text.split(";"):
        lhs, rhs = line.split("=")
        function = None
        call = re.fullmatch(r"\s*(\w+)\((.*)\)\s*", rhs)
        if call:
            function, rhs = call.groups()
        target, axes = _parse_access(lhs)
        factors = re.findall(r"\w+\[[^\]]*\]", rhs)  # the reads, coefficients inside
        reads = tuple(Read(*_parse_access(r)) for r in factors)
        statements.append(Statement(target, axes, reads, function))
    case = Case("repro", tuple(statements), dict(inputs), dict(declared or {}), dict(ranges or {}))
    case.symbolic = True
    case.resolve()
    return case


# ---- the reference: index grids, a zero-padded gather, a scatter-add --------------------------


def _grids(extents: Mapping[str, int]) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    names = list(extents)
    shape = tuple(extents[v] for v in names)
    grids = {}
    for axis, name in enumerate(names):
        view = [1] * len(names)
        view[axis] = extents[name]
        grids[name] = np.arange(extents[name]).reshape(view)
    return grids, shape


def _positions(
    affines: Sequence[Affine], grids: Mapping[str, np.ndarray], grid: tuple[int, ...], shape
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    inside = np.ones(grid, dtype=bool)
    clipped = []
    for affine, size in zip(affines, shape, strict=True):
        position = np.broadcast_to(affine.value(grids), grid)
        inside &= (position >= 0) & (position < size)
        clipped.append(np.clip(position, 0, max(size - 1, 0)))
    return inside, tuple(clipped)


def reference_values(case: Case, arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Every tensor's value as a float64 torch tensor (so that autograd differentiates it)."""
    import torch

    values = dict(arrays)
    for statement, extents in zip(case.statements, case.extents, strict=True):
        grids, grid = _grids(extents)
        term: Any = torch.ones(grid, dtype=torch.float64)
        for read in statement.reads:
            source = values[read.tensor]
            inside, where = _positions(read.axes, grids, grid, tuple(source.shape))
            gathered = source[tuple(torch.from_numpy(np.ascontiguousarray(w)) for w in where)]
            outside = 0.0 if read.pad is None else read.pad
            term = term * torch.where(torch.from_numpy(inside), gathered, outside)
        for condition in statement.conditions:
            mask = np.broadcast_to(condition.value(grids), grid)
            term = term * torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float64))
        if statement.function is not None:
            term = getattr(torch, statement.function)(term)
        if statement.reduce is not None:
            lhs = set(statement.lhs_variables())
            reduced = [k for k, v in enumerate(extents) if v not in lhs]
            term = torch.amax(term, dim=reduced, keepdim=True)
            grid = tuple(term.shape)
        shape = case.shapes[statement.target]
        inside, where = _positions(statement.axes, grids, grid, shape)
        written = torch.where(torch.from_numpy(inside), term, 0.0)
        positions = tuple(torch.from_numpy(np.ascontiguousarray(w)) for w in where)
        zeros = torch.zeros(shape, dtype=torch.float64)
        values[statement.target] = zeros.index_put(positions, written, accumulate=True)
    return values


@dataclass
class Reference:
    inputs: dict[str, np.ndarray]
    cotangent: np.ndarray
    values: dict[str, np.ndarray]  # inputs, intermediates, output
    grads: dict[str, np.ndarray]  # every input and intermediate


def reference(case: Case, seed: int) -> Reference:
    """Random inputs and cotangent; values, and pullbacks by ``torch.autograd``."""
    import torch

    generator = np.random.default_rng(seed)
    inputs = {name: generator.standard_normal(shape) for name, shape in case.inputs.items()}
    if case.negative:
        inputs = {name: -np.abs(a) - 0.1 for name, a in inputs.items()}
    leaves = {name: torch.tensor(a, requires_grad=True) for name, a in inputs.items()}
    values = reference_values(case, leaves)
    intermediates = [s.target for s in case.statements[:-1]]
    for name in intermediates:
        values[name].retain_grad()
    output = values[case.output]
    cotangent = generator.standard_normal(tuple(output.shape))
    output.backward(torch.from_numpy(cotangent))
    grads = {}
    for name in [*inputs, *intermediates]:
        grad = values[name].grad
        grads[name] = np.zeros(tuple(values[name].shape)) if grad is None else grad.numpy()
    plain = {name: value.detach().numpy() for name, value in values.items()}
    return Reference(inputs, cotangent, plain, grads)


# ---- random cases -----------------------------------------------------------------------------


def _choice(generator: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(generator.integers(len(options)))]


def _conv(generator: np.random.Generator) -> Case:
    """A convolution: batch, channels (in/out, depthwise, grouped), a kernel per position,
    strides, dilations, offsets, flipped kernels and reversed input reads."""
    dims = 1 if generator.random() < 0.7 else 2
    batch = generator.random() < 0.5
    mode = _choice(generator, ["none", "none", "inout", "depthwise", "grouped", "local"])
    out_vars, kernel_vars = ["i", "j"][:dims], ["m", "n"][:dims]
    x_axes: list[Affine] = []
    w_axes: list[Affine] = []
    y_axes: list[Affine] = []
    x_shape: list[int] = []
    w_shape: list[int] = []
    if batch:
        x_axes.append(var("b"))
        y_axes.append(var("b"))
        x_shape.append(int(generator.integers(1, 3)))
    channels = int(generator.integers(1, 4))
    if mode == "inout":
        w_axes += [var("o"), var("c")]
        x_axes.append(var("c"))
        y_axes.append(var("o"))
        w_shape += [int(generator.integers(1, 4)), channels]
        x_shape.append(channels)
    elif mode == "depthwise":
        w_axes.append(var("c"))
        x_axes.append(var("c"))
        y_axes.append(var("c"))
        w_shape.append(channels)
        x_shape.append(channels)
    elif mode == "grouped":
        groups = int(generator.integers(1, 3))
        w_axes += [var("g"), var("o"), var("c")]
        x_axes += [var("g"), var("c")]
        y_axes += [var("g"), var("o")]
        w_shape += [groups, int(generator.integers(1, 3)), channels]
        x_shape += [groups, channels]
    declare = False
    for axis, (u, k) in enumerate(zip(out_vars, kernel_vars, strict=True)):
        kernel = int(generator.integers(1, 4))
        stride = int(_choice(generator, [1, 1, 2]))
        dilation = int(_choice(generator, [1, 1, 2]))
        offset = int(generator.integers(-1, 2))
        sign = -1 if generator.random() < 0.2 else 1
        size = int(generator.integers(max(kernel, 2), 8))
        if generator.random() < 0.2:  # reversed input: nothing bounds u from above
            read = Affine(((u, -stride), (k, -sign * dilation)), size - 1 + offset, True)
            declare = True
        else:
            read = Affine(((u, stride), (k, sign * dilation)), offset)
        if mode == "local" and axis == 0:
            w_axes.append(var(u))
            w_shape.append(int(generator.integers(1, 6)))
        x_axes.append(read)
        w_axes.append(var(k))
        y_axes.append(var(u))
        x_shape.append(size)
        w_shape.append(kernel)
    reads = [Read("W", tuple(w_axes)), Read("X", tuple(x_axes))]
    if generator.random() < 0.5:
        reads.reverse()
    case = Case(
        "conv",
        (Statement("Y", tuple(y_axes), tuple(reads)),),
        {"W": tuple(w_shape), "X": tuple(x_shape)},
    )
    if declare or generator.random() < 0.15:
        case.declared["Y"] = _declared_shape(case, generator)
    return case


def _declared_shape(case: Case, generator: np.random.Generator) -> tuple[int, ...]:
    """A shape for the output: whole axes where another tensor fixes them, else random."""
    statement = case.statements[-1]
    sizes: dict[str, int] = {}
    for read in statement.reads:
        for affine, size in zip(read.axes, case.inputs[read.tensor], strict=True):
            if affine.lone is not None:
                sizes.setdefault(affine.lone, size)
    return tuple(sizes.get(a.lone or "", int(generator.integers(1, 7))) for a in statement.axes)


def _diagonal(generator: np.random.Generator) -> Case:
    """A position index in two operands' reads: a diagonal of a convolution's output."""
    kind = _choice(generator, ["band", "scatter", "batched"])
    n = int(generator.integers(1, 5))
    k = int(generator.integers(1, 4))
    stride = int(_choice(generator, [1, 2]))
    if kind == "band":  # Y[i,j] = X[i]*W[j - s*i + c]
        offset = int(generator.integers(-1, 2))
        reads = (Read("X", (var("i"),)), Read("W", (Affine((("j", 1), ("i", -stride)), offset),)))
        case = Case(
            "diagonal", (Statement("Y", (var("i"), var("j")), reads),), {"X": (n,), "W": (k,)}
        )
        if generator.random() < 0.5:
            case.ranges["j"] = int(generator.integers(1, 7))
        else:
            case.declared["Y"] = (n, int(generator.integers(1, 7)))
        return case
    if kind == "scatter":  # Y[i, s*i+m+c] = X[i]*W[m]
        offset = int(generator.integers(0, 2))
        lhs = (var("i"), Affine((("i", stride), ("m", 1)), offset))
        reads = (Read("X", (var("i"),)), Read("W", (var("m"),)))
        return Case("diagonal", (Statement("Y", lhs, reads),), {"X": (n,), "W": (k,)})
    # Y[i,j] = X[i, j+m]*W[i, m]: a kernel per row
    size = int(generator.integers(k, 7))
    reads = (
        Read("X", (var("i"), Affine((("j", stride), ("m", 1))))),
        Read("W", (var("i"), var("m"))),
    )
    return Case(
        "diagonal", (Statement("Y", (var("i"), var("j")), reads),), {"X": (n, size), "W": (n, k)}
    )


def _scatter(generator: np.random.Generator) -> Case:
    """A transposed convolution written as a scatter: Y[s*i + d*m + c] = X[i]*W[m]."""
    stride = int(generator.integers(1, 4))
    dilation = int(_choice(generator, [1, 1, 2]))
    offset = int(generator.integers(0, 2))
    n, k = int(generator.integers(1, 6)), int(generator.integers(1, 4))
    x_axes: list[Affine] = []
    w_axes: list[Affine] = []
    y_axes: list[Affine] = []
    x_shape: list[int] = []
    w_shape: list[int] = []
    if generator.random() < 0.4:
        x_axes.append(var("b"))
        y_axes.append(var("b"))
        x_shape.append(int(generator.integers(1, 3)))
    if generator.random() < 0.4:
        w_axes += [var("c"), var("o")]
        x_axes.append(var("c"))
        y_axes.append(var("o"))
        channels = int(generator.integers(1, 3))
        w_shape += [channels, int(generator.integers(1, 3))]
        x_shape.append(channels)
    x_axes.append(var("i"))
    w_axes.append(var("m"))
    y_axes.append(Affine((("i", stride), ("m", dilation)), offset))
    x_shape.append(n)
    w_shape.append(k)
    reads = (Read("X", tuple(x_axes)), Read("W", tuple(w_axes)))
    return Case(
        "scatter",
        (Statement("Y", tuple(y_axes), reads),),
        {"X": tuple(x_shape), "W": tuple(w_shape)},
    )


def _declared(generator: np.random.Generator) -> Case:
    """Output indices that no read bounds, with the output's shape declared."""
    kind = _choice(generator, ["reversed", "sum", "reversed-conv"])
    size = int(generator.integers(1, 8))
    if kind == "reversed":  # Y[i] = X[c - i]
        top = int(generator.integers(0, 10))
        reads = (Read("X", (Affine((("i", -1),), top, True),)),)
        case = Case("declared", (Statement("Y", (var("i"),), reads),), {"X": (size,)})
        case.declared["Y"] = (int(generator.integers(1, 11)),)
        return case
    if kind == "sum":  # Y[i,j] = X[i + s*j] (times V[j])
        stride = int(_choice(generator, [1, 2]))
        reads: tuple[Read, ...] = (Read("X", (Affine((("i", 1), ("j", stride))),)),)
        inputs = {"X": (size,)}
        shape = (int(generator.integers(1, 6)), int(generator.integers(1, 6)))
        if generator.random() < 0.5:
            reads += (Read("V", (var("j"),)),)
            inputs["V"] = (shape[1],)
        case = Case("declared", (Statement("Y", (var("i"), var("j")), reads),), inputs)
        case.declared["Y"] = shape
        return case
    # Y[i] = W[m]*X[c - i - m]: a convolution of the reversed input
    k = int(generator.integers(1, 4))
    top = int(generator.integers(0, size + 2))
    reads = (Read("W", (var("m"),)), Read("X", (Affine((("i", -1), ("m", -1)), top, True),)))
    case = Case("declared", (Statement("Y", (var("i"),), reads),), {"W": (k,), "X": (size,)})
    case.declared["Y"] = (int(generator.integers(1, 8)),)
    return case


def _padded(generator: np.random.Generator) -> Case:
    """A convolution over a wrapped, clamped or reflected read, or one with a pad value
    (PyTorch's padding modes): 1-D or 2-D, channels or not, strides, offsets."""
    dims = 1 if generator.random() < 0.6 else 2
    mode = _choice(generator, ["mod", "clamp", "reflect", "pad"])
    channels = generator.random() < 0.5
    x_axes: list[Index] = []
    w_axes: list[Affine] = []
    y_axes: list[Affine] = []
    x_shape: list[int] = []
    w_shape: list[int] = []
    declared: list[int] = []
    if channels:
        w_axes += [var("o"), var("c")]
        x_axes.append(var("c"))
        y_axes.append(var("o"))
        w_shape += [int(generator.integers(1, 3)), int(generator.integers(1, 3))]
        x_shape.append(w_shape[-1])
        declared.append(w_shape[0])
    for u, k in list(zip(["i", "j"], ["m", "n"], strict=True))[:dims]:
        kernel = int(generator.integers(1, 4))
        stride = int(_choice(generator, [1, 1, 2]))
        offset = int(generator.integers(-2, 1))
        size = int(generator.integers(max(kernel, 2), 7))
        inner = Affine(((u, stride), (k, 1)), offset)
        x_axes.append(inner if mode == "pad" else wrapped(mode, inner, size))
        w_axes.append(var(k))
        y_axes.append(var(u))
        x_shape.append(size)
        w_shape.append(kernel)
        declared.append(int(generator.integers(1, 8)))
    pad = float(_choice(generator, [0.5, -1.0, 2.0])) if mode == "pad" else None
    reads = [Read("W", tuple(w_axes)), Read("X", tuple(x_axes), pad)]
    if generator.random() < 0.5:
        reads.reverse()
    case = Case(
        "padded",
        (Statement("Y", tuple(y_axes), tuple(reads)),),
        {"W": tuple(w_shape), "X": tuple(x_shape)},
    )
    if mode != "pad" or generator.random() < 0.5:
        case.declared["Y"] = tuple(declared)  # nothing bounds a wrapped read's indices
    return case


def _pool(generator: np.random.Generator) -> Case:
    """Max pooling over windows padded with a value (-inf as PyTorch's max_pool2d), on
    inputs of any sign or all negative."""
    dims = 1 if generator.random() < 0.6 else 2
    x_axes: list[Index] = []
    y_axes: list[Affine] = []
    x_shape: list[int] = []
    ranges: dict[str, int] = {}
    if generator.random() < 0.5:
        x_axes.append(var("c"))
        y_axes.append(var("c"))
        x_shape.append(int(generator.integers(1, 3)))
    for u, k in list(zip(["i", "j"], ["m", "n"], strict=True))[:dims]:
        kernel = int(generator.integers(2, 4))
        stride = int(_choice(generator, [1, 2]))
        offset = int(generator.integers(-1, 1))
        x_axes.append(Affine(((u, stride), (k, 1)), offset))
        y_axes.append(var(u))
        x_shape.append(int(generator.integers(kernel + 1, 8)))
        ranges[k] = kernel
    pad = float(_choice(generator, [-np.inf, -np.inf, 0.0, -1.5, 0.5]))
    statement = Statement("Y", tuple(y_axes), (Read("X", tuple(x_axes), pad),), reduce="max")
    case = Case("pool", (statement,), {"X": tuple(x_shape)}, ranges=ranges)
    case.negative = generator.random() < 0.5
    return case


def _divmod(generator: np.random.Generator) -> Case:
    """``//`` and ``mod`` by a number: nearest upsampling, strided and offset quotients, a
    pixel shuffle (1-D and 2-D)."""
    kind = _choice(generator, ["upsample", "shuffle"])
    r = int(generator.integers(2, 4))
    if kind == "upsample":  # Y[b, i] = X[b, (a*i + c) // r] (* V[i])
        step = int(_choice(generator, [1, 1, 2]))
        offset = int(generator.integers(0, 2))
        size = int(generator.integers(1, 5))
        reads = [Read("X", (var("b"), wrapped("div", Affine((("i", step),), offset), r)))]
        inputs = {"X": (int(generator.integers(1, 3)), size)}
        case = Case("divmod", (Statement("Y", (var("b"), var("i")), tuple(reads)),), inputs)
        case.resolve()
        if generator.random() < 0.4:  # a second read, alone: one extent for both
            n = case.shapes["Y"][1]
            reads.append(Read("V", (var("i"),)))
            inputs["V"] = (n,)
            case = Case("divmod", (Statement("Y", (var("b"), var("i")), tuple(reads)),), inputs)
        return case
    if generator.random() < 0.5:  # Y[c, i] = X[r*c + mod(i, r), i // r]
        channels = Composite(Affine((("c", r),)), ((1, Wrapped("mod", var("i"), r)),))
        x_axes: tuple[Index, ...] = (channels, wrapped("div", var("i"), r))
        shape = (r * int(generator.integers(1, 3)), int(generator.integers(1, 4)))
        statement = Statement("Y", (var("c"), var("i")), (Read("X", x_axes),))
        return Case("divmod", (statement,), {"X": shape})
    # Y[c, i, j] = X[r*r*c + r*mod(i, r) + mod(j, r), i // r, j // r] (PyTorch's pixel_shuffle)
    channels = Composite(
        Affine((("c", r * r),)),
        ((r, Wrapped("mod", var("i"), r)), (1, Wrapped("mod", var("j"), r))),
    )
    x_axes = (channels, wrapped("div", var("i"), r), wrapped("div", var("j"), r))
    shape = (r * r * int(generator.integers(1, 3)), *(int(n) for n in generator.integers(1, 4, 2)))
    statement = Statement("Y", (var("c"), var("i"), var("j")), (Read("X", x_axes),))
    return Case("divmod", (statement,), {"X": shape})


_OPS = ("<=", "<", ">=", ">", "==", "!=")


def _mask(generator: np.random.Generator) -> Case:
    """Index comparisons as factors: causal attention scores, a band, a picked diagonal."""
    kind = _choice(generator, ["causal", "band", "pick"])
    n, d = int(generator.integers(1, 6)), int(generator.integers(1, 4))
    shift = int(generator.integers(-1, 2))
    if kind == "causal":  # Y[i,j] = Q[i,d]*K[j,d]*(j op i + c)
        condition = Condition(var("j"), _choice(generator, _OPS), Affine((("i", 1),), shift))
        reads = (Read("Q", (var("i"), var("d"))), Read("K", (var("j"), var("d"))))
        statement = Statement("Y", (var("i"), var("j")), reads, conditions=(condition,))
        inputs = {"Q": (n, d), "K": (int(generator.integers(1, 6)), d)}
        return Case("mask", (statement,), inputs)
    if kind == "band":  # Y[i,j] = X[i,j]*(i op j + c)*(j op i + c')
        conditions = tuple(
            Condition(var(a), _choice(generator, _OPS), Affine(((b, 1),), c))
            for a, b, c in (("i", "j", shift), ("j", "i", int(generator.integers(-1, 2))))
        )
        reads = (Read("X", (var("i"), var("j"))),)
        statement = Statement("Y", (var("i"), var("j")), reads, conditions=conditions)
        return Case("mask", (statement,), {"X": (n, int(generator.integers(1, 6)))})
    # Y[i] = A[i,j]*B[j]*(i op j + c): a picked or masked contraction
    condition = Condition(var("i"), _choice(generator, _OPS), Affine((("j", 1),), shift))
    reads = (Read("A", (var("i"), var("j"))), Read("B", (var("j"),)))
    statement = Statement("Y", (var("i"),), reads, conditions=(condition,))
    return Case("mask", (statement,), {"A": (n, d), "B": (d,)})


def _as_intermediate(case: Case, generator: np.random.Generator) -> Case:
    """The case's statement as an intermediate Z, read by an elementwise statement."""
    first = case.statements[0]
    renamed = dataclasses.replace(first, target="Z")
    declared = {("Z" if k == "Y" else k): v for k, v in case.declared.items()}
    case.resolve()
    rank = len(case.shapes["Y"])
    indices = tuple(var(v) for v in ["p", "q", "r", "t", "u", "v"][:rank])
    if generator.random() < 0.5:
        follower = Statement("Y", indices, (Read("Z", indices),), "tanh")
        inputs = dict(case.inputs)
    else:
        follower = Statement("Y", indices, (Read("Z", indices), Read("U", indices)))
        inputs = {**case.inputs, "U": case.shapes["Y"]}
    program = Case(case.family + "+program", (renamed, follower), inputs, declared, case.ranges)
    program.negative = case.negative
    return program


FAMILIES: dict[str, Callable[[np.random.Generator], Case]] = {
    "conv": _conv,
    "diagonal": _diagonal,
    "scatter": _scatter,
    "declared": _declared,
}

# issue 18's reads: wrapped, clamped, reflected and padded reads, // and mod, comparisons
READ_FAMILIES: dict[str, Callable[[np.random.Generator], Case]] = {
    "padded": _padded,
    "pool": _pool,
    "divmod": _divmod,
    "mask": _mask,
}


def random_case(seed: int, families: str = "all") -> Case:
    """A resolved random case; the same seed gives the same case. ``families``: "all",
    "affine" (the first four, as before issue 18) or "reads" (issue 18's)."""
    generator = np.random.default_rng(seed)
    drawn = {
        "affine": FAMILIES,
        "reads": READ_FAMILIES,
        "all": {**FAMILIES, **READ_FAMILIES},
    }[families]
    while True:
        family = _choice(generator, list(drawn))
        case = drawn[family](generator)
        try:
            if generator.random() < 0.3:
                case = _as_intermediate(case, generator)
            case.resolve()
        except UnboundedError:
            continue
        case.symbolic = generator.random() < 0.3
        return case


def cases(count: int, seed: int = 0, families: str = "all") -> Iterator[tuple[int, Case]]:
    for k in range(count):
        yield seed + k, random_case(seed + k, families)


# ---- the comparisons --------------------------------------------------------------------------


class MismatchError(AssertionError):
    """Something einderive computed differs from the reference."""


def _close(actual: Any, expected: np.ndarray, what: str) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != np.shape(expected):
        raise MismatchError(f"{what}: shape {actual.shape}, expected {np.shape(expected)}")
    scale = float(np.max(np.abs(expected), initial=0.0)) + 1.0
    error = float(np.max(np.abs(actual - expected), initial=0.0)) / scale
    if not error <= TOLERANCE:
        raise MismatchError(f"{what}: relative error {error:.2e}")


def _arrange(array: np.ndarray, axes: Sequence[Any]) -> np.ndarray:
    """A call operand from a layout: entry k is a tensor axis, None (a unit axis), or a
    tuple of tensor axes merged into one (major first; empty: a unit axis)."""
    groups = [() if a is None else (a,) if isinstance(a, int) else tuple(a) for a in axes]
    order = [a for group in groups for a in group]
    moved = np.transpose(array, order)
    sizes = [int(np.prod([array.shape[a] for a in group], dtype=np.int64)) for group in groups]
    return moved.reshape(sizes)


def _result(out: np.ndarray, out_axes: Sequence[Any], shape: tuple[int, ...]) -> np.ndarray:
    """The pullback from a call's output: entry k of ``out_axes`` says which pullback
    axes (merged, major first) the output's axis k holds."""
    groups = [() if a is None else (a,) if isinstance(a, int) else tuple(a) for a in out_axes]
    split = [shape[a] for group in groups for a in group]
    order = [a for group in groups for a in group]
    values = np.asarray(out).reshape(split)
    return np.transpose(values, np.argsort(order))


def _generic_by_jax(call: Any, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The generic record (CONTRACT section 3) as one ``conv_general_dilated``."""
    import jax

    if call.permute_input:
        x = x.swapaxes(0, 1)
    if call.permute_kernel:
        w = w.swapaxes(0, 1)
    if call.flip_kernel:
        w = w[(slice(None), slice(None)) + (slice(None, None, -1),) * call.rank]
    letters = "DHW"[3 - call.rank :] if call.rank <= 3 else None
    assert letters is not None
    with jax.enable_x64(True):
        out = jax.lax.conv_general_dilated(
            jax.numpy.asarray(x),
            jax.numpy.asarray(w),
            window_strides=tuple(int(s) for s in call.stride),
            padding=tuple((int(lo), int(hi)) for lo, hi in call.padding),
            lhs_dilation=tuple(int(f) for f in call.fill),
            rhs_dilation=tuple(int(d) for d in call.dilation),
            dimension_numbers=("NC" + letters, "OI" + letters, "NC" + letters),
            feature_group_count=int(call.groups),
            batch_group_count=int(getattr(call, "batch_groups", 1)),
        )
        return np.asarray(out)


def _jax_record(record: Any, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    import jax

    with jax.enable_x64(True):
        kernel = jax.numpy.asarray(w)
        if record.flip_dims:
            kernel = jax.lax.rev(kernel, tuple(record.flip_dims))
        keywords = {
            "window_strides": tuple(int(s) for s in record.window_strides),
            "padding": tuple((int(lo), int(hi)) for lo, hi in record.padding),
            "lhs_dilation": tuple(int(f) for f in record.lhs_dilation),
            "rhs_dilation": tuple(int(d) for d in record.rhs_dilation),
            "dimension_numbers": tuple(record.dimension_numbers),
            "feature_group_count": int(record.feature_group_count),
            "batch_group_count": int(getattr(record, "batch_group_count", 1)),
        }
        out = jax.lax.conv_general_dilated(jax.numpy.asarray(x), kernel, **keywords)
        return np.asarray(out)


def _torch_record(record: Any, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    import torch

    functional = torch.nn.functional
    rank = len(record.stride)
    if record.transpose_input:
        x = x.swapaxes(0, 1)
    fold = int(getattr(record, "batch_groups", 1))
    if fold != 1:  # the batch's groups folded into the channels
        batch, channels = x.shape[:2]
        x = x.reshape(fold, batch // fold, channels, *x.shape[2:]).swapaxes(0, 1)
        x = x.reshape(batch // fold, fold * channels, *x.shape[3:])
    if record.fill is not None:  # fill-1 zeros between neighbours
        for axis, fill in enumerate(record.fill, start=2):
            shape = list(x.shape)
            shape[axis] = (x.shape[axis] - 1) * int(fill) + 1
            filled = np.zeros(shape)
            index = [slice(None)] * x.ndim
            index[axis] = slice(None, None, int(fill))
            filled[tuple(index)] = x
            x = filled
    # a fresh C-ordered copy: ascontiguousarray keeps a reversed unit axis' negative stride
    tensor = torch.from_numpy(np.array(x, dtype=np.float64, order="C"))
    for pad in (record.pad, record.crop):
        if pad is not None:
            tensor = functional.pad(tensor, tuple(int(p) for p in pad))
    kernel = torch.from_numpy(np.array(w, dtype=np.float64, order="C"))
    if record.transpose_kernel:
        kernel = kernel.transpose(0, 1)
    if record.flip_dims:
        kernel = kernel.flip(tuple(record.flip_dims))
    keywords: dict[str, Any] = {
        "stride": tuple(int(s) for s in record.stride),
        "padding": tuple(int(p) for p in record.padding),
        "dilation": tuple(int(d) for d in record.dilation),
        "groups": int(record.groups),
    }
    if record.output_padding is not None:
        keywords["output_padding"] = tuple(int(p) for p in record.output_padding)
    assert record.function in (f"conv{rank}d", f"conv_transpose{rank}d")
    return getattr(functional, record.function)(tensor, kernel, **keywords).numpy()


def _keywords(function: Callable, sizes: Mapping[str, int]) -> dict[str, int] | None:
    """The keyword-only arguments of an emitted function, or None if one is unknown."""
    names = [
        p.name for p in inspect.signature(function).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    if any(name not in sizes for name in names):
        return None
    return {name: sizes[name] for name in names}


def _check_module(source: str, kind: str, derivation: Any, ref: Reference, label: str) -> int:
    """Forward, every pullback and vjp of one emitted module; the number of calls checked."""
    namespace: dict[str, Any] = {"__name__": f"oracle_{kind}"}
    exec(compile(source, f"<{kind} module>", "exec"), namespace)
    if kind == "torch":
        import torch

        def convert(a: np.ndarray) -> Any:
            return torch.from_numpy(np.array(a, dtype=np.float64))
    else:

        def convert(a: np.ndarray) -> Any:
            return a

    names = list(derivation.program.inputs)
    arrays = [convert(ref.inputs[n]) for n in names]
    sizes: dict[str, int] = {}
    checked = 0
    forward = namespace["forward"]
    keywords = _keywords(forward, sizes)
    if keywords is not None:
        _close(
            forward(*arrays, **keywords), ref.values[derivation.program.output], f"{label} forward"
        )
        checked += 1
    for name in derivation.pullbacks:
        function = namespace[f"pullback_{name}"]
        keywords = _keywords(function, sizes)
        if keywords is None:
            continue
        _close(
            function(convert(ref.cotangent), *arrays, **keywords),
            ref.grads[name],
            f"{label} pullback_{name}",
        )
        checked += 1
    vjp = namespace.get("vjp")  # the loops module has none
    keywords = None if vjp is None else _keywords(vjp, sizes)
    if vjp is not None and keywords is not None:
        results = vjp(convert(ref.cotangent), *arrays, **keywords)
        if len(results) != len(derivation.pullbacks):
            raise MismatchError(f"{label} vjp: {len(results)} results")
        for name, result in zip(derivation.pullbacks, results, strict=True):
            _close(result, ref.grads[name], f"{label} vjp {name}")
        checked += 1
    return checked


def _check_conv_calls(derivation: Any, ref: Reference, with_jax: bool) -> list[str]:
    """Run every reported convolution call, built here from its parameters."""
    from einderive.conv.calls import jax_call, torch_call
    from einderive.conv.recognise import ConvPullback

    backward = derivation.backward
    names = {cotangent: tensor for tensor, cotangent in backward.cotangents.items()}
    values = {**ref.values, **{c: ref.grads[t] for c, t in names.items() if t in ref.grads}}
    values[backward.seeds[0]] = ref.cotangent
    checked = []
    for name, recognition in derivation.convolutions.items():
        if not isinstance(recognition, ConvPullback):
            continue
        numbers = recognition.subs(dict(derivation.program.definitions))
        call = numbers.call
        if call.free_symbols:
            continue
        x = _arrange(np.flip(values[call.x], numbers.x_layout.flips), numbers.x_layout.axes)
        w = _arrange(np.flip(values[call.w], numbers.w_layout.flips), numbers.w_layout.axes)
        expected = ref.grads[name]
        forms = ["generic", "torch"] + (["jax"] if with_jax else [])
        for form in forms:
            what = f"{form} call of d{name} ({call})"
            try:
                if form == "generic":
                    out = _generic_by_jax(call, x, w)
                elif form == "jax":
                    out = _jax_record(jax_call(call), x, w)
                else:
                    out = _torch_record(torch_call(call, numbers.kernel_size), x, w)
            except Exception as error:  # a call that does not run is a mismatch
                raise MismatchError(f"{what}: {type(error).__name__}: {error}") from error
            _close(_result(out, numbers.out_axes, expected.shape), expected, what)
        checked.append(name)
    return checked


def _check_padding_mode_calls(derivation: Any, ref: Reference, with_jax: bool) -> int:
    """Run the printed lines of a forward recognised as a padding_mode call (the pad and the
    call, the nn.ConvNd module, each pullback's call and fold), as printed, in order; the
    number of runs."""
    calls = derivation.padding_mode_calls()
    if calls is None or "reason" in calls:
        return 0
    seed = derivation.backward.seeds[0]
    output = derivation.program.output
    expected = {output: ref.values[output]}
    expected.update({p["name"]: ref.grads[name] for name, p in calls["pullbacks"].items()})
    runs = 0
    for framework in ["torch"] + (["jax"] if with_jax else []):
        forward = calls["forward"][framework]
        if forward["code"] is None:
            continue
        pullbacks = [p for p in calls["pullbacks"].values() if p[framework] is not None]
        lines = forward["code"] + [line for p in pullbacks for line in p[framework]["code"]]
        blocks = [(lines, [output] + [p["name"] for p in pullbacks])]
        if framework == "torch" and forward.get("module"):
            blocks.append(([forward["module"]], [output]))
        for block, computed in blocks:
            what = f"padding_mode {framework} lines {block}"
            try:
                namespace = _run_printed(framework, block, ref, seed)
            except Exception as error:  # a line that does not run is a mismatch
                raise MismatchError(f"{what}: {type(error).__name__}: {error}") from error
            for name in computed:
                _close(namespace[name], expected[name], f"{what} {name}")
            runs += 1
    return runs


def _run_printed(framework: str, lines: list[str], ref: Reference, seed: str) -> dict[str, Any]:
    """Execute printed lines in order, the inputs and the cotangent bound as the framework's
    arrays (float64: JAX with x64 enabled); the namespace they leave."""
    if framework == "jax":
        import jax

        with jax.enable_x64(True):
            namespace: dict[str, Any] = {"jax": jax, seed: jax.numpy.asarray(ref.cotangent)}
            namespace.update({n: jax.numpy.asarray(a) for n, a in ref.inputs.items()})
            for line in lines:
                exec(line, namespace)  # noqa: S102 - the printed line, as pasted
            # read out inside x64, as float64 NumPy
            arrays = {k: np.asarray(v) for k, v in namespace.items() if isinstance(v, jax.Array)}
            return {**namespace, **arrays}
    import torch

    namespace = {"torch": torch, seed: torch.from_numpy(ref.cotangent.copy())}
    namespace.update({n: torch.from_numpy(a.copy()) for n, a in ref.inputs.items()})
    for line in lines:
        exec(line, namespace)  # noqa: S102 - the printed line, as pasted
    return namespace


@dataclass
class Outcome:
    checks: int = 0
    conv_calls: int = 0
    symbolic: int = 0


def check(
    case: Case, seed: int, with_jax: bool = True, full: bool = True, reprint: bool = True
) -> Outcome:
    """Compare everything einderive computes for ``case`` with the reference (MismatchError).

    Without ``with_jax``, the jax backend and module are left out (JAX compiles every
    operation for every new shape, seconds per case); the generic record still runs
    through ``jax.lax.conv_general_dilated``. Without ``full``, the loops module and the
    symbolic derivation are left out too (their source is the slow part). Without
    ``reprint``, the numeric NumPy/PyTorch/JAX modules checked are the ones the backends
    just ran (``ed.compile(...).source``: what ``derive(...).source(kind)`` prints for
    those sizes), not printed a second time.
    """
    import einderive as ed

    ref = reference(case, seed)
    outcome = Outcome()
    shapes = case.given_shapes()
    ranges = case.ranges or None
    try:
        _close(
            ed.evaluate(case.text, ref.inputs, shapes=case.declared or None, ranges=ranges),
            ref.values[case.output],
            "evaluate",
        )
        backends = ["loops", "numpy", "torch"] + (["jax"] if with_jax else [])
        for backend in backends:
            grads = ed.vjp(
                case.text,
                ref.inputs,
                ref.cotangent,
                shapes=case.declared or None,
                ranges=ranges,
                backend=backend,
            )
            for name in case.inputs:
                _close(grads[name], ref.grads[name], f"vjp backend={backend} d{name}")
            outcome.checks += 1
        printed = {}  # the modules the backends ran, by kind
        if not reprint:
            for backend in backends:
                if backend != "loops":
                    compiled = ed.compile(
                        case.text, shapes=case.declared or None, ranges=ranges, backend=backend
                    )
                    printed[backend] = compiled.source
        derivations = [("numeric", ed.derive(case.text, shapes=shapes, ranges=ranges))]
        if case.symbolic and full:
            symbolic = ed.derive(case.text, shapes=case.declared or None, ranges=ranges)
            derivations.append(("symbolic", symbolic))
        for label, derivation in derivations:
            kinds = ["numpy", "torch"] + (["loops"] if full else []) + (["jax"] if with_jax else [])
            for kind in kinds:
                reused = printed.get(kind) if label == "numeric" else None
                source = reused if reused is not None else derivation.source(kind)
                checked = _check_module(source, kind, derivation, ref, f"{label} {kind} module")
                outcome.checks += checked
                outcome.symbolic += checked if label == "symbolic" else 0
            if label == "numeric":
                outcome.conv_calls += len(_check_conv_calls(derivation, ref, with_jax))
                outcome.conv_calls += _check_padding_mode_calls(derivation, ref, with_jax)
    except MismatchError as error:
        raise MismatchError(f"{case.call()} (seed {seed}): {error}") from None
    except Exception as error:
        raise MismatchError(
            f"{case.call()} (seed {seed}): {type(error).__name__}: {error}"
        ) from error
    return outcome
