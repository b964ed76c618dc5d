"""Hypothesis strategies: random convolution configurations and random affine statements.

Each strategy draws a plain record (``ConvConfig``, ``AffineStatement``) whose
``call()`` is the ``ed.verify(...)`` call that checks it, so a failing example
shrunk by hypothesis can be pasted as it is printed.

Convolutions are written as the notation writes them (CONTRACT section 1):

    Y[b,o,i,j] = W[o,c,m,n]*X[b,c,s1*i+d1*m-p1, s2*j+d2*n-p2] + B[o]   (gather form)
    Y[b,o,f1*i+d1*m-p1] = X[b,c,i]*W[c,o,m]                           (scatter form: fill f1)

with every stride, dilation and padding either an integer in the text, a
parameter given a number through ``params=``, or a parameter left symbolic
(drawn by ``verify``), and the sizes either given through ``shapes=`` or left
symbolic. A negative padding (cropping) is a positive offset: ``X[s*i+d*m+2]``.
Batch and channel axes may sit anywhere among the spatial ones, which keep
their order in every tensor.

Left out, because the recogniser does not take them as one generic call (the
pullbacks still verify): a depthwise convolution with a batch axis (its dW is a
grouped convolution with the batch inside each group), and spatial axes in a
different order in the kernel than in the input (``W[n,m]`` against
``X[i+m, j+n]``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st

SPATIAL_OUT = ("i", "j", "k")
SPATIAL_KERNEL = ("m", "n", "l")
# the values verify draws for a parameter left symbolic (einderive.verify.draw_values)
SYMBOLIC_POSITIVE = (1, 2, 3)
SYMBOLIC_OFFSET = (0, 1, 2)
SYMBOLIC_SIZES = range(1, 8)
# spatial sizes per number of spatial dimensions: the loops interpreter visits every element
MAX_INPUT = {1: 10, 2: 7, 3: 5}
MAX_KERNEL = {1: 4, 2: 3, 3: 3}


@dataclass(frozen=True)
class Quantity:
    """A stride, dilation, fill or padding: a literal, a given parameter, or a symbolic one."""

    value: int  # unused when symbolic
    form: str  # "literal" | "given" | "symbolic"
    name: str  # the parameter's name in the text

    def worst(self, candidates: tuple[int, ...], pick: Callable[[tuple[int, ...]], int]) -> int:
        """The least favourable value ``verify`` may draw (the value itself if not symbolic)."""
        return pick(candidates) if self.form == "symbolic" else self.value


@dataclass(frozen=True)
class ConvConfig:
    """One convolution configuration: the text and the arguments of ``ed.verify``."""

    text: str
    params: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ranges: dict[str, int] = field(default_factory=dict)
    convolutions: tuple[str, ...] = ("X", "W")  # whose pullbacks must be convolutions
    dims: int = 1
    scatter: bool = False
    seed: int = 0

    def call(self, backends: tuple[str, ...] = ("loops", "numpy")) -> str:
        return _call(self, backends)

    def key(self) -> tuple:
        return (self.text, tuple(sorted(self.params.items())), tuple(sorted(self.shapes.items())))


def _call(case: ConvConfig | AffineStatement, backends: tuple[str, ...]) -> str:
    """The ``ed.verify`` call that checks ``case``, to paste."""
    return (
        f"ed.verify({case.text!r}, params={case.params!r}, shapes={case.shapes!r}, "
        f"ranges={case.ranges!r}, trials=1, seed={case.seed}, "
        f"backends_to_check={list(backends)!r})"
    )


def _signed(term: str, coefficient: str) -> str:
    return term if coefficient == "1" else f"{coefficient}*{term}"


@st.composite
def quantities(draw: st.DrawFn, name: str, low: int, high: int) -> Quantity:
    form = draw(st.sampled_from(("literal", "literal", "given", "symbolic")))
    return Quantity(draw(st.integers(low, high)), form, name)


def _coefficient(quantity: Quantity, params: dict[str, int]) -> str:
    if quantity.form == "literal":
        return str(quantity.value)
    if quantity.form == "given":
        params[quantity.name] = quantity.value
    return quantity.name


def _offset(padding: Quantity, params: dict[str, int]) -> str:
    """The read's offset ``-padding``: ``-2``, ``+3`` (cropping), nothing, or ``-p1``."""
    if padding.form == "literal":
        if padding.value == 0:
            return ""
        return f"-{padding.value}" if padding.value > 0 else f"+{-padding.value}"
    if padding.form == "given":
        params[padding.name] = padding.value
    return f"-{padding.name}"


