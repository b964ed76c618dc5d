"""The convolution as a matrix: the Jacobian over flattened tensors, and the im2col view.

``jacobian`` gives ``J = d vec(Y) / d vec(X)`` (row-major flattening) for numeric
sizes, computed from the forward alone: column ``c`` is the forward's change
when element ``c`` of ``X`` moves by one (exact where the forward is affine in
``X``; central differences otherwise). Where ``J`` is also affine in the other
inputs, as for a convolution ``Y = K * X``, its entries are written in their
elements, ``k1 ... k4`` row-major and 1-based, found by putting one unit
element at a time in the other inputs. The pullback is ``J^T``:
``Jacobian.transpose_error`` checks ``dX = J^T dY`` numerically.

``im2col`` writes a convolution as one matrix product, ``Y = W~ X~ + b``, with
the unfolded input ``X~[(c, m, n), (i, j)] = X[read]`` and the reshaped kernel
``W~[o, (c, m, n)] = W[o, c, m, n]``; ``Im2col.source()`` is NumPy code that
builds ``X~`` with ``sliding_window_view`` from the recognised call's padding,
stride and dilation.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy

from . import ir
from .derive import derivation as derive_record
from .errors import ArgumentError, BackendMissingError, EinderiveError
from .front import ParamValues, RangeValues, ShapeValues, analyse
from .model import Derivation, Program
from .run.compile import run
from .run.interpret import numeric_shape, run_statements

if TYPE_CHECKING:
    from .conv.recognise import ConvPullback

# how many forward evaluations the symbolic entries may cost before they are left out
SYMBOLIC_BUDGET = 4000
# the widest matrix ``Jacobian.text`` prints in full
PRINT_COLUMNS = 48


# ---- a numeric program --------------------------------------------------------------------


def numeric_derivation(
    source: str | Derivation,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
) -> Derivation:
    """``source`` derived with numbers for every size and parameter (an error says which lack)."""
    if isinstance(source, Derivation):
        program = source.program
        if params is None and shapes is None and ranges is None and _is_numeric(program):
            return source
        text = program.text
        params = {**program.values, **(params or {})}
    elif isinstance(source, str):
        text = source
    else:
        raise ArgumentError(f"expected an expression or a Derivation, not {type(source).__name__}")
    try:
        program = analyse(text, params, shapes, ranges)
    except EinderiveError as error:
        raise error.with_text(text) from None
    if program.params:
        names = ", ".join(p.name for p in program.params)
        raise ArgumentError(f"the matrix needs numbers: give a value to {names} (params=, --param)")
    symbolic = [name for name, shape in program.shapes.items() if not _numbers(shape)]
    symbolic = [name for name in symbolic if name in program.inputs] or symbolic
    if symbolic:
        raise ArgumentError(
            "the matrix needs numbers: give the shape of "
            f"{', '.join(symbolic)} (shapes=, --shape X=3x3)"
        )
    return derive_record(program)


def _numbers(shape: Sequence[sympy.Expr]) -> bool:
    return all(sympy.sympify(n).is_Integer for n in shape)


def _is_numeric(program: Program) -> bool:
    return not program.params and all(_numbers(s) for s in program.shapes.values())


def _shape(program: Program, name: str) -> tuple[int, ...]:
    return numeric_shape(program.shapes[name], name)


def affine_in(derivation: Derivation, tensor: str) -> bool:
    """Whether the output is affine in ``tensor``: its pullback reads nothing that depends on it."""
    program = derivation.program
    depends = {tensor}
    for statement in program.statements:
        if any(a.tensor in depends for a in ir.accesses(statement.rhs)):
            depends.add(statement.target)
    backward = {s.target: s for s in derivation.backward.statements}
    pending = [derivation.backward.cotangents[tensor]]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or name not in backward:
            continue
        seen.add(name)
        for access in ir.accesses(backward[name].rhs):
            if access.tensor in depends:
                return False
            pending.append(access.tensor)
    return True


# ---- the Jacobian ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Jacobian:
    """``d vec(output) / d vec(wrt)`` at ``point``, flattened row-major.

    ``matrix`` holds the numbers; ``entries``, where the output is affine in
    ``wrt`` and the Jacobian affine in the other inputs, holds them in the
    elements of those inputs (``symbols``: each input's element symbols).
    """

    derivation: Derivation = field(repr=False)
    output: str
    wrt: str
    output_shape: tuple[int, ...]
    wrt_shape: tuple[int, ...]
    matrix: np.ndarray = field(repr=False)
    point: dict[str, np.ndarray] = field(repr=False)
    affine: bool
    entries: sympy.Matrix | None = field(default=None, repr=False)
    symbols: dict[str, tuple[sympy.Symbol, ...]] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def at(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """The symbolic entries evaluated at other inputs ``values`` (a numeric matrix)."""
        if self.entries is None:
            raise ArgumentError("this Jacobian has no symbolic entries")
        mapping = {
            symbol: float(value)
            for name, symbols in self.symbols.items()
            for symbol, value in zip(symbols, np.ravel(values[name]), strict=True)
        }
        numbers = self.entries.xreplace(mapping)
        return np.array(numbers.tolist(), dtype=np.float64)

    def transpose_error(self, trials: int = 3, seed: int = 0, backend: str = "loops") -> float:
        """The largest ``|dX - J^T dY|`` over random cotangents ``dY``: the pullback is ``J^T``."""
        generator = np.random.default_rng(seed)
        worst = 0.0
        for _ in range(trials):
            cotangent = generator.standard_normal(self.output_shape)
            pulled = run(backend, self.derivation, self.point, cotangent)[self.wrt]
            expected = self.matrix.T @ cotangent.ravel()
            worst = max(worst, float(np.max(np.abs(pulled.ravel() - expected), initial=0.0)))
        return worst

    def header(self, transpose: bool = False) -> list[str]:
        rows, columns = self.shape
        lines = [
            f"J = d vec({self.output}) / d vec({self.wrt}): {rows} x {columns} "
            f"({self.output}: {_dims(self.output_shape)}, {self.wrt}: {_dims(self.wrt_shape)}, "
            "flattened row-major)",
            f"vec({self.output}) = J vec({self.wrt})"
            + ("" if self.affine else " to first order (the forward is not affine in it)"),
        ]
        for name, symbols in self.symbols.items():
            if self.entries is not None and any(self.entries.has(s) for s in symbols):
                shape = _shape(self.derivation.program, name)
                lines.append(f"{_element_names(symbols)}: the elements of {name} {_dims(shape)}")
        lines.append(f"the pullback is the transpose: vec(d{self.wrt}) = J^T vec(d{self.output})")
        if transpose:
            lines.append(
                f"J^T, the pullback's own matrix: {columns} x {rows} (row: an element of "
                f"d{self.wrt}; column: an element of d{self.output})"
            )
        return lines

    def cells(self, transpose: bool = False) -> list[list[str]]:
        """Every entry as text: a symbolic expression, or a number (of ``J^T`` if asked)."""
        if self.entries is not None:
            cells = [[_entry(e) for e in self.entries.row(r)] for r in range(self.entries.rows)]
        else:
            cells = [[_number(v) for v in row] for row in self.matrix]
        return [list(column) for column in zip(*cells, strict=True)] if transpose else cells

    def text(self, max_columns: int = PRINT_COLUMNS, transpose: bool = False) -> str:
        """The matrix as aligned text (the header, then one line per row); ``transpose``:
        ``J^T``, the pullback's matrix, instead."""
        lines = self.header(transpose)
        width_in_columns = self.shape[0] if transpose else self.shape[1]
        if width_in_columns > max_columns:
            lines.append(
                f"({width_in_columns} columns: too wide to print: see --png FILE, .png(path))"
            )
            return "\n".join(lines)
        cells = self.cells(transpose)
        width = max((len(c) for row in cells for c in row), default=1)
        lines += [" ".join(c.ljust(width) for c in row).rstrip() for row in cells]
        return "\n".join(lines)

    def latex(self) -> str:
        """The matrix as a LaTeX array in parentheses (renders in KaTeX and LaTeX alike)."""
        cells = self.cells() if self.entries is None else None
        rows = []
        for r in range(self.shape[0]):
            if cells is not None:
                rows.append(" & ".join(cells[r]))
            else:
                entries = self.entries
                assert entries is not None
                rows.append(" & ".join(sympy.latex(e) for e in entries.row(r)))
        columns = "c" * self.shape[1]
        body = r" \\ ".join(rows)
        name = rf"\frac{{\partial \operatorname{{vec}} {self.output}}}"
        name += rf"{{\partial \operatorname{{vec}} {self.wrt}}}"
        return rf"{name} = \left(\begin{{array}}{{{columns}}}{body}\end{{array}}\right)"

    def figure(self, transpose: bool = False) -> Any:
        """The matrix (or ``J^T``, the pullback's) as a matplotlib Figure.

        Kernel entries get one colour per element, named in a legend (and written in
        the cells while they are few enough to read); zeros are white. A numeric matrix
        is shown with a diverging colour scale and its colour bar. Ticks are whole
        positions of the flattened tensors.
        """
        try:
            from matplotlib.colors import ListedColormap
            from matplotlib.figure import Figure
            from matplotlib.patches import Patch
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            raise BackendMissingError(
                'the picture needs matplotlib: pip install "einderive[plot]"'
            ) from None
        rows, columns = self.shape[::-1] if transpose else self.shape
        figure = Figure(figsize=(min(14, 2.5 + 0.35 * columns), min(14, 1.2 + 0.35 * rows)))
        axes = figure.subplots()
        labels = self._single_elements()
        if labels is not None:
            names, image = labels
            image = image.T if transpose else image
            colours = _palette(len(names))
            axes.imshow(image, cmap=ListedColormap(["white", *colours]), vmin=0,
                        vmax=len(names), interpolation="nearest")  # fmt: skip
            if rows * columns <= 900:
                for (r, c), k in np.ndenumerate(image):
                    if k:
                        axes.text(c, r, names[k - 1], ha="center", va="center", fontsize=7)
            handles = [
                Patch(facecolor=colour, label=name)
                for name, colour in zip(names, colours, strict=True)
            ]
            axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                        fontsize=7, ncols=1 + len(names) // 25, title="entry")  # fmt: skip
        else:
            matrix = self.matrix.T if transpose else self.matrix
            bound = float(np.max(np.abs(matrix), initial=0.0)) or 1.0
            shown = axes.imshow(
                matrix, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest"
            )
            figure.colorbar(shown, ax=axes, shrink=0.8)
        for axis in (axes.xaxis, axes.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True))
        top, side = (self.wrt, self.output) if transpose else (self.output, self.wrt)
        name = "J^T, the pullback's matrix" if transpose else "J"
        axes.set_title(f"{name}: {rows} x {columns}")
        axes.set_xlabel(f"{'d' if transpose else ''}{side}, flattened")
        axes.set_ylabel(f"{'d' if transpose else ''}{top}, flattened")
        return figure

    def png(self, path: str | None = None, dpi: int = 120, transpose: bool = False) -> bytes:
        """The picture of :meth:`figure` as PNG bytes, also written to ``path`` if given."""
        buffer = io.BytesIO()
        self.figure(transpose).savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        data = buffer.getvalue()
        if path is not None:
            with open(path, "wb") as file:
                file.write(data)
        return data

    def _single_elements(self) -> tuple[list[str], np.ndarray] | None:
        """Names, and an image of indices into them, where every entry is 0 or one element."""
        if self.entries is None:
            return None
        names: list[str] = []
        image = np.zeros(self.shape, dtype=int)
        for (r, c), entry in np.ndenumerate(np.array(self.entries.tolist(), dtype=object)):
            if entry == 0:
                continue
            if not isinstance(entry, sympy.Symbol):
                return None
            if entry.name not in names:
                names.append(entry.name)
            image[r, c] = names.index(entry.name) + 1
        return names, image

    def __str__(self) -> str:
        return self.text()

    def _repr_latex_(self) -> str:
        return f"$${self.latex()}$$"


