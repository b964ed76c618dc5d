"""The generic convolution call in NumPy: strided windows and one tensordot (no Python loop
over elements)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..conv.calls import GenericConv
from ..conv.recognise import ConvPullback, Layout


def arrange(array: Any, layout: Layout, permute: Any) -> Any:
    """A tensor as a call operand: its axes moved into place, unit axes inserted.

    ``permute(array, axes)`` is the framework's transpose; unit axes are inserted
    by indexing with None, which NumPy, JAX and PyTorch all understand.
    """
    present = [a for a in layout.axes if a is not None]
    if present != sorted(present):
        array = permute(array, present)
    index = tuple(None if a is None else slice(None) for a in layout.axes)
    return array[index] if None in index else array


def finish(result: Any, conv: ConvPullback, permute: Any) -> Any:
    """The call's output in the pullback's axes: inserted unit axes dropped, transposed."""
    index = tuple(0 if a is None else slice(None) for a in conv.out_axes)
    if 0 in index:
        result = result[index]
    if conv.transpose is not None:
        result = permute(result, list(conv.transpose))
    return result


def _fill_pad(x: np.ndarray, call: GenericConv) -> np.ndarray:
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


def generic_conv(call: GenericConv, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The generic call (CONTRACT section 3) on operands ``(B, C, N...)``, ``(O, C/g, K...)``."""
    if call.permute_input:
        x = x.swapaxes(0, 1)
    if call.permute_kernel:
        w = w.swapaxes(0, 1)
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
    groups = int(call.groups)
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


def run_conv(conv: ConvPullback, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A recognised pullback computed in NumPy from the raw tensors."""

    def permute(array: np.ndarray, axes: list[int]) -> np.ndarray:
        return np.transpose(array, axes)

    operand_x = arrange(x, conv.x_layout, permute)
    operand_w = arrange(w, conv.w_layout, permute)
    return finish(generic_conv(conv.call, operand_x, operand_w), conv, permute)
