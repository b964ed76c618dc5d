"""The NumPy 2-D convolution backward kernel (``emit/runtime/numpy_conv.py``) against a direct sum.

The emitter tests run it inside emitted modules; these drive its entry points over the
geometries that change its schedule: phases sharing im2col rows of dY (stride 2), phases
that fall back to rows of their own (a 5x5 kernel at stride 2), phases no tap reads
(stride larger than the dilated kernel), phases whose taps read only padding, several
chunks along the flat axis, and cropping.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from einderive.emit.runtime import numpy_conv


def _reference(dy, x, w, stride, padding, dilation):  # type: ignore[no-untyped-def]
    """``(dX, dW)`` of ``Y[b,o,i,j] = sum W[o,c,m,n] X[b,c,s*i+d*m-p, s*j+d*n-q]`` by a loop
    over kernel taps and output positions, in float64."""
    (sh, sw), (dh, dw) = stride, dilation
    (ph, _), (pw, _) = padding
    dx, dwt = np.zeros(x.shape), np.zeros(w.shape)
    _, _, ho, wo = dy.shape
    for m, n, i, j in itertools.product(range(w.shape[2]), range(w.shape[3]), range(ho), range(wo)):
        h, v = sh * i + dh * m - ph, sw * j + dw * n - pw
        if 0 <= h < x.shape[2] and 0 <= v < x.shape[3]:
            dx[:, :, h, v] += dy[:, :, i, j] @ w[:, :, m, n]
            dwt[:, :, m, n] += dy[:, :, i, j].T @ x[:, :, h, v]
    return dx, dwt


CASES = {
    # name: (x shape, w shape, stride, ((pad lo, hi) rows, (pad lo, hi) cols), dilation)
    "stride 1": ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    "stride 2, shared rows": ((2, 3, 9, 8), (4, 3, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    "5x5 at stride 2, rows per phase": (
        (2, 3, 11, 10),
        (2, 3, 5, 5),
        (2, 2),
        ((2, 2), (2, 2)),
        (1, 1),
    ),
    "stride 3, kernel 2: idle phases": (
        (1, 2, 9, 10),
        (3, 2, 2, 2),
        (3, 3),
        ((0, 0), (1, 0)),
        (1, 1),
    ),
    "dilation 3, stride 2": ((2, 2, 13, 12), (2, 2, 3, 3), (2, 2), ((2, 1), (0, 3)), (3, 3)),
    "mixed strides, cropped": ((2, 2, 10, 9), (3, 2, 2, 4), (2, 1), ((-1, 3), (2, -2)), (1, 2)),
    "1x1 input: phases with taps but no input": (
        (2, 3, 1, 1),
        (2, 3, 3, 3),
        (2, 2),
        ((1, 1), (1, 1)),
        (1, 1),
    ),
    "many chunks": ((4, 8, 40, 40), (16, 8, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(CASES))
def test_pullbacks_match_the_direct_sum(name: str, dtype: type) -> None:
    x_shape, w_shape, stride, padding, dilation = CASES[name]
    rng = np.random.default_rng(len(name))
    y_shape = numpy_conv._output_shape(x_shape, w_shape, stride, padding, dilation)
    for axis in (0, 1):  # (size + padding - dilated kernel) // stride + 1
        extent = x_shape[2 + axis] + sum(padding[axis]) - dilation[axis] * (w_shape[2 + axis] - 1)
        assert y_shape[2 + axis] == (extent - 1) // stride[axis] + 1
    x, w, dy = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, y_shape))
    want_dx, want_dw = _reference(
        *(a.astype(np.float64) for a in (dy, x, w)), stride, padding, dilation
    )
    tol = 1e-12 if dtype == np.float64 else 1e-5
    got = {
        "vjp": numpy_conv._conv2d_vjp(dy, x, w, stride, padding, dilation),
        "apart": (
            numpy_conv._conv2d_dx(dy, w, stride, padding, x_shape, dilation),
            numpy_conv._conv2d_dw(dy, x, stride, padding, w_shape, dilation),
        ),
    }
    for how, (dx, dw) in got.items():
        assert dx.dtype == dw.dtype == dtype, how
        assert dx.flags.c_contiguous and dw.flags.c_contiguous, how
        for value, want in ((dx, want_dx), (dw, want_dw)):
            assert value.shape == want.shape, how
            assert np.max(np.abs(value - want)) <= tol * np.max(np.abs(want)), how


def test_many_chunks_case_really_chunks() -> None:
    x_shape, w_shape, stride, padding, dilation = CASES["many chunks"]
    plan = numpy_conv._plan(x_shape, w_shape, stride, padding, dilation)
    rows = len(numpy_conv._schedule(plan).starts) * plan.c_out
    assert plan.flat * rows * 8 > 2 * numpy_conv._CHUNK_BYTES  # float64: three chunks or more


@pytest.mark.parametrize(
    ("kernel", "stride", "groups"),
    [
        (3, 1, 9),  # one phase: its nine taps
        (3, 2, 4),  # four phases share the four distinct shifts
        (5, 2, 25),  # nine distinct shifts, no shared order searched: a run per phase
        (3, 3, 1),  # every tap alone in its phase, all at shift 0
    ],
)
def test_schedule_shares_rows_where_it_can(kernel: int, stride: int, groups: int) -> None:
    plan = numpy_conv._plan((2, 3, 20, 20), (4, 3, kernel, kernel), stride, 1, 1)
    schedule = numpy_conv._schedule(plan)
    assert len(schedule.starts) == groups
    assert sorted(schedule.slot_taps) == list(range(kernel * kernel))
    for run in schedule.runs:  # each run's rows are the offsets of its phase's taps
        offsets = {plan.margin - s for s in schedule.starts[run.first : run.first + run.taps]}
        taps = plan.taps_of_phase(run.a, run.b)
        assert offsets == {plan.offset(m, n) for m, n in taps}
