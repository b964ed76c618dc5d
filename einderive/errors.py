"""One error family: everything einderive raises on bad input is an EinderiveError."""

from __future__ import annotations

Span = tuple[int, int]


class EinderiveError(Exception):
    """Base class of every error einderive raises on bad input.

    ``span`` is the ``(start, end)`` character range of the offending text, when
    the problem comes from the text; ``column`` is 1-based, as editors count.
    """

    def __init__(self, message: str, span: Span | None = None, text: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.text = text

    @property
    def line(self) -> int | None:
        if self.span is None or self.text is None:
            return None
        return self.text.count("\n", 0, self.span[0]) + 1

    @property
    def column(self) -> int | None:
        if self.span is None or self.text is None:
            return None
        return self.span[0] - (self.text.rfind("\n", 0, self.span[0]) + 1) + 1

    def with_text(self, text: str) -> EinderiveError:
        """The same error, attached to the source text it points into."""
        if self.text is None:
            self.text = text
        return self

    def get_context(self, width: int = 80) -> str:
        """The offending source line with carets under the span (a window of long lines)."""
        if self.span is None or self.text is None:
            return ""
        start, end = self.span
        line_start = self.text.rfind("\n", 0, start) + 1
        line_end = self.text.find("\n", start)
        if line_end == -1:
            line_end = len(self.text)
        left = max(line_start, start - width // 2)
        right = min(line_end, max(start + width // 2, left + width))
        line = self.text[left:right]
        prefix = "..." if left > line_start else ""
        suffix = "..." if right < line_end else ""
        # keep tabs, so that the caret lines up under tabbed text
        indent = "".join(c if c == "\t" else " " for c in self.text[left:start])
        carets = "^" * max(1, min(end, right) - start)
        return f"    {prefix}{line}{suffix}\n    {' ' * len(prefix)}{indent}{carets}"

    def __str__(self) -> str:
        if self.span is None or self.text is None:
            return self.message
        return f"{self.message} (line {self.line}, column {self.column})\n{self.get_context()}"


class NotationSyntaxError(EinderiveError):
    """The text does not follow the grammar of the notation."""


class IndexNotationError(EinderiveError):
    """An index expression is not affine, or an index is used inconsistently."""


class ExtentError(EinderiveError):
    """An index has no extent, or two extents disagree."""


class ArgumentError(EinderiveError):
    """Bad arguments to the API or the CLI (params, shapes, ranges, inputs)."""


class BackendMissingError(EinderiveError, ImportError):
    """An optional backend (jax, torch) is not installed."""


class VerificationError(EinderiveError):
    """A derived artifact disagrees with its reference."""


class ImplicitSumWarning(UserWarning):
    """An implicit (Einstein) sum wraps a whole term whose summed indices appear only
    inside elementwise functions: ``relu(W[m]*X[i+m])`` is ``sum_{m}(relu(...))``, which
    is what the notation says but rarely what a layer means."""
