"""What one request to the page's server computes, from the public API only.

These functions run inside a worker process (see ``workers.py``), so that a
slow derivation can be stopped; each takes the request's fields as the page
sends them (strings) and returns JSON-ready data. Bad input comes back as an
``{"error": ...}`` answer naming the field and, for the expression, the
column, so that the page can mark it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import einderive as ed
from einderive.emit.outputs import EMITTERS
from einderive.options import parse_params, parse_ranges, parse_shapes

# The page's limits: the text a person types, and tensors small enough to draw and check.
MAX_EXPRESSION = 4000
MAX_FIELD = 400
MAX_ELEMENTS = 1_000_000  # of one tensor given numeric sizes
MAX_JACOBIAN_SIDE = 1024  # elements of the output, and of the input, to draw a Jacobian
SOURCE_KINDS = ("loops", "numpy", "jax", "torch")
FIELDS = ("expression", "params", "shapes", "ranges")


class FieldError(ed.ArgumentError):
    """Bad text in one of the page's fields (the parameters, shapes or ranges)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _entries(text: str) -> list[str]:
    """``"s = 2, N=8"`` -> ``["s=2", "N=8"]``: entries split at commas, semicolons or spaces."""
    text = re.sub(r"\s*=\s*", "=", text.strip())
    return [entry for entry in re.split(r"[,;\s]+", text) if entry]


def _field(request: Mapping[str, Any], name: str, limit: int) -> str:
    value = request.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldError(f"{name} must be text, not {type(value).__name__}", name)
    if len(value) > limit:
        raise FieldError(f"{name} is {len(value)} characters long; the page takes {limit}", name)
    return value


def _parsed(field: str, parse: Callable[[list[str]], Any], text: str) -> Any:
    try:
        return parse(_entries(text))
    except ed.EinderiveError as error:
        raise FieldError(error.message, field) from None


def arguments(request: Mapping[str, Any]) -> tuple[str, dict, dict, dict]:
    """The expression, params, shapes and ranges of a request, checked against the limits."""
    text = _field(request, "expression", MAX_EXPRESSION)
    if not text.strip():
        raise FieldError("type an expression, e.g. Y[i] = W[m]*X[i+m]", "expression")
    params = _parsed("params", parse_params, _field(request, "params", MAX_FIELD))
    shapes = _parsed("shapes", parse_shapes, _field(request, "shapes", MAX_FIELD))
    ranges = _parsed("ranges", parse_ranges, _field(request, "ranges", MAX_FIELD))
    for name, shape in shapes.items():
        if any(n < 1 for n in shape):
            raise FieldError(f"the shape of {name} has an axis of size {min(shape)}", "shapes")
        if math.prod(shape) > MAX_ELEMENTS:
            raise FieldError(
                f"{name} has {math.prod(shape)} elements; the page takes at most {MAX_ELEMENTS}",
                "shapes",
            )
    return text, params, shapes, ranges


def error_answer(error: Exception, text: str | None = None) -> dict[str, Any]:
    """An error as JSON: its kind, message, and where it is (a field; line, column, span)."""
    if isinstance(error, FieldError):
        return {"error": {"kind": "ArgumentError", "message": error.message, "field": error.field}}
    if isinstance(error, ed.EinderiveError):
        if text is not None and error.span is not None:
            error.with_text(text)
        located = error.span is not None and error.text is not None
        return {
            "error": {
                "kind": type(error).__name__,
                "message": error.message,
                "field": "expression" if located else None,
                "line": error.line,
                "column": error.column,
                "span": list(error.span) if located and error.span is not None else None,
            }
        }
    # a bug in einderive, not bad input: say so plainly rather than hide it
    return {"error": {"kind": "InternalError", "message": f"{type(error).__name__}: {error}"}}


def _conv_blocks(derivation: ed.Derivation) -> dict[str, dict[str, Any]]:
    """The ``--emit conv`` text, a block per pullback, its generic, JAX and PyTorch lines apart."""
    names = {pullback.name: tensor for tensor, pullback in derivation.pullbacks.items()}
    blocks: dict[str, dict[str, Any]] = {}
    definitions: list[str] = []
    current: dict[str, Any] | None = None
    for line in EMITTERS["conv"](derivation).splitlines():
        if line.startswith("padding_mode"):  # the forward's section: the JSON carries it
            break
        head = line.split(" ", 1)[0].rstrip(":")
        if not line.startswith(" ") and head in names:
            current = {"lines": [line], "generic": [line], "jax": None, "torch": None}
            blocks[names[head]] = current
        elif current is None:
            definitions.append(line)
        else:
            current["lines"].append(line)
            body = line.strip()
            for framework in ("jax", "torch"):
                if body.startswith(f"{framework}:"):
                    current[framework] = body.split(":", 1)[1].strip()
                    break
            else:
                current["generic"].append(body)
    for block in blocks.values():
        block["generic"] = "\n".join(block["generic"])
        block["definitions"] = definitions
    return blocks


def _sources(derivation: ed.Derivation) -> dict[str, dict[str, str]]:
    sources = {}
    for kind in SOURCE_KINDS:
        try:
            sources[kind] = {"code": derivation.source(kind)}
        except Exception as error:  # noqa: BLE001 - one tab fails, the page still shows
            sources[kind] = {"error": _failure(error)}
    return sources