def _feasible_fraction(fits: list[Callable[[int, int], bool]]) -> float:
    """The chance that symbolic sizes drawn in 1..7 give a non-empty output.

    ``fits[axis](N, K)`` says whether input size ``N`` and kernel size ``K``
    give that spatial axis of the output at least one element.
    """
    fraction = 1.0
    for fit in fits:
        good = sum(1 for n in SYMBOLIC_SIZES for k in SYMBOLIC_SIZES if fit(n, k))
        fraction *= good / len(SYMBOLIC_SIZES) ** 2
    return fraction


def _smallest_input(fit: Callable[[int, int], bool], kernel: int) -> int:
    return next(n for n in range(1, 10_000) if fit(n, kernel))


def _gather_fits(d: int, p: int, n: int, k: int) -> bool:
    return n - 1 >= d * (k - 1) - p


def _scatter_fits(f: int, d: int, p: int, n: int, k: int) -> bool:
    return f * (n - 1) + d * (k - 1) >= p


@st.composite
def _interleaved(
    draw: st.DrawFn, lead: list[tuple[str, int | None]], spatial: list[tuple[str, int | None]]
) -> list[tuple[str, int | None]]:
    """The non-spatial axes shuffled in among the spatial ones, which keep their order."""
    axes = list(spatial)
    for axis in draw(st.permutations(lead)):
        axes.insert(draw(st.integers(0, len(axes))), axis)
    return axes


