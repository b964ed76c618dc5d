"""Benchmark: both pullbacks (dX and dW) of a 2-D convolution, NumPy vs JAX vs PyTorch.

Issue 5's acceptance run: batch 8, 32 -> 32 channels, 32x32 input, 3x3 kernel, padding 1,
stride 1 and 2, float32, one thread::

    python benchmarks/conv2d_backward.py              # --threads 1 is the default

What is timed, for every implementation, is the backward pass only: given X, W and a
cotangent dY, produce (dX, dW).

* torch: ``torch.autograd.grad(y, (x, w), dy, retain_graph=True)`` on a graph of
  ``F.conv2d`` built once, outside the timer.
* jax: ``jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy))`` of
  ``lax.conv_general_dilated``; XLA drops the unused forward, ``block_until_ready``.
* numpy: the candidates of ``benchmarks/_numpy_conv_kernels.py`` (the first one is the
  formulation einderive's emitter follows).

All implementations are timed in one process, interleaved round-robin in blocks (so a
noisy neighbour hits all of them alike); the table shows the median over all calls. The
ratios (/jax, /torch, /matmul, gemm/t) are paired: each round times every implementation
back to back, the ratio is taken within the round (of the blocks' medians), and the table
shows its median over the rounds -- this VM's speed drifts by 10-20 % over seconds, which
a ratio of two overall medians would carry into the comparison.
GFLOP/s counts the FLOPs of both pullbacks, ``2 * 2*B*C_out*C_in*K*K*H_out*W_out``.
NumPy's matmul rate is measured in the same round-robin, on a square-ish GEMM
(1024x288 @ 288x288) and on the two GEMM shapes an im2col formulation of the
convolution runs; ``gemm/t`` is the time of those two GEMMs over an implementation's.

Page faults per call are shown because on a VM they are dear (several microseconds per
4 KiB): glibc's adaptive heap trimming can make a kernel that frees several MB of
temporaries fault them all back in on the next call. ``--malloc-tune`` pins glibc's
thresholds (for every implementation alike) to show the steady-state heap.

Thread counts are pinned *before* NumPy, PyTorch or JAX is imported (``--threads N``
sets OMP/OpenBLAS/MKL threads and ``torch.set_num_threads``; with N = 1 also XLA_FLAGS
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``); the
``cpu/wall`` column (process CPU time over wall time while timing) shows whether that
held. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are reported, never changed.
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads per library (1)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--c-in", type=int, default=32)
    parser.add_argument("--c-out", type=int, default=32)
    parser.add_argument("--size", type=int, default=32, help="input height = width")
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--padding", type=int, default=1)
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--rounds", type=int, default=30, help="round-robin rounds (30)")
    parser.add_argument("--block", type=int, default=5, help="timed calls per block (5)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 5 calls")
    parser.add_argument("--skip", nargs="*", default=[], help="implementations to leave out")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--malloc-tune",
        action="store_true",
        help="fix glibc's mmap/trim thresholds (steady-state heap, no page-fault churn) "
        "for every implementation; default: glibc's adaptive defaults",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.block = 3, 5
    return args


def _pin_threads(threads: int) -> None:
    """Set every thread-count knob; must run before numpy/torch/jax are imported."""
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ):
        os.environ[name] = str(threads)
    if threads == 1:  # XLA has no thread-count flag; this pair keeps its CPU client on one
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _tune_malloc() -> str:
    """Pin glibc's M_MMAP_THRESHOLD (32 MiB) and M_TRIM_THRESHOLD (1 GiB), so freed
    temporaries stay on the heap instead of being unmapped and faulted in again."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 32 << 20) == 1 and libc.mallopt(-1, 1 << 30) == 1
    except (OSError, AttributeError):
        ok = False
    return "mmap threshold 32 MiB, trim threshold 1 GiB" if ok else "mallopt unavailable"


