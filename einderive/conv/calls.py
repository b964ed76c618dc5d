"""The generic convolution call, and the JAX and PyTorch calls that compute it.

A pullback that is a convolution is one :class:`GenericConv`, the generic call::

    x1 = x.swapaxes(0, 1) if permute_input else x        # (B, C_in, N...)
    w1 = w.swapaxes(0, 1) if permute_kernel else w       # (C_out, C_in/groups, K...)
    w2 = w1 reversed along every spatial axis if flip_kernel else w1
    x2 = x1 with fill-1 zeros between neighbours, then lo zeros before and hi after
         (negative values crop) along every spatial axis
    out[b, o, i] = sum_{c, m} w2[o, c, m] * x2[H(o)*B' + b, G(o) + c, s*i + d*m]

where ``G(o)`` is the first input channel of output channel ``o``'s feature group, and
``H(o)`` its batch group: with ``batch_groups`` > 1 (JAX's ``batch_group_count``), the
batch splits into that many blocks of ``B' = B/batch_groups``, output channel block ``h``
reading block ``h`` (a depthwise convolution's kernel pullback sums each channel's
batch this way).
:func:`jax_call` and :func:`torch_call` translate it into one framework call, a
record that prints as pasteable Python; :func:`run_jax` and :func:`run_torch` run it
on NumPy arrays in float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.pycode import PythonCodePrinter

from einderive.affine import negative, nonnegative, nonpositive, positive
from einderive.errors import ArgumentError, BackendMissingError

Size: TypeAlias = int | sp.Expr
"""One entry of a call: a Python int, or a sympy expression in sizes and parameters."""
Padding: TypeAlias = tuple[tuple[Size, Size], ...]
Values: TypeAlias = Mapping[sp.Symbol | str, int]

_SPATIAL_LETTERS = {1: "H", 2: "HW", 3: "DHW"}


# Entries: normalising, substituting, printing, deciding.


def _size(entry: object) -> Size:
    """``entry`` as an int where it is a whole number, else as a sympy expression."""
    try:
        expr = sp.sympify(entry, strict=True)
    except sp.SympifyError as error:
        raise ArgumentError(f"expected a size or a sympy expression, got {entry!r}") from error
    if isinstance(expr, sp.Integer):
        return int(expr)
    if not isinstance(expr, sp.Expr) or expr.is_number:
        raise ArgumentError(f"expected a whole number or a symbolic size, got {entry!r}")
    return expr


def _subs_size(entry: Size, values: Values) -> Size:
    """``entry`` with numbers put in for the symbols that ``values`` names."""
    if isinstance(entry, int):
        return entry
    by_name = {str(key): value for key, value in values.items()}
    # Match by name: a key built without the size's assumptions is still the same size.
    mapping = {sym: by_name[sym.name] for sym in entry.free_symbols if sym.name in by_name}
    return _size(entry.subs(mapping))


def _map_sizes(value: Any, function: Callable[[Size], Any]) -> Any:
    """Apply ``function`` to every size in nested tuples; names, flags and None stay."""
    if isinstance(value, tuple):
        return tuple(_map_sizes(item, function) for item in value)
    if value is None or isinstance(value, bool | str):
        return value
    return function(value)


def _symbols_in(record: Any) -> frozenset[sp.Symbol]:
    """The free symbols of every entry of a call record."""
    found: set[sp.Symbol] = set()
    for field in dataclasses.fields(record):
        _map_sizes(
            getattr(record, field.name),
            lambda entry: found.update(getattr(entry, "free_symbols", ())),
        )
    return frozenset(found)


def _subs_record(record: Any, values: Values) -> Any:
    changes = {
        field.name: _map_sizes(getattr(record, field.name), lambda e: _subs_size(e, values))
        for field in dataclasses.fields(record)
    }
    return dataclasses.replace(record, **changes)


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, sp.Expr):
        return str(value)
    return value


def _record_as_dict(record: Any) -> dict[str, Any]:
    return {f.name: _json_value(getattr(record, f.name)) for f in dataclasses.fields(record)}


def _require_numbers(record: Any, caller: str) -> None:
    symbols = _symbols_in(record)
    if symbols:
        names = ", ".join(sorted(str(symbol) for symbol in symbols))
        raise ArgumentError(
            f"{caller} needs numbers, but the call is symbolic in {names}: "
            "substitute values with .subs({...}) first"
        )


class _SizePrinter(PythonCodePrinter):
    """Prints sizes as Python; an integer floor division becomes ``//`` (no math import)."""

    def _print_floor(self, expr: sp.floor) -> str:
        numerator, denominator = sp.fraction(sp.together(expr.args[0]))
        if denominator != 1 and numerator.is_integer and denominator.is_integer:
            top = self.parenthesize(numerator, PRECEDENCE["Mul"])
            bottom = self.parenthesize(denominator, PRECEDENCE["Mul"], strict=True)
            return f"({top} // {bottom})"
        return super()._print_floor(expr)


