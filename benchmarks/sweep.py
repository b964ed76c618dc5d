"""The long property sweep: random convolution configurations, derived and verified.

Each configuration of ``tests/strategies.py``'s ``conv_configs`` (1-3 spatial
axes; N < K, N = K, strides that do not divide; paddings beyond the kernel and
negative; stride, dilation and fill 1..4; batch, channels, bias on or off; any
axis order; parameters literal, given or symbolic; sizes given or symbolic) must

* verify: the loops interpreter against finite differences of the forward, the
  NumPy backend against the interpreter (jax and torch too on every 50th), and
* have its pullbacks into X and W recognised as generic convolutions.

::

    python benchmarks/sweep.py --count 10000            # prints count, mismatches, time
    python benchmarks/sweep.py --count 500 --jobs 1 --seed 3

The exit status is 1 if any configuration fails; each failure is printed as the
``ed.verify(...)`` call that reproduces it.

``--oracle`` sweeps ``tests/oracle.py``'s random programs instead (the generator of
``tests/test_oracle.py``): every backend, the four emitted modules from numeric and
symbolic derivations, and every reported convolution call against a reference that
owes nothing to einderive (torch.autograd of a forward built from index grids); JAX,
which compiles every operation for every new shape, on every ``--frameworks-every``-th::

    python benchmarks/sweep.py --oracle --count 5000 --seed 0
    python benchmarks/sweep.py --oracle --families reads --count 2000 --minutes 40
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="distinct configurations")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed of the first job")
    parser.add_argument(
        "--frameworks-every", type=int, default=50, help="also jax and torch on every n-th (50)"
    )
    parser.add_argument(
        "--oracle", action="store_true", help="random programs against tests/oracle.py"
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="--oracle: stop after this long (reported)"
    )
    parser.add_argument(
        "--families",
        choices=["all", "affine", "reads"],
        default="all",
        help="--oracle: the programs drawn: all, affine (before issue 18), reads (issue 18's)",
    )
    return parser.parse_args(argv)


def _oracle_sweep(
    job: int,
    jobs: int,
    count: int,
    seed: int,
    frameworks_every: int,
    minutes: float | None,
    families: str = "all",
) -> dict:
    """One worker of ``--oracle``: the seeds ``seed*10**6 + job + k*jobs``, ``count`` of them
    (fewer if ``minutes`` run out first)."""
    import warnings

    import oracle

    warnings.filterwarnings("ignore")
    seen: set[tuple] = set()
    failures: list[str] = []
    kinds: Counter[str] = Counter()
    on_frameworks = 0
    slowest: list[tuple[float, str]] = []
    started = time.perf_counter()
    totals = oracle.Outcome()
    for k in range(count):
        if minutes is not None and time.perf_counter() - started > 60 * minutes:
            break
        case_seed = seed * 1_000_000 + job + k * jobs
        seen.add((case_seed,))
        with_jax = case_seed % frameworks_every == 0
        on_frameworks += with_jax
        begun = time.perf_counter()
        try:
            case = oracle.random_case(case_seed, families)
            kinds[case.family] += 1
            outcome = oracle.check(case, case_seed, with_jax=with_jax)
            totals.checks += outcome.checks
            totals.conv_calls += outcome.conv_calls
            totals.symbolic += outcome.symbolic
        except Exception as error:  # a crash of the generator is a failure too
            failures.append(f"seed {case_seed}: {type(error).__name__}: {error}")
            continue
        slowest.append((time.perf_counter() - begun, f"{case.call()} (seed {case_seed})"))
        slowest.sort(reverse=True)
        del slowest[3:]
        if (k + 1) % 250 == 0:
            elapsed = time.perf_counter() - started
            print(
                f"[job {job}] {k + 1}/{count} in {elapsed:.0f} s, {len(failures)} failing",
                file=sys.stderr,
                flush=True,
            )
    kinds["(checks)"] = totals.checks
    kinds["(conv calls run)"] = totals.conv_calls
    kinds["(symbolic checks)"] = totals.symbolic
    return {
        "seen": seen,
        "failures": failures,
        "kinds": kinds,
        "frameworks": on_frameworks,
        "slowest": slowest,
    }


def _sweep(job: int, jobs: int, count: int, seed: int, frameworks_every: int) -> dict:
    """One worker: ``count`` distinct configurations, drawn by hypothesis from ``seed``.

    Job ``k`` of ``n`` takes the configurations whose key hashes to ``k`` modulo
    ``n``, so that no two jobs check the same one.
    """
    import hypothesis
    from hypothesis import HealthCheck, given, settings
    from strategies import ConvConfig, conv_configs, conv_problems

    from einderive.run.compile import installed

    everything = tuple(installed())
    seen: set[tuple] = set()
    failures: list[str] = []
    kinds: Counter[str] = Counter()
    on_frameworks = 0
    slowest: list[tuple[float, str]] = []
    started = time.perf_counter()

    def check(config: ConvConfig) -> None:
        nonlocal on_frameworks
        key = config.key()
        if len(seen) >= count or key in seen or zlib.crc32(repr(key).encode()) % jobs != job:
            return
        seen.add(key)
        frameworks = len(seen) % frameworks_every == 0
        backends = everything if frameworks else ("loops", "numpy")
        on_frameworks += frameworks
        kinds[f"{config.dims}-D {'scatter' if config.scatter else 'gather'}"] += 1
        kinds["sizes given" if config.shapes else "sizes symbolic"] += 1
        begun = time.perf_counter()
        try:
            problems = conv_problems(config, backends)
        except Exception as error:  # a crash is a failure too: record it, keep sweeping
            problems = [f"raised {type(error).__name__}: {error}"]
        slowest.append((time.perf_counter() - begun, config.call(backends)))
        slowest.sort(reverse=True)
        del slowest[3:]
        if problems:
            failures.append(config.call(backends) + "\n    " + "\n    ".join(problems))
        if len(seen) % 250 == 0:
            elapsed = time.perf_counter() - started
            print(
                f"[job {job}] {len(seen)}/{count} in {elapsed:.0f} s, {len(failures)} failing",
                file=sys.stderr,
                flush=True,
            )

    round_ = 0
    while len(seen) < count:
        run = settings(
            max_examples=(count - len(seen)) * jobs,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(given(conv_configs())(check))
        hypothesis.seed(seed * 1000 + round_)(run)()
        round_ += 1
    return {
        "seen": seen,
        "failures": failures,
        "kinds": kinds,
        "frameworks": on_frameworks,
        "slowest": slowest,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    jobs = max(1, min(args.jobs, args.count))
    shares = [args.count // jobs + (k < args.count % jobs) for k in range(jobs)]
    started = time.perf_counter()
    if args.oracle:  # every worker takes its own seeds; the case's seed sits in its key
        work = [
            (k, jobs, share, args.seed, args.frameworks_every, args.minutes, args.families)
            for k, share in enumerate(shares)
        ]
        sweep = _oracle_sweep
    else:
        work = [
            (k, jobs, share, args.seed + k, args.frameworks_every) for k, share in enumerate(shares)
        ]
        sweep = _sweep
    if jobs == 1:
        results = [sweep(*work[0])]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            futures = [pool.submit(sweep, *arguments) for arguments in work]
            results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    count = sum(len(r["seen"]) for r in results)
    distinct = len(set().union(*(r["seen"] for r in results)))
    failures = [f for r in results for f in r["failures"]]
    kinds = sum((r["kinds"] for r in results), Counter())
    frameworks = sum(r["frameworks"] for r in results)
    for failure in failures:
        print("FAILED", failure)
    also = "jax too" if args.oracle else "also on jax and torch"
    print(f"configurations: {count} ({distinct} distinct; {frameworks} {also})")
    print("  " + "; ".join(f"{kind}: {n}" for kind, n in sorted(kinds.items())))
    slowest = sorted((s for r in results for s in r["slowest"]), reverse=True)[:3]
    print("slowest:        " + "\n                ".join(f"{t:.1f} s {c}" for t, c in slowest))
    print(f"mismatches:     {len(failures)}")
    print(f"time:           {elapsed:.0f} s ({jobs} jobs, seed {args.seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
