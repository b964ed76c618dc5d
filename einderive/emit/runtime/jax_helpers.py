"""Helpers of emitted JAX modules: reads through index arrays, first-extremum searches."""

import jax.numpy as jnp
import numpy as np

from .numpy_helpers import _positions


def _read(array, *indices):
    """``array[indices]`` for arrays of indices: zero outside ``array`` and at a fraction."""
    inside, positions = _positions(array.shape, indices)
    return jnp.where(inside, jnp.asarray(array)[positions], 0.0)


def _scatter_add(shape, values, *positions):
    """Zeros of ``shape`` with ``values`` added at ``positions`` (``.at[].add``): a
    position outside ``shape`` adds nothing, a repeated one adds up."""
    inside, clipped = _positions(shape, positions)
    kept = jnp.where(inside, jnp.broadcast_to(values, inside.shape), 0.0)
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
