"""Helpers of emitted PyTorch modules: reads through index arrays, first-extremum searches."""

import numpy as np
import torch

from .numpy_helpers import _index_of, _positions


def _read(array, *indices):
    """``array[indices]`` for arrays of indices: zero outside ``array`` and at a fraction."""
    inside, positions = _positions(tuple(array.shape), indices)
    values = array[tuple(torch.as_tensor(p, device=array.device) for p in positions)]
    return torch.where(torch.as_tensor(inside, device=array.device), values, 0.0)


def _index(array, *positions):
    """An index array (a tensor or NumPy) read at NumPy positions, as NumPy float64: NaN
    outside the index array, so that a read through it is zero there."""
    if torch.is_tensor(array):
        array = array.detach().cpu().numpy()
    return _index_of(np.asarray(array), positions)


def _scatter_add(shape, values, *positions):
    """Zeros of ``shape`` with ``values`` added at ``positions`` (``index_add_`` over the
    flattened tensor): a position outside ``shape`` adds nothing, a repeated one adds up."""
    values = torch.as_tensor(values, dtype=torch.float64)
    inside, clipped = _positions(shape, positions)
    flat = np.ravel_multi_index(tuple(c[inside] for c in clipped), shape)
    device = values.device
    kept = values.broadcast_to(inside.shape)[torch.as_tensor(inside, device=device)]
    out = torch.zeros(int(np.prod(shape)), dtype=values.dtype, device=device)
    out = out.index_add(0, torch.as_tensor(flat, device=device), kept)
    return out.reshape(tuple(int(n) for n in shape))


def _where(condition, value, fill):
    """``torch.where`` of a NumPy condition, moved to the device of ``value``."""
    device = value.device if torch.is_tensor(value) else None
    return torch.where(torch.as_tensor(condition, device=device), value, fill)


def _is_at(position, rank, *conditions):
    """``position == rank`` where every condition holds; the NumPy operands on the device of
    ``position``."""
    found = position == torch.as_tensor(rank, device=position.device)
    for condition in conditions:
        found = found & torch.as_tensor(condition, device=position.device)
    return found


def _argmax(values, *grids):
    """The row-major position of the first largest value over the leading axes, one per grid."""
    shape = np.broadcast_shapes(tuple(values.shape), *(np.shape(grid) for grid in grids))
    flat = values.broadcast_to(shape).reshape((-1, *shape[len(grids) :]))
    return torch.argmax(flat, dim=0)


def _argmin(values, *grids):
    """The row-major position of the first smallest value over the leading axes, one per grid."""
    shape = np.broadcast_shapes(tuple(values.shape), *(np.shape(grid) for grid in grids))
    flat = values.broadcast_to(shape).reshape((-1, *shape[len(grids) :]))
    return torch.argmin(flat, dim=0)