_PRINTER = _SizePrinter()


def _code(entry: Any) -> str:
    """Python source for an entry, or for nested tuples of entries."""
    if isinstance(entry, tuple):
        items = [_code(item) for item in entry]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(entry, sp.Expr):
        return _PRINTER.doprint(entry)
    if isinstance(entry, str):
        return f'"{entry}"'
    return repr(entry)


def _is_zero(entry: Size) -> bool:
    return sp.expand(entry) == 0


def _is_nonnegative(entry: Size) -> bool:
    return nonnegative(sp.expand(entry))


def _is_negative(entry: Size) -> bool:
    return negative(sp.expand(entry))


def _is_at_most(small: Size, large: Size) -> bool:
    """Whether ``small <= large`` for every value of the symbols."""
    if nonnegative(sp.expand(large - small)):
        return True
    return isinstance(large, sp.Max) and any(_is_at_most(small, arg) for arg in large.args)


def _is_below(entry: Size, bound: Size) -> bool:
    """Whether ``entry < bound`` for every value of the symbols."""
    if positive(sp.expand(bound - entry)):
        return True
    # sympy does not know that a remainder is below its divisor.
    return (
        isinstance(entry, sp.Mod) and positive(entry.args[1]) and _is_at_most(entry.args[1], bound)
    )


# The generic call.