ARGS = _parse_args() if __name__ == "__main__" else None
MALLOC = "glibc defaults (adaptive thresholds)"
if ARGS is not None:
    _pin_threads(ARGS.threads)
    if ARGS.malloc_tune:
        MALLOC = _tune_malloc()

# ruff: noqa: E402  (imports after pinning the thread counts)
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _numpy_conv_kernels as kernels

# Environment report.


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas_report(threads: int) -> list[str]:
    lines = []
    try:
        import threadpoolctl
    except ImportError:
        return ["threadpoolctl not installed: BLAS kernel not reported"]
    threadpoolctl.threadpool_limits(threads)
    for info in threadpoolctl.threadpool_info():
        lines.append(
            f"{info.get('user_api')}: {info.get('internal_api')} {info.get('version')} "
            f"kernel={info.get('architecture', '?')} threads={info.get('num_threads')} "
            f"({Path(info.get('filepath', '')).name})"
        )
    return lines


def _busy_ticks() -> int | None:
    """Busy jiffies of the whole machine, from /proc/stat (None where unavailable)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + irq + softirq + steal


# Timing.


class Timings:
    """Per-implementation samples: wall time, CPU time and page faults per call."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.blocks: list[float] = []  # the median of each round's block
        self.cpu = 0.0
        self.elapsed = 0.0
        self.faults = 0
        self.calls = 0

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


def run_round_robin(
    fns: dict[str, Callable[[], object]], rounds: int, block: int, warmup: int = 2
) -> tuple[dict[str, Timings], float | None]:
    """Time ``fns`` in blocks of ``block`` calls, round-robin, alternating the order.

    Returns the timings and the share of the machine's CPU that *other* processes used
    meanwhile (None where /proc/stat is missing).
    """
    results = {name: Timings() for name in fns}
    names = list(fns)
    ticks0, own0, wall0 = _busy_ticks(), time.process_time(), time.perf_counter()
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, res = fns[name], results[name]
            for _ in range(warmup):
                fn()
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            cpu0, start = time.process_time(), time.perf_counter()
            times = []
            for _ in range(block):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            res.wall += times
            res.blocks.append(statistics.median(times))
            res.elapsed += time.perf_counter() - start
            res.cpu += time.process_time() - cpu0
            res.faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
            res.calls += block
    ticks1, own1, wall1 = _busy_ticks(), time.process_time(), time.perf_counter()
    other = None
    if ticks0 is not None and ticks1 is not None:
        hz = os.sysconf("SC_CLK_TCK")
        capacity = (wall1 - wall0) * hz * (os.cpu_count() or 1)
        other = max(0.0, (ticks1 - ticks0) - (own1 - own0) * hz) / capacity
    return results, other


# Implementations.


def conv_flops(b: int, c_in: int, c_out: int, k: int, h_out: int, w_out: int) -> int:
    """FLOPs of both pullbacks (each is one GEMM-sized contraction)."""
    return 2 * (2 * b * c_out * c_in * k * k * h_out * w_out)


MATMUL_REF = "matmul 1024x288 @ 288x288"
"""The square-ish GEMM the '/matmul' column is relative to."""


def matmul_cases(
    args: argparse.Namespace, y_shape: tuple[int, ...]
) -> dict[str, tuple[int, int, int]]:
    """GEMMs ``(m, k, n)`` to rate NumPy's matmul: a square-ish one, and the two GEMMs an
    im2col formulation of this convolution's pullbacks would run (same FLOPs as each)."""
    kk = args.kernel * args.kernel
    positions = args.batch * y_shape[2] * y_shape[3]
    return {
        MATMUL_REF: (1024, 288, 288),
        f"matmul dW-shaped {args.c_out}x{positions} @ {positions}x{args.c_in * kk}": (
            args.c_out,
            positions,
            args.c_in * kk,
        ),
        f"matmul dX-shaped {args.c_in}x{args.c_out * kk} @ {args.c_out * kk}x{positions}": (
            args.c_in,
            args.c_out * kk,
            positions,
        ),
    }