@st.composite
def conv_configs(draw: st.DrawFn, max_dims: int = 3) -> ConvConfig:
    """A random N-D convolution (gather form) or transposed convolution (scatter form)."""
    dims = draw(st.integers(1, max_dims))
    scatter = draw(st.integers(0, 3)) == 0
    shared = draw(st.integers(0, 4)) == 0  # one parameter name for every axis (``s``, not ``s1``)
    batch, in_channels, out_channels = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    # depthwise (one kernel per channel) only without a batch: see the module's docstring
    depthwise = not batch and draw(st.integers(0, 5)) == 0
    bias = out_channels and not scatter and not depthwise and draw(st.booleans())
    flip = not scatter and draw(st.integers(0, 5)) == 0  # a true convolution: X[s*i - d*m + c]
    symbolic_shapes = draw(st.integers(0, 2)) == 0

    def named(kind: str, axis: int) -> str:
        return kind if shared else f"{kind}{axis + 1}"

    params: dict[str, int] = {}
    out_idx, kernel_idx = SPATIAL_OUT[:dims], SPATIAL_KERNEL[:dims]
    inputs, kernels, reads = [], [], []
    fits: list[Callable[[int, int], bool]] = []
    shared_quantities: tuple[Quantity, ...] | None = None
    for axis in range(dims):
        if shared_quantities is None or not shared:
            step = draw(quantities(named("f" if scatter else "s", axis), 1, 4))
            dilation = draw(quantities(named("d", axis), 1, 4))
            padding = draw(quantities(named("p", axis), -3, 6))
            shared_quantities = (step, dilation, padding)
        step, dilation, padding = shared_quantities
        kernel = draw(st.integers(1, MAX_KERNEL[dims]))
        size = draw(st.integers(1, MAX_INPUT[dims]))
        # the output is non-empty for every draw of the symbolic quantities
        if scatter:
            # writes f*i + d*m - p for i < N, m < K: some must land at 0 or above
            f, d = step.worst(SYMBOLIC_POSITIVE, min), dilation.worst(SYMBOLIC_POSITIVE, min)
            p = padding.worst(SYMBOLIC_OFFSET, max)
            fit = functools.partial(_scatter_fits, f, d, p)
        else:
            # reads s*i + d*m - p for m < K (or s*i - d*m - p, flipped): one window must fit
            d = 0 if flip else dilation.worst(SYMBOLIC_POSITIVE, max)
            p = padding.worst(SYMBOLIC_OFFSET, min)
            fit = functools.partial(_gather_fits, d, p)
        fits.append(fit)
        size = max(size, _smallest_input(fit, kernel))
        inputs.append(size)
        kernels.append(kernel)
        s = _coefficient(step, params)
        term = _signed(kernel_idx[axis], _coefficient(dilation, params))
        sign = "-" if flip else "+"
        reads.append(f"{_signed(out_idx[axis], s)}{sign}{term}{_offset(padding, params)}")
    # verify draws every size symbol in 1..7 and the interpreter visits every element: sizes
    # stay symbolic in 1-D, and in 2-D without batch or channel axes
    small = dims == 1 or (dims == 2 and not (batch or in_channels or out_channels or depthwise))
    if not small or _feasible_fraction(fits) < 0.05:
        symbolic_shapes = False

    batch_size = draw(st.integers(1, 2))
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if depthwise:
        lead_x, lead_y, lead_w = [("c", c_in)], [("c", None)], [("c", c_in)]
    else:
        lead_x = [("b", batch_size)] * batch + [("c", c_in)] * in_channels
        lead_y = [("b", None)] * batch + [("o", None)] * out_channels
        # the kernel's channel axes: (out, in) in gather form, (in, out) as torch's conv_transpose
        out_in = [("o", c_out)] * out_channels + [("c", c_in)] * in_channels
        lead_w = out_in[::-1] if scatter else out_in
    spatial_out = [(index, None) for index in (reads if scatter else out_idx)]
    x_axes = list(zip(out_idx if scatter else reads, inputs, strict=True))
    w_axes = list(zip(kernel_idx, kernels, strict=True))
    if draw(st.integers(0, 3)) == 0:
        # channels last, or anywhere: the spatial axes keep their order
        x_axes = draw(_interleaved(lead_x, x_axes))
        w_axes = draw(_interleaved(lead_w, w_axes))
        y_axes = draw(_interleaved(lead_y, spatial_out))
    else:
        x_axes, w_axes, y_axes = lead_x + x_axes, lead_w + w_axes, lead_y + spatial_out

    def access(name: str, axes: list[tuple[str, int | None]]) -> str:
        return f"{name}[{','.join(index for index, _ in axes)}]"

    if scatter:
        text = f"{access('Y', y_axes)} = {access('X', x_axes)}*{access('W', w_axes)}"
    else:
        text = f"{access('Y', y_axes)} = {access('W', w_axes)}*{access('X', x_axes)}"
        if bias:
            text += " + B[o]"
    shapes: dict[str, tuple[int, ...]] = {}
    if not symbolic_shapes:
        shapes = {"X": tuple(n for _, n in x_axes), "W": tuple(n for _, n in w_axes)}
        if bias:
            shapes["B"] = (c_out,)
    seed = draw(st.integers(0, 2**16))
    return ConvConfig(text, params, shapes, {}, ("X", "W"), dims, scatter, seed)


# ---- random affine statements --------------------------------------------------------------

TENSORS = ("A", "B", "C")
VARIABLES = ("i", "j", "k", "l")


@dataclass(frozen=True)
class AffineStatement:
    """A random statement of products of reads at affine positions, with its arguments."""

    text: str
    params: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ranges: dict[str, int] = field(default_factory=dict)
    seed: int = 0

    def call(self, backends: tuple[str, ...] = ("loops", "numpy")) -> str:
        return _call(self, backends)