@dataclasses.dataclass(frozen=True)
class GenericConv:
    """One call of the generic convolution (defined in this module's docstring).

    ``x`` and ``w`` name the tensors playing input and kernel; ``padding`` holds one
    ``(lo, hi)`` pair per spatial axis (negative values crop); ``stride``,
    ``dilation`` and ``fill`` one entry per spatial axis. Entries are ints or sympy
    expressions. ``groups`` counts feature groups: once permuted, the kernel has shape
    ``(C_out, C_in/groups, K...)``, as in ``torch`` and ``feature_group_count``.
    ``batch_groups`` counts batch groups (``batch_group_count``): the output has
    ``B/batch_groups`` samples, output channel block ``h`` summing batch block ``h``.

    >>> import sympy as sp
    >>> K = sp.Symbol("K", integer=True, positive=True)
    >>> call = GenericConv("dY", "W", padding=((K - 1, K - 1),), stride=(1,),
    ...                    dilation=(1,), fill=(1,), flip_kernel=True, permute_kernel=True)
    >>> print(call.subs({"K": 3}))
    conv(dY, W, padding=((2, 2),), stride=(1,), dilation=(1,), fill=(1,), flip_kernel=True, permute_kernel=True)
    """  # noqa: E501

    x: str
    w: str
    padding: Padding
    stride: tuple[Size, ...]
    dilation: tuple[Size, ...]
    fill: tuple[Size, ...]
    flip_kernel: bool = False
    permute_kernel: bool = False
    permute_input: bool = False
    groups: Size = 1
    batch_groups: Size = 1

    def __post_init__(self) -> None:
        for name in (self.x, self.w):
            if not name.isidentifier():
                raise ArgumentError(f"a tensor name must be an identifier, got {name!r}")
        rank = len(self.padding)
        if rank == 0:
            raise ArgumentError("a convolution needs at least one spatial axis")
        pairs = tuple(tuple(_size(entry) for entry in pair) for pair in self.padding)
        if any(len(pair) != 2 for pair in pairs):
            raise ArgumentError(f"padding needs one (lo, hi) pair per axis, got {self.padding}")
        object.__setattr__(self, "padding", pairs)
        for name in ("stride", "dilation", "fill"):
            entries = tuple(_size(entry) for entry in getattr(self, name))
            if len(entries) != rank:
                raise ArgumentError(f"{name} has {len(entries)} entries for {rank} spatial axes")
            if any(nonpositive(entry) for entry in entries):
                raise ArgumentError(f"{name} entries must be positive, got {_code(entries)}")
            object.__setattr__(self, name, entries)
        for name in ("groups", "batch_groups"):
            count = _size(getattr(self, name))
            if nonpositive(count):
                raise ArgumentError(f"{name} must be at least 1, got {count}")
            object.__setattr__(self, name, count)

    @property
    def rank(self) -> int:
        """The number of spatial axes."""
        return len(self.padding)

    @property
    def free_symbols(self) -> frozenset[sp.Symbol]:
        return _symbols_in(self)

    def subs(self, values: Values) -> GenericConv:
        """The same call with numbers for the symbols named in ``values`` (symbols or names)."""
        return _subs_record(self, values)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data: numbers as ints, symbolic entries as strings."""
        return _record_as_dict(self)

    def __str__(self) -> str:
        parts = [
            self.x,
            self.w,
            f"padding={_code(self.padding)}",
            f"stride={_code(self.stride)}",
            f"dilation={_code(self.dilation)}",
            f"fill={_code(self.fill)}",
        ]
        flags = ("flip_kernel", "permute_kernel", "permute_input")
        parts += [f"{flag}=True" for flag in flags if getattr(self, flag)]
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.batch_groups != 1:
            parts.append(f"batch_groups={self.batch_groups}")
        return f"conv({', '.join(parts)})"


def _framework_rank(conv: GenericConv, framework: str) -> int:
    if conv.rank not in _SPATIAL_LETTERS:
        raise ArgumentError(
            f"no {framework} call for {conv.rank} spatial axes: only 1, 2 or 3 are supported"
        )
    return conv.rank


def _spatial_axes(rank: int) -> tuple[int, ...]:
    return tuple(range(2, 2 + rank))


# JAX.


@dataclasses.dataclass(frozen=True)
class JaxConvCall:
    """The arguments of ``jax.lax.conv_general_dilated`` that compute one generic call.

    The permutes are layouts in ``dimension_numbers`` (``"CN..."`` for the input,
    ``"IO..."`` for the kernel); the flip is ``jax.lax.rev(w, flip_dims)``. XLA pads
    after the lhs dilation and crops where the padding is negative, exactly as the
    generic call does, so the padding passes through unchanged.
    """

    x: str
    w: str
    window_strides: tuple[Size, ...]
    padding: Padding
    lhs_dilation: tuple[Size, ...]
    rhs_dilation: tuple[Size, ...]
    dimension_numbers: tuple[str, str, str]
    feature_group_count: int
    flip_dims: tuple[int, ...]
    batch_group_count: Size = 1

    def keywords(self) -> dict[str, Any]:
        """The keyword arguments of ``jax.lax.conv_general_dilated``."""
        return {
            "window_strides": self.window_strides,
            "padding": self.padding,
            "lhs_dilation": self.lhs_dilation,
            "rhs_dilation": self.rhs_dilation,
            "dimension_numbers": self.dimension_numbers,
            "feature_group_count": self.feature_group_count,
            "batch_group_count": self.batch_group_count,
        }

    def apply(self, x: Any, w: Any) -> Any:
        """Run the call on JAX arrays ``x`` and ``w`` (before the permutes and the flip)."""
        _require_numbers(self, "JaxConvCall.apply")
        lax = _import_jax().lax
        kernel = lax.rev(w, self.flip_dims) if self.flip_dims else w
        return lax.conv_general_dilated(x, kernel, **self.keywords())

    def subs(self, values: Values) -> JaxConvCall:
        return _subs_record(self, values)

    def as_dict(self) -> dict[str, Any]:
        return _record_as_dict(self)

    def __str__(self) -> str:
        kernel = (
            f"jax.lax.rev({self.w}, dimensions={_code(self.flip_dims)})"
            if self.flip_dims
            else self.w
        )
        arguments = [self.x, kernel] + [
            f"{name}={_code(value)}"
            for name, value in self.keywords().items()
            if not (name in ("feature_group_count", "batch_group_count") and value == 1)
        ]
        return f"jax.lax.conv_general_dilated({', '.join(arguments)})"


def jax_call(conv: GenericConv) -> JaxConvCall:
    """The ``jax.lax.conv_general_dilated`` call computing ``conv`` (symbolic or numeric)."""
    spatial = _SPATIAL_LETTERS[_framework_rank(conv, "jax")]
    return JaxConvCall(
        x=conv.x,
        w=conv.w,
        window_strides=conv.stride,
        padding=conv.padding,
        lhs_dilation=conv.fill,
        rhs_dilation=conv.dilation,
        dimension_numbers=(
            ("CN" if conv.permute_input else "NC") + spatial,
            ("IO" if conv.permute_kernel else "OI") + spatial,
            "NC" + spatial,
        ),
        feature_group_count=conv.groups,
        flip_dims=_spatial_axes(conv.rank) if conv.flip_kernel else (),
        batch_group_count=conv.batch_groups,
    )


# PyTorch.


@dataclasses.dataclass(frozen=True)
class TorchConvCall:
    """A ``torch.nn.functional`` call that computes one generic call.

    ``function`` is ``conv{n}d`` or ``conv_transpose{n}d``. Before the call, in order:
    ``x.transpose(0, 1)`` if ``transpose_input``; the fill materialised by zero
    insertion unless ``fill`` is None (printed as a stride-``fill`` transposed
    convolution with a ones kernel of size 1 per channel); ``torch.nn.functional.pad(x,
    pad)`` unless ``pad`` is None, then ``torch.nn.functional.pad(x, crop)`` (negative
    values) unless ``crop`` is None, both in torch's order, last axis first. The kernel
    is ``w.transpose(0, 1)`` if ``transpose_kernel``, then ``.flip(flip_dims)``.
    ``output_padding`` is set for the transposed form only. torch has no batch groups:
    with ``batch_groups`` > 1, right after the transpose the batch's blocks are folded
    into the channels, ``x.reshape(h, -1, *x.shape[1:]).transpose(0, 1).flatten(1, 2)``
    (sample ``b`` of block ``k`` becomes channel block ``k`` of sample ``b``), and
    ``groups`` counts those blocks too, so that output channel block ``k`` reads them.
    """

    function: str
    x: str
    w: str
    transpose_input: bool
    transpose_kernel: bool
    flip_dims: tuple[int, ...]
    fill: tuple[Size, ...] | None
    pad: tuple[Size, ...] | None
    crop: tuple[Size, ...] | None
    stride: tuple[Size, ...]
    padding: tuple[Size, ...]
    dilation: tuple[Size, ...]
    output_padding: tuple[Size, ...] | None
    groups: int
    batch_groups: Size = 1

    @property
    def materialize_fill(self) -> bool:
        """Whether the fill is made by inserting zeros into ``x`` before the call."""
        return self.fill is not None

    def keywords(self) -> dict[str, Any]:
        """The keyword arguments of ``torch.nn.functional.<function>``."""
        keywords: dict[str, Any] = {"stride": self.stride, "padding": self.padding}
        if self.output_padding is not None:
            keywords["output_padding"] = self.output_padding
        keywords.update(dilation=self.dilation, groups=self.groups)
        return keywords

    def apply(self, x: Any, w: Any) -> Any:
        """Run the call on torch tensors ``x`` and ``w`` (before the permutes and the flip)."""
        _require_numbers(self, "TorchConvCall.apply")
        functional = _import_torch().nn.functional
        rank = len(self.stride)
        if self.transpose_input:
            x = x.transpose(0, 1)
        if self.batch_groups != 1:
            x = x.reshape(self.batch_groups, -1, *x.shape[1:]).transpose(0, 1).flatten(1, 2)
        if self.fill is not None:
            channels = x.shape[1]
            ones = x.new_ones((channels, 1) + (1,) * rank)
            zero_insert = getattr(functional, f"conv_transpose{rank}d")
            x = zero_insert(x, ones, stride=self.fill, groups=channels)
        if self.pad is not None:
            x = functional.pad(x, self.pad)
        if self.crop is not None:
            x = functional.pad(x, self.crop)
        if self.transpose_kernel:
            w = w.transpose(0, 1)
        if self.flip_dims:
            w = w.flip(self.flip_dims)
        return getattr(functional, self.function)(x, w, **self.keywords())

    def subs(self, values: Values) -> TorchConvCall:
        return _subs_record(self, values)

    def as_dict(self) -> dict[str, Any]:
        return {**_record_as_dict(self), "materialize_fill": self.materialize_fill}

    def __str__(self) -> str:
        functional = "torch.nn.functional"
        rank = len(self.stride)
        x = f"{self.x}.transpose(0, 1)" if self.transpose_input else self.x
        if self.batch_groups != 1:
            x = (
                f"{x}.reshape({_code(self.batch_groups)}, -1, *{x}.shape[1:])"
                ".transpose(0, 1).flatten(1, 2)"
            )
        if self.fill is not None:
            channels = f"{self.x}.shape[{0 if self.transpose_input else 1}]"
            if self.batch_groups != 1:  # folded into the channels above
                channels = f"{_code(self.batch_groups)} * {channels}"
            ones = f"{self.x}.new_ones(({channels}, 1{', 1' * rank}))"
            x = (
                f"{functional}.conv_transpose{rank}d({x}, {ones}, "
                f"stride={_code(self.fill)}, groups={channels})"
            )
        if self.pad is not None:
            x = f"{functional}.pad({x}, {_code(self.pad)})"
        if self.crop is not None:
            x = f"{functional}.pad({x}, {_code(self.crop)})"
        w = f"{self.w}.transpose(0, 1)" if self.transpose_kernel else self.w
        if self.flip_dims:
            w = f"{w}.flip({_code(self.flip_dims)})"
        keywords = [f"{name}={_code(value)}" for name, value in self.keywords().items()]
        return f"{functional}.{self.function}({', '.join([x, w, *keywords])})"


def _conv_transpose_padding(lo: Size, hi: Size, dilation: Size, kernel: Size) -> tuple[Size, Size]:
    """torch's ``(padding, output_padding)`` for a filled axis padded ``(lo, hi)``."""
    # conv_transpose pads the filled input d*(K-1)-P before and d*(K-1)-P+op after.
    return _size(dilation * (kernel - 1) - lo), _size(hi - lo)


