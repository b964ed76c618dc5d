"""Is a pullback a convolution? If so, the generic call that computes it.

A pullback term ``out[u] = sum_v A[a(u, v)] * B[b(u, v)]`` is a convolution
with input ``x = A`` and kernel ``w = B`` when, after renaming each spatial
position of the kernel ``k = b(u, v)`` and eliminating ``v`` for ``k`` (the same
delta elimination as the derivation, ``solve.gather``), every spatial read of
the input has the form

    A[(s*u + d*k + c) / f]            (f divides the numerator)

with ``u`` one spatial index of ``out``. Then, per spatial axis, the generic
call (conv/calls.py) has stride ``s``, dilation ``|d|``, fill ``f``, the
kernel flipped where ``d < 0``, padding ``lo = -c`` (``d*(K-1) - c`` when
flipped), and ``hi`` just large enough for ``out``'s extent. Every other axis is
a batch (in ``out`` and ``x``), an output channel (in ``out`` and ``w``), an input
channel (summed, in ``x`` and ``w``) or a group (in all three: depthwise). A group
with an input channel and nothing else (a depthwise convolution's kernel pullback,
each channel summing its own batch) is a call in batch groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sympy

from .. import affine, ir
from ..ir import expand
from ..model import Derivation
from ..solve import gather, simplify_constraints
from .calls import GenericConv

Axis = int | None | tuple[int, ...]
"""An operand's (or a call output's) axis: one tensor axis, a unit axis (None), or
several tensor axes merged into one, major first (a group and its channels)."""


def flat_axes(axes: Sequence[Axis]) -> list[int]:
    """The tensor axes of ``axes`` in order, merged ones spelled out."""
    return [a for entry in axes if entry is not None for a in _parts(entry)]


def _parts(entry: Axis) -> tuple[int, ...]:
    return () if entry is None else entry if isinstance(entry, tuple) else (entry,)


def has_merges(axes: Sequence[Axis]) -> bool:
    return any(isinstance(entry, tuple) for entry in axes)


@dataclass(frozen=True)
class Layout:
    """Where each axis of the call's operand comes from in the tensor.

    ``axes[k]`` is the tensor's axis that becomes the operand's axis ``k``, None for
    a unit axis the call inserts (a 1-D single-channel call has no batch or channel
    axis of its own), or a tuple of tensor axes merged into one, major first (a
    grouped call's channels: the group, then the channel within it). ``flips`` are
    the tensor's axes reversed first: a read ``X[7 - j - n]`` is a convolution of the
    input flipped, and a kernel flipped along some spatial axes only is one reversed
    along those.
    """

    axes: tuple[Axis, ...]
    flips: tuple[int, ...] = ()  # tensor axes read reversed, before anything else

    def apply(self, array: object) -> object:
        """The operand: reversed, the tensor's axes moved into place, merged, units inserted."""
        import numpy as np

        values = np.flip(np.asarray(array), self.flips) if self.flips else np.asarray(array)
        moved = np.transpose(values, flat_axes(self.axes))
        sizes = [int(np.prod([values.shape[a] for a in _parts(e)], dtype=int)) for e in self.axes]
        return moved.reshape(sizes)

    @property
    def is_identity(self) -> bool:
        return list(self.axes) == list(range(len(self.axes)))


@dataclass(frozen=True)
class ConvPullback:
    """A pullback recognised as one generic convolution call."""

    pullback: str
    call: GenericConv
    x_layout: Layout  # operand x = x tensor arranged as (first, second, spatial...)
    w_layout: Layout
    out_axes: tuple[Axis, ...]  # pullback axes of each call-output axis (None: unit)
    kernel_size: tuple[sympy.Expr, ...]
    input_size: tuple[sympy.Expr, ...]
    output_size: tuple[sympy.Expr, ...]
    pullback_shape: tuple[sympy.Expr, ...] = ()  # to split merged output axes

    @property
    def split_shape(self) -> tuple[sympy.Expr, ...] | None:
        """The call's output with merged axes split (units kept), or None if none is merged."""
        if not has_merges(self.out_axes):
            return None
        sizes: list[sympy.Expr] = []
        for entry in self.out_axes:
            sizes += [self.pullback_shape[a] for a in _parts(entry)] or [sympy.Integer(1)]
        return tuple(sizes)

    @property
    def split_units(self) -> tuple[bool, ...]:
        """Per axis of the split output: whether it is a unit axis the call inserted."""
        units: list[bool] = []
        for entry in self.out_axes:
            units += [False] * len(_parts(entry)) or [True]
        return tuple(units)

    @property
    def transpose(self) -> tuple[int, ...] | None:
        """The permutation taking the call's output (split, units squeezed) to the pullback's."""
        present = flat_axes(self.out_axes)
        order = sorted(range(len(present)), key=lambda k: present[k])
        return None if order == list(range(len(present))) else tuple(order)

    def subs(self, values: Mapping[sympy.Symbol, sympy.Expr]) -> ConvPullback:
        mapping = dict(values)

        def numbers(entries: Sequence[sympy.Expr]) -> tuple[sympy.Expr, ...]:
            return tuple(sympy.sympify(e).xreplace(mapping) for e in entries)

        return ConvPullback(
            self.pullback,
            self.call.subs(mapping),
            self.x_layout,
            self.w_layout,
            self.out_axes,
            numbers(self.kernel_size),
            numbers(self.input_size),
            numbers(self.output_size),
            numbers(self.pullback_shape),
        )


@dataclass(frozen=True)
class NotConvolution:
    """Why a pullback is not a (generic) convolution, in one line."""

    pullback: str
    reason: str

    def __str__(self) -> str:
        return f"{self.pullback} is not a convolution: {self.reason}"


Recognition = ConvPullback | NotConvolution


def _lone(expr: sympy.Expr) -> sympy.Symbol | None:
    return expr if isinstance(expr, sympy.Symbol) else None


def convolutions(derivation: Derivation) -> dict[str, Recognition]:
    """Each pullback of ``derivation`` recognised, or why it is not a convolution (kept)."""
    found = derivation.memo.get("convolutions")
    if found is None:
        shapes, kernels = derivation.shapes, derivation.kernels
        found = {
            name: recognise(pullback.statement, shapes, kernels)
            for name, pullback in derivation.pullbacks.items()
        }
        derivation.memo["convolutions"] = found
    return found  # type: ignore[return-value]


def recognise(
    statement: ir.Statement,
    shapes: Mapping[str, Sequence[sympy.Expr]],
    prefer_kernel: Sequence[str] = (),
) -> Recognition:
    """Recognise a pullback statement as a generic convolution, or say why it is not one."""
    name = statement.target
    rhs = statement.rhs
    if any(ir.index_reads(e) for a in ir.accesses(rhs) for e in a.indices) or any(
        ir.index_reads(c.expr) for n in ir.walk(rhs) if isinstance(n, ir.Reduce) for c in n.where
    ):
        return NotConvolution(
            name, "it reads or writes through an index array: a gather or a scatter-add"
        )
    if isinstance(rhs, ir.Add):
        return NotConvolution(
            name, f"it has {len(rhs.terms)} terms (one per read of the tensor, or a sum of reads)"
        )
    if isinstance(rhs, ir.Reduce):
        if rhs.op != "sum":
            return NotConvolution(name, f"it is a {rhs.op}, not a sum of products")
        variables, body, where = rhs.variables, rhs.body, rhs.where
    else:
        variables, body, where = (), rhs, ()
    factors = body.factors if isinstance(body, ir.Mul) else (body,)
    reads = [f for f in factors if isinstance(f, ir.Access)]
    if len(factors) != 2 or len(reads) != 2:
        return NotConvolution(name, "its body is not a product of exactly two tensors")
    if reads[0].tensor == reads[1].tensor:
        return NotConvolution(name, f"both factors read {reads[0].tensor}: the kernel is the input")
    first, second = reads
    orders = [(first, second), (second, first)]
    orders.sort(key=lambda pair: pair[1].tensor not in prefer_kernel)
    reasons = []
    reversed_reads: list[ConvPullback] = []  # taken only if no order reads in order
    for x, w in orders:
        result = _match(statement, x, w, variables, where, shapes)
        if isinstance(result, ConvPullback):
            if not (result.x_layout.flips or result.w_layout.flips):
                return result
            reversed_reads.append(result)
        else:
            reasons.append(f"as conv({x.tensor}, {w.tensor}): {result}")
    if reversed_reads:
        return reversed_reads[0]
    return NotConvolution(name, "; ".join(reasons))


def _match(
    statement: ir.Statement,
    x: ir.Access,
    w: ir.Access,
    variables: tuple[sympy.Symbol, ...],
    where: tuple[ir.Constraint, ...],
    shapes: Mapping[str, Sequence[sympy.Expr]],
) -> ConvPullback | str:
    out_vars = list(statement.indices)
    summed = set(variables)
    x_lone = {_lone(e) for e in x.indices} - {None}
    # the kernel's axes: channels (lone variables) and spatial positions
    w_roles: list[str] = []
    kernel_vars: list[sympy.Symbol] = []
    spatial_writes: list[sympy.Expr] = []
    taken = {s.name for s in out_vars} | {v.name for v in variables}
    for expr in w.indices:
        var = _lone(expr)
        if var is not None and var in out_vars:
            w_roles.append("group" if var in x_lone else "out")
        elif var is not None and var in summed and var in x_lone:
            w_roles.append("in")
        else:
            w_roles.append("spatial")
            k = _fresh("k", taken)
            kernel_vars.append(k)
            spatial_writes.append(expr)
    if not kernel_vars:
        return "the kernel has no spatial axis"
    channel_vars = tuple(v for v in variables if v in x_lone and v in {_lone(e) for e in w.indices})
    scope = tuple(v for v in variables if v not in channel_vars)
    solved = gather(kernel_vars, spatial_writes, x, scope, where, prefer=scope)
    if solved == ir.ZERO:
        return "the pullback is identically zero"
    if not isinstance(solved, ir.Reduce) or not isinstance(solved.body, ir.Access):
        return "the kernel's positions do not determine the input's"
    if solved.variables:
        return "a summed index is neither a channel nor a kernel position"
    x_read = solved.body
    conditions = list(solved.where)
    # the input's axes
    x_roles: list[tuple[str, object]] = []
    axis_of_out: dict[sympy.Symbol, int] = {v: k for k, v in enumerate(out_vars)}
    spatial: list[tuple[sympy.Symbol, sympy.Symbol, sympy.Expr, int]] = []
    for axis, expr in enumerate(x_read.indices):
        var = _lone(expr)
        if var is not None and var in channel_vars:
            x_roles.append(("in", var))
            continue
        if var is not None and var in out_vars and not expr.has(*kernel_vars):
            group = any(_lone(e) == var for e in w.indices)
            x_roles.append(("group" if group else "batch", var))
            continue
        used_out = [v for v in out_vars if expr.has(v)]
        used_kernel = [k for k in kernel_vars if expr.has(k)]
        if len(used_out) != 1 or len(used_kernel) != 1:
            return (
                f"axis {axis} of {x.tensor} is read at {expr}, "
                "not at one output position plus one kernel position"
            )
        spatial.append((used_out[0], used_kernel[0], expr, axis))
        x_roles.append(("spatial", used_kernel[0]))
    if len(spatial) != len(kernel_vars):
        return "the input and the kernel have different numbers of spatial axes"
    # the order of spatial axes: the kernel's, which must match the input's and the output's
    x_kernel_order = [k for _, k, _, _ in spatial]
    if x_kernel_order != kernel_vars:
        return "the spatial axes of the input and the kernel are in different orders"
    out_spatial = [u for u, _, _, _ in spatial]
    if [axis_of_out[u] for u in out_spatial] != sorted(axis_of_out[u] for u in out_spatial):
        return "the spatial axes of the output are in a different order"
    if len(set(out_spatial)) != len(out_spatial):
        return "two spatial axes of the input read the same output position"
    # An output position is one axis of the call's output: a spatial one that also
    # indexes the kernel whole is a locally connected layer (a kernel per position); one
    # that also indexes a batch axis of the input is a diagonal of the call's output.
    for u in out_spatial:
        if any(_lone(e) == u for e in w.indices):
            return (
                f"{w.tensor} is indexed by the output position {u}, which {x.tensor} also "
                "reads spatially: a locally connected layer (a kernel per position)"
            )
        if any(var == u for role, var in x_roles if role != "spatial"):
            return (
                f"the output position {u} indexes {x.tensor} both whole and spatially: "
                "a diagonal of a convolution's output"
            )
    # per spatial axis: (s*u + d*k + c) / f
    padding, strides, dilations, fills, flips = [], [], [], [], []
    x_flips: list[int] = []  # the input's axes read reversed (X[7 - j - n])
    kernel_shape = shapes[w.tensor]
    x_shape = shapes[x.tensor]
    out_shape = shapes[statement.target]
    kernel_size, input_size, output_size = [], [], []
    expected: list[ir.Constraint] = []
    spatial_w_axes = [a for a, role in enumerate(w_roles) if role == "spatial"]
    for (u, k, expr, x_axis), w_axis in zip(spatial, spatial_w_axes, strict=True):
        numerator, fill = sympy.fraction(sympy.together(expr, deep=False))
        numerator = expand(numerator)
        if not (affine.positive(fill) and fill.is_integer):
            return f"the read {expr} has a denominator that is not a positive integer"
        n_in = x_shape[x_axis]
        read = numerator  # the extents' conditions are stated on the read as written
        if affine.negative(numerator.coeff(u)):
            # a reversed read: the call reads the input flipped, at (N-1)*f - numerator
            x_flips.append(x_axis)
            numerator = expand((n_in - 1) * fill - numerator)
        stride = numerator.coeff(u)
        step = numerator.coeff(k)
        constant = expand(numerator - stride * u - step * k)
        if constant.has(*out_vars, *kernel_vars, *variables):
            return f"the read {expr} is not affine in one output and one kernel position"
        if not (affine.positive(stride) and stride.is_integer):
            return f"the output position's coefficient in {expr} is not a positive integer"
        size = kernel_shape[w_axis]
        if affine.positive(step):
            flip, dilation, lo = False, step, -constant
        elif affine.negative(step):
            flip, dilation, lo = True, -step, expand(-constant + (-step) * (size - 1))
        else:
            return f"the sign of the kernel position's coefficient in {expr} is unknown"
        if not dilation.is_integer:
            return f"the kernel position's coefficient in {expr} is not an integer"
        n_out = out_shape[axis_of_out[u]]
        hi = expand((n_out - 1) * stride + dilation * (size - 1) - lo - (n_in - 1) * fill)
        padding.append((expand(lo), hi))
        strides.append(stride)
        dilations.append(dilation)
        fills.append(fill)
        flips.append(flip)
        kernel_size.append(size)
        input_size.append(n_in)
        output_size.append(n_out)
        if fill != 1:
            expected.append(ir.Constraint("div", read, fill))
        expected += [
            ir.Constraint("ge", read),
            ir.Constraint("ge", expand((n_in - 1) * fill - read)),
            ir.Constraint("ge", k),
            ir.Constraint("ge", expand(size - 1 - k)),
        ]
    for var in channel_vars:
        axis = next(a for a, e in enumerate(x_read.indices) if _lone(e) == var)
        expected += list(ir.box(var, x_shape[axis]))
    # a kernel flipped along some spatial axes only is read reversed along those
    w_flips = [a for a, flip in zip(spatial_w_axes, flips, strict=True) if flip]
    flip_kernel = len(w_flips) == len(flips)
    if flip_kernel:
        w_flips = []
    allowed = {(c.kind, c.expr, c.modulus) for c in simplify_constraints(expected) or ()}
    for condition in conditions:
        key = (condition.kind, condition.expr, condition.modulus)
        if key not in allowed:
            return f"the condition {condition.expr} {condition.kind} is not a tensor's extent"
    # batch and channel axes
    roles = {role for role, _ in x_roles} | set(w_roles)
    counts = [r for r, _ in x_roles if r in ("batch", "in", "group")] + [
        r for r in w_roles if r in ("out", "group")
    ]
    for role in ("batch", "in", "out"):
        if counts.count(role) > 1:
            return f"it has more than one {role} axis"
    # each group's channel summing its own batch (a depthwise convolution's kernel
    # pullback): the group is the call's batch and its output channel, in batch groups
    batch_grouped = "group" in roles and "in" in roles and not {"batch", "out"} & roles
    if len({v for role, v in x_roles if role == "group"}) > 1:
        return "it has more than one group axis"
    x_axis_of = {role: a for a, (role, _) in enumerate(x_roles) if role != "spatial"}
    w_axis_of = {role: a for a, role in enumerate(w_roles) if role != "spatial"}
    x_spatial = [a for a, (role, _) in enumerate(x_roles) if role == "spatial"]
    groups: sympy.Expr = sympy.Integer(1)
    batch_groups: sympy.Expr = sympy.Integer(1)
    first: Axis
    second: Axis
    w_first: Axis
    w_second: Axis
    channel_axis: Axis = None
    if batch_grouped:
        # x (G, C, N...): the group as batch; w (G, C, K...); batch_groups = G
        x_group, x_channel = x_axis_of["group"], x_axis_of["in"]
        permute_input = x_channel < x_group
        first, second = (x_channel, x_group) if permute_input else (x_group, x_channel)
        w_group, w_channel = w_axis_of["group"], w_axis_of["in"]
        permute_kernel = w_channel < w_group
        w_first, w_second = (w_channel, w_group) if permute_kernel else (w_group, w_channel)
        group_var = next(v for role, v in x_roles if role == "group")
        batch_groups = out_shape[axis_of_out[group_var]]
    elif "group" in roles and ("in" in roles or "out" in roles):
        # grouped: x (B, G*C, N...), w (G*O, C, K...), groups = G; out (B, G*O, N...)
        group_var = next(v for role, v in x_roles if role == "group")
        x_group, x_in = x_axis_of["group"], x_axis_of.get("in")
        first = x_axis_of.get("batch")
        second = (x_group, x_in) if x_in is not None else x_group
        w_group, w_out = w_axis_of["group"], w_axis_of.get("out")
        w_first = (w_group, w_out) if w_out is not None else w_group
        w_second = w_axis_of.get("in")
        permute_input = permute_kernel = False
        groups = out_shape[axis_of_out[group_var]]
        out_var = next((_lone(w.indices[a]) for a, r in enumerate(w_roles) if r == "out"), None)
        channel_axis = (
            (axis_of_out[group_var], axis_of_out[out_var])
            if out_var is not None
            else axis_of_out[group_var]
        )
    elif "group" in roles:
        # depthwise: x (B, G, N...), w (G, 1, K...), groups = G
        first, second = x_axis_of.get("batch"), x_axis_of["group"]
        permute_input = False
        w_first, w_second = w_axis_of["group"], None
        permute_kernel = False
        group_var = next(v for role, v in x_roles if role == "group")
        groups = out_shape[axis_of_out[group_var]]
    else:
        batch, channel = x_axis_of.get("batch"), x_axis_of.get("in")
        permute_input = batch is not None and channel is not None and channel < batch
        first, second = (channel, batch) if permute_input else (batch, channel)
        out_channel, in_channel = w_axis_of.get("out"), w_axis_of.get("in")
        permute_kernel = (
            out_channel is not None and in_channel is not None and in_channel < out_channel
        )
        w_first, w_second = (
            (in_channel, out_channel) if permute_kernel else (out_channel, in_channel)
        )
    x_layout = Layout((first, second, *x_spatial), tuple(x_flips))
    w_layout = Layout((w_first, w_second, *spatial_w_axes), tuple(w_flips))
    # the call's output: (batch, out channel, spatial...) -> the pullback's axes
    batch_var = next((v for role, v in x_roles if role == "batch"), None)
    if channel_axis is None:
        if "group" in roles:
            channel_var = next(v for role, v in x_roles if role == "group")
        else:
            out_roles = [
                (_lone(e), role)
                for e, role in zip(w.indices, w_roles, strict=True)
                if role == "out"
            ]
            channel_var = out_roles[0][0] if out_roles else None
        channel_axis = axis_of_out[channel_var] if channel_var is not None else None
    out_axes = (
        axis_of_out[batch_var] if batch_var is not None else None,
        channel_axis,
        *(axis_of_out[u] for u in out_spatial),
    )
    covered = set(flat_axes(out_axes))
    if covered != set(range(len(out_vars))):
        return "an axis of the pullback is neither batch, channel nor spatial"
    call = GenericConv(
        x.tensor,
        w.tensor,
        padding=tuple(padding),
        stride=tuple(strides),
        dilation=tuple(dilations),
        fill=tuple(fills),
        flip_kernel=flip_kernel,
        permute_kernel=permute_kernel,
        permute_input=permute_input,
        groups=groups,
        batch_groups=batch_groups,
    )
    return ConvPullback(
        statement.target,
        call,
        x_layout,
        w_layout,
        out_axes,
        tuple(kernel_size),
        tuple(input_size),
        tuple(output_size),
        tuple(out_shape),
    )


def _fresh(name: str, taken: set[str]) -> sympy.Symbol:
    return ir.fresh(name, taken)
