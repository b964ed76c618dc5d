"""Formulations of the pullbacks of a 2-D convolution (cross-correlation) in NumPy, NCHW,
for the benchmark to compare.

The forward, in einderive's index notation::

    Y[b,o,i,j] = W[o,c,m,n] * X[b,c, sh*i + dh*m - ph_lo, sw*j + dw*n - pw_lo]

The best formulation ("phase-flat": a polyphase split of the padded X, each tap a flat
shifted window, both pullbacks as a few large ``np.matmul`` calls on views fed by one
im2col block of dY) is the package's own kernel, ``einderive/emit/runtime/numpy_conv.py``
(its module comment and ``_pullbacks`` explain it); the emitted NumPy module carries
its source. This file imports it and adds the formulations it was chosen over.

Run ``python benchmarks/_numpy_conv_kernels.py`` for a correctness sweep against a naive
reference (and against torch autograd when torch is installed).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence

import numpy as np

from einderive.emit.runtime.numpy_conv import (  # the phase-flat kernel and its geometry
    _conv2d_dw as conv2d_dw,
)
from einderive.emit.runtime.numpy_conv import (
    _conv2d_dx as conv2d_dx,
)
from einderive.emit.runtime.numpy_conv import (
    _conv2d_vjp as conv2d_backward,
)
from einderive.emit.runtime.numpy_conv import (
    _every,
    _fill_flat_dy,
    _fill_phases_x,
    _pads,
    _pair,
    _Plan,
    _plan,
    _workspace,
)
from einderive.emit.runtime.numpy_conv import (
    _IntPair as IntPair,
)
from einderive.emit.runtime.numpy_conv import (
    _output_shape as output_shape,
)
from einderive.emit.runtime.numpy_conv import (
    _output_shape_of as output_shape_of,
)
from einderive.emit.runtime.numpy_conv import (
    _PadSpec as PadSpec,
)


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