def _fits_conv_transpose(conv: GenericConv, kernel_size: tuple[Size, ...]) -> bool:
    """Whether ``conv`` is certainly one ``conv_transpose{n}d`` call.

    ``conv_transpose(x, w, stride=f, padding=P, output_padding=op, dilation=d)`` is
    the generic call with fill f, stride 1, flip_kernel and permute_kernel; torch
    requires ``P >= 0`` and ``0 <= op < max(f, d)``. Kernel ``(C_in, C_out/g, K...)``
    swapped whole is not torch's grouped layout, so groups must be 1.
    """
    if not (conv.flip_kernel and conv.permute_kernel and conv.groups == 1):
        return False
    if not _is_zero(sp.sympify(conv.batch_groups) - 1):
        return False
    if not all(_is_zero(stride - 1) for stride in conv.stride):
        return False
    for (lo, hi), fill, dilation, kernel in zip(
        conv.padding, conv.fill, conv.dilation, kernel_size, strict=True
    ):
        padding, output_padding = _conv_transpose_padding(lo, hi, dilation, kernel)
        if not (
            _is_nonnegative(padding)
            and _is_nonnegative(output_padding)
            and _is_below(output_padding, sp.Max(fill, dilation))
        ):
            return False
    return True


def _split_torch_padding(lo: Size, hi: Size) -> tuple[Size, tuple[Size, Size], tuple[Size, Size]]:
    """torch's symmetric in-call padding, the ``(lo, hi)`` zeros to add, then to crop.

    Adding before cropping lets a crop reach into the zeros added on the other side,
    as the generic call allows, where torch's pad refuses to crop more than the input
    holds. A side of unknown sign is split by its value: ``max(side, 0)`` zeros added,
    ``min(side, 0)`` cropped (one pad of both signs crops first, and fails when the
    crop is longer than the input before the zeros are added).
    """
    if _is_zero(lo - hi) and _is_nonnegative(lo):
        return lo, (0, 0), (0, 0)

    def added(side: Size) -> Size:
        if _is_negative(side):
            return 0
        return side if _is_nonnegative(side) else _size(sp.Max(side, 0))

    def cropped(side: Size) -> Size:
        if _is_negative(side) or _is_nonnegative(side):
            return _size(side - added(side))
        return _size(sp.Min(side, 0))

    return 0, (added(lo), added(hi)), (cropped(lo), cropped(hi))


