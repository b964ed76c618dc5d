"""The pullback of an embedding lookup: emitted NumPy against torch autograd, one thread.

``Y[b,d] = E[tok[b], d]`` with a vocabulary of 50,000, a dimension of 256 and a
batch of 4,096 tokens (drawn with repeats), float64. Rows:

* ``emitted``: ``pullback_E`` of the module ``--emit numpy`` prints: one
  ``_scatter_add`` (``np.add.at`` into zeros of the table's shape);
* ``torch``: ``torch.autograd.grad`` of ``torch.nn.functional.embedding`` (its
  dense backward, the peer).

Each round times both rows in a shuffled order; the ratio is the median of the
per-round ratios (this VM's speed drifts). Target: emitted / torch <= 2.

Run: ``python benchmarks/embedding_backward.py [--rounds 15]``.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

import einderive as ed  # noqa: E402

TEXT = "Y[b,d] = E[tok[b], d]"
VOCABULARY, DIM, BATCH = 50_000, 256, 4_096
TARGET = 2.0


def _seconds(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCABULARY, DIM))
    tokens = rng.integers(0, VOCABULARY, BATCH)
    cotangent = rng.standard_normal((BATCH, DIM))

    module: dict = {}
    shapes = {"E": table.shape, "tok": tokens.shape}
    exec(ed.derive(TEXT, shapes=shapes).source("numpy"), module)
    pullback = module["pullback_E"]

    table_t = torch.tensor(table, requires_grad=True)
    tokens_t = torch.tensor(tokens)
    cotangent_t = torch.tensor(cotangent)
    output_t = torch.nn.functional.embedding(tokens_t, table_t)

    def emitted() -> np.ndarray:
        return pullback(cotangent, table, tokens)

    def autograd() -> object:
        return torch.autograd.grad(output_t, table_t, cotangent_t, retain_graph=True)[0]

    expected = autograd().numpy()  # type: ignore[attr-defined]
    np.testing.assert_allclose(emitted(), expected, atol=1e-12)  # the same numbers first

    rows = {"emitted": emitted, "torch": autograd}
    times: dict[str, list[float]] = {name: [] for name in rows}
    ratios = []
    order = list(rows)
    for _ in range(args.rounds):
        random.shuffle(order)
        taken = {name: _seconds(rows[name]) for name in order}
        for name, seconds in taken.items():
            times[name].append(seconds)
        ratios.append(taken["emitted"] / taken["torch"])
    print(f"{TEXT}: vocabulary {VOCABULARY:,}, dim {DIM}, batch {BATCH:,} tokens, float64")
    for name in rows:
        print(f"  {name:8s} median {statistics.median(times[name]) * 1e3:8.1f} ms")
    ratio = statistics.median(ratios)
    verdict = "within" if ratio <= TARGET else "NOT within"
    print(f"  emitted / torch: {ratio:.2f} (median of {args.rounds} rounds; {verdict} {TARGET}x)")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
