"""Vectorised NumPy pullbacks of a 2-D convolution (cross-correlation), NCHW layout.

This is the hand-written template for the code einderive's NumPy emitter produces for a
convolution pullback. The forward pass, written in einderive's index notation, is::

    Y[b,o,i,j] = W[o,c,m,n] * X[b,c, sh*i + dh*m - ph_lo, sw*j + dw*n - pw_lo]

(reads outside ``X`` are zero), and its two pullbacks are::

    dX[b,c,h,w] = sum_{o,i,j,m,n : sh*i+dh*m = h+ph_lo, sw*j+dw*n = w+pw_lo} dY[b,o,i,j] W[o,c,m,n]
    dW[o,c,m,n] = sum_{b,i,j} dY[b,o,i,j] X[b,c, sh*i+dh*m-ph_lo, sw*j+dw*n-pw_lo]

The formulation ("phase-flat") turns every kernel tap into a plain shifted window of a
2-D array, so both pullbacks become a few large ``np.matmul`` calls on 2-D views:

1. Channel-major layout. ``X`` is re-laid out as ``(C, B, ...)`` and ``dY`` as
   ``(O, B, ...)`` so that batch and space share one flat axis; the transposes are fused
   into the padding copies that are needed anyway.
2. Polyphase split. The zero-padded ``X`` is split into ``sh*sw`` phase grids of size
   ``(Hq, Wq) = (ceil(Hp/sh), ceil(Wp/sw))``: padded row ``sh*u + a`` becomes row ``u`` of
   phase ``a``. Tap ``m`` then reads phase ``(dh*m) % sh`` at unit stride, shifted by
   ``(dh*m) // sh`` rows, so strided and dilated taps become unit-stride shifts, and
   nothing is ever zero-stuffed.
3. Flat offsets. Each phase grid is flattened over ``(B, Hq, Wq)`` and ``dY`` is embedded
   in a zero grid of the same ``(B, Hq, Wq)`` shape, after a zero margin. Tap ``(m, n)``
   is then the contiguous window ``flat[:, off : off + L]`` with ``off = qm*Wq + qn``.
   Grid cells that are not outputs carry ``dY == 0`` and contribute nothing (this costs
   ``Hq*Wq / (Ho*Wo) - 1`` extra flops: 13% at 32x32, 3x3, padding 1).
4. One im2col for both pullbacks. Per phase, and per chunk of the flat axis (so the block
   stays cache-sized and is reused), the windows of ``dY`` shifted back by each tap
   landing in the phase are stacked into ``D`` (``T*O`` rows, long contiguous copies).
   Then ``dX_phase[:, chunk] = W_phase @ D`` is written in place (no scatter-adds), and
   ``dW_phase += D @ X_phase[:, chunk].T``, because
   ``sum_u dY[u] X[u + off] = sum_u dY[u - off] X[u]``.
5. The phase grids of ``dX`` are interleaved back into NCHW (one strided copy per phase);
   ``dW`` is a small transpose.

Temporaries live in one workspace allocation (see ``_workspace``). ``np.einsum`` and
``np.tensordot`` are avoided on purpose: on these layouts they copy their operands into
transposed order first and were 3-4x slower than ``np.matmul`` on views.

Only ``numpy`` is needed. Padding may be asymmetric and negative (negative crops).
Run ``python benchmarks/_numpy_conv_kernels.py`` for a correctness sweep against a naive
reference (and against torch autograd when torch is installed).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Sequence

import numpy as np

IntPair = int | tuple[int, int]
PadSpec = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]

_CHUNK_BYTES = 1 << 21
"""Largest im2col block of dY (per chunk of the flat axis); measured best at 1-2 MiB."""


# Geometry.


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _pads(padding: PadSpec) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((ph_lo, ph_hi), (pw_lo, pw_hi))`` from an int, ``(ph, pw)`` or per-side pairs."""
    if isinstance(padding, int | np.integer):
        return (int(padding), int(padding)), (int(padding), int(padding))
    ph, pw = padding
    return tuple(_pair(ph, "padding")), tuple(_pair(pw, "padding"))  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class _Axis:
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


