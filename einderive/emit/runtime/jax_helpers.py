"""Helpers of emitted JAX modules: reads through index arrays, first-extremum searches."""

import jax.numpy as jnp
import numpy as np

from .numpy_helpers import _positions


def _where_inside(shape, indices):
    """``_positions``: NumPy for index grids, ``jnp`` where an index comes through an index
    array given as a JAX array (traced under ``jit`` and ``custom_vjp``)."""
    if all(isinstance(index, np.ndarray | int) for index in indices):
        return _positions(shape, indices)
    indices = jnp.broadcast_arrays(*indices)
    inside = jnp.ones(indices[0].shape, dtype=bool)
    clipped = []
    for index, size in zip(indices, shape, strict=True):
        whole = jnp.floor(index)  # NaN (through an index array, outside it) is outside
        here = (index == whole) & (whole >= 0) & (whole < size)
        inside &= here
        clipped.append(jnp.where(here, whole, 0).astype(jnp.int64))
    return inside, tuple(clipped)


def _read(array, *indices):
    """``array[indices]`` for arrays of indices: zero outside ``array`` and at a fraction."""
    inside, positions = _where_inside(array.shape, indices)
    return jnp.where(inside, jnp.asarray(array)[positions], 0.0)


def _index(array, *positions):
    """An index array read at arrays of positions, as float64: NaN outside the index
    array, so that a read through it is zero there."""
    inside, clipped = _where_inside(jnp.shape(array), positions)
    return jnp.where(inside, jnp.asarray(array)[clipped], jnp.nan)


def _scatter_add(shape, values, *positions):
    """Zeros of ``shape`` with ``values`` added at ``positions`` (``.at[].add``): a
    position outside ``shape`` adds nothing, a repeated one adds up."""
    inside, clipped = _where_inside(shape, positions)
    # broadcast with the values: a summed index that no position depends on adds its
    # terms in one place
    inside, values, *positions = jnp.broadcast_arrays(inside, values, *clipped)
    clipped = tuple(positions)
    kept = jnp.where(inside, values, 0.0)
    return jnp.zeros(shape).at[clipped].add(kept)


def _argmax(values, *grids):
    """The row-major position of the first largest value over the leading axes, one per grid."""
    shape = np.broadcast_shapes(np.shape(values), *(np.shape(grid) for grid in grids))
    flat = jnp.broadcast_to(values, shape).reshape((-1, *shape[len(grids) :]))
    return jnp.argmax(flat, axis=0)


def _argmin(values, *grids):
    """The row-major position of the first smallest value over the leading axes, one per grid."""
    shape = np.broadcast_shapes(np.shape(values), *(np.shape(grid) for grid in grids))
    flat = jnp.broadcast_to(values, shape).reshape((-1, *shape[len(grids) :]))
    return jnp.argmin(flat, axis=0)
