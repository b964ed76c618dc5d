"""Helpers of emitted PyTorch modules: reads and writes at positions, first-extremum searches.

Everything is torch on the device of the data: the positions are tensors there (index
grids made by ``torch.arange`` on that device, values read out of index arrays), so no
value goes through NumPy or the host, and a value keeps the data's dtype.
"""

import torch


def _inside(shape, indices, device):
    """Where positions fall inside ``shape`` at an integer, and the positions clipped into
    it (int64). A floating-point position (a fraction, or NaN: a read through an index
    array outside it) is inside only where it is a whole number."""
    indices = torch.broadcast_tensors(*(torch.as_tensor(i, device=device) for i in indices))
    inside = torch.ones(indices[0].shape, dtype=torch.bool, device=device)
    clipped = []
    for index, size in zip(indices, shape, strict=True):
        if index.is_floating_point():
            whole = torch.floor(index)
            here = (index == whole) & (whole >= 0) & (whole < size)
            clipped.append(torch.where(here, whole, 0).long())
        else:  # a grid, an index array
            here = (index >= 0) & (index < size)
            clipped.append(index.clamp(0, max(size - 1, 0)).long())
        inside = inside & here
    return inside, tuple(clipped)


def _read(array, *indices):
    """``array[indices]`` for tensors of indices: zero outside ``array`` and at a fraction."""
    inside, positions = _inside(tuple(array.shape), indices, array.device)
    if array.numel() == 0:
        return array.new_zeros(inside.shape)
    return torch.where(inside, array[positions], 0.0)


def _index(array, *positions):
    """An index array read at tensors of positions, on their device: float64 (float32 on
    Apple's MPS, which has no float64), NaN where a position is outside the index array,
    so that a read through it is zero there. A NumPy index array moves to that device."""
    device = next((p.device for p in positions if torch.is_tensor(p)), None)
    array = torch.as_tensor(array, device=device)
    inside, clipped = _inside(tuple(array.shape), positions, array.device)
    dtype = torch.float32 if array.device.type == "mps" else torch.float64
    if array.numel() == 0:
        return torch.full(inside.shape, torch.nan, dtype=dtype, device=array.device)
    return torch.where(inside, array[clipped].to(dtype), torch.nan)


def _scatter_add(shape, values, *positions):
    """Zeros of ``shape`` with ``values`` added at ``positions`` (``index_add`` over the
    flattened tensor, in the values' dtype): a position outside ``shape`` adds nothing, a
    repeated one adds up."""
    shape = tuple(int(n) for n in shape)
    inside, clipped = _inside(shape, positions, values.device)
    if 0 in shape:
        return values.new_zeros(shape)
    # broadcast with the values: a summed index that no position depends on (``o`` in
    # ``dX[p, q, idx[i] + m - 1] += dY[p, o, i] * W[o, q, m]``) adds its terms in one place
    inside, values, *clipped = torch.broadcast_tensors(inside, values, *clipped)
    kept = torch.where(inside, values, 0.0)
    flat = clipped[0]
    for position, size in zip(clipped[1:], shape[1:], strict=True):
        flat = flat * size + position
    total = 1
    for size in shape:
        total *= size
    out = values.new_zeros(total)
    return out.index_add(0, flat.reshape(-1), kept.reshape(-1)).reshape(shape)


def _where(condition, value, fill):
    """``torch.where``, a condition on the sizes alone (a Python bool) included."""
    device = value.device if torch.is_tensor(value) else None
    return torch.where(torch.as_tensor(condition, device=device), value, fill)


def _is_at(position, rank, *conditions):
    """``position == rank`` where every condition holds."""
    found = position == torch.as_tensor(rank, device=position.device)
    for condition in conditions:
        found = found & torch.as_tensor(condition, device=position.device)
    return found


def _argmax(values, *grids):
    """The row-major position of the first largest value over the leading axes, one per grid."""
    shape = torch.broadcast_shapes(tuple(values.shape), *(tuple(g.shape) for g in grids))
    flat = values.broadcast_to(shape).reshape((-1, *shape[len(grids) :]))
    return torch.argmax(flat, dim=0)


def _argmin(values, *grids):
    """The row-major position of the first smallest value over the leading axes, one per grid."""
    shape = torch.broadcast_shapes(tuple(values.shape), *(tuple(g.shape) for g in grids))
    flat = values.broadcast_to(shape).reshape((-1, *shape[len(grids) :]))
    return torch.argmin(flat, dim=0)
