"""The generic convolution call in NumPy: strided windows and one tensordot (no Python loop
over elements), and the two 2-D pullback shapes as phase-flat GEMMs.

A runtime module: emitted NumPy modules carry the definitions they call, copied
verbatim (``emit.vectorized.conv_kernel``), so it imports nothing of einderive and
its names are the private names the emitted code uses.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class _Call:
    """The parameters of one generic convolution call, as the kernel reads them."""

    def __init__(
        self,
        padding: Sequence[Sequence[int]],
        stride: Sequence[int],
        dilation: Sequence[int],
        fill: Sequence[int],
        flip_kernel: bool,
        permute_kernel: bool,
        permute_input: bool,
        groups: int,
        batch_groups: int = 1,
    ) -> None:
        self.padding = padding
        self.stride = stride
        self.dilation = dilation
        self.fill = fill
        self.flip_kernel = flip_kernel
        self.permute_kernel = permute_kernel
        self.permute_input = permute_input
        self.groups = groups
        self.batch_groups = batch_groups
        self.rank = len(padding)


def _conv(
    x: np.ndarray,
    w: np.ndarray,
    padding: Sequence[Sequence[int]],
    stride: Sequence[int],
    dilation: Sequence[int],
    fill: Sequence[int],
    flip_kernel: bool,
    permute_kernel: bool,
    permute_input: bool,
    groups: int,
    batch_groups: int = 1,
) -> np.ndarray:
    """The generic convolution: ``x`` is ``(B, C_in, N...)``, ``w`` is ``(C_out, C_in, K...)``.

    In order: ``permute_input`` swaps the first two axes of ``x``, ``permute_kernel``
    those of ``w``; ``flip_kernel`` reverses ``w`` along every spatial axis; ``fill``
    puts fill-1 zeros between neighbours of ``x``; ``padding`` adds ``lo`` zeros before
    and ``hi`` after (negative: crops); then
    ``out[b, o, i] = sum_{c, m} w[o, c, m] * x[b, c, stride*i + dilation*m]``, over the
    input channels of ``o``'s group (``groups``) and, with ``batch_groups``, over the
    batch's block of ``o``'s block.
    """
    call = _Call(
        padding,
        stride,
        dilation,
        fill,
        flip_kernel,
        permute_kernel,
        permute_input,
        groups,
        batch_groups,
    )
    return _generic_conv(call, x, w)


def _fill_pad(x: np.ndarray, call: _Call) -> np.ndarray:
    """Insert fill-1 zeros between samples, then pad (negative: crop), per spatial axis."""
    for k in range(call.rank):
        axis = 2 + k
        fill = int(call.fill[k])
        if fill > 1 and x.shape[axis] > 0:
            shape = list(x.shape)
            shape[axis] = (x.shape[axis] - 1) * fill + 1
            filled = np.zeros(shape, dtype=x.dtype)
            index = [slice(None)] * x.ndim
            index[axis] = slice(None, None, fill)
            filled[tuple(index)] = x
            x = filled
        lo, hi = (int(v) for v in call.padding[k])
        widths = [(0, 0)] * x.ndim
        widths[axis] = (max(lo, 0), max(hi, 0))
        x = np.pad(x, widths)
        start = -lo if lo < 0 else 0
        stop = x.shape[axis] + hi if hi < 0 else x.shape[axis]
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, max(start, stop))
        x = x[tuple(index)]
    return x


def _generic_conv(call: _Call, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The generic call on operands ``(B, C, N...)``, ``(O, C/g, K...)``."""
    fast = _conv2d_pullback(call, x, w)
    if fast is not None:
        return fast
    if call.permute_input:
        x = x.swapaxes(0, 1)
    if call.permute_kernel:
        w = w.swapaxes(0, 1)
    groups = int(call.groups)
    batch_groups = int(call.batch_groups)
    if batch_groups != 1:
        # batch block k becomes channel block k, a feature group of its own
        x = x.reshape(batch_groups, -1, *x.shape[1:]).swapaxes(0, 1)
        x = x.reshape(x.shape[0], -1, *x.shape[3:])
        groups *= batch_groups
    rank = call.rank
    if call.flip_kernel:
        w = w[(slice(None), slice(None)) + (slice(None, None, -1),) * rank]
    x = _fill_pad(x, call)
    kernel = w.shape[2:]
    strides = [int(s) for s in call.stride]
    dilations = [int(d) for d in call.dilation]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    outputs = [
        max(0, (n - span) // s + 1) if n >= span else 0
        for n, span, s in zip(x.shape[2:], spans, strides, strict=True)
    ]
    batch, channels = x.shape[:2]
    out_channels = w.shape[0]
    if 0 in outputs or 0 in kernel or batch == 0 or out_channels == 0:
        return np.zeros((batch, out_channels, *outputs))
    windows = sliding_window_view(x, spans, axis=tuple(range(2, 2 + rank)))
    # windows: (B, C, N'..., span...) -> strided outputs, dilated taps
    index = (slice(None), slice(None))
    index += tuple(slice(None, o * s, s) for o, s in zip(outputs, strides, strict=True))
    index += tuple(slice(None, None, d) for d in dilations)
    windows = windows[index]
    if groups == 1:
        # one contraction over (channel, taps): (B, out..., O) then channels to the front
        axes = [1, *range(2 + rank, 2 + 2 * rank)]
        out = np.tensordot(windows, w, axes=(axes, [1, *range(2, 2 + rank)]))
        return np.moveaxis(out, -1, 1)
    per_group = channels // groups
    windows = windows.reshape(batch, groups, per_group, *windows.shape[2:])
    kernels = w.reshape(groups, out_channels // groups, per_group, *kernel)
    # sum over (c, taps): out[b, g, o, i...] = sum windows[b, g, c, i..., k...] * w[g, o, c, k...]
    spatial = "ijk"[:rank]
    taps = "uvw"[:rank]
    out = np.einsum(f"bgc{spatial}{taps},goc{taps}->bgo{spatial}", windows, kernels)
    return out.reshape(batch, out_channels, *outputs)


def _conv2d_pullback(call: _Call, x: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """The call by a phase-flat kernel when it has one of the two 2-D pullback shapes.

    ``conv(dY, W, fill=s, dilation=d, flip, permute_kernel)`` is the input pullback of a
    forward with stride ``s``, dilation ``d`` and left padding ``d*(K-1) - lo``;
    ``conv(X, dY, stride=d, dilation=s, permute_kernel, permute_input)`` is the kernel
    pullback of a forward with stride ``s``, dilation ``d`` and left padding ``lo``.
    """
    if call.rank != 2 or int(call.groups) * int(call.batch_groups) != 1:
        return None
    if x.size == 0 or w.size == 0:
        return None
    padding = [(int(lo), int(hi)) for lo, hi in call.padding]
    strides = [int(v) for v in call.stride]
    dilations = [int(v) for v in call.dilation]
    fills = [int(v) for v in call.fill]
    into_input = (
        call.flip_kernel and call.permute_kernel and not call.permute_input and strides == [1, 1]
    )
    into_kernel = (
        call.permute_kernel and call.permute_input and not call.flip_kernel and fills == [1, 1]
    )
    if into_input:
        # x = dY (B, O, Ho, Wo), w = W (O, C, K, K): per axis, the forward's input size and
        # its padding (lo = d*(K-1) - the call's lo; hi whatever makes Ho outputs)
        sizes, pads = [], []
        for n, f, (lo, hi), d, k in zip(
            x.shape[2:], fills, padding, dilations, w.shape[2:], strict=True
        ):
            size = (n - 1) * f + 1 + lo + hi - d * (k - 1)
            before = d * (k - 1) - lo
            sizes.append(size)
            pads.append((before, (n - 1) * f + d * (k - 1) + 1 - size - before))
        if min(sizes) < 1:
            return None
        x_shape = (x.shape[0], w.shape[1], *sizes)
        return _conv2d_dx(x, w, _two(fills), (pads[0], pads[1]), x_shape, _two(dilations))
    if into_kernel:
        # x = X (B, C, H, W), w = dY (B, O, Ho, Wo): per axis, the forward's kernel size
        kernel, pads = [], []
        for n, (lo, hi), s, o, d in zip(
            x.shape[2:], padding, dilations, w.shape[2:], strides, strict=True
        ):
            k = (n + lo + hi - s * (o - 1) - 1) // d + 1
            kernel.append(k)
            pads.append((lo, (o - 1) * s + d * (k - 1) + 1 - n - lo))
        if min(kernel) < 1:
            return None
        w_shape = (w.shape[1], x.shape[1], *kernel)
        dw = _conv2d_dw(w, x, _two(dilations), (pads[0], pads[1]), w_shape, _two(strides))
        return dw.transpose(1, 0, 2, 3)
    return None


def _two(values: Sequence[int]) -> tuple[int, int]:
    first, second = values
    return first, second


# The two 2-D shapes that a convolution's pullbacks take, as "phase-flat" GEMM kernels.
#
# The pullbacks of Y = conv2d(X, W, stride s, dilation d, padding p) are
#   dX = conv(dY, W, fill=s, dilation=d, flip_kernel, permute_kernel)   (stride 1)
#   dW = conv(X, dY, stride=d, dilation=s, permute_kernel, permute_input) (fill 1)
# Both are computed from the forward's geometry: the zero-padded X split into s*s phase
# grids (a strided, dilated tap becomes a unit-stride shift), each grid flattened over
# (Hq, B, Wq) with dY embedded in a grid of the same shape, so that every tap is a
# contiguous window and each pullback is a few large GEMMs on views (no im2col of X).
# Each phase's GEMMs cover only its grid rows that hold input (the padding rows of every
# image lie together at the ends of the flat axis, since the batch is inside the rows).

_IntPair = int | tuple[int, int]
_PadSpec = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]

_CHUNK_BYTES = 1 << 21
"""Largest im2col block of dY (per chunk of the flat axis); measured best at 1-2 MiB."""


# Geometry.


def _pair(value: _IntPair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _pads(padding: _PadSpec) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((ph_lo, ph_hi), (pw_lo, pw_hi))`` from an int, ``(ph, pw)`` or per-side pairs."""
    if isinstance(padding, int | np.integer):
        return (int(padding), int(padding)), (int(padding), int(padding))
    ph, pw = padding
    return tuple(_pair(ph, "padding")), tuple(_pair(pw, "padding"))  # type: ignore[return-value]


class _Axis(NamedTuple):
    """One spatial axis: where the input sits in its phase grids and where taps read."""

    size: int  # input extent
    crop_lo: int  # input elements dropped in front (negative low padding)
    crop_hi: int  # input elements dropped behind (negative high padding)
    stride: int
    out: int  # output extent
    grid: int  # phase-grid extent: ceil(padded extent / stride)
    tap_phase: tuple[int, ...]  # phase each kernel tap reads
    tap_shift: tuple[int, ...]  # shift, in phase-grid rows, of each kernel tap
    # For each phase: (first input index, first phase-grid index, count).
    phase_rows: tuple[tuple[int, int, int], ...]


def _axis(size: int, kernel: int, stride: int, dilation: int, lo: int, hi: int) -> _Axis:
    if stride < 1 or dilation < 1 or kernel < 1:
        raise ValueError("stride, dilation and kernel size must be positive")
    crop_lo, crop_hi = max(0, -lo), max(0, -hi)
    lo, hi = max(0, lo), max(0, hi)
    kept = max(0, size - crop_lo - crop_hi)
    padded = lo + kept + hi
    out = max(0, (padded - dilation * (kernel - 1) - 1) // stride + 1)
    grid = max(1, -(-padded // stride))
    phase_rows = []
    for a in range(stride):
        first = (a - lo) % stride  # first kept input index whose padded index is = a mod s
        count = max(0, -(-(kept - first) // stride))
        phase_rows.append((crop_lo + first, (first + lo) // stride, count))
    taps = [dilation * m for m in range(kernel)]
    return _Axis(
        size=size,
        crop_lo=crop_lo,
        crop_hi=crop_hi,
        stride=stride,
        out=out,
        grid=grid,
        tap_phase=tuple(t % stride for t in taps),
        tap_shift=tuple(t // stride for t in taps),
        phase_rows=tuple(phase_rows),
    )


class _Plan(NamedTuple):
    batch: int
    c_in: int
    c_out: int
    rows: _Axis
    cols: _Axis

    @property
    def flat(self) -> int:
        """Length of one flattened phase grid: ``Hq * B * Wq``."""
        return self.batch * self.rows.grid * self.cols.grid

    @property
    def pitch(self) -> int:
        """Flat distance between grid rows, ``B * Wq``: the batch sits between rows and
        columns, so the rows a phase has no input in are a prefix and a suffix of the flat
        axis, which its GEMMs leave out."""
        return self.batch * self.cols.grid

    def offset(self, m: int, n: int) -> int:
        """Flat shift of kernel tap ``(m, n)`` inside its phase grid."""
        return self.rows.tap_shift[m] * self.pitch + self.cols.tap_shift[n]

    def span(self, a: int, b: int) -> tuple[int, int]:
        """The flat range of phase ``(a, b)``'s grid rows that hold input (empty if none)."""
        _, u0, nh = self.rows.phase_rows[a]
        if nh == 0 or self.cols.phase_rows[b][2] == 0:
            return 0, 0
        return u0 * self.pitch, (u0 + nh) * self.pitch

    @property
    def margin(self) -> int:
        """Largest tap shift; ``U = flat - margin`` windows fit every tap."""
        return self.offset(len(self.rows.tap_shift) - 1, len(self.cols.tap_shift) - 1)

    def taps_of_phase(self, a: int, b: int) -> list[tuple[int, int]]:
        return [
            (m, n)
            for m, n in itertools.product(
                range(len(self.rows.tap_phase)), range(len(self.cols.tap_phase))
            )
            if self.rows.tap_phase[m] == a and self.cols.tap_phase[n] == b
        ]


def _plan(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride: _IntPair,
    padding: _PadSpec,
    dilation: _IntPair,
) -> _Plan:
    batch, c_in, height, width = x_shape
    c_out, c_in_w, kh, kw = w_shape
    if c_in != c_in_w:
        raise ValueError(f"input has {c_in} channels but the kernel expects {c_in_w}")
    return _plan_of(
        (int(batch), int(c_in), int(height), int(width)),
        (int(c_out), int(kh), int(kw)),
        _pair(stride, "stride"),
        _pads(padding),
        _pair(dilation, "dilation"),
    )


@functools.lru_cache(maxsize=256)
def _plan_of(
    x_shape: tuple[int, int, int, int],
    w_shape: tuple[int, int, int],
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
) -> _Plan:
    (batch, c_in, height, width), (c_out, kh, kw) = x_shape, w_shape
    (sh, sw), (dh, dw) = stride, dilation
    (ph_lo, ph_hi), (pw_lo, pw_hi) = padding
    return _Plan(
        batch=batch,
        c_in=c_in,
        c_out=c_out,
        rows=_axis(height, kh, sh, dh, ph_lo, ph_hi),
        cols=_axis(width, kw, sw, dw, pw_lo, pw_hi),
    )


def _output_shape(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride: _IntPair = 1,
    padding: _PadSpec = 0,
    dilation: _IntPair = 1,
) -> tuple[int, int, int, int]:
    """Shape of the forward output ``Y`` (``(B, O, Ho, Wo)``)."""
    plan = _plan(x_shape, w_shape, stride, padding, dilation)
    return plan.batch, plan.c_out, plan.rows.out, plan.cols.out


def _output_shape_of(plan: _Plan) -> tuple[int, int, int, int]:
    return plan.batch, plan.c_out, plan.rows.out, plan.cols.out


# Layout changes.


def _every(first: int, count: int, step: int) -> slice:
    """The slice of ``count`` indices ``first, first + step, ...``."""
    return slice(first, first + step * (count - 1) + 1, step)


def _workspace(dtype: np.dtype, *sizes: int) -> list[np.ndarray]:
    """Flat, 64-byte aligned views into ONE fresh allocation, one per size.

    One large block instead of several ~MB temporaries: glibc returns the top of its heap
    to the OS when more than twice its (adaptive) mmap threshold is freed at once, and the
    next call then page-faults on every 4 KiB it touches -- on a VM that can cost as much
    as the arithmetic. A single block stays below that limit and is reused call to call.
    """
    align = max(1, 64 // dtype.itemsize)
    padded = [-(-n // align) * align for n in sizes]
    work = np.empty(sum(padded) + align, dtype)
    start = (-(work.ctypes.data // dtype.itemsize)) % align  # first 64-byte boundary
    views = []
    for n, step in zip(sizes, padded, strict=True):
        views.append(work[start : start + n])
        start += step
    return views


@functools.lru_cache(maxsize=64)
def _phase_windows(plan: _Plan) -> tuple[tuple[int, int, slice, slice, slice, slice], ...]:
    """For each phase holding input: ``(a, b, grid rows, grid columns, input rows, input
    columns)``, the window of its grid that the input's every ``s``-th row and column fill."""
    ax_h, ax_w = plan.rows, plan.cols
    windows = []
    for a, (h0, u0, nh) in enumerate(ax_h.phase_rows):
        for b, (w0, v0, nw) in enumerate(ax_w.phase_rows):
            if nh and nw:
                grid = slice(u0, u0 + nh), slice(v0, v0 + nw)
                rows, cols = _every(h0, nh, ax_h.stride), _every(w0, nw, ax_w.stride)
                windows.append((a, b, *grid, rows, cols))
    return tuple(windows)


def _fill_phases_x(xq: np.ndarray, x: np.ndarray, plan: _Plan) -> np.ndarray:
    """Write ``X`` zero-padded, channel-major, split into phases into the flat buffer
    ``xq``; return it shaped ``(sh, sw, C, Hq*B*Wq)``."""
    ax_h, ax_w = plan.rows, plan.cols
    xq = xq.reshape(ax_h.stride, ax_w.stride, plan.c_in, ax_h.grid, plan.batch, ax_w.grid)
    xq.fill(0)
    xt = x.transpose(1, 2, 0, 3)  # (C, H, B, W), a view
    for a, b, grid_rows, grid_cols, rows, cols in _phase_windows(plan):
        xq[a, b, :, grid_rows, :, grid_cols] = xt[:, rows, :, cols]
    return xq.reshape(ax_h.stride, ax_w.stride, plan.c_in, plan.flat)


def _fill_flat_dy(dyb: np.ndarray, dy: np.ndarray, plan: _Plan) -> np.ndarray:
    """Write ``dY`` channel-major on the flat phase grid, after a zero margin, into the flat
    buffer ``dyb``; return it shaped ``(O, margin + Hq*B*Wq)``.

    Grid cells that are not outputs hold zeros, and the margin lets the taps read ``dY`` at
    negative shifts.
    """
    ax_h, ax_w = plan.rows, plan.cols
    if dy.shape != _output_shape_of(plan):
        raise ValueError(f"dy has shape {dy.shape}, expected {_output_shape_of(plan)}")
    dyb = dyb.reshape(plan.c_out, plan.margin + plan.flat)
    dyb.fill(0)
    grid = dyb[:, plan.margin :].reshape(plan.c_out, ax_h.grid, plan.batch, ax_w.grid)
    grid[:, : ax_h.out, :, : ax_w.out] = dy.transpose(1, 2, 0, 3)
    return dyb


def _interleave_dx(dq: np.ndarray, plan: _Plan, dtype: np.dtype) -> np.ndarray:
    """NCHW ``dX`` from its channel-major phase grids, dropping padding (zero where cropped)."""
    ax_h, ax_w = plan.rows, plan.cols
    dx_shape = (plan.batch, plan.c_in, ax_h.size, ax_w.size)
    cropped = ax_h.crop_lo or ax_h.crop_hi or ax_w.crop_lo or ax_w.crop_hi
    dx = np.zeros(dx_shape, dtype) if cropped else np.empty(dx_shape, dtype)
    grids = dq.reshape(ax_h.stride, ax_w.stride, plan.c_in, ax_h.grid, plan.batch, ax_w.grid)
    for a, b, grid_rows, grid_cols, rows, cols in _phase_windows(plan):
        phase = grids[a, b, :, grid_rows, :, grid_cols]  # (C, nh, B, nw)
        dx[:, :, rows, cols] = phase.transpose(2, 0, 1, 3)
    return dx


# The pullbacks.


class _PhaseRun(NamedTuple):
    """One phase's share of the work: the block rows its taps read, its kernel slots."""

    a: int
    b: int
    first: int  # first row group of the dY block this phase reads
    slots: int  # first slot of this phase in the kernel / dW arrays (slots = taps)
    taps: int  # how many taps (row groups, slots) it has
    lo: int  # the flat range its GEMMs cover: its grid rows that hold input
    hi: int


class _Schedule(NamedTuple):
    """The order of the dY block and who reads it, fixed by the geometry alone.

    A row group of the block is ``dY`` shifted by one flat tap offset. Taps of different
    phases that share an offset share its rows, so the groups are the distinct offsets,
    ordered (when such an order exists) so that every phase's taps are one contiguous run;
    otherwise each phase has a run of its own. ``slot_taps[k]`` is the kernel tap
    ``m * KW + n`` of slot ``k``; slots run phase by phase in block order.
    """

    starts: tuple[int, ...]  # per row group: its first column in the margined dY grid
    runs: tuple[_PhaseRun, ...]  # phases with taps and input
    lo: int  # the flat range the runs cover together
    hi: int
    empty: tuple[tuple[int, int], ...]  # phases no tap reads (their dX is zero)
    slot_taps: tuple[int, ...]
    tap_slots: tuple[int, ...]  # the inverse: the slot of each kernel tap


def _block_order(phase_offsets: list[list[int]], limit: int = 6) -> list[int]:
    """Distinct offsets in an order in which each phase's offsets are contiguous, when the
    offsets are few enough to search; else every phase's offsets one after another."""
    distinct = sorted({o for offsets in phase_offsets for o in offsets})
    if len(distinct) <= limit:
        for order in itertools.permutations(distinct):
            where = {offset: i for i, offset in enumerate(order)}
            if all(
                max(where[o] for o in offsets) - min(where[o] for o in offsets) < len(offsets)
                for offsets in phase_offsets
            ):
                return list(order)
    return [o for offsets in phase_offsets for o in offsets]


@functools.lru_cache(maxsize=64)
def _schedule(plan: _Plan) -> _Schedule:
    kw = len(plan.cols.tap_phase)
    phases = [(a, b) for a in range(plan.rows.stride) for b in range(plan.cols.stride)]
    taps = {ab: plan.taps_of_phase(*ab) for ab in phases}
    busy = [ab for ab in phases if taps[ab]]
    offsets = [[plan.offset(m, n) for m, n in taps[ab]] for ab in busy]
    order = _block_order(offsets)
    runs, slot_taps, slot = [], [], 0
    for ab, phase_offsets in zip(busy, offsets, strict=True):
        by_offset = dict(zip(phase_offsets, taps[ab], strict=True))
        first = next(
            i
            for i in range(len(order) - len(phase_offsets) + 1)
            if set(order[i : i + len(phase_offsets)]) == set(phase_offsets)
        )
        lo, hi = plan.span(*ab)
        if hi > lo:  # a phase whose taps read only padding keeps its slots, at zero
            runs.append(_PhaseRun(*ab, first, slot, len(phase_offsets), lo, hi))
        for offset in order[first : first + len(phase_offsets)]:
            m, n = by_offset[offset]
            slot_taps.append(m * kw + n)
        slot += len(phase_offsets)
    return _Schedule(
        starts=tuple(plan.margin - offset for offset in order),
        runs=tuple(runs),
        lo=min((run.lo for run in runs), default=0),
        hi=max((run.hi for run in runs), default=0),
        empty=tuple(ab for ab in phases if not taps[ab]),
        slot_taps=tuple(slot_taps),
        tap_slots=tuple(sorted(range(len(slot_taps)), key=slot_taps.__getitem__)),
    )


def _pullbacks(
    dy: np.ndarray,
    x: np.ndarray | None,
    w: np.ndarray | None,
    plan: _Plan,
    dtype: np.dtype,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(dX, dW)``; ``dX`` is computed when ``w`` is given, ``dW`` when ``x`` is given.

    For every phase ``(a, b)`` of the padded input, the taps ``t = (m, n)`` that land in it
    read the phase grid at flat shifts ``off_t``. Chunk by chunk along the flat axis (the
    part of it where some phase has input), the shifted copies of ``dY`` are stacked into
    one im2col block, a row group ``D[g*O + o, u] = dY[o, u - off_g]`` per distinct shift
    (see ``_Schedule``); each phase's run of groups feeds both of its GEMMs, over the
    columns where the phase has input::

        dX_phase[:, chunk]  = W_phase (C, T*O) @ D_phase     (written in place)
        dW_phase           += D_phase @ X_phase[:, chunk].T  (T*O, C)

    because ``sum_u dY[o, u] X[c, u + off_t] = sum_u dY[o, u - off_t] X[c, u]``.
    """
    ax_h, ax_w = plan.rows, plan.cols
    c_in, c_out, flat, margin = plan.c_in, plan.c_out, plan.flat, plan.margin
    kh, kw = len(ax_h.tap_phase), len(ax_w.tap_phase)
    n_phases = ax_h.stride * ax_w.stride
    schedule = _schedule(plan)
    groups, slots = len(schedule.starts), kh * kw
    lo, span = schedule.lo, schedule.hi - schedule.lo
    # Equal chunks whose im2col block is at most _CHUNK_BYTES, and >= 256 columns.
    chunk = max(256, _CHUNK_BYTES // (groups * c_out * dtype.itemsize))
    chunk = -(-span // -(-span // chunk)) if span else 1
    dyb, xq, dq, block_buf = _workspace(
        dtype,
        c_out * (margin + flat),
        n_phases * c_in * flat if x is not None else 0,
        n_phases * c_in * flat if w is not None else 0,
        groups * c_out * chunk,
    )
    dyb = _fill_flat_dy(dyb, dy, plan)
    if w is not None:  # w_slots[c, k*O + o] = w[o, c, m_k, n_k]
        dq = dq.reshape(ax_h.stride, ax_w.stride, c_in, flat)
        w_slots = w.reshape(c_out, c_in, slots).transpose(1, 2, 0).take(schedule.slot_taps, 1)
        w_slots = w_slots.reshape(c_in, slots * c_out)
        for a, b in schedule.empty:
            dq[a, b] = 0
    if x is not None:  # dw_slots[k*O + o, c] = dW[o, c, m_k, n_k]
        xq = _fill_phases_x(xq, x, plan)
        dw_slots = np.zeros((slots * c_out, c_in), dtype)
        dw_part = np.empty_like(dw_slots) if chunk < span else dw_slots
    for u in range(lo, lo + span, chunk):
        size = min(chunk, lo + span - u)
        block = block_buf[: groups * c_out * size].reshape(groups, c_out, size)
        for g, start in enumerate(schedule.starts):  # dY shifted by one tap offset
            block[g] = dyb[:, start + u : start + u + size]
        block_rows = block.reshape(groups * c_out, size)
        for run in schedule.runs:
            first, last = max(u, run.lo), min(u + size, run.hi)  # this phase's columns
            if first >= last:
                continue
            d_phase = block_rows[run.first * c_out : (run.first + run.taps) * c_out]
            d_phase = d_phase[:, first - u : last - u]
            cols = slice(run.slots * c_out, (run.slots + run.taps) * c_out)
            if w is not None:
                np.matmul(w_slots[:, cols], d_phase, out=dq[run.a, run.b, :, first:last])
            if x is not None:
                np.matmul(d_phase, xq[run.a, run.b, :, first:last].T, out=dw_part[cols])
                if dw_part is not dw_slots:
                    dw_slots[cols] += dw_part[cols]
    dx = _interleave_dx(dq, plan, dtype) if w is not None else None
    dw = None
    if x is not None:
        dw = dw_slots.reshape(slots, c_out, c_in).transpose(1, 2, 0).take(schedule.tap_slots, 2)
        dw = dw.reshape(c_out, c_in, kh, kw)
    return dx, dw


# Public entry points.


def _conv2d_dx(
    dy: np.ndarray,
    w: np.ndarray,
    stride: _IntPair,
    padding: _PadSpec,
    x_shape: Sequence[int],
    dilation: _IntPair = 1,
) -> np.ndarray:
    """Pullback of ``conv2d`` with respect to its input: ``dX`` of shape ``x_shape``."""
    plan = _plan(x_shape, w.shape, stride, padding, dilation)
    dtype = np.result_type(dy, w)
    if plan.rows.out == 0 or plan.cols.out == 0:
        return np.zeros(tuple(x_shape), dtype)
    dx = _pullbacks(dy, None, w, plan, dtype)[0]
    assert dx is not None
    return dx


def _conv2d_dw(
    dy: np.ndarray,
    x: np.ndarray,
    stride: _IntPair,
    padding: _PadSpec,
    w_shape: Sequence[int],
    dilation: _IntPair = 1,
) -> np.ndarray:
    """Pullback of ``conv2d`` with respect to its kernel: ``dW`` of shape ``w_shape``."""
    plan = _plan(x.shape, w_shape, stride, padding, dilation)
    dtype = np.result_type(dy, x)
    if plan.rows.out == 0 or plan.cols.out == 0:
        return np.zeros(tuple(w_shape), dtype)
    dw = _pullbacks(dy, x, None, plan, dtype)[1]
    assert dw is not None
    return dw


def _conv2d_vjp(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    stride: _IntPair,
    padding: _PadSpec,
    dilation: _IntPair = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Both pullbacks of ``conv2d`` at once, ``(dX, dW)``: one im2col block of ``dY`` per
    chunk feeds the GEMM of each (about a quarter less work than the two apart)."""
    plan = _plan(x.shape, w.shape, stride, padding, dilation)
    if _output_shape_of(plan) != dy.shape:
        raise ValueError(
            f"dY has shape {dy.shape}; the forward's output is {_output_shape_of(plan)}"
        )
    dtype = np.result_type(dy, x, w)
    if 0 in dy.shape or 0 in x.shape or 0 in w.shape:
        return np.zeros(x.shape, dtype), np.zeros(w.shape, dtype)
    dx, dw = _pullbacks(dy, x, w, plan, dtype)
    assert dx is not None and dw is not None
    return dx, dw