def _torch_pad_argument(pairs: Sequence[tuple[Size, Size]]) -> tuple[Size, ...] | None:
    """``torch.nn.functional.pad``'s flat argument, last axis first; None if all zero."""
    if all(_is_zero(entry) for pair in pairs for entry in pair):
        return None
    return tuple(entry for pair in reversed(pairs) for entry in pair)


def torch_call(conv: GenericConv, kernel_size: Sequence[Size] | None = None) -> TorchConvCall:
    """The ``torch.nn.functional`` call computing ``conv``.

    With stride 1, ``flip_kernel``, ``permute_kernel`` and groups 1, this is
    ``conv_transpose{n}d`` (the fill becomes its stride) when torch's conditions on its
    padding certainly hold, with or without a fill, so that a symbolic call and its
    numbers take the same form. That form needs ``kernel_size`` (the kernel's spatial
    sizes), as its padding is written in terms of them. Otherwise it is ``conv{n}d``
    with the fill materialised, explicit pads (zeros added, then crops) on every axis
    whose padding is not symmetric and certainly non-negative, and the permutes and the
    flip on the tensors.
    For a symbolic call, a condition that sympy cannot prove counts as false, so the
    general form is chosen; its numbers still compute the same result.
    """
    rank = _framework_rank(conv, "torch")
    if kernel_size is not None:
        kernel = tuple(_size(entry) for entry in kernel_size)
        if len(kernel) != rank:
            raise ArgumentError(f"kernel_size has {len(kernel)} entries for {rank} spatial axes")
        if _fits_conv_transpose(conv, kernel):
            axes = zip(conv.padding, conv.dilation, kernel, strict=True)
            pairs = [_conv_transpose_padding(lo, hi, d, size) for (lo, hi), d, size in axes]
            return TorchConvCall(
                function=f"conv_transpose{rank}d",
                x=conv.x,
                w=conv.w,
                transpose_input=conv.permute_input,
                transpose_kernel=False,
                flip_dims=(),
                fill=None,
                pad=None,
                crop=None,
                stride=conv.fill,
                padding=tuple(padding for padding, _ in pairs),
                dilation=conv.dilation,
                output_padding=tuple(output_padding for _, output_padding in pairs),
                groups=1,
            )
    split = [_split_torch_padding(lo, hi) for lo, hi in conv.padding]
    pads = [pad for _, pad, _ in split]
    crops = [crop for _, _, crop in split]
    needs_fill = not all(_is_zero(fill - 1) for fill in conv.fill)
    return TorchConvCall(
        function=f"conv{rank}d",
        x=conv.x,
        w=conv.w,
        transpose_input=conv.permute_input,
        transpose_kernel=conv.permute_kernel,
        flip_dims=_spatial_axes(rank) if conv.flip_kernel else (),
        fill=conv.fill if needs_fill else None,
        pad=_torch_pad_argument(pads),
        crop=_torch_pad_argument(crops),
        stride=conv.stride,
        padding=tuple(in_call for in_call, _, _ in split),
        dilation=conv.dilation,
        output_padding=None,
        groups=_size(sp.sympify(conv.groups) * conv.batch_groups),
        batch_groups=conv.batch_groups,
    )


