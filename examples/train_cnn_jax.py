"""A small CNN whose every layer is a derived op, trained in JAX against jax.lax.

    python examples/train_cnn_jax.py [--steps 100]

The layers of ``cnn_task.py``, each compiled with ``ed.compile(...,
backend="jax")``: ``.function`` is a ``jax.custom_vjp`` function whose backward is the
derived pullbacks, so ``jax.jit(jax.value_and_grad(loss))`` runs them. The same
network written with ``jax.lax`` and ``jax.nn`` starts from the same weights; both are
trained with SGD in float64 on the same synthetic task, and their losses agree at
every step (relative difference below 1e-9). Prints both curves, the final accuracy
and "ok".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from cnn_task import BATCH, CLASSES, LAYERS, RANGES, report, task

import einderive as ed

jax.config.update("jax_enable_x64", True)


def derived_loss() -> Callable[..., Any]:
    """The loss of the network of derived ops: (weights, images, targets) -> (loss, logits)."""

    def op(name: str) -> Callable[..., Any]:
        return ed.compile(LAYERS[name], ranges=RANGES.get(name), backend="jax").function

    conv, relu, pool = op("conv"), op("relu"), op("pool")
    strided, average, linear, loss = op("strided"), op("average"), op("linear"), op("loss")

    def network(weights: dict[str, Any], images: Any, targets: Any) -> tuple[Any, Any]:
        hidden = pool(relu(conv(W=weights["conv.W"], X=images, B=weights["conv.B"])))
        features = average(relu(strided(W=weights["strided.W"], X=hidden, B=weights["strided.B"])))
        logits = linear(W=weights["linear.W"], X=features, B=weights["linear.B"])
        return loss(T=targets, X=logits), logits

    return network


def lax_loss(weights: dict[str, Any], images: Any, targets: Any) -> tuple[Any, Any]:
    """The same network of jax.lax and jax.nn operations."""

    def conv(x: Any, name: str, stride: int) -> Any:
        out = jax.lax.conv_general_dilated(x, weights[f"{name}.W"], (stride, stride), "VALID")
        return out + weights[f"{name}.B"][None, :, None, None]

    hidden = jax.nn.relu(conv(images, "conv", 1))
    hidden = jax.lax.reduce_window(
        hidden, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"
    )
    features = jax.nn.relu(conv(hidden, "strided", 2)).mean(axis=(2, 3))
    logits = features @ weights["linear.W"].T + weights["linear.B"]
    return -jnp.sum(targets * jax.nn.log_softmax(logits)) / BATCH, logits


def train(steps: int, learning_rate: float = 0.1) -> tuple[list[float], list[float], float]:
    """Both networks trained side by side: their losses per step, and the derived net's
    final accuracy on the training batch."""
    images, labels, initial = task()
    weights = {name: jnp.asarray(value) for name, value in initial.items()}
    x, targets = jnp.asarray(images), jax.nn.one_hot(labels, CLASSES, dtype=jnp.float64)
    networks = [derived_loss(), lax_loss]
    steps_of = [jax.jit(jax.value_and_grad(net, has_aux=True)) for net in networks]
    states = [weights, dict(weights)]
    curves: tuple[list[float], list[float]] = ([], [])
    for _ in range(steps):
        for k, step in enumerate(steps_of):
            (loss, _), grads = step(states[k], x, targets)
            states[k] = {name: states[k][name] - learning_rate * grads[name] for name in grads}
            curves[k].append(float(loss))
    _, logits = networks[0](states[0], x, targets)
    accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=1) == labels))
    return curves[0], curves[1], accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    steps = parser.parse_args().steps
    ours, theirs, accuracy = train(steps)
    report(ours, theirs, accuracy, "jax.lax")


if __name__ == "__main__":
    main()