def make_matmuls(
    args: argparse.Namespace, y_shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator
) -> tuple[dict[str, Callable[[], object]], dict[str, int]]:
    fns, flops = {}, {}
    for name, (m, k, n) in matmul_cases(args, y_shape).items():
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        out = np.empty((m, n), dtype)
        fns[name] = lambda a=a, b=b, out=out: np.matmul(a, b, out=out)
        flops[name] = 2 * m * k * n
    return fns, flops


def make_torch(x, w, dy, stride, padding):  # type: ignore[no-untyped-def]
    import torch
    from torch.nn import functional

    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    y = functional.conv2d(xt, wt, stride=stride, padding=padding)
    dyt = torch.from_numpy(dy)

    def backward():  # type: ignore[no-untyped-def]
        return torch.autograd.grad(y, (xt, wt), dyt, retain_graph=True)

    def result() -> tuple[np.ndarray, np.ndarray]:
        dx, dw = backward()
        return dx.numpy(), dw.numpy()

    return backward, result, f"torch {torch.__version__}"


def make_jax(x, w, dy, stride, padding):  # type: ignore[no-untyped-def]
    import jax
    from jax import lax

    if x.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)

    def conv(x, w):  # type: ignore[no-untyped-def]
        return lax.conv_general_dilated(
            x,
            w,
            (stride, stride),
            [(padding, padding)] * 2,
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )

    pullback = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy))
    xj, wj, dyj = (jax.device_put(a) for a in (x, w, dy))

    def backward():  # type: ignore[no-untyped-def]
        return jax.block_until_ready(pullback(xj, wj, dyj))

    def result() -> tuple[np.ndarray, np.ndarray]:
        dx, dw = backward()
        return np.asarray(dx), np.asarray(dw)

    return backward, result, f"jax {jax.__version__}"


EINDERIVE = "einderive --emit numpy, vjp"
EINDERIVE_APART = "einderive numpy, dX and dW apart"
EINDERIVE_JAX = "einderive --emit jax, vjp jit"
EINDERIVE_TORCH = "einderive --emit torch, vjp"
# the derived ops inside the frameworks' autodiff (issue 14)
EINDERIVE_FUNCTION = "einderive torch-function, autograd"
EINDERIVE_CUSTOM_VJP = "einderive jax-custom-vjp, jax.vjp jit"


def einderive_modules(x, w, dy, stride, padding):  # type: ignore[no-untyped-def]
    """The generated backward: einderive derives the convolution written in its notation and
    emits NumPy, JAX and PyTorch modules; their ``pullback_X`` and ``pullback_W`` are timed."""
    import einderive as ed

    text = f"Y[b,o,i,j] = W[o,c,m,n]*X[b,c,{stride}*i+m-{padding},{stride}*j+n-{padding}]"
    # the output's shape is declared: symmetric padding reads past the right end too
    shapes = {"X": x.shape, "W": w.shape, "Y": dy.shape}
    derivation = ed.derive(text, shapes=shapes)
    modules = {}
    for kind in ("numpy", "jax", "torch", "torch-function", "jax-custom-vjp"):
        namespace: dict[str, object] = {}
        exec(compile(derivation.source(kind), f"<einderive {kind}>", "exec"), namespace)
        modules[kind] = namespace
    return modules


