"""The ``NAME=VALUE`` options of the command line and the page: parameters, shapes, ranges."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ArgumentError


def _number(text: str, what: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ArgumentError(f"{what}: {text!r} is not a number") from None


def _pairs(values: Sequence[str], what: str) -> list[tuple[str, str | None]]:
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        name = name.strip()
        if not name.isidentifier():
            raise ArgumentError(f"--{what} {value!r}: expected NAME=VALUE")
        pairs.append((name, rest.strip() if sep else None))
    return pairs


def parse_params(values: Sequence[str]) -> dict[str, int | float | None]:
    params: dict[str, int | float | None] = {}
    for name, value in _pairs(values, "param"):
        if name in params:
            raise ArgumentError(f"parameter {name!r} is given twice")
        params[name] = None if value is None else _number(value, f"--param {name}")
    return params


def parse_shapes(values: Sequence[str]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, value in _pairs(values, "shape"):
        if value is None or not value:
            raise ArgumentError(f"--shape {name}: expected {name}=7x7")
        if name in shapes:
            raise ArgumentError(f"the shape of {name!r} is given twice")
        try:
            shapes[name] = tuple(int(n) for n in value.lower().split("x"))
        except ValueError:
            raise ArgumentError(f"--shape {name}={value}: sizes are integers, like 7x7") from None
    return shapes


def parse_ranges(values: Sequence[str]) -> dict[str, int]:
    ranges: dict[str, int] = {}
    for name, value in _pairs(values, "range"):
        if value is None or not value.isdigit():
            raise ArgumentError(f"--range {name}: expected {name}=3 (a positive integer)")
        if name in ranges:
            raise ArgumentError(f"the range of {name!r} is given twice")
        ranges[name] = int(value)
    return ranges
