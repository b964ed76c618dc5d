"""A forward convolution over a wrapped, clamped or reflected read: PyTorch's padding_mode.

``Y[b,o,i,j] = W[o,c,m,n] * X[b, c, mod(2*i+m-1, N_X2), mod(2*j+n-1, N_X3)]`` is
``torch.nn.functional.conv2d(F.pad(X, (1, 1, 1, 1), mode="circular"), W, stride=2)`` (and
``nn.Conv2d(padding=1, padding_mode="circular")``): the read of each index function is a
read of the input padded in that mode, then an unpadded convolution. It is found by
reading the statement as written with ``X[...]`` replaced by ``X_pad[e + lo, ...]`` on
the padded input, which the recogniser sees as a plain convolution. In JAX the padding is
an explicit ``jnp.pad(x, ..., mode=...)`` before ``lax.conv_general_dilated``.

The pullbacks are those of the unpadded convolution on the padded input (recognised as
calls on the padded program's own derivation), finished by the adjoint of the padding
(``fold``): the circular margins are added onto the other end, the replicated ones into
the edge, the reflected ones onto the positions they mirror.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy

from .. import ir
from ..errors import EinderiveError
from ..model import Derivation, Program
from ..parse import SAccess, SCall, parse, syntax_nodes
from ..reads import value_range
from .calls import TorchConvCall, torch_call
from .recognise import ConvPullback, Recognition, convolutions, recognise

MODES = {"mod": "circular", "clamp": "replicate", "reflect": "reflect"}
NUMPY_MODES = {"circular": "wrap", "replicate": "edge", "reflect": "reflect"}  # jnp.pad too


@dataclass(frozen=True)
class PaddedConv:
    """The forward as ``conv(pad(X, padding, mode), W)``, unpadded convolution ``conv``."""

    tensor: str  # the input read through the index functions
    mode: str  # PyTorch's padding_mode
    axes: tuple[int, ...]  # the axes of ``tensor`` that are padded
    padding: tuple[tuple[int, int], ...]  # (before, after) per padded axis
    conv: ConvPullback  # the forward on the padded input
    shape: tuple[int, ...] = ()  # the shape of ``tensor``
    # each pullback of the padded forward, by the name of the tensor whose pullback it
    # finishes: the kernel's as it is, ``tensor``'s (into ``padded``) before the fold
    pullbacks: dict[str, Recognition] = field(default_factory=dict, compare=False)

    @property
    def padded(self) -> str:
        """The padded input's name (``X_pad``)."""
        return f"{self.tensor}_pad"

    @property
    def padded_shape(self) -> tuple[int, ...]:
        shape = list(self.shape)
        for axis, (lo, hi) in zip(self.axes, self.padding, strict=True):
            shape[axis] += lo + hi
        return tuple(shape)

    @property
    def torch(self) -> TorchConvCall:
        return torch_call(self.conv.call, self.conv.kernel_size)

    def module_padding(self) -> tuple[int, ...] | str:
        """``nn.ConvNd``'s ``padding`` per spatial axis of the call, where the module is the
        same call: a plain ``convNd`` whose padded axes are spatial axes of the call, each
        padded as much before as after. Otherwise why not, in one line."""
        call = self.torch
        module = f"torch.nn.Conv{len(call.stride)}d"
        # what the module cannot do before its call (it may transpose or flip the kernel
        # and swap the input's first two axes: those are on the operands it is given)
        cannot = [
            (call.function.startswith("conv_transpose"), "it is a transposed convolution"),
            (call.fill is not None, "it dilates its input"),
            (call.pad is not None, "it zero-pads its input"),
            (call.batch_groups != 1, "it groups the batch"),
            (bool(self.conv.x_layout.flips), f"it reads {self.tensor} reversed"),
        ]
        reasons = [reason for applies, reason in cannot if applies]
        if reasons:
            return f"{module} is not the call: {'; '.join(reasons)}"
        spatial = self.conv.x_layout.axes[2:]
        if not set(self.axes) <= set(spatial):
            return f"a padded axis of {self.tensor} is not a spatial axis of the call"
        # the module pads p on both sides: the reads must start p before, and the margin
        # after that no window reaches must not change the output's size
        widths = dict(zip(self.axes, self.padding, strict=True))
        padding = []
        for k, axis in enumerate(spatial):
            if not isinstance(axis, int):  # a spatial axis is one axis of the tensor
                return f"a spatial axis of the call is not one axis of {self.tensor}"
            lo, hi = widths.get(axis, (0, 0))
            size, out = self.shape[axis], int(self.conv.output_size[k])
            window = (int(self.conv.kernel_size[k]) - 1) * int(call.dilation[k]) + 1
            if hi > lo or (size + 2 * lo - window) // int(call.stride[k]) + 1 != out:
                return (
                    f"{module} pads as much before as after, and its output is as long as "
                    f"that allows; here the padding is ({lo}, {hi}) on axis {axis} and the "
                    f"output {out} long (the F.pad form is the call)"
                )
            padding.append(lo)
        return tuple(padding)

    def source_positions(self, axis: int) -> np.ndarray:
        """Where each position of the padded ``axis`` reads ``tensor`` (the fold's targets)."""
        lo, hi = self.padding[self.axes.index(axis)]
        size = self.shape[axis]
        return _source(np.arange(-lo, size + hi), size, self.mode)

    def widths(self, rank: int) -> tuple[tuple[int, int], ...]:
        """``np.pad`` / ``jnp.pad``'s widths for a tensor of ``rank`` axes."""
        widths = [(0, 0)] * rank
        for axis, pair in zip(self.axes, self.padding, strict=True):
            widths[axis] = pair
        return tuple(widths)

    def torch_pad(self) -> tuple[int, ...]:
        """``F.pad``'s argument: (before, after) pairs, the last axis first."""
        return tuple(n for pair in reversed(self.padding) for n in pair)

    def pad(self, x: np.ndarray) -> np.ndarray:
        mode: Any = NUMPY_MODES[self.mode]  # one of np.pad's literal modes
        return np.pad(x, self.widths(x.ndim), mode=mode)

    def fold(self, cotangent: np.ndarray) -> np.ndarray:
        """The adjoint of ``pad``: each padded position's cotangent added where it was read."""
        folded = cotangent
        for axis, (lo, hi) in zip(self.axes, self.padding, strict=True):
            size = folded.shape[axis] - lo - hi
            source = _source(np.arange(-lo, size + hi), size, self.mode)
            shape = list(folded.shape)
            shape[axis] = size
            out = np.zeros(shape)
            moved = np.moveaxis(out, axis, 0)
            np.add.at(moved, source, np.moveaxis(folded, axis, 0))
            folded = out
        return folded