def _dims(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(k % 20) for k in range(n)]


def _entry(expr: sympy.Expr) -> str:
    if expr.is_number:
        return _number(float(expr))
    return str(expr).replace(" ", "")


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _element_names(symbols: Sequence[sympy.Symbol]) -> str:
    if len(symbols) <= 3:
        return ", ".join(s.name for s in symbols)
    return f"{symbols[0].name} ... {symbols[-1].name}"


def element_symbols(program: Program, names: Sequence[str]) -> dict[str, tuple[sympy.Symbol, ...]]:
    """One symbol per element of each tensor, row-major and 1-based: ``K`` -> ``k1 ... k4``."""
    lowered = [name.lower() for name in program.inputs]
    result = {}
    for name in names:
        stem = name.lower() if lowered.count(name.lower()) == 1 else f"{name}_"
        size = math.prod(_shape(program, name))
        if not _shape(program, name):
            result[name] = (sympy.Symbol(stem),)
        else:
            result[name] = tuple(sympy.Symbol(f"{stem}{k + 1}") for k in range(size))
    return result


class _Forward:
    """The forward on numbers (the reference interpreter), and its Jacobian in one input."""

    def __init__(self, program: Program, wrt: str, affine: bool) -> None:
        self.program = program
        self.wrt = wrt
        self.affine = affine
        self.shape = _shape(program, wrt)
        self.size = math.prod(self.shape)
        self.evaluations = 0

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        self.evaluations += 1
        values = run_statements(self.program.statements, self.program.shapes, arrays)
        return np.ravel(values[self.program.output])

    def jacobian(self, point: Mapping[str, np.ndarray]) -> np.ndarray:
        """Columns: one unit step of each element of ``wrt`` (exact where affine in it)."""
        base = np.asarray(point[self.wrt], dtype=np.float64)
        step = 1.0 if self.affine else 1e-6 * max(1.0, float(np.max(np.abs(base), initial=0.0)))
        columns = []
        reference = self(point) if self.affine else None
        for k in range(self.size):
            unit = np.zeros(self.size)
            unit[k] = step
            up = self({**point, self.wrt: base + unit.reshape(self.shape)})
            if reference is not None:
                columns.append((up - reference) / step)
            else:
                down = self({**point, self.wrt: base - unit.reshape(self.shape)})
                columns.append((up - down) / (2 * step))
        return np.stack(columns, axis=1) if columns else np.zeros((0, 0))