@dataclass(frozen=True)
class _Index:
    """One index position: ``sum(c*v) + constant (+ offset parameter)``."""

    terms: tuple[tuple[int, str], ...]
    constant: int
    parameter: str | None

    @property
    def lone(self) -> str | None:
        if len(self.terms) == 1 and self.terms[0][0] == 1 and not self.constant:
            return None if self.parameter else self.terms[0][1]
        return None

    def text(self) -> str:
        parts = []
        for coefficient, var in self.terms:
            head = var if abs(coefficient) == 1 else f"{abs(coefficient)}*{var}"
            parts.append(("-" if coefficient < 0 else "+") + head)
        if self.parameter:
            parts.append(f"+{self.parameter}")
        if self.constant or not parts:
            parts.append(f"{self.constant:+d}")
        joined = "".join(parts)
        return joined[1:] if joined.startswith("+") else joined

    def top(self, extents: dict[str, int], parameter_max: int) -> int:
        """The largest value over the box of the variables (the parameter at its largest)."""
        value = self.constant + (parameter_max if self.parameter else 0)
        return value + sum(max(0, c * (extents[v] - 1)) for c, v in self.terms)


@st.composite
def _indices(draw: st.DrawFn, variables: tuple[str, ...]) -> _Index:
    kind = draw(st.sampled_from(("lone", "lone", "lone", "shifted", "coupled", "constant")))
    if kind == "lone" or (kind != "constant" and not variables):
        if not variables:
            return _Index((), draw(st.integers(0, 3)), None)
        return _Index(((1, draw(st.sampled_from(variables))),), 0, None)
    if kind == "constant":
        return _Index((), draw(st.integers(0, 3)), None)
    var = draw(st.sampled_from(variables))
    terms = [(draw(st.sampled_from((1, 1, 2, 3, -1))), var)]
    if kind == "coupled":
        other = draw(st.sampled_from(variables))
        if other != var:
            terms.append((draw(st.sampled_from((1, 2, 3, -1))), other))
    parameter = draw(st.sampled_from((None, None, None, "q")))
    return _Index(tuple(terms), draw(st.integers(-2, 3)), parameter)


