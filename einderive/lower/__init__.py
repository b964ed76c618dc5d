"""The lowering stage: each statement once, as an array program the vectorized printers print."""
