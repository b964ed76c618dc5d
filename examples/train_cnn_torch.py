"""A small CNN whose every layer is a derived op, trained in PyTorch against torch.nn.

    python examples/train_cnn_torch.py [--steps 100]

Each layer is written in the notation and compiled with
``ed.compile(..., backend="torch")``: a layer with weights is ``.module(params_of=...)``
(an ``nn.Module`` whose backward is the derived pullbacks), one without is
``.function`` (a ``torch.autograd.Function``'s apply). The same network built of
``torch.nn`` layers starts from the same weights; both are trained with SGD on a
synthetic task (``cnn_task.py``: which quadrant of a 12x12 image holds a bright
square), in float64. The two losses agree at every step (relative
difference below 1e-9); the script prints both curves, the final accuracy and "ok".
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from cnn_task import CLASSES, LAYERS, RANGES, report, task

import einderive as ed


class DerivedNet(torch.nn.Module):
    """The network of derived ops."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()

        def layer(name: str) -> torch.nn.Module:
            compiled = ed.compile(LAYERS[name], backend="torch")
            return compiled.module(params_of=["W", "B"])(
                weights[f"{name}.W"].clone(), weights[f"{name}.B"].clone()
            )

        def function(name: str) -> Any:
            return ed.compile(LAYERS[name], ranges=RANGES.get(name), backend="torch").function

        self.conv, self.strided, self.linear = layer("conv"), layer("strided"), layer("linear")
        self.relu, self.pool = function("relu"), function("pool")
        self.average, self.loss = function("average"), function("loss")

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hidden = self.pool(self.relu(self.conv(images)))
        logits = self.linear(self.average(self.relu(self.strided(hidden))))
        return self.loss(T=targets, X=logits), logits


class TorchNet(torch.nn.Module):
    """The same network of torch.nn layers."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        double = {"dtype": torch.float64}
        self.conv = torch.nn.Conv2d(1, 4, 3, **double)
        self.strided = torch.nn.Conv2d(4, 8, 3, stride=2, **double)
        self.linear = torch.nn.Linear(8, CLASSES, **double)
        with torch.no_grad():
            for name in ("conv", "strided", "linear"):
                getattr(self, name).weight.copy_(weights[f"{name}.W"])
                getattr(self, name).bias.copy_(weights[f"{name}.B"])

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hidden = torch.nn.functional.max_pool2d(torch.relu(self.conv(images)), 2)
        features = torch.relu(self.strided(hidden)).mean(dim=(2, 3))
        logits = self.linear(features)
        return torch.nn.functional.cross_entropy(logits, labels), logits


def train(steps: int, learning_rate: float = 0.1) -> tuple[list[float], list[float], float]:
    """Both networks trained side by side: their losses per step, and the derived net's
    final accuracy on the training batch."""
    images, labels, initial = task()
    weights = {name: torch.tensor(value) for name, value in initial.items()}
    x = torch.tensor(images)
    targets = torch.nn.functional.one_hot(torch.tensor(labels), CLASSES).to(torch.float64)
    derived, reference = DerivedNet(weights), TorchNet(weights)
    optimisers = [
        torch.optim.SGD(net.parameters(), lr=learning_rate) for net in (derived, reference)
    ]
    curves: tuple[list[float], list[float]] = ([], [])
    for _ in range(steps):
        for net, optimiser, curve, target in zip(
            (derived, reference), optimisers, curves, (targets, torch.tensor(labels)), strict=True
        ):
            optimiser.zero_grad()
            loss, _ = net(x, target)
            loss.backward()
            optimiser.step()
            curve.append(float(loss))
    with torch.no_grad():
        _, logits = derived(x, targets)
    accuracy = float((logits.argmax(dim=1) == torch.tensor(labels)).double().mean())
    return curves[0], curves[1], accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    steps = parser.parse_args().steps
    ours, theirs, accuracy = train(steps)
    report(ours, theirs, accuracy, "torch.nn")


if __name__ == "__main__":
    main()