def make_einderive(x, w, dy, stride, padding, modules):  # type: ignore[no-untyped-def]
    """The emitted backward, run as a user would paste it: each module's ``vjp`` (dX and dW
    from one call where the module has one), and NumPy's two ``pullback_*`` functions apart.
    """
    fns = {}
    numpy_module = modules["numpy"]

    def numpy_backward():  # type: ignore[no-untyped-def]
        dw, dx = numpy_module["vjp"](dy, w, x)
        return dx, dw

    def numpy_apart():  # type: ignore[no-untyped-def]
        return numpy_module["pullback_X"](dy, w, x), numpy_module["pullback_W"](dy, w, x)

    fns[EINDERIVE] = (numpy_backward, numpy_backward)
    fns[EINDERIVE_APART] = (numpy_apart, numpy_apart)
    try:
        import jax

        jax_module = modules["jax"]
        both = jax.jit(lambda dy, w, x: jax_module["vjp"](dy, w, x)[::-1])
        operands = tuple(jax.device_put(a) for a in (dy, w, x))

        def jax_backward():  # type: ignore[no-untyped-def]
            return jax.block_until_ready(both(*operands))

        def jax_result():  # type: ignore[no-untyped-def]
            return tuple(np.asarray(a) for a in jax_backward())

        fns[EINDERIVE_JAX] = (jax_backward, jax_result)

        # the custom_vjp inside jax.vjp, as make_jax times lax's own rule
        custom = modules["jax-custom-vjp"]["op"]
        through = jax.jit(lambda dy, w, x: jax.vjp(custom, w, x)[1](dy)[::-1])

        def custom_vjp_backward():  # type: ignore[no-untyped-def]
            return jax.block_until_ready(through(*operands))

        def custom_vjp_result():  # type: ignore[no-untyped-def]
            return tuple(np.asarray(a) for a in custom_vjp_backward())

        fns[EINDERIVE_CUSTOM_VJP] = (custom_vjp_backward, custom_vjp_result)
    except ImportError:
        pass
    try:
        import torch

        torch_module = modules["torch"]
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (dy, w, x))

        def torch_backward():  # type: ignore[no-untyped-def]
            with torch.no_grad():
                return torch_module["vjp"](*tensors)[::-1]

        def torch_result():  # type: ignore[no-untyped-def]
            return tuple(a.numpy() for a in torch_backward())

        fns[EINDERIVE_TORCH] = (torch_backward, torch_result)

        # the autograd.Function's backward run by autograd, as make_torch times F.conv2d's:
        # the graph is built once, outside the timer
        dyt, *leaves = (t.clone().requires_grad_(k > 0) for k, t in enumerate(tensors))
        y = modules["torch-function"]["op"](*leaves)

        def function_backward():  # type: ignore[no-untyped-def]
            return torch.autograd.grad(y, leaves, dyt, retain_graph=True)[::-1]

        def function_result():  # type: ignore[no-untyped-def]
            return tuple(a.numpy() for a in function_backward())

        fns[EINDERIVE_FUNCTION] = (function_backward, function_result)
    except ImportError:
        pass
    return fns


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