def jacobian(
    source: str | Derivation,
    wrt: str,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    symbolic: bool | None = None,
    seed: int = 0,
) -> Jacobian:
    """The Jacobian of the output with respect to ``wrt``, over the flattened tensors.

    Sizes must be numbers. ``inputs`` is the point (random normal where left
    out). ``symbolic``: whether to find the entries in the other inputs'
    elements (default: where it is cheap).

    >>> J = jacobian("Y[i,j] = K[p,q]*X[i+p,j+q]", "X", shapes={"X": (3, 3), "K": (2, 2)})
    >>> print(J.text().splitlines()[-4])
    k1 k2 0  k3 k4 0  0  0  0
    """
    derivation = numeric_derivation(source, params, shapes, ranges)
    program = derivation.program
    if wrt not in program.inputs:
        raise ArgumentError(f"{wrt!r} is not an input; the inputs are {', '.join(program.inputs)}")
    generator = np.random.default_rng(seed)
    point = {
        name: np.asarray(inputs[name], dtype=np.float64)
        if inputs is not None and name in inputs
        else generator.standard_normal(_shape(program, name))
        for name in program.inputs
    }
    affine = affine_in(derivation, wrt)
    forward = _Forward(program, wrt, affine)
    matrix = forward.jacobian(point)
    others = [name for name in program.inputs if name != wrt]
    symbols = element_symbols(program, others)
    entries = None
    count = sum(len(s) for s in symbols.values())
    if symbolic is None:
        symbolic = affine and (count + 2) * (forward.size + 1) <= SYMBOLIC_BUDGET
    if symbolic and affine:
        entries = _entries(forward, point, symbols, matrix)
    output = program.output
    return Jacobian(
        derivation=derivation,
        output=output,
        wrt=wrt,
        output_shape=_shape(program, output),
        wrt_shape=forward.shape,
        matrix=matrix,
        point=point,
        affine=affine,
        entries=entries,
        symbols=symbols if entries is not None else {},
    )