def _source(positions: np.ndarray, size: int, mode: str) -> np.ndarray:
    if mode == "circular":
        return np.mod(positions, size)
    if mode == "replicate":
        return np.clip(positions, 0, size - 1)
    return np.where(
        positions < 0,
        -positions,
        np.where(positions > size - 1, 2 * size - 2 - positions, positions),
    )


def padded_convolution(derivation: Derivation) -> PaddedConv | str:
    """The forward as a PyTorch convolution with a padding_mode, or why it is not one."""
    from ..front import analyse

    program = derivation.program
    statement = program.statements[-1]
    if len(program.statements) != 1 or statement.written is None:
        return "the forward is not one statement with wrapped, clamped or reflected reads"
    (written,) = parse(statement.written)
    wrapped = [
        node
        for node in syntax_nodes(written.rhs, brackets=False)
        if isinstance(node, SAccess)
        and any(isinstance(i, SCall) and i.name in MODES for i in node.indices)
    ]
    if len(wrapped) != 1 or wrapped[0].pad is not None:
        return "no single read through mod, clamp or reflect"
    read = wrapped[0]
    shape = program.shapes[read.name]
    modes, axes, inner = set(), [], []
    text = statement.written
    for axis, index in enumerate(read.indices):
        if isinstance(index, SCall) and index.name in MODES:
            argument = text[index.arg.span[0] : index.arg.span[1]]
            rest = [text[a.span[0] : a.span[1]] for a in index.rest]
            size = shape[axis]
            expected = {"mod": [str(size)], "reflect": [str(size)], "clamp": ["0", str(size - 1)]}
            numbers = [str(sympy.sympify(r, locals={}).xreplace(_sizes(program))) for r in rest]
            if not size.is_number or numbers != expected[index.name]:
                return f"{index.name} on axis {axis} does not span {read.name}'s axis"
            modes.add(MODES[index.name])
            axes.append(axis)
            inner.append(argument)
        elif any(isinstance(n, SCall) for n in syntax_nodes(index)):
            return "an index function that is not the whole position"
    if len(modes) != 1:
        return "padding modes differ between axes"
    mode = modes.pop()
    padded = f"{read.name}_pad"
    # the padded input's reads, unshifted first: their range gives the padding
    shapes = {name: tuple(int(n) for n in s) for name, s in program.shapes.items()}

    def replaced(shifts: Sequence[int], sizes: dict[str, tuple[int, ...]]) -> Program:
        positions = []
        inner_positions = iter(zip(inner, shifts, strict=True))
        for axis, index in enumerate(read.indices):
            if axis in axes:
                argument, shift = next(inner_positions)
                positions.append(f"({argument}) + {shift}")
            else:
                positions.append(text[index.span[0] : index.span[1]])
        source = text[: read.span[0]] + f"{padded}[{', '.join(positions)}]" + text[read.span[1] :]
        return analyse(source, shapes={k: v for k, v in sizes.items() if k != read.name})

    try:
        unshifted = replaced([0] * len(axes), {**shapes, padded: shapes[read.name]}).statements[-1]
        reads = [a for a in ir.accesses(unshifted.rhs) if a.tensor == padded]
        boxes = {v: program.extents[v] for v in program.extents}
        for node in ir.walk(unshifted.rhs):
            if isinstance(node, ir.Reduce):
                for var in node.variables:
                    boxes.setdefault(var, _extent(var, node.where))
        padding = []
        for axis in axes:
            span = value_range(reads[0].indices[axis], boxes)
            if span is None or not all(e.is_number for e in span):
                return "the padding is not a number"
            low, high = (int(e) for e in span)
            padding.append((max(0, -low), max(0, high - int(shape[axis]) + 1)))
        padded_shape = list(shapes[read.name])
        for axis, (lo, hi) in zip(axes, padding, strict=True):
            padded_shape[axis] += lo + hi
        sizes = {**shapes, padded: tuple(padded_shape)}
        padded_program = replaced([lo for lo, _ in padding], sizes)
    except EinderiveError as error:
        return f"the padded read cannot be written: {error}"
    forward = padded_program.statements[-1]
    once = all(max(p) <= int(shape[a]) - 1 for a, p in zip(axes, padding, strict=True))
    if mode == "reflect" and not once:
        return "PyTorch reflects once: the padding must be smaller than the size"
    if mode == "circular" and not all(
        max(p) <= int(shape[a]) for a, p in zip(axes, padding, strict=True)
    ):
        return "PyTorch wraps once: the padding must be at most the size"
    kernels = [t for t in program.inputs if t != read.name]
    recognition = recognise(
        forward, {k: tuple(sympy.Integer(n) for n in v) for k, v in sizes.items()}, kernels
    )
    if not isinstance(recognition, ConvPullback):
        return f"on the padded input, not a convolution: {recognition.reason}"
    if recognition.call.x != padded:
        return f"{padded} is the call's kernel, not its input"
    # a declared output shorter than the padded input allows crops it (negative padding)
    if any(not (lo <= 0 and hi <= 0) for lo, hi in recognition.call.padding):
        return "on the padded input, the convolution still pads"
    # the padded forward's own pullbacks, those asked for: each one call on the padded input
    from ..derive import derivation as derive_record

    asked = [padded if name == read.name else name for name in derivation.pullbacks]
    calls = convolutions(derive_record(padded_program, asked))
    pullbacks = {read.name if name == padded else name: calls[name] for name in asked}
    return PaddedConv(
        read.name,
        mode,
        tuple(axes),
        tuple(padding),
        recognition,
        tuple(int(n) for n in shape),
        pullbacks,
    )


