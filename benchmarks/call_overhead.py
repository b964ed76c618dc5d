"""What a call costs: repeated ``ed.vjp`` and ``ed.compile(...).vjp`` against the printed module.

The small convolution of the compile-once issue (batch 2, 3 -> 4 channels, 8x8,
3x3 kernel, one zero of padding before each axis, float64), one thread, in one run:

* ``emitted``: the ``vjp`` of the module ``--emit numpy`` prints, called directly
  (the floor: the printed code's own time);
* ``compiled``: ``c = ed.compile(text, backend="numpy")`` once, then ``c.vjp(dY, X=..., W=...)``;
* ``ed.vjp``: ``ed.vjp(text, inputs, dY, backend="numpy")`` every time (cached by
  text and shapes);
* ``torch``: ``torch.autograd.grad`` of ``conv2d`` (the peer), when torch is installed.

Each round times every row over the same number of calls, in a shuffled order;
the ratios are medians of the per-round ratios (this VM's speed drifts). Targets:
compiled / emitted <= 1.1, ed.vjp / emitted <= 1.5, both under 1 ms a call.

``--clock cpu`` times with the thread's CPU clock instead of the wall clock: on a
machine shared with other work, time spent descheduled then does not count (the
wall clock is the default and the acceptance measure).

Run: ``python benchmarks/call_overhead.py [--rounds 30] [--calls 200] [--clock wall|cpu]``.
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

TEXT = "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,i+m-1,j+n-1]"
X_SHAPE, W_SHAPE = (2, 3, 8, 8), (4, 3, 3, 3)


def _per_call(
    function: Callable[[], object], calls: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    start = clock()
    for _ in range(calls):
        function()
    return (clock() - start) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(X_SHAPE), rng.standard_normal(W_SHAPE)
    inputs = {"X": x, "W": w}
    dy = rng.standard_normal(ed.evaluate(TEXT, inputs).shape)

    module: dict = {}
    exec(ed.derive(TEXT, shapes={"X": X_SHAPE, "W": W_SHAPE}).source("numpy"), module)
    compiled = ed.compile(TEXT, backend="numpy")
    expected = ed.vjp(TEXT, inputs, dy, backend="loops")
    for name, value in compiled.vjp(dy, **inputs).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-10)

    rows: dict[str, Callable[[], object]] = {
        "emitted": lambda: module["vjp"](dy, w, x),
        "compiled": lambda: compiled.vjp(dy, X=x, W=w),
        "ed.vjp": lambda: ed.vjp(TEXT, inputs, dy, backend="numpy"),
    }
    try:
        import torch

        torch.set_num_threads(1)
        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        tdy = torch.from_numpy(dy)

        def autograd() -> object:
            # X[b,c,i+m-1,j+n-1]: one zero before each spatial axis, none after
            y = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (1, 0, 1, 0)), tw)
            return torch.autograd.grad(y, (tx, tw), tdy)

        rows["torch"] = autograd
    except ImportError:
        pass

    times: dict[str, list[float]] = {name: [] for name in rows}
    order = list(rows)
    shuffle = random.Random(0)
    for function in rows.values():  # warm up every path (first calls compile)
        _per_call(function, 5)
    for _ in range(args.rounds):
        shuffle.shuffle(order)
        for name in order:
            times[name].append(_per_call(rows[name], args.calls, clock))

    print(f"{TEXT}   X {X_SHAPE}, W {W_SHAPE}, float64, one thread")
    print(f"{args.rounds} rounds of {args.calls} calls; medians; {args.clock} clock")
    print(f"{'path':10} {'per call':>10} {'/ emitted':>10}")
    ratios: dict[str, float] = {}
    for name in rows:
        per_round = [t / e for t, e in zip(times[name], times["emitted"], strict=True)]
        ratios[name] = statistics.median(per_round)
        median_ms = statistics.median(times[name]) * 1e3
        print(f"{name:10} {median_ms:8.3f} ms {ratios[name]:10.2f}")
    checks = [
        ("compiled / emitted <= 1.1", ratios["compiled"] <= 1.1),
        ("ed.vjp / emitted <= 1.5", ratios["ed.vjp"] <= 1.5),
        ("compiled under 1 ms", statistics.median(times["compiled"]) < 1e-3),
        ("ed.vjp under 1 ms", statistics.median(times["ed.vjp"]) < 1e-3),
    ]
    for label, ok in checks:
        print(f"{'met' if ok else 'NOT MET':8} {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