def _entries(
    forward: _Forward,
    point: Mapping[str, np.ndarray],
    symbols: Mapping[str, tuple[sympy.Symbol, ...]],
    matrix: np.ndarray,
) -> sympy.Matrix | None:
    """``J0 + sum_e t_e * J_e`` over the elements ``t_e`` of the other inputs, if that is J.

    ``J0`` is the Jacobian with every other input zero and ``J_e - J0`` its change
    when one element is one; the sum must give back ``matrix`` at ``point``.
    """
    zeros = {name: np.zeros_like(array) for name, array in point.items()}
    constant = forward.jacobian(zeros)
    entries = np.vectorize(_exact, otypes=[object])(constant)
    rebuilt = constant.copy()
    for name, elements in symbols.items():
        for k, symbol in enumerate(elements):
            unit = np.zeros(point[name].size)
            unit[k] = 1.0
            change = forward.jacobian({**zeros, name: unit.reshape(point[name].shape)}) - constant
            for position in zip(*np.nonzero(change), strict=True):
                entries[position] += _exact(change[position]) * symbol
            rebuilt += change * float(np.ravel(point[name])[k])
    if not np.allclose(rebuilt, matrix, rtol=1e-9, atol=1e-9):
        return None  # not affine in the other inputs: no symbolic entries
    return sympy.Matrix(entries)


