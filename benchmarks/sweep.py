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

Each ``--oracle`` job runs its cases in a child process and prints a failure as soon as
it is found; a child that dies (XLA aborts the process on an internal error) is a
failure of the case it was on, and a new child goes on from the next case, so that a
crash costs one case, not the run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
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
    worker = parser.add_argument_group("one --oracle worker process (used by the sweep itself)")
    worker.add_argument("--oracle-worker", action="store_true", help=argparse.SUPPRESS)
    for flag, kind in [("--job", int), ("--first", int), ("--deadline", float), ("--log", Path)]:
        worker.add_argument(flag, type=kind, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _oracle_worker(
    job: int,
    jobs: int,
    first: int,
    count: int,
    seed: int,
    frameworks_every: int,
    deadline: float | None,
    families: str,
    log: Path,
) -> None:
    """One worker of ``--oracle``, in a process of its own: the seeds
    ``seed*10**6 + job + k*jobs`` for ``k`` from ``first`` to ``count - 1`` (fewer if the
    wall-clock ``deadline`` passes first).

    Each case appends two lines to ``log`` (JSON, flushed): one when it begins, one with its
    outcome, so that the parent can tell which case a process died on (XLA aborts the whole
    process on an internal error) and start a new one after it.
    """
    import json
    import warnings

    import oracle

    warnings.filterwarnings("ignore")
    started, failing = time.perf_counter(), 0
    with log.open("a") as out:

        def write(**fields: object) -> None:
            out.write(json.dumps(fields) + "\n")
            out.flush()

        for k in range(first, count):
            if deadline is not None and time.time() > deadline:
                write(k=k, stopped=True)
                break
            case_seed = seed * 1_000_000 + job + k * jobs
            with_jax = case_seed % frameworks_every == 0
            write(k=k, seed=case_seed, begun=True)
            begun = time.perf_counter()
            family, call, failure = "?", f"oracle.random_case({case_seed})", None
            counts = oracle.Outcome()
            try:
                case = oracle.random_case(case_seed, families)
                family, call = case.family, case.call()
                counts = oracle.check(case, case_seed, with_jax=with_jax)
            except Exception as error:  # a crash of the generator is a failure too
                failure = f"seed {case_seed}: {call}: {type(error).__name__}: {error}"
                print("FAILED", failure, file=sys.stderr, flush=True)
                failing += 1
            write(
                k=k,
                seed=case_seed,
                family=family,
                call=call,
                jax=with_jax,
                seconds=time.perf_counter() - begun,
                checks=counts.checks,
                conv_calls=counts.conv_calls,
                symbolic=counts.symbolic,
                failure=failure,
            )
            if (k + 1) % 250 == 0:
                elapsed = time.perf_counter() - started
                print(
                    f"[job {job}] {k + 1}/{count} ({elapsed:.0f} s in this process, "
                    f"{failing} failing)",
                    file=sys.stderr,
                    flush=True,
                )


def _oracle_job(
    job: int,
    jobs: int,
    count: int,
    seed: int,
    frameworks_every: int,
    minutes: float | None,
    families: str,
    folder: Path,
) -> dict:
    """Run job ``job``'s cases in child processes until ``count`` are done; a child that dies
    (a signal, an abort inside a framework) costs the case it was on, reported as a
    failure, and a new child takes the next one."""
    import json
    import subprocess

    log = folder / f"job{job}.jsonl"
    deadline = None if minutes is None else time.time() + 60 * minutes
    records: list[dict] = []
    deaths: list[str] = []
    first = 0
    while first < count:
        command = [
            sys.executable,
            __file__,
            "--oracle-worker",
            *("--job", str(job), "--jobs", str(jobs), "--first", str(first)),
            *("--count", str(count), "--seed", str(seed), "--families", families),
            *("--frameworks-every", str(frameworks_every), "--log", str(log)),
            *(("--deadline", repr(deadline)) if deadline is not None else ()),
        ]
        status = subprocess.run(command, check=False).returncode
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        log.unlink()
        records += [r for r in lines if "failure" in r]
        if any(r.get("stopped") for r in lines) or status == 0:
            break
        begun = [r for r in lines if r.get("begun")]
        finished = {r["k"] for r in lines if "failure" in r}
        dead = next((r for r in reversed(begun) if r["k"] not in finished), None)
        where = f"seed {dead['seed']}" if dead else f"case {first}"
        deaths.append(f"{where}: the worker process died (exit status {status})")
        print("FAILED", deaths[-1], file=sys.stderr, flush=True)
        first = (dead["k"] if dead else first) + 1
    return {"records": records, "deaths": deaths}


def _oracle_results(results: list[dict]) -> dict:
    """The jobs' records, summed into ``main``'s report."""
    records = [r for result in results for r in result["records"]]
    kinds: Counter[str] = Counter(r["family"] for r in records)
    for field, label in [
        ("checks", "(checks)"),
        ("conv_calls", "(conv calls run)"),
        ("symbolic", "(symbolic checks)"),
    ]:
        kinds[label] = sum(r[field] for r in records)
    failures = [r["failure"] for r in records if r["failure"]]
    failures += [d for result in results for d in result["deaths"]]
    slowest = sorted(
        ((r["seconds"], f"{r['call']} (seed {r['seed']})") for r in records), reverse=True
    )[:3]
    seeds = [r["seed"] for r in records]
    return {
        "seen": set(seeds),
        "count": len(seeds),
        "failures": failures,
        "kinds": kinds,
        "frameworks": sum(r["jax"] for r in records),
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
    if args.oracle_worker:
        _oracle_worker(
            args.job,
            args.jobs,
            args.first,
            args.count,
            args.seed,
            args.frameworks_every,
            args.deadline,
            args.families,
            args.log,
        )
        return 0
    jobs = max(1, min(args.jobs, args.count))
    shares = [args.count // jobs + (k < args.count % jobs) for k in range(jobs)]
    started = time.perf_counter()
    if args.oracle:  # every job takes its own seeds, in child processes it restarts on a crash
        with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(jobs) as threads:
            work = [
                (k, jobs, share, args.seed, args.frameworks_every, args.minutes, args.families)
                for k, share in enumerate(shares)
            ]
            futures = [threads.submit(_oracle_job, *w, Path(folder)) for w in work]
            results = [_oracle_results([f.result() for f in futures])]
    else:
        work = [
            (k, jobs, share, args.seed + k, args.frameworks_every) for k, share in enumerate(shares)
        ]
        if jobs == 1:
            results = [_sweep(*work[0])]
        else:
            with ProcessPoolExecutor(jobs) as pool:
                futures = [pool.submit(_sweep, *arguments) for arguments in work]
                results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    count = sum(r.get("count", len(r["seen"])) for r in results)
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
