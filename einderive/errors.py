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

    def get_context(self) -> str:
        """The offending source line with carets under the span."""
        if self.span is None or self.text is None:
            return ""
        start, end = self.span
        line_start = self.text.rfind("\n", 0, start) + 1
        line_end = self.text.find("\n", start)
        if line_end == -1:
            line_end = len(self.text)
        line = self.text[line_start:line_end]
        width = max(1, min(end, line_end) - start)
        return f"    {line}\n    {' ' * (start - line_start)}{'^' * width}"

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