def _exact(value: float) -> sympy.Expr:
    """A float as an integer or a short fraction where it is one (else the float)."""
    if value == int(value):
        return sympy.Integer(int(value))
    rational = sympy.nsimplify(value, rational=True, tolerance=1e-12)
    return rational if rational.q <= 1000 else sympy.Float(value)


@dataclass(frozen=True)
class MatrixReport:
    """What ``--matrix`` prints, and whether every pullback matched ``J^T``."""

    text: str
    ok: bool

    def __str__(self) -> str:
        return self.text


def matrix_report(
    derivation: Derivation,
    wrt: Sequence[str] | None = None,
    png: str | None = None,
    transpose: bool = False,
) -> MatrixReport:
    """``--matrix``: the Jacobian in each input (or those in ``wrt``), checked against the
    pullback; with ``png``, each also saved as a picture (``FILE-X.png`` for several);
    with ``transpose``, ``J^T`` (the pullback's own matrix) is shown instead of ``J``."""
    names = list(wrt) if wrt else list(derivation.pullbacks)
    blocks = []
    ok = True
    for name in names:
        matrix = jacobian(derivation, name)
        error = matrix.transpose_error()
        matched = error <= (1e-9 if matrix.affine else 1e-4)
        ok = ok and matched
        lines = [
            matrix.text(transpose=transpose),
            f"check: max |d{name} - J^T d{matrix.output}| = {error:.1e} on random cotangents "
            f"({'ok' if matched else 'MISMATCH'})",
        ]
        if png is not None:
            stem, extension = os.path.splitext(png)
            path = png if len(names) == 1 else f"{stem}-{name}{extension or '.png'}"
            matrix.png(path, transpose=transpose)
            lines.append(f"saved the picture to {path}")
        blocks.append("\n".join(lines))
    return MatrixReport("\n\n".join(blocks), ok)


