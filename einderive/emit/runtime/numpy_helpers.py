"""Helpers of emitted NumPy modules: reads through index arrays, first-extremum searches."""

import numpy as np


def _positions(shape, indices):
    """Where index arrays fall inside ``shape`` at an integer, and the indices clipped into it."""
    indices = np.broadcast_arrays(*indices)
    inside = np.ones(indices[0].shape, dtype=bool)
    clipped = []
    for index, size in zip(indices, shape, strict=True):
        whole = np.floor(index)
        inside &= (index == whole) & (whole >= 0) & (whole < size)
        clipped.append(np.clip(whole, 0, max(size - 1, 0)).astype(np.int64))
    return inside, tuple(clipped)


def _read(array, *indices):
    """``array[indices]`` for arrays of indices: zero outside ``array`` and at a fraction."""
    inside, positions = _positions(array.shape, indices)
    if array.size == 0:
        return np.zeros(inside.shape)
    return np.where(inside, array[positions], 0.0)


def _argmax(values, *grids):
    """The row-major position of the first largest value over the leading axes, one per grid."""
    shape = np.broadcast_shapes(np.shape(values), *(np.shape(grid) for grid in grids))
    flat = np.broadcast_to(values, shape).reshape((-1, *shape[len(grids) :]))
    return np.argmax(flat, axis=0)


def _argmin(values, *grids):
    """The row-major position of the first smallest value over the leading axes, one per grid."""
    shape = np.broadcast_shapes(np.shape(values), *(np.shape(grid) for grid in grids))
    flat = np.broadcast_to(values, shape).reshape((-1, *shape[len(grids) :]))
    return np.argmin(flat, axis=0)
