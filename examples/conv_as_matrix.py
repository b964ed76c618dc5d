"""A convolution is a matrix: its Jacobian, and the pullback as the transposed matrix.

    python examples/conv_as_matrix.py

For ``Y[i,j] = K[p,q]*X[i+p,j+q]`` with X 3x3 and K 2x2 (the conv-as-matrix
notes), the output is linear in X: ``vec(Y) = J vec(X)`` with J a 4x9 matrix.
J is built column by column, evaluating the forward (``einderive.evaluate``) on
the 9 unit inputs, and printed with the kernel's elements k1..k4 (row-major)
in place of their values. The derived pullback must then be the transpose:
``dX = J^T dY`` for any cotangent dY. Prints "ok" when it is.

(The notes write the first three rows of the matrix with 8 entries; J has 9
columns, one per element of X, as the printed matrix shows.)
"""

import numpy as np

import einderive as ed

EXPRESSION = "Y[i,j] = K[p,q]*X[i+p,j+q]"


def jacobian(kernel: np.ndarray) -> np.ndarray:
    """d vec(Y) / d vec(X): column k is the forward of the k-th unit input."""
    columns = []
    for k in range(9):
        unit = np.zeros(9)
        unit[k] = 1.0
        y = ed.evaluate(EXPRESSION, {"K": kernel, "X": unit.reshape(3, 3)})
        columns.append(y.ravel())
    return np.stack(columns, axis=1)


def symbolic(matrix: np.ndarray, kernel: np.ndarray) -> list[list[str]]:
    """Each entry as the kernel element it equals (k1..k4, row-major), or 0."""
    names = []
    for row in matrix:
        entries = []
        for value in row:
            if value == 0:
                entries.append("0")
                continue
            matches = np.flatnonzero(np.isclose(kernel.ravel(), value))
            assert len(matches) == 1, f"{value} is not one kernel element"
            entries.append(f"k{matches[0] + 1}")
        names.append(entries)
    return names


def main() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.uniform(1.0, 2.0, (2, 2))  # distinct, non-zero elements
    matrix = jacobian(kernel)
    assert matrix.shape == (4, 9)

    print(f"{EXPRESSION}, X 3x3, K 2x2: vec(Y) = J vec(X) with J =")
    for k, row in enumerate(symbolic(matrix, kernel)):
        print(f"  y{k + 1} | " + " ".join(f"{entry:>2}" for entry in row))
    print("(every row holds the kernel once: k1 k2 on one row of X, k3 k4 on the next)")

    derivation = ed.derive(EXPRESSION, shapes={"X": (3, 3), "K": (2, 2)})
    print(derivation.pullbacks["X"])
    x = rng.standard_normal((3, 3))
    dY = rng.standard_normal((2, 2))
    dX = ed.vjp(EXPRESSION, {"K": kernel, "X": x}, dY)["X"]
    expected = (matrix.T @ dY.ravel()).reshape(3, 3)
    print("dX = J^T dY:")
    print(np.array2string(dX, precision=4))
    np.testing.assert_allclose(dX, expected, rtol=1e-12, atol=1e-12)
    print("ok")


if __name__ == "__main__":
    main()
