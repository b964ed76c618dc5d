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


def _numpy(
    derivation: Derivation, arrays: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    from .frameworks import run_numpy

    return run_numpy(derivation, arrays, cotangent)


def _jax(
    derivation: Derivation, arrays: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    from .frameworks import run_jax

    return run_jax(derivation, arrays, cotangent)


def _torch(
    derivation: Derivation, arrays: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    from .frameworks import run_torch

    return run_torch(derivation, arrays, cotangent)


BACKENDS: dict[str, Runner] = {"loops": _loops, "numpy": _numpy, "jax": _jax, "torch": _torch}


def installed() -> list[str]:
    """The backends whose framework can be imported here."""
    import importlib.util

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
    return BACKENDS[name](derivation, arrays, cotangent)
