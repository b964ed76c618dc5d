"""A strided convolution layer with bias: the generated backward against PyTorch autograd.

    python examples/conv_layer_vs_torch.py

derives the pullbacks of

    Y[b,o,i,j] = W[o,c,m,n]*X[b,c,s*i+m-1, s*j+n-1] + B[o]      (s = 2)

emits them as vectorized NumPy (``--emit numpy``), runs the emitted module on
random data, and compares the forward with ``torch.nn.functional.conv2d`` and
every pullback with PyTorch's autograd. Prints the largest error and "ok".
"""

import numpy as np
import torch

import einderive as ed
from einderive.emit.vectorized import numpy_source

EXPRESSION = "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,s*i+m-1, s*j+n-1] + B[o]"
STRIDE = 2
TOLERANCE = 1e-10


def main() -> None:
    source = numpy_source(ed.derive(EXPRESSION, params={"s": STRIDE}))
    emitted: dict = {}
    exec(compile(source, "conv_layer_backward", "exec"), emitted)
    print(source[source.index("def pullback_X") :])

    rng = np.random.default_rng(0)
    # X[b, c, s*i+m-1]: one zero of padding on the left; with an even size torch's
    # padding=1 adds no zero that a window reads on the right, so the extents agree
    X = rng.standard_normal((2, 3, 8, 8))
    W = rng.standard_normal((4, 3, 3, 3))
    B = rng.standard_normal(4)

    x, w, b = (torch.tensor(a, requires_grad=True) for a in (X, W, B))
    y = torch.nn.functional.conv2d(x, w, b, stride=STRIDE, padding=1)
    Y = emitted["forward"](W, X, B)
    errors = {"Y": np.max(np.abs(Y - y.detach().numpy()))}

    dY = rng.standard_normal(Y.shape)
    (y * torch.from_numpy(dY)).sum().backward()
    for name, tensor in (("W", w), ("X", x), ("B", b)):
        pullback = emitted[f"pullback_{name}"](dY, W, X, B)
        errors[f"d{name}"] = np.max(np.abs(pullback - tensor.grad.numpy()))

    for name, error in errors.items():
        print(f"{name:3} max error against torch: {error:.1e}")
    largest = max(errors.values())
    print(f"max error {largest:.1e}")
    assert largest < TOLERANCE, errors
    print("ok")


if __name__ == "__main__":
    main()
