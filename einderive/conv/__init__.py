"""Convolution calls: the generic call of a pullback and its JAX and PyTorch equivalents."""
