"""Backends that compute pullbacks: ``loops`` (the interpreter), and more as they are added.

Optional frameworks are imported only when their backend is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ArgumentError

if TYPE_CHECKING:
    from ..derivation import Derivation

Runner = Callable[["Derivation", Mapping[str, np.ndarray], np.ndarray], dict[str, np.ndarray]]


def _loops(
    derivation: Derivation, arrays: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    from .loops import run

    return run(derivation, arrays, cotangent)


BACKENDS: dict[str, Runner] = {"loops": _loops}


def run(
    name: str, derivation: Derivation, arrays: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    """The pullbacks of ``cotangent`` into every input, by the named backend."""
    if name not in BACKENDS:
        raise ArgumentError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name](derivation, arrays, cotangent)
