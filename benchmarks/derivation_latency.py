"""Derivation latency: how long einderive takes to derive, each figure beside its target.

::

    python benchmarks/derivation_latency.py            # --repeat 15 --cli-runs 5

What is timed (one process, threads pinned to 1 before any import):

* the seed thread's ``Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]``, ``s`` symbolic, and a
  3-D multi-channel strided, dilated, padded convolution with bias: parse,
  analysis, both pullbacks and convolution recognition, i.e.
  ``derive_program(analyse(text)).convolutions`` (which bypasses ``ed.derive``'s
  cache). Three figures each:

  - *first*: the first derivation in the process, imports done (the grammar is
    loaded lazily, so the first call pays for it);
  - *warm*: the median over repeated derivations after einderive's own caches
    are cleared (``ir._normalise``, the grammar stays loaded): a new expression in
    a warm process. **This is the figure compared with the target**;
  - *cached*: the median with every cache hot (the same expression again).

* programs of 1, 2, 4, 8 statements (``Z1[i] = W1[m]*X[i+m]; Z2[i] = relu(Z1[i]);
  ...``), warm: the time per statement must not grow (ratio of the per-statement
  time of 8 statements to that of 1 at most 1.5);
* the CLI's cold start: ``python -m einderive "<seed>"`` as a subprocess, median
  of ``--cli-runs``, beside ``python -c "import sympy"`` (the floor);
* the scaling table (issue 15): sums of 50 ... 1,000 distinct shifted tensors
  (``Y[i] = X0[i+0] + X1[i+1] + ...``), products of 10, 50, 100 factors
  (``X0[i+0]*X1[i+1]*...``), programs of 10, 50, 100 statements (``chain``), 2-D
  stencils of 25, 100, 400 taps with named coefficients (``c0_0*X[i+0,j+0] + ...``).
  Each is derived as a user would, ``str(ed.derive(text))`` and its
  ``.convolutions``, with einderive's own caches cleared and sympy's warm from a
  different expression. The figure is the process's CPU time, the fastest of
  ``--scaling-runs``: with one thread it is the derivation's own time, which wall
  time equals on an idle machine, while on this shared 2-core VM wall time mostly
  measures the other processes (the load average is printed; wall time is shown
  beside each figure). The growth exponent ``log(t2 / t1) / log(n2 / n1)`` is taken
  between the last two sizes. Then the CLI on the largest sum (``einderive -``
  reading it from standard input), its CPU time and wall time.

What the profiles showed (pyinstrument and cProfile, one thread), and what was done:

* a sum of 30 shifted tensors spent 90 % in sympy's ``Min.__new__`` inferring the
  output's extent (pairwise ``is_ge`` through the assumptions system): quadratic
  with a large constant. Minima and maxima are now built by ``einderive.affine``
  (numbers folded, one argument per shape, an argument that another provably bounds
  dropped, candidate pairs found through an index of shared terms) and kept
  unevaluated; the solver's sign questions go to the same interval prover;
* a sum of 200 was refused (each ``+`` nested one level deeper): chains are one
  node from the parser on;
* then, at 200-1,000 terms: ``sympy.expand`` and ``Expr.coeff`` on expressions that
  were already expanded (a fast path; ``ir.coefficient``), copies of the set of
  taken names per pullback and per cotangent name, the derivation's shapes rebuilt
  for each pullback's recognition, and derived extents re-expanded through every
  definition for each comparison (quadratic in a program's statements);
* a product of n factors has n pullbacks of n - 1 reads each, an output quadratic
  in n; what each read costs was cut to a few microseconds: index substitution term
  by term in exact integers (``ir.substitute``), and index printing remembered per
  printer, order and expression (the reads of all pullbacks share few indices).
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"
CONV3D = "Y[b,o,i,j,k] = W[o,c,l,m,n]*X[b,c,2*i+2*l-1, 2*j+2*m-1, 2*k+2*n-1] + B[o]"
CONV3D_SYMBOLIC = "Y[b,o,i,j,k] = W[o,c,l,m,n]*X[b,c,s*i+d*l-p, s*j+d*m-p, s*k+d*n-p] + B[o]"
TARGETS = {"seed": 0.050, "conv3d": 0.200, "cli": 1.5, "growth": 1.5, "exponent": 1.3}
# issue 15: these sizes derive within their bound (seconds of the one thread)
SCALING_BOUNDS = {
    ("sum", 200): 2.0,
    ("sum", 1000): 10.0,
    ("product", 100): 0.5,
    ("program", 100): 5.0,
}


def chain(statements: int) -> str:
    """``Z1[i] = W1[m]*X[i+m]; Z2[i] = relu(Z1[i]); Z3[i] = W3[m]*Z2[i+m]; ...``."""
    lines = []
    for k in range(1, statements + 1):
        previous = "X" if k == 1 else f"Z{k - 1}"
        if k % 2:
            lines.append(f"Z{k}[i] = W{k}[m]*{previous}[i+m]")
        else:
            lines.append(f"Z{k}[i] = relu({previous}[i])")
    return "; ".join(lines)


def shifted_sum(terms: int) -> str:
    """``Y[i] = X0[i+0] + X1[i+1] + ...``: distinct tensors, each read shifted."""
    return "Y[i] = " + " + ".join(f"X{k}[i+{k}]" for k in range(terms))


def product(factors: int) -> str:
    """``Y[i] = X0[i+0]*X1[i+1]*...``: n pullbacks of n - 1 reads each."""
    return "Y[i] = " + "*".join(f"X{k}[i+{k}]" for k in range(factors))


def stencil(taps: int) -> str:
    """A square 2-D stencil written out with named coefficients: ``c0_0*X[i+0,j+0] + ...``."""
    side = math.isqrt(taps)
    return "Y[i,j] = " + " + ".join(
        f"c{a}_{b}*X[i+{a},j+{b}]" for a in range(side) for b in range(side)
    )


SCALING: list[tuple[str, Callable[[int], str], tuple[int, ...]]] = [
    ("sum of shifted tensors", shifted_sum, (50, 100, 200, 400, 1000)),
    ("product of factors", product, (10, 50, 100)),
    ("program of statements", chain, (10, 50, 100)),
    ("2-D stencil of taps", stencil, (25, 100, 400)),
]


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed derivations per figure")
    parser.add_argument("--cli-runs", type=int, default=5, help="CLI subprocess runs")
    parser.add_argument("--scaling-runs", type=int, default=3, help="runs per scaling size")
    parser.add_argument(
        "--only-scaling", action="store_true", help="the scaling table alone (issue 15)"
    )
    return parser.parse_args(argv)


def derivation(text: str) -> Callable[[], object]:
    from einderive.api import derive_program
    from einderive.front import analyse

    def run() -> object:
        derived = derive_program(analyse(text))
        return derived.convolutions

    return run


def clear_caches() -> None:
    """einderive's own memo tables (not the grammar, not sympy's cache)."""
    from einderive import affine, api, ir
    from einderive.emit import printer

    ir._normalise.cache_clear()
    ir._linear.cache_clear()
    ir._affine.cache_clear()
    affine.interval.cache_clear()
    printer._INDEX_TEXTS.clear()
    api._derive_cached.cache_clear()


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def figures(text: str, repeat: int) -> dict[str, float]:
    run = derivation(text)
    first = timed(run)
    warm = []
    for _ in range(repeat):
        clear_caches()
        warm.append(timed(run))
    cached = [timed(run) for _ in range(repeat)]
    return {"first": first, "warm": statistics.median(warm), "cached": statistics.median(cached)}


def cold_start(command: list[str], runs: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def scaled(text: str, runs: int) -> tuple[float, float]:
    """The fastest of ``runs`` derivations of ``text`` as a user makes them (``ed.derive``,
    printed, recognised), each with einderive's caches cleared: (CPU, wall) seconds."""
    import einderive as ed

    best = (math.inf, math.inf)
    for _ in range(runs):
        clear_caches()
        cpu, wall = time.process_time(), time.perf_counter()
        derivation = ed.derive(text)
        str(derivation)
        assert derivation.convolutions  # recognition is part of what is timed
        best = min(best, (time.process_time() - cpu, time.perf_counter() - wall))
    return best