# Runners.


def _import_jax() -> Any:
    try:
        import jax
    except ImportError as error:
        raise BackendMissingError(
            'the jax backend needs jax: pip install "einderive[jax]"'
        ) from error
    return jax


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise BackendMissingError(
            'the torch backend needs torch: pip install "einderive[torch]"'
        ) from error
    return torch


def _check_operands(conv: GenericConv, x: np.ndarray, w: np.ndarray) -> None:
    expected = conv.rank + 2
    for name, array in ((conv.x, x), (conv.w, w)):
        if np.ndim(array) != expected:
            raise ArgumentError(
                f"{name} must have {expected} axes for a {conv.rank}-D convolution, "
                f"got shape {np.shape(array)}"
            )


def run_jax(conv: GenericConv, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Run ``conv`` with JAX in float64.

    ``x`` and ``w`` are given as stored: the call applies the permutes and the flip,
    after which ``x`` is ``(B, C_in, N...)`` and ``w`` is ``(C_out, C_in/groups, K...)``.
    """
    _require_numbers(conv, "run_jax")
    _check_operands(conv, x, w)
    jax = _import_jax()
    with jax.enable_x64(True):
        out = jax_call(conv).apply(
            jax.numpy.asarray(x, dtype=jax.numpy.float64),
            jax.numpy.asarray(w, dtype=jax.numpy.float64),
        )
        return np.asarray(out, dtype=np.float64)


def run_torch(conv: GenericConv, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Run ``conv`` with PyTorch in float64; arrays as for :func:`run_jax`."""
    _require_numbers(conv, "run_torch")
    _check_operands(conv, x, w)
    torch = _import_torch()
    call = torch_call(conv, kernel_size=np.shape(w)[2:])
    # from_numpy shares memory and refuses negative strides: hand it a fresh copy.
    out = call.apply(
        torch.from_numpy(np.array(x, dtype=np.float64)),
        torch.from_numpy(np.array(w, dtype=np.float64)),
    )
    return out.numpy()
