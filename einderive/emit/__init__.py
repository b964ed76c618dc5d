"""Emitters: the notation as text and LaTeX, code, convolution calls, JSON."""
