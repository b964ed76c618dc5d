"""Statements that are one indexing call of the frameworks, as conv/recognise does for
convolutions: a lookup, a gather along an axis, and their pullbacks, the scatter-adds.

    Y[b, d] = E[tok[b], d]            jnp.take(E, tok, axis=0)   F.embedding(tok, E)
    Y[i, j] = X[i, idx[i, j]]         jnp.take_along_axis(X, idx, axis=1)   torch.gather(X, 1, idx)
    dE[tok[b], q] += dY[b, q]         zeros.at[tok].add(dY)      zeros.index_add_(0, tok, dY)
    dX[p, idx[p, j]] += dY[p, j]      zeros.at[rows, idx].add(dY)   zeros.scatter_add_(1, idx, dY)

The calls agree with einderive where the index values lie inside the axes they read.
Outside, einderive reads zero; PyTorch's calls raise; JAX's (``mode="fill"``,
``mode="drop"``) read zero and drop writes past the end, but take a negative value
from the end, as NumPy does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sympy
from sympy.printing.pycode import PythonCodePrinter

from .. import ir

Kind = Literal["take", "take_along_axis", "scatter_add", "scatter_add_along_axis"]
_SIZES = PythonCodePrinter()


@dataclass(frozen=True)
class IndexCall:
    """``target`` computed by one indexing call: ``source`` read (or added) through the
    index array ``index`` along ``axis``; ``like`` names a tensor of the target's shape
    (a pullback's tensor), else ``shape`` gives it."""

    kind: Kind
    target: str
    source: str
    index: str
    axis: int
    rank: int  # the source's rank (take) or the target's (the scatters)
    index_rank: int
    shape: tuple[sympy.Expr, ...]
    like: str | None

    def _zeros(self, framework: Literal["jax", "torch"]) -> str:
        if self.like is not None:
            module = "jnp" if framework == "jax" else "torch"
            return f"{module}.zeros_like({self.like})"
        sizes = ", ".join(_SIZES.doprint(n) for n in self.shape)
        sizes += "," if len(self.shape) == 1 else ""
        if framework == "jax":
            return f"jnp.zeros(({sizes}), {self.source}.dtype)"
        return f"torch.zeros(({sizes}), dtype={self.source}.dtype)"

    def _grids(self) -> list[str]:
        """``jnp.arange(idx.shape[m])`` shaped to broadcast along axis m of the index."""
        grids = []
        for m in range(self.index_rank):
            shape = ["1"] * self.index_rank
            shape[m] = "-1"
            grids.append(f"jnp.arange({self.index}.shape[{m}]).reshape({', '.join(shape)})")
        return grids

    def torch(self) -> str:
        """One PyTorch statement computing the target."""
        s, idx, k = self.source, self.index, self.axis
        if self.kind == "take":
            if k == 0 and self.rank == 2:
                call = f"torch.nn.functional.embedding({idx}, {s})"
            else:
                call = f"{s}[{', '.join([':'] * k + [idx])}]"
        elif self.kind == "take_along_axis":
            call = f"torch.gather({s}, {k}, {idx})"
        elif self.kind == "scatter_add":
            call = f"{self._zeros('torch')}.index_add_({k}, {idx}, {s})"
        else:
            call = f"{self._zeros('torch')}.scatter_add_({k}, {idx}, {s})"
        return f"{self.target} = {call}"

    def jax(self) -> str:
        """One JAX statement computing the target (zero reads and dropped writes outside)."""
        s, idx, k = self.source, self.index, self.axis
        if self.kind == "take":
            call = f'jnp.take({s}, {idx}, axis={k}, mode="fill", fill_value=0)'
        elif self.kind == "take_along_axis":
            call = f'jnp.take_along_axis({s}, {idx}, axis={k}, mode="fill", fill_value=0)'
        elif self.kind == "scatter_add":
            where = ", ".join([":"] * k + [idx])
            call = f'{self._zeros("jax")}.at[{where}].add({s}, mode="drop")'
        else:
            grids = self._grids()
            grids[k] = idx
            call = f'{self._zeros("jax")}.at[{", ".join(grids)}].add({s}, mode="drop")'
        return f"{self.target} = {call}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "axis": self.axis, "torch": self.torch(), "jax": self.jax()}


def _symbols(exprs: Sequence[sympy.Expr]) -> bool:
    """Distinct plain index variables."""
    return all(isinstance(e, sympy.Symbol) for e in exprs) and len(set(exprs)) == len(exprs)


def _through(access: ir.Access) -> tuple[int, ir.IndexRead] | None:
    """The one position of ``access`` that is an index array read at plain variables,
    the others plain variables; None otherwise."""
    found = [(k, e) for k, e in enumerate(access.indices) if ir.index_reads(e)]
    if len(found) != 1 or not isinstance(found[0][1], ir.IndexRead):
        return None
    axis, read = found[0]
    others = [e for k, e in enumerate(access.indices) if k != axis]
    if not _symbols(others) or not _symbols(read.args):
        return None
    return axis, read


def _boxes_only(where: Sequence[ir.Constraint], extents: Mapping[sympy.Symbol, sympy.Expr]) -> bool:
    """Whether a domain is exactly the boxes ``0 <= v <= extent - 1`` of its variables."""
    boxes = {c for v, n in extents.items() for c in ir.box(v, n)}
    return {ir.normalise(c) for c in where} == {ir.normalise(c) for c in boxes}


def recognise_indexing(
    statement: ir.Statement,
    shapes: Mapping[str, Sequence[sympy.Expr]],
    like: str | None = None,
) -> IndexCall | None:
    """``statement`` as one indexing call, if it is one (``like``: a tensor of its shape)."""
    shape = tuple(shapes[statement.target])
    rhs = statement.rhs
    if isinstance(rhs, ir.Access):
        through = _through(rhs)
        if through is None:
            return None
        axis, read = through
        index_shape = tuple(shapes[read.array])
        before, after = rhs.indices[:axis], rhs.indices[axis + 1 :]
        common = dict(
            target=statement.target,
            source=rhs.tensor,
            index=read.array,
            axis=axis,
            rank=len(rhs.indices),
            index_rank=len(read.args),
            shape=shape,
            like=like,
        )
        if statement.indices == (*before, *read.args, *after):
            return IndexCall("take", **common)  # type: ignore[arg-type]
        along = statement.indices == (*before, statement.indices[axis], *after)
        if read.args == statement.indices and along and index_shape == shape:
            return IndexCall("take_along_axis", **common)  # type: ignore[arg-type]
        return None
    found = ir.scatter(rhs, statement.indices)
    if found is None or len(found.writes) != 1 or not isinstance(found.body, ir.Access):
        return None
    ((pinned, write),) = found.writes.items()
    if not isinstance(write, ir.IndexRead) or not _symbols(write.args):
        return None
    axis = statement.indices.index(pinned)
    values = found.body
    before, after = statement.indices[:axis], statement.indices[axis + 1 :]
    scattered = tuple(v for v in write.args if v in found.variables)
    if set(scattered) != set(found.variables):
        return None
    index_shape = tuple(shapes[write.array])
    extents = {v: n for v, n in zip(write.args, index_shape, strict=True) if v in scattered}
    if not _boxes_only(found.where, extents):
        return None
    common = dict(
        target=statement.target,
        source=values.tensor,
        index=write.array,
        axis=axis,
        rank=len(shape),
        index_rank=len(write.args),
        shape=shape,
        like=like,
    )
    if len(write.args) == 1 and values.indices == (*before, *write.args, *after):
        return IndexCall("scatter_add", **common)  # type: ignore[arg-type]
    if (
        len(write.args) == len(shape)
        and values.indices == write.args
        and write.args == (*before, write.args[axis], *after)
        and tuple(shapes[values.tensor]) == index_shape
    ):
        return IndexCall("scatter_add_along_axis", **common)  # type: ignore[arg-type]
    return None
