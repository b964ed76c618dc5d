"""Backends that compute pullbacks: ``loops`` (the interpreter), ``numpy``, ``jax``, ``torch``.

Each backend's module is imported only when it runs, and jax and torch only then;
a missing framework raises BackendMissingError naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ArgumentError

if TYPE_CHECKING:
    from ..derivation import Derivation

# backend name -> (module in this package, function), imported on first use
BACKENDS: dict[str, tuple[str, str]] = {
    "loops": ("loops", "run"),
    "numpy": ("frameworks", "run_numpy"),
    "jax": ("frameworks", "run_jax"),
    "torch": ("frameworks", "run_torch"),
}


def installed() -> list[str]:
    """The backends whose framework can be imported here."""
    return [
        name
        for name in BACKENDS
        if name in ("loops", "numpy") or importlib.util.find_spec(name) is not None
    ]


def run(
    name: str, derivation: Derivation, arrays: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    """The pullbacks of ``cotangent`` into every input, by the named backend."""
    if name not in BACKENDS:
        raise ArgumentError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module, function = BACKENDS[name]
    runner = getattr(importlib.import_module(f".{module}", __name__), function)
    return runner(derivation, arrays, cotangent)
