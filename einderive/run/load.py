"""Turn printed source into live functions, the way sympy's ``lambdify`` does.

The source is compiled under a file name of its own and registered with
``linecache``, so a traceback through an emitted function shows its lines.
"""

from __future__ import annotations

import itertools
import linecache
from typing import Any

_COUNTER = itertools.count()


def load_source(source: str, label: str) -> dict[str, Any]:
    """Execute ``source`` as a fresh module and return its namespace."""
    filename = f"<einderive-{label}-{next(_COUNTER)}>"
    code = compile(source, filename, "exec")
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": filename}
    exec(code, namespace)
    return namespace