# ---- im2col -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Im2col:
    """A convolution as one matrix product: ``Y = W~ X~ + b``.

    ``X~`` has a row per kernel position (input channel first) and a column per
    output position (batch first); ``W~`` a row per output channel.
    """

    derivation: Derivation = field(repr=False)
    conv: ConvPullback = field(repr=False)
    x: ir.Access  # the input's read in the forward
    w: ir.Access  # the kernel's read
    rows: tuple[sympy.Symbol, ...]  # the kernel's indices but the output channel
    columns: tuple[sympy.Symbol, ...]  # the output's indices but the output channel
    channel: sympy.Symbol | None  # the output channel
    bias: tuple[ir.Access, ...]

    def _extent(self, var: sympy.Symbol) -> sympy.Expr:
        program = self.derivation.program
        statement = program.statements[-1]
        if var in statement.indices:
            return program.shapes[statement.target][statement.indices.index(var)]
        return program.shapes[self.w.tensor][self.w.indices.index(var)]

    @property
    def x_shape(self) -> tuple[sympy.Expr, sympy.Expr]:
        """``(C_in*K_H*K_W, B*H_out*W_out)`` in the program's sizes."""
        return (
            sympy.Mul(*(self._extent(v) for v in self.rows)),
            sympy.Mul(*(self._extent(v) for v in self.columns)),
        )

    @property
    def w_shape(self) -> tuple[sympy.Expr, sympy.Expr]:
        """``(C_out, C_in*K_H*K_W)``."""
        out = self._extent(self.channel) if self.channel is not None else sympy.Integer(1)
        return out, self.x_shape[0]

    def lines(self) -> list[str]:
        from .emit.printer import NotationPrinter
        from .emit.text import variables_of

        statement = self.derivation.program.statements[-1]
        printer = NotationPrinter(variables_of(statement))
        name_x, name_w, out = self.x.tensor, self.w.tensor, statement.target

        def group(variables: Sequence[sympy.Symbol]) -> str:
            names = ", ".join(v.name for v in variables)
            return f"({names})" if len(variables) != 1 else names

        def shape(values: Sequence[sympy.Expr]) -> str:
            """``(C*M*N)``, and its value where the sizes are numbers: ``(2*2*2 = 8)``."""
            total = printer.scalar(sympy.Mul(*values))
            if len(values) < 2:
                return total
            written = "*".join(printer.scalar(v) for v in values)
            return f"({written} = {total})" if sympy.Mul(*values).is_number else f"({written})"

        rows = [self._extent(v) for v in self.rows]
        columns = [self._extent(v) for v in self.columns]
        channel = self.channel.name if self.channel is not None else "0"
        bias = "".join(f" + {printer.expr(b)}" for b in self.bias)
        lines = [
            f"im2col: {out} = {name_w}~ {name_x}~" + (" + bias" if self.bias else ""),
            f"{name_x}~[{group(self.rows)}, {group(self.columns)}] = {printer.expr(self.x)}"
            f"    (zero outside {name_x})",
            f"    shape {shape(rows)} x {shape(columns)}: a row per kernel position "
            f"{group(self.rows)}, a column per output position {group(self.columns)}",
            f"{name_w}~[{channel}, {group(self.rows)}] = {printer.expr(self.w)}",
            f"    shape {shape([self.w_shape[0]])} x {shape(rows)}",
            f"{out}[{', '.join(v.name for v in statement.indices)}] = "
            f"({name_w}~ {name_x}~)[{channel}, {group(self.columns)}]{bias}",
            f"backward: d{name_w}~ = d{out}~ {name_x}~^T, and d{name_x}~ = {name_w}~^T d{out}~, "
            f"whose columns col2im adds back into the windows of d{name_x}",
        ]
        return lines

    def text(self) -> str:
        return "\n".join(self.lines())

    def latex(self) -> str:
        from .emit.latex import LatexPrinter
        from .emit.text import variables_of

        statement = self.derivation.program.statements[-1]
        printer = LatexPrinter(variables_of(statement))

        def tilde(name: str) -> str:
            return rf"\tilde{{{printer.expr(ir.Access(name, ()))}}}"

        def group(variables: Sequence[sympy.Symbol]) -> str:
            return r"\left(" + ", ".join(printer.symbol(v) for v in variables) + r"\right)"

        channel = printer.symbol(self.channel) if self.channel is not None else "0"
        x_rows, x_columns = self.x_shape
        bias = "".join(f" + {printer.expr(b)}" for b in self.bias)
        lines = [
            rf"{tilde(self.x.tensor)}_{{{group(self.rows)}, {group(self.columns)}}} = "
            + printer.expr(self.x),
            rf"{tilde(self.w.tensor)}_{{{channel}, {group(self.rows)}}} = " + printer.expr(self.w),
            rf"{tilde(self.x.tensor)} \in \mathbb{{R}}^{{{printer.scalar(x_rows)} \times "
            rf"{printer.scalar(x_columns)}}},\quad {tilde(self.w.tensor)} \in \mathbb{{R}}^"
            rf"{{{printer.scalar(self.w_shape[0])} \times {printer.scalar(x_rows)}}}",
            rf"{printer.expr(ir.Access(statement.target, statement.indices))} = \left("
            rf"{tilde(self.w.tensor)} \, {tilde(self.x.tensor)}\right)_{{{channel}, "
            rf"{group(self.columns)}}}{bias}",
        ]
        return r"\begin{array}{l}" + r" \\ ".join(lines) + r"\end{array}"

    def _repr_latex_(self) -> str:
        return f"$${self.latex()}$$"

    def __str__(self) -> str:
        return self.text()

    def source(self) -> str:
        """Standalone NumPy: ``unfold_X`` (``X~`` by ``sliding_window_view``), ``reshape_W``
        (``W~``) and ``forward`` (``W~ @ X~``, reshaped, plus the bias). Needs numbers."""
        return _Im2colSource(self).build()


@dataclass(frozen=True)
class ForwardConvolution:
    """The output statement as one convolution term plus other terms (a bias, say)."""

    conv: ConvPullback
    term: ir.Node
    rest: tuple[ir.Node, ...]