@st.composite
def affine_statements(draw: st.DrawFn) -> AffineStatement:
    """``Y[i,j] = A[i+2*k, j]*B[k, 2*j+1] + A[i, i]``-like statements, sized to be mostly valid.

    Every tensor keeps one rank; indices that are lone at the same axis of a
    tensor share an extent (so no extents conflict), the other axes are sized
    to hold most reads; an index that indexes no tensor alone gets a range
    (an output index only sometimes: else its extent is inferred).
    """
    variables = tuple(
        draw(st.lists(st.sampled_from(VARIABLES), min_size=1, max_size=3, unique=True))
    )
    ranks = {name: draw(st.integers(1, 3)) for name in TENSORS}
    n_terms = draw(st.integers(1, 3))
    terms: list[tuple[int, list[tuple[str, tuple[_Index, ...]]]]] = []
    for _ in range(n_terms):
        coefficient = draw(st.sampled_from((1, 1, 1, 2, -1)))
        factors = []
        for _ in range(draw(st.integers(1, 3))):
            tensor = draw(st.sampled_from(TENSORS))
            indices = tuple(draw(_indices(variables)) for _ in range(ranks[tensor]))
            factors.append((tensor, indices))
        terms.append((coefficient, factors))
    used = sorted({v for _, fs in terms for _, ix in fs for i in ix for _, v in i.terms})
    free = list(draw(st.permutations([v for v in used if draw(st.booleans())])))
    # union-find: indices lone at the same tensor axis share an extent
    parent = {v: v for v in used}

    def root(v: str) -> str:
        while parent[v] != v:
            v = parent[v]
        return v

    home: dict[tuple[str, int], str] = {}
    for _, factors in terms:
        for tensor, indices in factors:
            for axis, index in enumerate(indices):
                if index.lone:
                    other = home.setdefault((tensor, axis), index.lone)
                    parent[root(index.lone)] = root(other)
    sizes = {v: draw(st.integers(1, 4)) for v in sorted({root(v) for v in used})}
    extents = {v: sizes[root(v)] for v in used}
    lone = {i.lone for _, fs in terms for _, ix in fs for i in ix if i.lone}
    ranges = {}
    for v in used:
        if v not in lone and (v not in free or draw(st.booleans())):
            ranges[v] = extents[v]
    has_parameter = any(i.parameter for _, fs in terms for _, ix in fs for i in ix)
    params = {}
    if has_parameter and draw(st.booleans()):
        params["q"] = draw(st.integers(0, 2))
    parameter_max = params.get("q", max(SYMBOLIC_OFFSET))
    shapes: dict[str, tuple[int, ...]] = {}
    for tensor in TENSORS:
        reads = [ix for _, fs in terms for name, ix in fs if name == tensor]
        if not reads:
            continue
        shape = []
        for axis in range(ranks[tensor]):
            if (tensor, axis) in home:
                shape.append(extents[home[(tensor, axis)]])
                continue
            top = max(ix[axis].top(extents, parameter_max) for ix in reads)
            slack = draw(st.integers(0, 2))  # a little of the read may fall out of range
            shape.append(max(1, top + 1 - slack))
        shapes[tensor] = tuple(shape)
    rhs = ""
    for coefficient, factors in terms:
        product = "*".join(f"{t}[{', '.join(i.text() for i in ix)}]" for t, ix in factors)
        sign = "-" if coefficient < 0 else "+"
        head = f"{abs(coefficient)}*" if abs(coefficient) != 1 else ""
        rhs += f" {sign} {head}{product}"
    rhs = rhs[3:] if rhs.startswith(" + ") else "-" + rhs[3:]
    target = f"Y[{','.join(free)}]" if free else "Y"
    seed = draw(st.integers(0, 2**16))
    return AffineStatement(f"{target} = {rhs}", params, shapes, ranges, seed)


# ---- the checks ----------------------------------------------------------------------------


def conv_problems(config: ConvConfig, backends: tuple[str, ...]) -> list[str]:
    """Everything wrong with one configuration (empty when it passes).

    * ``ed.verify`` is ok: each backend against the loops interpreter, and the
      interpreter against finite differences of the forward;
    * the pullbacks into ``X`` and ``W`` are recognised as generic convolutions,
      symbolically (``derivation.convolutions``) and in the numeric instance the
      vectorized backends run (its plan is a convolution call, not a fallback).
    """
    import random

    import einderive as ed
    from einderive.conv.recognise import ConvPullback
    from einderive.lower.plan import Einsum, plans
    from einderive.verify import draw_values, instantiate

    derivation = ed.derive(config.text, config.params, config.shapes, config.ranges)
    problems = [
        f"not recognised: {derivation.convolutions[name]}"
        for name in config.convolutions
        if not isinstance(derivation.convolutions[name], ConvPullback)
    ]
    # verify's first trial draws its values from random.Random(seed) first
    values = draw_values(derivation.program, random.Random(config.seed))
    numeric = instantiate(derivation, values)
    methods = plans(numeric)
    for name in config.convolutions:
        method = methods[numeric.pullbacks[name].name]
        if not isinstance(method, ConvPullback | Einsum):
            given = ", ".join(f"{k}={v}" for k, v in values.items())
            problems.append(f"d{name} falls back to {type(method).__name__} for {given}")
    report = ed.verify(
        config.text,
        config.params,
        config.shapes,
        config.ranges,
        trials=1,
        seed=config.seed,
        backends_to_check=backends,
    )
    if not report.ok:
        problems.append(str(report))
    return problems