def _element(name: str, shape: tuple[int, ...], flat: int) -> str:
    if not shape:
        return name
    return f"{name}[{', '.join(str(int(k)) for k in np.unravel_index(flat, shape))}]"


def _jacobian(derivation: ed.Derivation, wrt: str) -> dict[str, Any]:
    """The Jacobian in ``wrt`` for the picture: numbers, entries, and what each element is."""
    jacobian: Any = derivation.jacobian(wrt)
    rows, columns = jacobian.shape
    cells = jacobian.cells() if jacobian.entries is not None else None
    legend = {
        str(symbol): _element(name, tuple(np.shape(jacobian.point[name])), flat)
        for name, symbols in jacobian.symbols.items()
        for flat, symbol in enumerate(symbols)
    }
    return {
        "output": jacobian.output,
        "wrt": wrt,
        "output_shape": list(jacobian.output_shape),
        "wrt_shape": list(jacobian.wrt_shape),
        "rows": rows,
        "columns": columns,
        "affine": bool(jacobian.affine),
        "values": [round(float(v), 6) for v in np.ravel(jacobian.matrix)],
        "cells": None if cells is None else [c for row in cells for c in row],
        "legend": legend,
        "header": jacobian.header(),
    }


def _jacobians(derivation: ed.Derivation, data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    shapes = data["shapes"]
    if not all(str(n).isdigit() for shape in shapes.values() for n in shape):
        return {}
    pictures: dict[str, dict[str, Any]] = {}
    output_size = math.prod(int(n) for n in shapes[data["output"]])
    for wrt in derivation.pullbacks:
        wrt_size = math.prod(int(n) for n in shapes[wrt])
        if max(output_size, wrt_size) > MAX_JACOBIAN_SIDE:
            pictures[wrt] = {
                "skipped": f"{output_size} x {wrt_size}: too large to draw "
                f"(the page draws up to {MAX_JACOBIAN_SIDE} on a side)"
            }
            continue
        try:
            pictures[wrt] = _jacobian(derivation, wrt)
        except Exception as error:  # noqa: BLE001 - one picture fails, the page still shows
            pictures[wrt] = {"skipped": _failure(error)}
    return pictures


def _failure(error: Exception) -> str:
    """What went wrong, in a line: an einderive error's message, else the exception itself."""
    if isinstance(error, ed.EinderiveError):
        return error.message
    return f"{type(error).__name__}: {error} (a bug in einderive: please report it)"


def _optional(problems: list[str], part: str, compute: Callable[[], Any], fallback: Any) -> Any:
    """One part of the page; if it fails, the rest still shows and ``problems`` says why."""
    try:
        return compute()
    except Exception as error:  # noqa: BLE001 - shown on the page, not hidden
        problems.append(f"{part} could not be shown: {_failure(error)}")
        return fallback


def _steps(derivation: ed.Derivation) -> list[dict[str, Any]]:
    explanation: Any = derivation.explain()
    return [
        {"title": step.title, "latex": step.latex, "text": step.text(), "tensor": step.tensor}
        for step in explanation.steps
    ]


def derive_answer(request: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the page shows for one derivation (what ``--emit json`` gives, and more)."""
    text = None
    try:
        text, params, shapes, ranges = arguments(request)
        derivation = ed.derive(text, params or None, shapes or None, ranges or None)
        data = json.loads(EMITTERS["json"](derivation))
        problems: list[str] = []
        steps = _optional(problems, "the derivation steps", lambda: _steps(derivation), [])
        conv = _optional(problems, "the convolution calls", lambda: _conv_blocks(derivation), {})
        return _json_safe(
            {
                "derivation": data,
                "text": str(derivation),
                "latex": {
                    "forward": steps[0]["latex"] if steps else None,
                    "backward": derivation.latex(),
                },
                "steps": steps,
                "conv": conv,
                "sources": _sources(derivation),
                "jacobians": _jacobians(derivation, data),
                "problems": problems,
            }
        )
    except Exception as error:  # noqa: BLE001 - every failure becomes an answer the page shows
        return error_answer(error, text)


def _json_safe(value: Any) -> Any:
    """``value`` for JSON, which has no NaN or infinity: those become text (``"nan"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def verify_answer(request: Mapping[str, Any]) -> dict[str, Any]:
    """``ed.verify`` on the request: its report as JSON (what ``--emit json --verify`` carries),
    with what the badge shows: the largest error, the backends, the failed checks."""
    text = None
    try:
        text, params, shapes, ranges = arguments(request)
        report = ed.verify(text, params or None, shapes or None, ranges or None)
        verification = report.as_dict()
        verification["report"] = str(report)
        verification["worst_error"] = max((c.error for c in report.checks), default=math.nan)
        verification["backends"] = sorted({c.backend for c in report.checks})
        verification["failures"] = [str(check) for check in report.failures]
        return {"verification": _json_safe(verification)}
    except Exception as error:  # noqa: BLE001 - every failure becomes an answer the page shows
        return error_answer(error, text)


JOBS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "derive": derive_answer,
    "verify": verify_answer,
}


def warm_up() -> None:
    """Import and exercise every backend once, so that a worker's first request is not slow."""
    verify_answer({"expression": "Y[i] = W[m]*X[i+m]", "shapes": "X=4, W=2"})
