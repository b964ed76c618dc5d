"""Shared test helpers: where an error's caret points; a fast ``verify``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

import pytest


class Caret(NamedTuple):
    """The source line an error message quotes, and what its carets underline."""

    source: str
    column: int  # 1-based, as in the message's "(line L, column C)"
    underlined: str


def caret_of(message: str) -> Caret:
    """Read the last two lines of ``message``: the quoted source line and the caret line."""
    *_, source, carets = message.rstrip("\n").split("\n")
    assert source.startswith("    ") and carets.startswith("    "), message
    source, carets = source[4:], carets[4:]
    width = carets.count("^")
    assert width and carets.strip(" \t") == "^" * width, f"not a caret line: {carets!r}"
    start = carets.index("^")
    return Caret(source, start + 1, source[start : start + width])


@pytest.fixture
def caret() -> Callable[[str], Caret]:
    return caret_of


@pytest.fixture
def loops_only(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``verify`` against finite differences only: importing jax and torch alone takes seconds.

    Returns the module ``einderive.verify`` (``einderive.verify`` as an attribute is the function).
    """
    verify = importlib.import_module("einderive.verify")
    monkeypatch.setattr(verify, "available_backends", lambda: ["loops"])
    return verify
