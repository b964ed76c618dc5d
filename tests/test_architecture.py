"""The package's stages import downwards only: no module imports a later stage, no cycle.

The import graph is built from the source with ``ast`` (imports under ``if
TYPE_CHECKING:`` are left out: they exist for the type checker only).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "einderive"

# the stages, in order: a module may import its own stage or an earlier one
STAGES: list[tuple[str, ...]] = [
    ("errors",),
    # the IR and the affine reasoning over it; reads: index functions and pad values as
    # affine pieces
    ("ir", "affine", "functions", "solve", "reads"),
    ("model",),  # plain records: Program, Backward, Derivation, Pullback
    ("parse", "front"),  # text -> Program
    ("derive",),  # the core: reverse accumulation, gather form
    ("conv",),  # call records and recognition
    ("lower",),  # each statement once, as an array program
    ("emit",),  # printers and the runtime code they copy
    ("run",),  # compiled modules, the reference interpreter
    ("explain", "matrix"),  # showing a derivation
    ("verify",),
    ("api",),
    ("table",),  # the `table` command: the cheat sheet, derived and compared
    ("jvp", "higher"),  # forward mode and second order: derive, run and verify
    ("__init__",),  # the public names: import einderive as ed
    ("options",),  # NAME=VALUE options of the command line and the page
    ("serve",),  # the page and its server (the public API only)
    ("cli", "__main__"),
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def _imports(path: Path, name: str) -> set[str]:
    """The einderive modules that module ``name`` (at ``path``) may import, as dotted
    names inside the package (``from .run import compile`` gives ``run`` and
    ``run.compile``: the graph keeps the names that are modules)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = [p for p in package.split(".") if p and p != "__init__"]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join([*base, node.module] if node.module else base)
                if node.module:
                    found.add(prefix)
                found.update(f"{prefix}.{a.name}".strip(".") for a in node.names)
            elif node.module and node.module.split(".")[0] == "einderive":
                found.add(node.module.partition(".")[2] or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "einderive":
                    found.add(alias.name.partition(".")[2] or "__init__")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # an import of a package's module may name the package (from . import runtime)
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name}
    return graph


def _stage(module: str) -> int:
    top = module.split(".")[0]
    for index, stage in enumerate(STAGES):
        if top in stage:
            return index
    raise AssertionError(f"einderive.{module} belongs to no stage: add it to STAGES")


def test_every_module_has_a_stage() -> None:
    for module in _graph():
        _stage(module)


def test_no_import_points_up_the_stages() -> None:
    upward = [
        f"{module} (stage {_stage(module)}) imports {target} (stage {_stage(target)})"
        for module, targets in _graph().items()
        for target in targets
        if _stage(target) > _stage(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_checker_reads_every_kind_of_import(tmp_path: Path) -> None:
    """Relative and absolute imports, deferred ones too; TYPE_CHECKING blocks skipped."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import ir\n"
        "from .emit.text import statement_text\n"
        "import einderive.api\n"
        "if TYPE_CHECKING:\n"
        "    from .cli import main\n"
        "def late():\n"
        "    from .run import compile\n"
    )
    found = _imports(source, "probe")
    assert {"ir", "emit.text", "api", "run", "run.compile"} <= found
    assert not any(name.startswith("cli") for name in found)
