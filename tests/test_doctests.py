"""Every ``>>>`` example in the package runs and prints what its docstring says."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import einderive

PACKAGE = Path(einderive.__file__).parent


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py" or ">>>" not in path.read_text():
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_public_modules_have_examples():
    assert {"einderive", "einderive.api", "einderive.verify"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name, loops_only):
    # import_module, not attribute access: ``einderive.verify`` is the function
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
