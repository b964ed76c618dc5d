"""Running derivations: printed modules compiled once (``compile``), and the interpreter."""
