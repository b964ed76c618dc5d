"""A strided 2-D convolution's pullbacks as plain NumPy loops, checked against einderive.vjp.

    python examples/strided_conv_loops.py

prints the emitted module (a forward and one pullback per input, needing only
NumPy), runs it on random data, and prints "ok" when it matches.
"""

import numpy as np

import einderive as ed
from einderive.emit.loops import loops_source

EXPRESSION = "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"
PARAMS = {"s": 2}


def main() -> None:
    source = loops_source(ed.derive(EXPRESSION, params=PARAMS))
    print(source)
    emitted: dict = {}
    exec(compile(source, "strided_conv_loops", "exec"), emitted)

    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 3))
    X = rng.normal(size=(9, 8))
    Y = emitted["forward"](W, X)
    np.testing.assert_allclose(Y, ed.evaluate(EXPRESSION, {"W": W, "X": X}, params=PARAMS))

    dY = rng.normal(size=Y.shape)
    expected = ed.vjp(EXPRESSION, {"W": W, "X": X}, dY, params=PARAMS)
    for name in ("W", "X"):
        pullback = emitted[f"pullback_{name}"](dY, W, X)
        np.testing.assert_allclose(pullback, expected[name], rtol=1e-12, atol=1e-12)
    print("ok")


if __name__ == "__main__":
    main()