@dataclass(frozen=True)
class NotPaddedConv:
    """Why a forward with a wrapped, clamped or reflected read is not one padding_mode call."""

    reason: str

    def __str__(self) -> str:
        return f"not a convolution with a padding_mode: {self.reason}"


def padding_mode_call(derivation: Derivation) -> PaddedConv | NotPaddedConv | None:
    """The forward as one PyTorch convolution with a ``padding_mode`` (and its pullbacks'
    calls), or why it is not one; None when the forward reads nothing through ``mod``,
    ``clamp`` or ``reflect``. Kept in the derivation's memo."""
    memo = derivation.memo
    if "padding_mode" not in memo:
        memo["padding_mode"] = _padding_mode_call(derivation)
    return memo["padding_mode"]  # type: ignore[return-value]


def _padding_mode_call(derivation: Derivation) -> PaddedConv | NotPaddedConv | None:
    written = [s.written for s in derivation.program.statements if s.written is not None]
    if not any(
        isinstance(index, SCall) and index.name in MODES
        for text in written
        for statement in parse(text)
        for node in syntax_nodes(statement.rhs, brackets=False)
        if isinstance(node, SAccess)
        for index in node.indices
    ):
        return None
    if any(not n.is_number for shape in derivation.program.shapes.values() for n in shape):
        return NotPaddedConv("the sizes are symbolic; with every size given, it is recognised")
    found = padded_convolution(derivation)
    return NotPaddedConv(found) if isinstance(found, str) else found


def _sizes(program: Program) -> dict[sympy.Symbol, sympy.Expr]:
    """The names of the tensors' axis sizes (``N_X2``) and their numbers."""
    names: dict[sympy.Symbol, sympy.Expr] = {}
    for tensor, shape in program.shapes.items():
        for axis, size in enumerate(shape):
            name = f"N_{tensor}" if len(shape) == 1 else f"N_{tensor}{axis}"
            names[sympy.Symbol(name)] = size
    return names


def _extent(var: sympy.Symbol, where: Sequence[ir.Constraint]) -> sympy.Expr:
    for constraint in where:
        if constraint.kind == "ge" and ir.coefficient(constraint.expr, var) == -1:
            return ir.expand(constraint.expr + var + 1)
    raise EinderiveError(f"{var} has no box")
