"""Runtime code that emitted modules carry: real modules, copied verbatim by the printers.

``definitions`` takes the top-level definitions an emitted module calls, and
those they use in turn, as their source text; the imports of the runtime modules
that those definitions need come along. Nothing is renamed: the runtime modules
are written with the private names the emitted code uses.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Sequence
from pathlib import Path

_HERE = Path(__file__).parent


@functools.cache
def _parsed(
    module: str,
) -> tuple[str, dict[str, ast.stmt], tuple[ast.Import | ast.ImportFrom, ...]]:
    """A runtime module's text, its top-level definitions by name, and its imports."""
    text = (_HERE / f"{module}.py").read_text()
    tree = ast.parse(text)
    found: dict[str, ast.stmt] = {}
    imports: list[ast.Import | ast.ImportFrom] = []
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef | ast.ClassDef):
            found[statement.name] = statement
        elif isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = statement
        elif isinstance(statement, ast.Import | ast.ImportFrom) and not (
            isinstance(statement, ast.ImportFrom) and statement.level
        ):
            imports.append(statement)
    return text, found, tuple(imports)


@functools.cache
def definitions(
    modules: Sequence[str], roots: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The import lines and the definitions (verbatim) that ``roots`` need.

    A name is looked up in ``modules`` in order; the definitions come out in the
    order of the modules and of their files.
    """
    wanted: dict[str, str] = {}  # name -> the module defining it
    used: set[str] = set()
    queue = list(roots)
    while queue:
        name = queue.pop()
        if name in wanted:
            continue
        module = next(m for m in modules if name in _parsed(m)[1])
        wanted[name] = module
        names = {n.id for n in ast.walk(_parsed(module)[1][name]) if isinstance(n, ast.Name)}
        used |= names
        queue += [n for n in names if any(n in _parsed(m)[1] for m in modules)]
    imports: list[str] = []
    pieces: list[str] = []
    for module in modules:
        text, found, module_imports = _parsed(module)
        for imported in module_imports:
            bound = {(a.asname or a.name).split(".")[0] for a in imported.names}
            line = ast.get_source_segment(text, imported) or ""
            if bound & used and line not in imports:
                imports.append(line)
        seen: set[int] = set()
        for name, statement in found.items():
            if wanted.get(name) == module and id(statement) not in seen:
                seen.add(id(statement))
                pieces.append(_segment(text, statement))
    return tuple(imports), tuple(pieces)


def _segment(text: str, statement: ast.stmt) -> str:
    """The whole lines of a definition, its decorators included."""
    decorators = getattr(statement, "decorator_list", [])
    first = min([statement.lineno, *(d.lineno for d in decorators)])
    last = statement.end_lineno or statement.lineno
    return "\n".join(text.splitlines()[first - 1 : last])