def forward_convolution(derivation: Derivation) -> ForwardConvolution:
    """The term of the forward's last statement that is a convolution, or an ArgumentError.

    Its kernel is a tensor read at plain indices (``W[o, c, m, n]``) where one is.
    """
    from .conv.recognise import NotConvolution, recognise

    program = derivation.program
    statement = program.statements[-1]
    terms = statement.rhs.terms if isinstance(statement.rhs, ir.Add) else (statement.rhs,)
    reasons = []
    for k, term in enumerate(terms):
        plain = [
            a.tensor
            for a in ir.accesses(term)
            if all(isinstance(e, sympy.Symbol) for e in a.indices)
        ]
        recognition = recognise(
            ir.Statement(statement.target, statement.indices, term), program.shapes, plain
        )
        if isinstance(recognition, NotConvolution):
            reasons.append(recognition.reason)
            continue
        return ForwardConvolution(recognition, term, terms[:k] + terms[k + 1 :])
    raise ArgumentError(
        f"{statement.target} is not a convolution (plus other terms): {'; '.join(reasons)}"
    )


def im2col(
    source: str | Derivation,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
) -> Im2col:
    """The forward (its last statement) as ``Y = W~ X~ + b``, if it is a convolution.

    >>> view = im2col("Y[o,i,j] = W[o,c,m,n]*X[c,i+m,j+n] + b[o]")
    >>> print(view.lines()[1])
    X~[(c, m, n), (i, j)] = X[c, i + m, j + n]    (zero outside X)
    """
    if isinstance(source, Derivation) and params is None and shapes is None and ranges is None:
        derivation = source
    else:
        text = source.program.text if isinstance(source, Derivation) else source
        try:
            derivation = derive_record(analyse(text, params, shapes, ranges))
        except EinderiveError as error:
            raise error.with_text(text) from None
    found = forward_convolution(derivation)
    return _im2col(derivation, found.conv, found.term, found.rest)


def _im2col(
    derivation: Derivation, conv: ConvPullback, term: ir.Node, rest: Sequence[ir.Node]
) -> Im2col:
    statement = derivation.program.statements[-1]
    if conv.call.groups != 1 or conv.call.batch_groups != 1:
        raise ArgumentError("a grouped (depthwise) convolution unfolds into one W~ X~ per group")
    if conv.x_layout.flips or conv.w_layout.flips:
        raise ArgumentError("im2col needs every tensor read in its own order (no reversed axis)")
    if any(f != 1 for f in conv.call.fill):
        raise ArgumentError("im2col needs a kernel read at plain indices (no fill)")
    body = term.body if isinstance(term, ir.Reduce) else term
    reads = {a.tensor: a for a in ir.accesses(body)}
    x, w = reads[conv.call.x], reads[conv.call.w]
    if not all(isinstance(e, sympy.Symbol) for e in w.indices):
        raise ArgumentError(f"the kernel {w.tensor} must be read at plain indices for im2col")
    out_axis = conv.w_layout.axes[1 if conv.call.permute_kernel else 0]
    assert not isinstance(out_axis, tuple)  # merged only in a grouped call
    channel = w.indices[out_axis] if out_axis is not None else None
    rows = tuple(v for v in w.indices if v != channel)
    columns = tuple(v for v in statement.indices if v != channel)
    bias = []
    for extra in rest:
        if not (
            isinstance(extra, ir.Access)
            and all(e in statement.indices for e in extra.indices)
            and len(set(extra.indices)) == len(extra.indices)
        ):
            raise ArgumentError("im2col covers a convolution plus bias terms like b[o] only")
        bias.append(extra)
    return Im2col(derivation, conv, x, w, rows, columns, channel, tuple(bias))


