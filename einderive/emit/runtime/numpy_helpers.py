"""Helpers of emitted NumPy modules: reads through index arrays, first-extremum searches."""

import numpy as np


def _positions(shape, indices):
    """Where index arrays fall inside ``shape`` at an integer, and the indices clipped into it."""
    indices = np.broadcast_arrays(*indices)
    inside = np.ones(indices[0].shape, dtype=bool)
    clipped = []
    for index, size in zip(indices, shape, strict=True):
        if np.issubdtype(np.asarray(index).dtype, np.integer):  # a grid, an index array
            inside &= (index >= 0) & (index < size)
            clipped.append(np.clip(index, 0, max(size - 1, 0)))
            continue
        whole = np.floor(index)  # NaN (read through an index array, outside it) is outside
        here = (index == whole) & (whole >= 0) & (whole < size)
        inside &= here
        clipped.append(np.where(here, whole, 0).astype(np.int64))
    return inside, tuple(clipped)


def _index(array, *positions):
    """An index array read at arrays of positions, as float64: NaN outside the index
    array, so that a read through it is zero there."""
    return _index_of(np.asarray(array), positions)


def _index_of(array, positions):
    inside, clipped = _positions(array.shape, positions)
    if array.size == 0:
        return np.full(inside.shape, np.nan)
    found = array[clipped]
    return found if inside.all() else np.where(inside, found, np.nan)


def _scatter_add(shape, values, *positions):
    """Zeros of ``shape`` with ``values`` added at ``positions`` (arrays broadcast
    together): a position outside ``shape`` adds nothing, a repeated one adds up."""
    inside, clipped = _positions(shape, positions)
    out = np.zeros(shape)
    # broadcast with the values: a summed index that no position depends on (``o`` in
    # ``dX[p, q, idx[i] + m - 1] += dY[p, o, i] * W[o, q, m]``) adds its terms in one place
    inside, values, *clipped = np.broadcast_arrays(inside, values, *clipped)
    clipped = tuple(clipped)
    if inside.all():
        np.add.at(out, clipped, values)
    else:
        np.add.at(out, tuple(c[inside] for c in clipped), values[inside])
    return out


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
