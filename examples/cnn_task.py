"""The network and the task of ``train_cnn_torch.py`` and ``train_cnn_jax.py``.

    python examples/cnn_task.py

A small CNN, each layer one statement of the notation, and a synthetic classification
task. Run as a script, it derives every layer and prints its pullbacks, then "ok".
"""

from __future__ import annotations

import numpy as np

import einderive as ed

BATCH, CLASSES, SIZE = 16, 3, 12
LAYERS = {
    # 1 -> 4 channels, 3x3, valid: 12x12 -> 10x10
    "conv": "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,i+m,j+n] + B[o]",
    "relu": "Y[b,c,i,j] = relu(X[b,c,i,j])",
    # 2x2 max pooling: 10x10 -> 5x5 (the window's extents: ranges={"m": 2, "n": 2})
    "pool": "Y[b,c,i,j] = max_{m,n}(X[b,c,2*i+m,2*j+n])",
    # 4 -> 8 channels, 3x3, stride 2: 5x5 -> 2x2
    "strided": "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,2*i+m,2*j+n] + B[o]",
    "average": "Y[b,c] = sum_{i,j}(X[b,c,i,j]) / 4",
    "linear": "Y[b,k] = W[k,c]*X[b,c] + B[k]",
    # softmax cross-entropy of the logits X against one-hot targets T, averaged
    "loss": f"L = -sum_{{b,k}}(T[b,k] * (X[b,k] - log(sum_{{j}}(exp(X[b,j]))))) / {BATCH}",
}
RANGES = {"pool": {"m": 2, "n": 2}}
# the weights' shapes, in the order both examples draw them
WEIGHTS = {
    "conv.W": (4, 1, 3, 3),
    "conv.B": (4,),
    "strided.W": (8, 4, 3, 3),
    "strided.B": (8,),
    "linear.W": (CLASSES, 8),
    "linear.B": (CLASSES,),
}


def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images with a bright 4x4 square in one quadrant; the class is the quadrant
    (the last two quadrants are one class)."""
    quadrant = rng.integers(0, 4, BATCH)
    images = 0.3 * rng.standard_normal((BATCH, 1, SIZE, SIZE))
    for b, q in enumerate(quadrant):
        top, left = 6 * (q // 2) + 1, 6 * (q % 2) + 1
        images[b, 0, top : top + 4, left : left + 4] += 1.0
    labels = np.minimum(quadrant, CLASSES - 1)
    return images, labels


def task(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The images, their labels and the initial weights (0.5 times standard normal)."""
    rng = np.random.default_rng(seed)
    images, labels = data(rng)
    weights = {name: 0.5 * rng.standard_normal(shape) for name, shape in WEIGHTS.items()}
    return images, labels, weights


def report(ours: list[float], theirs: list[float], accuracy: float, peer: str) -> None:
    """Print both loss curves every tenth step; check they agree and that training learned."""
    print(f"step  derived ops         {peer:<20}relative difference")
    worst = 0.0
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        difference = abs(a - b) / abs(b)
        worst = max(worst, difference)
        if step % 10 == 0 or step == len(ours) - 1:
            print(f"{step:4d}  {a:.15f}   {b:.15f}   {difference:.1e}")
    print(f"final accuracy {accuracy:.2f}; largest relative difference {worst:.1e}")
    assert worst < 1e-9, worst
    assert ours[-1] < ours[0], "the loss did not go down"
    print("ok")


def main() -> None:
    for name, text in LAYERS.items():
        print(f"{name}: {text}")
        print(ed.derive(text, ranges=RANGES.get(name)))
        print()
    print("ok")


if __name__ == "__main__":
    main()