@dataclasses.dataclass(frozen=True)
class _Plan:
    batch: int
    c_in: int
    c_out: int
    rows: _Axis
    cols: _Axis

    @property
    def flat(self) -> int:
        """Length of one flattened phase grid: ``B * Hq * Wq``."""
        return self.batch * self.rows.grid * self.cols.grid

    def offset(self, m: int, n: int) -> int:
        """Flat shift of kernel tap ``(m, n)`` inside its phase grid."""
        return self.rows.tap_shift[m] * self.cols.grid + self.cols.tap_shift[n]

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
    stride: IntPair,
    padding: PadSpec,
    dilation: IntPair,
) -> _Plan:
    batch, c_in, height, width = x_shape
    c_out, c_in_w, kh, kw = w_shape
    if c_in != c_in_w:
        raise ValueError(f"input has {c_in} channels but the kernel expects {c_in_w}")
    (sh, sw), (dh, dw) = _pair(stride, "stride"), _pair(dilation, "dilation")
    (ph_lo, ph_hi), (pw_lo, pw_hi) = _pads(padding)
    return _Plan(
        batch=batch,
        c_in=c_in,
        c_out=c_out,
        rows=_axis(height, kh, sh, dh, ph_lo, ph_hi),
        cols=_axis(width, kw, sw, dw, pw_lo, pw_hi),
    )


def output_shape(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride: IntPair = 1,
    padding: PadSpec = 0,
    dilation: IntPair = 1,
) -> tuple[int, int, int, int]:
    """Shape of the forward output ``Y`` (``(B, O, Ho, Wo)``)."""
    plan = _plan(x_shape, w_shape, stride, padding, dilation)
    return plan.batch, plan.c_out, plan.rows.out, plan.cols.out


def output_shape_of(plan: _Plan) -> tuple[int, int, int, int]:
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


def _fill_phases_x(xq: np.ndarray, x: np.ndarray, plan: _Plan) -> np.ndarray:
    """Write ``X`` zero-padded, channel-major, split into phases into the flat buffer
    ``xq``; return it shaped ``(sh, sw, C, B*Hq*Wq)``."""
    ax_h, ax_w = plan.rows, plan.cols
    xq = xq.reshape(ax_h.stride, ax_w.stride, plan.c_in, plan.batch, ax_h.grid, ax_w.grid)
    xq.fill(0)
    xt = x.transpose(1, 0, 2, 3)  # (C, B, H, W), a view
    for a, (h0, u0, nh) in enumerate(ax_h.phase_rows):
        for b, (w0, v0, nw) in enumerate(ax_w.phase_rows):
            if nh and nw:
                rows, cols = _every(h0, nh, ax_h.stride), _every(w0, nw, ax_w.stride)
                xq[a, b, :, :, u0 : u0 + nh, v0 : v0 + nw] = xt[:, :, rows, cols]
    return xq.reshape(ax_h.stride, ax_w.stride, plan.c_in, plan.flat)


def _fill_flat_dy(dyb: np.ndarray, dy: np.ndarray, plan: _Plan) -> np.ndarray:
    """Write ``dY`` channel-major on the flat phase grid, after a zero margin, into the flat
    buffer ``dyb``; return it shaped ``(O, margin + B*Hq*Wq)``.

    Grid cells that are not outputs hold zeros, and the margin lets the taps read ``dY`` at
    negative shifts.
    """
    ax_h, ax_w = plan.rows, plan.cols
    if dy.shape != output_shape_of(plan):
        raise ValueError(f"dy has shape {dy.shape}, expected {output_shape_of(plan)}")
    dyb = dyb.reshape(plan.c_out, plan.margin + plan.flat)
    dyb.fill(0)
    grid = dyb[:, plan.margin :].reshape(plan.c_out, plan.batch, ax_h.grid, ax_w.grid)
    grid[:, :, : ax_h.out, : ax_w.out] = dy.transpose(1, 0, 2, 3)
    return dyb