def bench_stride(
    args: argparse.Namespace, stride: int, rng: np.random.Generator
) -> dict[str, object]:
    """Check, then time, every implementation and the matmul references for one stride."""
    dtype = np.dtype(args.dtype)
    x_shape = (args.batch, args.c_in, args.size, args.size)
    w_shape = (args.c_out, args.c_in, args.kernel, args.kernel)
    y_shape = kernels.output_shape(x_shape, w_shape, stride, args.padding)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    dy = rng.standard_normal(y_shape).astype(dtype)
    flops = conv_flops(args.batch, args.c_in, args.c_out, args.kernel, *y_shape[2:])
    ref_dx, ref_dw = kernels._reference_backward(
        *(a.astype(np.float64) for a in (dy, x, w)), stride, args.padding, 1
    )

    fns: dict[str, Callable[[], object]] = {}
    errors: dict[str, float] = {}
    versions: list[str] = []
    for name, make in {"torch": make_torch, "jax": make_jax}.items():
        if name in args.skip:
            continue
        try:
            fn, result, version = make(x, w, dy, stride, args.padding)
        except ImportError as error:
            print(f"  ({name} unavailable: {error})")
            continue
        versions.append(version)
        got_dx, got_dw = result()
        errors[name] = max(relative_error(got_dx, ref_dx), relative_error(got_dw, ref_dw))
        fns[name] = fn
    modules = einderive_modules(x, w, dy, stride, args.padding)
    for name, (fn, result) in make_einderive(x, w, dy, stride, args.padding, modules).items():
        got_dx, got_dw = result()
        errors[name] = max(relative_error(got_dx, ref_dx), relative_error(got_dw, ref_dw))
        fns[name] = fn
    for name, candidate in kernels.CANDIDATES.items():
        if name in args.skip:
            continue
        got_dx, got_dw = candidate(dy, x, w, stride, args.padding)
        errors[name] = max(relative_error(got_dx, ref_dx), relative_error(got_dw, ref_dw))
        fns[name] = lambda c=candidate: c(dy, x, w, stride, args.padding)
    matmuls, matmul_flops = make_matmuls(args, y_shape, dtype, rng)

    timings, other_load = run_round_robin({**fns, **matmuls}, args.rounds, args.block)
    rates = {name: matmul_flops[name] / timings[name].median / 1e9 for name in matmuls}
    median = {name: timings[name].median for name in fns}
    # What the im2col GEMMs alone would take at NumPy's own rate for those shapes.
    conv_gemms = [name for name in matmuls if name != MATMUL_REF]
    gemm_floor = sum(timings[name].median for name in conv_gemms)

    def paired(name: str, over: Callable[[int], float]) -> float:
        """The median over rounds of ``over(round) / (name's time in that round)``."""
        blocks = timings[name].blocks
        return statistics.median(over(r) / blocks[r] for r in range(len(blocks)))

    def ratio_to(peer: str) -> Callable[[str], float | None]:
        if peer not in timings:
            return lambda name: None
        return lambda name: 1 / paired(name, lambda r: timings[peer].blocks[r])

    vs_jax, vs_torch = ratio_to("jax"), ratio_to("torch")
    ref = timings[MATMUL_REF].blocks
    rows = []
    for name in fns:
        t = timings[name]
        rows.append(
            {
                "impl": name,
                "median_ms": median[name] * 1e3,
                "gflops": flops / median[name] / 1e9,
                "vs_jax": vs_jax(name),
                "vs_torch": vs_torch(name),
                "of_matmul": paired(name, lambda r: flops / matmul_flops[MATMUL_REF] * ref[r]),
                "of_conv_gemms": paired(
                    name, lambda r: sum(timings[g].blocks[r] for g in conv_gemms)
                ),
                "cpu_per_wall": t.cpu / t.elapsed,
                "faults_per_call": t.faults / t.calls,
                "rel_err": errors[name],
            }
        )
    return {
        "stride": stride,
        "x": x_shape,
        "w": w_shape,
        "y": y_shape,
        "mflop": flops / 1e6,
        "rows": rows,
        "matmul_gflops": rates,
        "gemm_floor_ms": gemm_floor * 1e3,
        "other_load": other_load,
        "versions": versions,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(res: dict[str, object]) -> None:
    print(
        f"\nstride {res['stride']}: x{res['x']} w{res['w']} -> y{res['y']}, "
        f"{res['mflop']:.1f} MFLOP for dX+dW"
    )
    for name, rate in res["matmul_gflops"].items():  # type: ignore[union-attr]
        print(f"  {name:48s} {rate:6.1f} GFLOP/s")
    print(f"  the two conv-shaped GEMMs alone take {res['gemm_floor_ms']:.3f} ms")
    header = (
        f"{'implementation':26s} {'median ms':>9s} {'GFLOP/s':>7s} {'/jax':>5s} {'/torch':>6s} "
        f"{'/matmul':>7s} {'gemm/t':>6s} {'cpu/wall':>8s} {'faults':>6s} {'rel err':>7s}"
    )
    print(header)
    print("-" * len(header))
    for row in res["rows"]:  # type: ignore[union-attr]
        print(
            f"{row['impl']:26s} {row['median_ms']:9.3f} {row['gflops']:7.1f} "
            f"{_fmt(row['vs_jax'], '5.2f')} {_fmt(row['vs_torch'], '6.2f')} "
            f"{row['of_matmul']:7.2f} {row['of_conv_gemms']:6.2f} {row['cpu_per_wall']:8.2f} "
            f"{row['faults_per_call']:6.0f} {row['rel_err']:7.1e}"
        )
    if res["other_load"] is not None:
        load = res["other_load"]
        note = "  <-- other processes were busy: numbers are noisy" if load > 0.05 else ""
        print(f"other processes used {100 * load:.0f}% of the machine while timing{note}")


def verdict(res: dict[str, object], best: str) -> list[str]:
    row = next(r for r in res["rows"] if r["impl"] == best)  # type: ignore[union-attr]
    checks = [
        ("<= 1.5x jax time", row["vs_jax"], 1.5, True),
        ("<= 2.0x torch time", row["vs_torch"], 2.0, True),
        (">= 0.5 of square-ish matmul GFLOP/s", row["of_matmul"], 0.5, False),
        (">= 0.5 of conv-shaped matmul GFLOP/s", row["of_conv_gemms"], 0.5, False),
    ]
    # the conv-call backends against the frameworks' own autodiff of the same forward
    rows = {r["impl"]: r for r in res["rows"]}  # type: ignore[union-attr]
    if EINDERIVE_JAX in rows:
        checks.append(
            ("jax conv calls <= 1.05x jax autodiff", rows[EINDERIVE_JAX]["vs_jax"], 1.05, True)
        )
    if EINDERIVE_TORCH in rows:
        checks.append(
            (
                "torch conv calls <= 1.05x torch autograd",
                rows[EINDERIVE_TORCH]["vs_torch"],
                1.05,
                True,
            )
        )
    if EINDERIVE_FUNCTION in rows:
        checks.append(
            (
                "torch-function in autograd <= 1.1x torch autograd",
                rows[EINDERIVE_FUNCTION]["vs_torch"],
                1.1,
                True,
            )
        )
    if EINDERIVE_CUSTOM_VJP in rows:
        checks.append(
            (
                "jax-custom-vjp in jax.vjp <= 1.1x jax autodiff",
                rows[EINDERIVE_CUSTOM_VJP]["vs_jax"],
                1.1,
                True,
            )
        )
    out = []
    for label, value, bound, upper in checks:
        if value is None:
            out.append(f"  {label}: not measured")
            continue
        ok = value <= bound if upper else value >= bound
        out.append(f"  {label}: {value:.3f} -> {'PASS' if ok else 'FAIL'}")
    return out


def main() -> int:
    args = ARGS
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    print(f"conv2d backward benchmark: threads={args.threads}, dtype={dtype.name}")
    print(
        f"machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"
    )
    for line in _blas_report(args.threads):
        print(f"  {line}")
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "XLA_FLAGS", "OPENBLAS_NUM_THREADS"):
        print(f"  {name}={os.environ.get(name, '(unset)')}")
    print(f"  malloc: {MALLOC}")
    print(
        "timed: backward only (dX and dW from X, W, dY) for every implementation; "
        f"median of {args.rounds} round-robin blocks x {args.block} calls; ratios paired "
        "within each round, their median over the rounds"
    )

    print(
        "columns: /jax, /torch = time ratios; /matmul = GFLOP/s over NumPy's square-ish "
        "GEMM rate; gemm/t = time of the two conv-shaped GEMMs over this time; cpu/wall = "
        "process CPU over wall time (1.00 = one busy thread); faults = minor page faults "
        "per call; rel err = max |err| / max |ref| vs a float64 reference"
    )

    best = EINDERIVE
    results = []
    for stride in args.strides:
        res = bench_stride(args, stride, rng)
        print_table(res)
        if res["versions"]:
            print("peers: " + ", ".join(res["versions"]))  # type: ignore[arg-type]
        print(f"issue 5 targets for '{best}':")
        print("\n".join(verdict(res, best)))
        results.append(res)

    if args.json:
        payload = {
            "threads": args.threads,
            "dtype": dtype.name,
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
            "malloc": MALLOC,
            "results": results,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