def scaling_rows(runs: int, row: Callable[..., None]) -> None:
    """The scaling table: each family's sizes, and the growth between the last two."""
    import einderive as ed

    ed.derive("Y[i] = W[m]*X[i+m] + B[i]")  # sympy's caches warm, on another expression
    for family, make, sizes in SCALING:
        times = {}
        for size in sizes:
            cpu, wall = scaled(make(size), runs if size < 400 else min(runs, 2))
            times[size] = cpu
            bound = SCALING_BOUNDS.get((family.split()[0], size))
            row(
                f"{family}: {size}",
                f"{cpu:7.3f} s (wall {wall:6.2f})",
                f"<= {bound:.1f} s" if bound else "",
                None if bound is None else cpu <= bound,
            )
        small, large = sizes[-2:]
        exponent = math.log(times[large] / times[small]) / math.log(large / small)
        row(
            f"{family}: growth exponent {small} -> {large}",
            f"{exponent:8.2f}",
            f"<= {TARGETS['exponent']}",
            exponent <= TARGETS["exponent"],
        )
    largest = shifted_sum(SCALING[0][2][-1])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, "-m", "einderive", "-"],
        input=largest,
        text=True,
        check=True,
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    row(
        f"python -m einderive - (the sum of {SCALING[0][2][-1]}, cold)",
        f"{cpu:7.2f} s (wall {wall:6.2f})",
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.perf_counter()
    import einderive  # noqa: F401  (imports done before anything is timed)
    import einderive.api  # noqa: F401
    import einderive.conv.recognise  # noqa: F401
    import einderive.front  # noqa: F401

    rows: list[tuple[str, str, str, bool | None]] = []

    def row(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        rows.append((name, value, target, ok))

    if not args.only_scaling:
        latency_rows(args, row)
    scaling_rows(args.scaling_runs, row)

    width = max(len(name) for name, *_ in rows)
    print(f"{'measurement':<{width}}  {'value':>22}  {'target':<10}  verdict")
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        print(f"{name:<{width}}  {value:>22}  {target:<10}  {verdict}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"(python {sys.version.split()[0]}, 1 thread, {time.perf_counter() - started:.0f} s; "
        f"load average {load} on {os.cpu_count()} cores)"
    )
    return 0 if all(ok is not False for *_, ok in rows) else 1


def latency_rows(args: argparse.Namespace, row: Callable[..., None]) -> None:
    """The seed, the 3-D convolutions, the core's table, short programs, the CLI."""
    for label, text, target in (
        ("seed, s symbolic", SEED, TARGETS["seed"]),
        ("3-D conv, numbers in the text", CONV3D, TARGETS["conv3d"]),
        ("3-D conv, s, d, p symbolic", CONV3D_SYMBOLIC, TARGETS["conv3d"]),
    ):
        measured = figures(text, args.repeat)
        row(f"{label}: first in process", _ms(measured["first"]))
        row(
            f"{label}: warm (median)",
            _ms(measured["warm"]),
            f"<= {target * 1000:.0f} ms",
            measured["warm"] <= target,
        )
        row(f"{label}: cached (median)", _ms(measured["cached"]))

    # issue 2: each expression of the core's table, derived well under a second
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_pullbacks import CASES

    from einderive.api import derive_program
    from einderive.front import analyse

    slowest = 0.0
    for case in CASES:
        clear_caches()
        start = time.perf_counter()
        derivation = derive_program(analyse(case.text, case.params, case.shapes, case.ranges))
        assert derivation.convolutions  # recognition is part of what is timed
        slowest = max(slowest, time.perf_counter() - start)
    row(
        f"the core's {len(CASES)} expressions: slowest, first time",
        _ms(slowest),
        "<= 1000 ms",
        slowest <= 1.0,
    )

    per_statement = {}
    for statements in (1, 2, 4, 8):
        measured = figures(chain(statements), args.repeat)
        per_statement[statements] = measured["warm"] / statements
        row(
            f"program of {statements} statement{'s' * (statements > 1)}: warm (median)",
            _ms(measured["warm"]) + f"  ({_ms(per_statement[statements]).strip()} each)",
        )
    ratio = per_statement[8] / per_statement[1]
    row(
        "time per statement, 8 vs 1 statements",
        f"{ratio:8.2f} x",
        f"<= {TARGETS['growth']:.1f} x",
        ratio <= TARGETS["growth"],
    )

    python = sys.executable
    floor = cold_start([python, "-c", "import sympy"], args.cli_runs)
    cli = cold_start([python, "-m", "einderive", SEED], args.cli_runs)
    row('python -c "import sympy" (the floor)', f"{floor:8.2f} s")
    row(
        f'python -m einderive "{SEED}"',
        f"{cli:8.2f} s",
        f"<= {TARGETS['cli']:.1f} s",
        cli <= TARGETS["cli"],
    )


if __name__ == "__main__":
    sys.exit(main())