class _Im2colSource:
    """The NumPy source of an im2col view, from the recognised call's numbers."""

    def __init__(self, view: Im2col) -> None:
        self.view = view
        program = view.derivation.program
        if not _is_numeric(program):
            raise ArgumentError("im2col code needs numbers: give shapes= and params=")
        self.call = view.conv.call
        self.program = program

    def build(self) -> str:
        from .emit.conv import operand_code, result_code

        view, call, program = self.view, self.call, self.program
        statement = program.statements[-1]
        x, w = call.x, call.w
        rank = call.rank
        spatial = tuple(range(2, 2 + rank))
        kernel = [int(k) for k in view.conv.kernel_size]
        dilations = [int(d) for d in call.dilation]
        strides = [int(s) for s in call.stride]
        spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
        rows, columns = (int(n) for n in view.x_shape)
        out_channels = int(view.w_shape[0])
        out_spatial = [int(n) for n in view.conv.output_size]
        lines = [
            "import numpy as np",
            "from numpy.lib.stride_tricks import sliding_window_view",
            "",
            "",
            f"def unfold_{x}({x}):",
            f'    """{x}~: ({rows}, {columns}), a row per kernel position, a column per output '
            'position."""',
            f"    x = {operand_code(x, view.conv.x_layout)}  # (batch, channel, spatial...)",
        ]
        if call.permute_input:
            lines.append("    x = x.swapaxes(0, 1)")
        padding = [(int(lo), int(hi)) for lo, hi in call.padding]
        pads = tuple((max(lo, 0), max(hi, 0)) for lo, hi in padding)
        if any(lo or hi for lo, hi in pads):
            lines.append(f"    x = np.pad(x, ((0, 0), (0, 0)) + {pads})  # padding lo, hi")
        if any(lo < 0 or hi < 0 for lo, hi in padding):
            crops = ", ".join(
                f"{-lo if lo < 0 else 0}:x.shape[{a}]{f' - {-hi}' if hi < 0 else ''}"
                for a, (lo, hi) in zip(spatial, padding, strict=True)
            )
            lines.append(f"    x = x[:, :, {crops}]  # negative padding crops")
        lines.append(f"    windows = sliding_window_view(x, {tuple(spans)}, axis={spatial})")
        if any(s != 1 for s in strides) or any(d != 1 for d in dilations):
            steps = ", ".join(f"::{s}" for s in [*strides, *dilations])
            lines.append(f"    windows = windows[:, :, {steps}]  # strides, then dilated taps")
        if call.flip_kernel:
            flips = ", ".join(["::-1"] * rank)
            lines.append(f"    windows = windows[..., {flips}]  # the kernel runs backwards")
        order = (1, *range(2 + rank, 2 + 2 * rank), 0, *spatial)
        lines += [
            "    # (batch, channel, out..., taps...) -> (channel, taps..., batch, out...)",
            f"    return windows.transpose{order}.reshape({rows}, {columns})",
            "",
            "",
            f"def reshape_{w}({w}):",
            f'    """{w}~: ({out_channels}, {rows}), a row per output channel."""',
            f"    w = {operand_code(w, view.conv.w_layout)}  # (out channel, in channel, taps...)",
        ]
        if call.permute_kernel:
            lines.append("    w = w.swapaxes(0, 1)")
        lines.append(f"    return w.reshape({out_channels}, {rows})")
        inputs = ", ".join(program.inputs)
        batch = columns // max(1, math.prod(out_spatial))
        given = ", ".join(f"{k}={v}" for k, v in program.values.items())
        given = f" with {given}" if given else ""
        lines += [
            "",
            "",
            f"def forward({inputs}):",
            f'    """{program.text}{given} as one matrix product."""',
            f"    product = reshape_{w}({w}) @ unfold_{x}({x})  # ({out_channels}, {columns})",
            f"    out = product.reshape({out_channels}, {batch}, "
            f"{', '.join(map(str, out_spatial))}).swapaxes(0, 1)",
            f"    {statement.target} = {result_code(view.conv, 'out')}",
        ]
        target = statement.target
        lines += [f"    {target} = {target} + {_broadcast(b, statement)}" for b in view.bias]
        lines.append(f"    return {statement.target}")
        return "\n".join(lines) + "\n"


def _broadcast(access: ir.Access, statement: ir.Statement) -> str:
    """NumPy code putting a bias read ``b[o]`` on the output's axes: ``b[:, None, None]``."""
    positions = [statement.indices.index(e) for e in access.indices]
    code = access.tensor
    order = sorted(range(len(positions)), key=lambda k: positions[k])
    if order != list(range(len(positions))):
        code += f".transpose({', '.join(map(str, order))})"
    index = [":" if v in access.indices else "None" for v in statement.indices]
    return f"{code}[{', '.join(index)}]" if "None" in index else code