def _interleave_dx(dq: np.ndarray, plan: _Plan, dtype: np.dtype) -> np.ndarray:
    """NCHW ``dX`` from its channel-major phase grids, dropping padding (zero where cropped)."""
    ax_h, ax_w = plan.rows, plan.cols
    dx_shape = (plan.batch, plan.c_in, ax_h.size, ax_w.size)
    cropped = ax_h.crop_lo or ax_h.crop_hi or ax_w.crop_lo or ax_w.crop_hi
    dx = np.zeros(dx_shape, dtype) if cropped else np.empty(dx_shape, dtype)
    grids = dq.reshape(ax_h.stride, ax_w.stride, plan.c_in, plan.batch, ax_h.grid, ax_w.grid)
    for a, (h0, u0, nh) in enumerate(ax_h.phase_rows):
        for b, (w0, v0, nw) in enumerate(ax_w.phase_rows):
            if nh and nw:
                phase = grids[a, b, :, :, u0 : u0 + nh, v0 : v0 + nw]  # (C, B, nh, nw)
                rows, cols = _every(h0, nh, ax_h.stride), _every(w0, nw, ax_w.stride)
                dx[:, :, rows, cols] = phase.transpose(1, 0, 2, 3)
    return dx


# The pullbacks.


def _pullbacks(
    dy: np.ndarray,
    x: np.ndarray | None,
    w: np.ndarray | None,
    plan: _Plan,
    dtype: np.dtype,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(dX, dW)``; ``dX`` is computed when ``w`` is given, ``dW`` when ``x`` is given.

    For every phase ``(a, b)`` of the padded input, the taps ``t = (m, n)`` that land in it
    read the phase grid at flat shifts ``off_t``. Chunk by chunk along the flat axis, the
    shifted copies of ``dY`` are stacked into an im2col block ``D[t*O + o, u] =
    dY[o, u - off_t]``, and that one block feeds both GEMMs::

        dX_phase[:, chunk]  = W_phase (C, T*O) @ D        (written in place)
        dW_phase           += D @ X_phase[:, chunk].T     (T*O, C)

    because ``sum_u dY[o, u] X[c, u + off_t] = sum_u dY[o, u - off_t] X[c, u]``.
    """
    ax_h, ax_w = plan.rows, plan.cols
    c_in, c_out, flat, margin = plan.c_in, plan.c_out, plan.flat, plan.margin
    kh, kw = len(ax_h.tap_phase), len(ax_w.tap_phase)
    n_phases = ax_h.stride * ax_w.stride
    phase_taps = {
        (a, b): plan.taps_of_phase(a, b) for a in range(ax_h.stride) for b in range(ax_w.stride)
    }
    most_taps = max(len(taps) for taps in phase_taps.values())
    # Equal chunks whose im2col block is at most _CHUNK_BYTES, and >= 256 columns.
    chunk = max(256, _CHUNK_BYTES // (most_taps * c_out * dtype.itemsize))
    chunk = -(-flat // -(-flat // chunk))
    dyb, xq, dq, block_buf = _workspace(
        dtype,
        c_out * (margin + flat),
        n_phases * c_in * flat if x is not None else 0,
        n_phases * c_in * flat if w is not None else 0,
        most_taps * c_out * chunk,
    )
    dyb = _fill_flat_dy(dyb, dy, plan)
    if x is not None:
        xq = _fill_phases_x(xq, x, plan)
        dwt = np.zeros((kh, kw, c_out, c_in), dtype)
        dw_part = np.empty((most_taps * c_out, c_in), dtype)
    if w is not None:
        dq = dq.reshape(ax_h.stride, ax_w.stride, c_in, flat)
    for (a, b), taps in phase_taps.items():
        if not taps:  # no tap reads this phase: its dX is zero
            if w is not None:
                dq[a, b] = 0
            continue
        rows = len(taps) * c_out
        if w is not None:  # w_phase[c, t*O + o] = w[o, c, m_t, n_t]
            w_phase = np.stack([w[:, :, m, n].T for m, n in taps], axis=1).reshape(c_in, rows)
        if x is not None:
            dw_phase = np.zeros((rows, c_in), dtype)
        starts = [margin - plan.offset(m, n) for m, n in taps]
        for u in range(0, flat, chunk):
            size = min(chunk, flat - u)
            block = block_buf[: rows * size].reshape(len(taps), c_out, size)
            for t, start in enumerate(starts):  # dY shifted by tap t
                block[t] = dyb[:, start + u : start + u + size]
            block = block.reshape(rows, size)
            if w is not None:
                np.matmul(w_phase, block, out=dq[a, b, :, u : u + size])
            if x is not None:
                np.matmul(block, xq[a, b, :, u : u + size].T, out=dw_part[:rows])
                dw_phase += dw_part[:rows]
        if x is not None:
            for t, (m, n) in enumerate(taps):
                dwt[m, n] = dw_phase[t * c_out : (t + 1) * c_out]
    dx = _interleave_dx(dq, plan, dtype) if w is not None else None
    dw = np.ascontiguousarray(dwt.transpose(2, 3, 0, 1)) if x is not None else None
    return dx, dw


# Public entry points.


def conv2d_dx(
    dy: np.ndarray,
    w: np.ndarray,
    stride: IntPair,
    padding: PadSpec,
    x_shape: Sequence[int],
    dilation: IntPair = 1,
) -> np.ndarray:
    """Pullback of ``conv2d`` with respect to its input: ``dX`` of shape ``x_shape``."""
    plan = _plan(x_shape, w.shape, stride, padding, dilation)
    dtype = np.result_type(dy, w)
    if plan.rows.out == 0 or plan.cols.out == 0:
        return np.zeros(tuple(x_shape), dtype)
    return _pullbacks(dy, None, w, plan, dtype)[0]


def conv2d_dw(
    dy: np.ndarray,
    x: np.ndarray,
    stride: IntPair,
    padding: PadSpec,
    w_shape: Sequence[int],
    dilation: IntPair = 1,
) -> np.ndarray:
    """Pullback of ``conv2d`` with respect to its kernel: ``dW`` of shape ``w_shape``."""
    plan = _plan(x.shape, w_shape, stride, padding, dilation)
    dtype = np.result_type(dy, x)
    if plan.rows.out == 0 or plan.cols.out == 0:
        return np.zeros(tuple(w_shape), dtype)
    return _pullbacks(dy, x, None, plan, dtype)[1]


def conv2d_backward(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    stride: IntPair = 1,
    padding: PadSpec = 0,
    dilation: IntPair = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Both pullbacks, ``(dX, dW)``, from one shared im2col of ``dY``."""
    plan = _plan(x.shape, w.shape, stride, padding, dilation)
    dtype = np.result_type(dy, x, w)
    if plan.rows.out == 0 or plan.cols.out == 0:
        return np.zeros(x.shape, dtype), np.zeros(w.shape, dtype)
    return _pullbacks(dy, x, w, plan, dtype)  # type: ignore[return-value]


def conv2d_dw_tap_gemms(
    dy: np.ndarray,
    x: np.ndarray,
    stride: IntPair,
    padding: PadSpec,
    w_shape: Sequence[int],
    dilation: IntPair = 1,
) -> np.ndarray:
    """``dW`` without any im2col: one GEMM per tap on shifted windows of the X phases,
    ``dW[:, :, m, n] = dY_grid (O, U) @ X_phase[:, off : off + U].T``."""
    plan = _plan(x.shape, w_shape, stride, padding, dilation)
    dtype = np.result_type(dy, x)
    if plan.rows.out == 0 or plan.cols.out == 0:
        return np.zeros(tuple(w_shape), dtype)
    n_phases = plan.rows.stride * plan.cols.stride
    dyb, xq = _workspace(
        dtype, plan.c_out * (plan.margin + plan.flat), n_phases * plan.c_in * plan.flat
    )
    dyb, xq = _fill_flat_dy(dyb, dy, plan), _fill_phases_x(xq, x, plan)
    usable = plan.flat - plan.margin
    dy_grid = dyb[:, plan.margin : plan.margin + usable]  # (O, U)
    kh, kw = w_shape[2:]
    dwt = np.empty((kh, kw, plan.c_out, plan.c_in), dtype)
    for m, n in itertools.product(range(kh), range(kw)):
        off = plan.offset(m, n)
        window = xq[plan.rows.tap_phase[m], plan.cols.tap_phase[n], :, off : off + usable]
        np.matmul(dy_grid, window.T, out=dwt[m, n])  # (O, U) @ (U, C)
    return np.ascontiguousarray(dwt.transpose(2, 3, 0, 1))


# Other formulations, kept for the benchmark's comparison (same signature as
# conv2d_backward; non-negative padding only). They lose to the phase-flat one above.


def _padded_input(x: np.ndarray, padding: PadSpec) -> tuple[np.ndarray, tuple[int, int]]:
    (ph_lo, ph_hi), (pw_lo, pw_hi) = _pads(padding)
    if min(ph_lo, ph_hi, pw_lo, pw_hi) < 0:
        raise ValueError("this formulation takes non-negative padding only")
    return np.pad(x, ((0, 0), (0, 0), (ph_lo, ph_hi), (pw_lo, pw_hi))), (ph_lo, pw_lo)


def _tap_slices(plan: _Plan, dilation: IntPair, m: int, n: int) -> tuple[slice, slice]:
    """Rows and columns of the padded input that kernel tap ``(m, n)`` reads."""
    dh, dw = _pair(dilation, "dilation")
    r, c = plan.rows, plan.cols
    return _every(dh * m, r.out, r.stride), _every(dw * n, c.out, c.stride)


def shift_matmul_backward(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    stride: IntPair = 1,
    padding: PadSpec = 0,
    dilation: IntPair = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: one ``tensordot`` per kernel tap on strided views, scatter-add into dX."""
    plan = _plan(x.shape, w.shape, stride, padding, dilation)
    xp, (ph_lo, pw_lo) = _padded_input(x, padding)
    dxp, dw = np.zeros_like(xp), np.empty_like(w)
    for m, n in itertools.product(range(w.shape[2]), range(w.shape[3])):
        rows, cols = _tap_slices(plan, dilation, m, n)
        dw[:, :, m, n] = np.tensordot(dy, xp[:, :, rows, cols], axes=([0, 2, 3], [0, 2, 3]))
        dxp[:, :, rows, cols] += np.tensordot(w[:, :, m, n], dy, axes=([0], [1])).swapaxes(0, 1)
    height, width = x.shape[2:]
    return dxp[:, :, ph_lo : ph_lo + height, pw_lo : pw_lo + width], dw


def im2col_col2im_backward(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    stride: IntPair = 1,
    padding: PadSpec = 0,
    dilation: IntPair = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Textbook: dW = dY @ im2col(X)^T per image; dX = col2im(W^T @ dY) (K*K scatter-adds)."""
    plan = _plan(x.shape, w.shape, stride, padding, dilation)
    xp, (ph_lo, pw_lo) = _padded_input(x, padding)
    batch, c_in, c_out, (kh, kw) = plan.batch, plan.c_in, plan.c_out, w.shape[2:]
    out_hw = (plan.rows.out, plan.cols.out)
    cols = np.empty((batch, c_in, kh, kw) + out_hw, x.dtype)
    for m, n in itertools.product(range(kh), range(kw)):
        cols[:, :, m, n] = xp[(slice(None), slice(None)) + _tap_slices(plan, dilation, m, n)]
    cols = cols.reshape(batch, c_in * kh * kw, -1)
    dy_mat = dy.reshape(batch, c_out, -1)
    dw = np.matmul(dy_mat, cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    grads = np.matmul(w.reshape(c_out, -1).T, dy_mat).reshape((batch, c_in, kh, kw) + out_hw)
    dxp = np.zeros_like(xp)
    for m, n in itertools.product(range(kh), range(kw)):
        dxp[(slice(None), slice(None)) + _tap_slices(plan, dilation, m, n)] += grads[:, :, m, n]
    height, width = x.shape[2:]
    return dxp[:, :, ph_lo : ph_lo + height, pw_lo : pw_lo + width], dw


def phase_flat_separate(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    stride: IntPair = 1,
    padding: PadSpec = 0,
    dilation: IntPair = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The phase-flat pullbacks as two independent calls (no shared dY layout)."""
    return (
        conv2d_dx(dy, w, stride, padding, x.shape, dilation),
        conv2d_dw(dy, x, stride, padding, w.shape, dilation),
    )


def phase_flat_tap_gemms(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    stride: IntPair = 1,
    padding: PadSpec = 0,
    dilation: IntPair = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Phase-flat dX, and dW by one GEMM per tap on shifted X windows (no shared im2col)."""
    return (
        conv2d_dx(dy, w, stride, padding, x.shape, dilation),
        conv2d_dw_tap_gemms(dy, x, stride, padding, w.shape, dilation),
    )


CANDIDATES = {
    "phase-flat": conv2d_backward,
    "phase-flat (dx, dw apart)": phase_flat_separate,
    "phase-flat, dW tap GEMMs": phase_flat_tap_gemms,
    "im2col+col2im": im2col_col2im_backward,
    "shift+tensordot": shift_matmul_backward,
}
"""Name -> ``f(dy, x, w, stride, padding, dilation) -> (dx, dw)``; the first is the best."""


# Reference and self-check.


def conv2d_reference(
    x: np.ndarray, w: np.ndarray, stride: IntPair, padding: PadSpec, dilation: IntPair = 1
) -> np.ndarray:
    """Forward conv2d, straight from the definition (slow; for tests)."""
    plan = _plan(x.shape, w.shape, stride, padding, dilation)
    (sh, sw), (dh, dw) = _pair(stride, "stride"), _pair(dilation, "dilation")
    (ph_lo, _), (pw_lo, _) = _pads(padding)
    y = np.zeros(output_shape_of(plan), np.result_type(x, w))
    height, width = x.shape[2:]
    for i, j, m, n in itertools.product(
        range(plan.rows.out), range(plan.cols.out), range(w.shape[2]), range(w.shape[3])
    ):
        h, v = sh * i + dh * m - ph_lo, sw * j + dw * n - pw_lo
        if 0 <= h < height and 0 <= v < width:
            y[:, :, i, j] += x[:, :, h, v] @ w[:, :, m, n].T
    return y


def _reference_backward(
    dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride: IntPair, padding: PadSpec,
    dilation: IntPair,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Both pullbacks straight from the index formulas (slow; for tests)."""
    (sh, sw), (dh, dw_) = _pair(stride, "stride"), _pair(dilation, "dilation")
    (ph_lo, _), (pw_lo, _) = _pads(padding)
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    height, width = x.shape[2:]
    for i, j, m, n in itertools.product(
        range(dy.shape[2]), range(dy.shape[3]), range(w.shape[2]), range(w.shape[3])
    ):
        h, v = sh * i + dh * m - ph_lo, sw * j + dw_ * n - pw_lo
        if 0 <= h < height and 0 <= v < width:
            dx[:, :, h, v] += dy[:, :, i, j] @ w[:, :, m, n]
            dw[:, :, m, n] += dy[:, :, i, j].T @ x[:, :, h, v]
    return dx, dw


def _torch_backward(
    dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride: IntPair, padding: PadSpec,
    dilation: IntPair,
) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    try:
        import torch
        from torch.nn import functional
    except ImportError:
        return None
    (ph_lo, ph_hi), (pw_lo, pw_hi) = _pads(padding)
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    xpad = functional.pad(xt, (pw_lo, pw_hi, ph_lo, ph_hi))  # negative entries crop
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    y = functional.conv2d(xpad, wt, stride=stride, dilation=dilation)
    dx, dw = torch.autograd.grad(y, (xt, wt), torch.from_numpy(dy))
    return dx.numpy(), dw.numpy()


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = float(np.abs(want).max()) if want.size else 0.0
    return float(np.abs(got - want).max()) / scale if scale else float(np.abs(got).max(initial=0))


def _fixed_cases() -> list[tuple]:
    return [
        # (B, C, O, H, W, KH, KW, stride, padding, dilation)
        (2, 3, 4, 7, 7, 3, 3, 1, 1, 1),
        (2, 3, 4, 8, 8, 3, 3, 2, 1, 1),
        (1, 2, 3, 9, 7, 3, 3, 2, 1, 1),
        (3, 5, 4, 11, 9, 3, 3, 1, 1, 1),
        (3, 5, 4, 11, 9, 3, 3, 2, 1, 1),
        (2, 3, 2, 10, 11, 3, 2, (2, 3), ((1, 2), (0, 1)), 1),
        (2, 4, 3, 9, 10, 5, 5, 3, 2, 1),
        (1, 2, 2, 5, 5, 1, 1, 1, 0, 1),
        (1, 2, 2, 6, 6, 1, 1, 2, 0, 1),
        (2, 3, 2, 12, 10, 3, 3, 1, 2, 2),
        (2, 3, 2, 12, 13, 3, 3, 2, 2, 2),
        (2, 3, 2, 13, 12, 3, 2, (2, 3), (3, 1), (3, 2)),
        (1, 2, 3, 4, 4, 3, 3, 1, 0, 1),
        (1, 2, 3, 3, 3, 3, 3, 1, 0, 1),
        (1, 2, 3, 5, 6, 3, 3, 4, 1, 1),
        (2, 2, 2, 8, 8, 3, 3, 1, ((-1, 2), (1, -2)), 1),
        (2, 2, 3, 9, 8, 2, 4, (2, 1), ((0, 3), (2, 0)), (1, 2)),
        (1, 1, 1, 2, 2, 3, 3, 1, 0, 1),  # kernel larger than input: empty output
        (8, 32, 32, 32, 32, 3, 3, 1, 1, 1),  # the benchmark's shapes
        (8, 32, 32, 32, 32, 3, 3, 2, 1, 1),
    ]


def _random_cases(rng: np.random.Generator, count: int) -> list[tuple]:
    cases = []
    for _ in range(count):
        b, c, o = (int(v) for v in rng.integers(1, 4, size=3))
        h, w = (int(v) for v in rng.integers(1, 13, size=2))
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        stride = tuple(int(v) for v in rng.integers(1, 5, size=2))
        dilation = tuple(int(v) for v in rng.integers(1, 4, size=2))
        pads = tuple(tuple(int(v) for v in rng.integers(-1, 4, size=2)) for _ in range(2))
        cases.append((b, c, o, h, w, kh, kw, stride, pads, dilation))
    return cases


def self_check(seed: int = 0, random_cases: int = 60, verbose: bool = True) -> int:
    """Compare every entry point (and the CANDIDATES) with the naive reference, and with
    torch autograd where installed, in float64 (rel. err <= 1e-10) and float32 (<= 1e-4),
    on fixed shapes and ``random_cases`` random ones; return the number of failures."""
    rng = np.random.default_rng(seed)
    cases = _fixed_cases() + _random_cases(rng, random_cases)
    failures = checked = 0
    torch_used = False
    for B, C, O, H, W, KH, KW, stride, padding, dilation in cases:
        x_shape, w_shape = (B, C, H, W), (O, C, KH, KW)
        y_shape = output_shape(x_shape, w_shape, stride, padding, dilation)
        for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
            checked += 1
            x = rng.standard_normal(x_shape).astype(dtype)
            w = rng.standard_normal(w_shape).astype(dtype)
            dy = rng.standard_normal(y_shape).astype(dtype)
            got_dx, got_dw = conv2d_backward(dy, x, w, stride, padding, dilation)
            got = {
                "backward.dx": got_dx,
                "backward.dw": got_dw,
                "conv2d_dx": conv2d_dx(dy, w, stride, padding, x_shape, dilation),
                "conv2d_dw": conv2d_dw(dy, x, stride, padding, w_shape, dilation),
            }
            if min(_pads(padding)[0] + _pads(padding)[1]) >= 0 and dy.size:
                for name, fn in CANDIDATES.items():
                    got[f"{name}.dx"], got[f"{name}.dw"] = fn(dy, x, w, stride, padding, dilation)
            x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
            refs = {"naive": _reference_backward(dy64, x64, w64, stride, padding, dilation)}
            (ph_lo, ph_hi), (pw_lo, pw_hi) = _pads(padding)
            kept = min(H + min(0, ph_lo) + min(0, ph_hi), W + min(0, pw_lo) + min(0, pw_hi))
            if dy.size and kept > 0:  # torch rejects empty outputs and over-cropping
                torch_ref = _torch_backward(dy64, x64, w64, stride, padding, dilation)
                if torch_ref is not None:
                    refs["torch"] = torch_ref
                    torch_used = True
            bad = 0
            for ref_name, (ref_dx, ref_dw) in refs.items():
                for name, value in got.items():
                    want = ref_dx if name.endswith("dx") else ref_dw
                    err = _relative_error(value.astype(np.float64), want)
                    ok = value.shape == want.shape and value.dtype == dtype and err <= tol
                    if not ok:
                        bad += 1
                        print(
                            f"FAIL {name} vs {ref_name} x={x_shape} w={w_shape} s={stride} "
                            f"p={padding} d={dilation} {np.dtype(dtype).name}: rel err {err:.2e}"
                        )
            failures += bool(bad)
        if verbose:
            print(f"checked x={x_shape} w={w_shape} stride={stride} pad={padding} dil={dilation}")
    refs_used = "naive reference and torch" if torch_used else "naive reference (no torch)"
    print(f"self-check vs {refs_used}: {checked - failures} passed, {failures} failed")
    return failures


if __name__ == "__main__":
    sys.exit(1 if self_check(verbose="-v" in sys.argv) else 0)
