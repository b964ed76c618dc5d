"""Fuzzing the front end: generated and mutated text into ``analyse`` (parser + analysis).

Every input must either analyse, or fail with an ``EinderiveError`` whose
``.span`` is a position in the text, within a second of CPU time. Inputs run
in a child process (``Worker``) so that one that hangs or eats memory is
killed and reported instead of stalling the suite.

``EINDERIVE_FUZZ_COUNT`` sets the number of inputs (3,000 by default, about
half a minute); ``EINDERIVE_FUZZ_SEED`` the seed. A crash found by a run is
fixed in the package and its minimal input becomes a row of ``FIXED``, run by
a regression test on every run.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import resource
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection

import pytest

import einderive as ed
from einderive import EinderiveError

FUZZ_COUNT = int(os.environ.get("EINDERIVE_FUZZ_COUNT", "3000"))
FUZZ_SEED = int(os.environ.get("EINDERIVE_FUZZ_SEED", "0"))
CPU_LIMIT = 1.0  # seconds of CPU per input
WALL_LIMIT = 20.0  # a child that answers nothing for this long is killed: a hang
MEMORY_LIMIT = 2 << 30  # bytes of address space above the child's size after imports

SWEEP = pytest.mark.sweep  # the long profile: pytest -m sweep

# ---- the child process -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What ``analyse`` did with one input."""

    kind: str  # "ok" | "error" (an EinderiveError) | "crash" (anything else) | "hang"
    detail: str
    span: tuple[int, int] | None
    cpu: float


def _serve(connection: Connection) -> None:
    """Child: analyse every text received, answer with an Outcome."""
    import einderive
    from einderive.front import analyse

    analyse("Y[i] = X[i]")  # the grammar and sympy's caches, loaded once
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_LIMIT, hard))
    connection.send("ready")
    while True:
        text = connection.recv()
        start = time.process_time()
        try:
            analyse(text)
            outcome = Outcome("ok", "", None, 0.0)
        except einderive.EinderiveError as error:
            span = tuple(error.span) if error.span is not None else None
            outcome = Outcome("error", f"{type(error).__name__}: {error.message}", span, 0.0)
        except BaseException as error:  # the fuzz target: anything else is a crash
            where = traceback.extract_tb(error.__traceback__)[-1]
            detail = (
                f"{type(error).__name__}: {str(error)[:200]} "
                f"({os.path.basename(where.filename)}:{where.lineno})"
            )
            outcome = Outcome("crash", detail, None, 0.0)
        cpu = time.process_time() - start
        connection.send(Outcome(outcome.kind, outcome.detail, outcome.span, cpu))


class Worker:
    """A child process running ``analyse``; restarted after a hang."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self._connection, child = self._context.Pipe()
        self._process = self._context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        if not self._connection.poll(120.0) or self._connection.recv() != "ready":
            raise RuntimeError("the fuzz worker did not start")

    def run(self, text: str, wall_limit: float = WALL_LIMIT) -> Outcome:
        self._connection.send(text)
        if self._connection.poll(wall_limit):
            try:
                return self._connection.recv()
            except EOFError:
                detail = f"the child died (exit code {self._process.exitcode})"
        else:
            detail = f"no answer within {wall_limit:.0f} s"
        self.close()
        self._start()
        return Outcome("hang", detail, None, wall_limit)

    def close(self) -> None:
        self._process.kill()
        self._process.join()


@pytest.fixture(scope="module")
def worker() -> Worker:
    process = Worker()
    yield process
    process.close()


def problem(text: str, outcome: Outcome) -> str | None:
    """Why an outcome breaks the contract, or None."""
    if outcome.kind in ("crash", "hang"):
        return f"{outcome.kind}: {outcome.detail}"
    if outcome.cpu > CPU_LIMIT:
        return f"slow: {outcome.cpu:.2f} s of CPU ({outcome.kind})"
    if outcome.kind == "error":
        if outcome.span is None:
            return f"no span: {outcome.detail}"
        start, end = outcome.span
        if not (0 <= start <= end and start <= len(text) and end <= max(len(text), 1)):
            return f"span {outcome.span} outside the text of {len(text)}: {outcome.detail}"
    return None


# ---- crashes found by fuzzing, fixed since ---------------------------------------------------


# found by this file, fixed in the package since: each must stay an EinderiveError with a span
FIXED = [
    ("long-integer-in-index", "Y[i] = X[" + "1" * 4301 + "*i]"),  # was ValueError (int())
    ("long-literal-value", "Y[i] = X[i]*" + "1" * 4301),  # was SympifyError (nsimplify)
    ("long-decimal-value", "Y[i] = X[i]*" + "1" * 2200 + "." + "1" * 2200),  # was TypeError
    ("big-exponent-literal", "Y[i] = X[i]*1e5000"),  # was TypeError
    ("huge-exponent-literal", "Y[i] = X[i]*1e999999"),  # was a hang
    ("folded-huge-power", "Y[i] = X[i]*2**99999999999"),  # was a hang, then 12 GB
    ("folded-power-tower", "Y[i] = X[i]*9**9**9"),  # was a hang
    ("thousands-of-indices", "Y = X[" + ",".join(f"i{k}" for k in range(3000)) + "]"),  # 6 s
    ("leading-zero", "Y[i] = X[i] + 02"),  # was SympifyError (analyses now)
    # lark wrapped the RecursionError of a transformer callback in a VisitError
    ("recursion-in-a-callback", "Y[i] = X[i]" + "**1" * 600),
    ("unicode-digit-literal", "Y[i] = X[i]*\uff11.5"),  # NUMBER was \d: SympifyError
    ("folded-power-of-power", "Y[i] = X[i]*(((2**1000)**1000)**1000)**1000"),  # a hang
    ("tiny-literal", "Y[i] = X[i]*1e-9999999"),  # a ten-million-digit denominator: a hang
    # the first fix of tiny-literal read the literal as a Decimal: InvalidOperation past
    # Decimal's exponent range (found by the 100,000-input run)
    ("exponent-past-decimal", "Y[i] = X[i]*2.5e-18446744073709551617"),
    ("hundreds-of-terms", "Y[i] = " + " + ".join(f"W{k}[m]*X[i+m+{k}]" for k in range(200))),
]


@pytest.mark.parametrize(("text",), [(t,) for _, t in FIXED], ids=[i for i, _ in FIXED])
def test_fixed_bug_stays_fixed(text: str, worker: Worker) -> None:
    outcome = worker.run(text, wall_limit=5.0)
    assert problem(text, outcome) is None, outcome


# constants that analysed but that nothing downstream could use: refused at analysis now
UNUSABLE_NUMBERS = [
    # (-1)**0.5 folds to sympy's I: str() raises "Invalid comparison of non-real I",
    # evaluate/vjp/verify "Cannot convert complex to float"
    pytest.param("Y[i] = X[i]*(-1)**0.5", id="complex-constant"),
    # 2**15000 folded: str(derivation) raises ValueError (Python's 4300-digit limit)
    pytest.param("Y[i] = X[i]*(2**1000)**15", id="constant-beyond-printing"),
    pytest.param("Y[i] = X[i]*" + "*".join(["2**1000"] * 15), id="product-beyond-printing"),
]


@pytest.mark.parametrize("text", UNUSABLE_NUMBERS)
def test_an_unusable_constant_is_refused(text: str) -> None:
    with pytest.raises(EinderiveError) as raised:
        str(ed.derive(text))
    assert raised.value.span is not None


def test_every_nesting_depth_near_the_recursion_limit(worker: Worker) -> None:
    """No depth of nesting escapes as anything but an EinderiveError."""
    kinds = {
        "parentheses": lambda n: "Y[i] = " + "(" * n + "X[i]" + ")" * n,
        "minus": lambda n: "Y[i] = " + "-" * n + "X[i]",
        "calls": lambda n: "Y[i] = " + "exp(" * n + "X[i]" + ")" * n,
        "sum": lambda n: "Y[i] = " + "+".join(["X[i]"] * n),
        "index": lambda n: "Y[i] = X[" + "(" * n + "i" + ")" * n + "]",
    }
    found = []
    for kind, make in kinds.items():
        for depth in range(470, 510):
            outcome = worker.run(make(depth), wall_limit=5.0)
            if outcome.kind not in ("ok", "error"):
                found.append(f"{kind} {depth}: {outcome.detail.splitlines()[0]}")
    assert not found, found


# ---- inputs ----------------------------------------------------------------------------------

SEEDS = [
    "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]",
    "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,2*i+m-1,2*j+n-1] + B[o]",
    "C[i,j] = A[i,k]*B[k,j]",
    "Y[i] = max_{m}(X[2*i+m])",
    "Y[i,j] = min_{a,b}(X[2*i+a, 2*j+b])",
    "Y[s*i+m] = X[i]*W[m]",
    "Z[o,i] = W[o,c,m]*X[c,i+m] + B[o]; A[o,i] = relu(Z[o,i])",
    "Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))",
    "mu = sum_{j}(X[j]) / N\nvar = sum_{j}((X[j] - mu)**2) / N\n"
    "Y[i] = (X[i] - mu) / sqrt(var + eps)",
    "Y[i] = X[i,i]",
    "s = x[i]*y[i]",
    "Y[i] = -X[i]**3 / 4 + 2.5e-1 - tanh(X[i]) * abs(X[i]) / W[i]**2",
    "# a comment\r\nY[i] = X[i+1]  # trailing\r\n",
    "Y[i,j] = X[j,i] + X[9-i, j]",
    "Y[i] = alpha*X[i] + beta",
    "Y[i] = X[2*i+3*m]",
    "Y[i] = W[m]*X[i+m-p] + sigmoid(X[i]) * log(X[i] + 1)",
]
NOTATION = "[](){},;=+-*/_ \n\t#.0123456789eEijkmnpsXYW"
UNICODE = "éß×÷−–∑√πλİıﬁ\u200b\u202e\u00a0\ufeff１٣😀\U0010ffff\x00\x7f"
FUNCTIONS = ("foo", "Exp", "sin", "log2", "sum", "max_", "relu_", "__import__", "eval", "X")
BIG_NUMBERS = (
    "99999999999999999999",
    "1" + "0" * 40,
    "1" + "0" * 400,
    "18446744073709551617",
    "1e308",
    "1e309",
    "1e-400",
    "0.000000000000000000001",
    "9" * 4000,
    "1e999999",
    "1e-9999999",
    "007",
    "\u0663",
    "\uff11.5",
    "2**99999999999",
    "9**9**9",
    "((2**1000)**1000)**1000",
)


def _identifiers(text: str) -> list[re.Match[str]]:
    return list(re.finditer(r"[A-Za-z_]\w*", text))


def truncate(rng: random.Random, text: str) -> str:
    return text[: rng.randrange(len(text) + 1)]


def delete(rng: random.Random, text: str) -> str:
    if not text:
        return text
    k = rng.randrange(len(text))
    return text[:k] + text[k + rng.randint(1, 3) :]


def insert(rng: random.Random, text: str) -> str:
    k = rng.randrange(len(text) + 1)
    alphabet = UNICODE if rng.random() < 0.2 else NOTATION
    return text[:k] + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))) + text[k:]


def swap_brackets(rng: random.Random, text: str) -> str:
    positions = [k for k, c in enumerate(text) if c in "[](){}"]
    if not positions:
        return insert(rng, text)
    k = rng.choice(positions)
    return text[:k] + rng.choice("[](){}") + text[k + 1 :]


def duplicate(rng: random.Random, text: str) -> str:
    if not text:
        return text
    a = rng.randrange(len(text))
    b = rng.randrange(a, len(text) + 1)
    k = rng.randrange(len(text) + 1)
    return text[:k] + text[a:b] + text[k:]


def splice(rng: random.Random, text: str) -> str:
    other = rng.choice(SEEDS)
    return text[: rng.randrange(len(text) + 1)] + other[rng.randrange(len(other) + 1) :]


def unknown_function(rng: random.Random, text: str) -> str:
    names = _identifiers(text)
    if not names:
        return f"{rng.choice(FUNCTIONS)}({text})"
    match = rng.choice(names)
    return text[: match.start()] + rng.choice(FUNCTIONS) + "(" + text[match.start() :] + ")"


def huge_number(rng: random.Random, text: str) -> str:
    numbers = list(re.finditer(r"\d+(\.\d*)?", text))
    big = rng.choice(BIG_NUMBERS)
    if numbers and rng.random() < 0.7:
        match = rng.choice(numbers)
        return text[: match.start()] + big + text[match.end() :]
    k = rng.randrange(len(text) + 1)
    return text[:k] + big + "*" + text[k:]


def rename(rng: random.Random, text: str) -> str:
    names = _identifiers(text)
    if not names:
        return text
    match = rng.choice(names)
    new = rng.choice(("i", "X", "sum_", "max", "s", "Y", "é", "i" * 300, "W" + "0" * 50))
    return text[: match.start()] + new + text[match.end() :]


MUTATIONS = [
    truncate,
    delete,
    insert,
    swap_brackets,
    duplicate,
    splice,
    unknown_function,
    huge_number,
    rename,
]


def _indices(n: int) -> str:
    return ",".join(f"i{k}" for k in range(n))


def generated(rng: random.Random) -> str:
    """An input made from scratch: the extremes of size, depth and alphabet."""
    kind = rng.randrange(12)
    depth = rng.choice((10, 100, 300, 500, 1000, rng.randint(470, 520)))
    if kind == 0:
        return rng.choice(("", " ", "\n", ";", ";;\n;", "#", "# only a comment", "\t\r\n"))
    if kind == 1:
        return "Y[i] = " + "(" * depth + "X[i]" + ")" * depth
    if kind == 2:
        return "Y[i] = " + "-" * depth + "X[i]"
    if kind == 3:
        return "Y[i] = X[" + "(" * depth + "i" + ")" * depth + "]"
    if kind == 4:
        return "Y[i] = " + "exp(" * depth + "X[i]" + ")" * depth
    if kind == 5:
        return "Y[i] = X[" + "X[" * depth + "i" + "]" * (depth + 1)
    if kind == 6:
        n = rng.choice((10, 100, 500, 1000))
        return f"Y[{_indices(min(n, 60))}] = X[{_indices(n)}]"
    if kind == 7:
        n = rng.choice((10, 50, 100, 200))
        return "Y[i] = " + " + ".join(f"W{k}[m]*X[i+m+{k}]" for k in range(n))
    if kind == 8:
        n = rng.choice((10, 100, 300))
        return "; ".join(["Z0[i] = X[i]"] + [f"Z{k}[i] = relu(Z{k - 1}[i])" for k in range(1, n)])
    if kind == 9:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))
        return data.decode(rng.choice(("utf-8", "latin-1")), errors="replace")
    if kind == 10:
        if rng.random() < 0.5:
            return "Y[i] = X[i]" + "**1" * depth

        return "".join(rng.choice(NOTATION) for _ in range(rng.randint(1, 60)))
    return "".join(rng.choice(NOTATION + UNICODE) for _ in range(rng.randint(1, 30)))


def fuzz_inputs(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    inputs = []
    for _ in range(count):
        if rng.random() < 0.15:
            inputs.append(generated(rng))
            continue
        text = rng.choice(SEEDS)
        for _ in range(rng.choice((1, 1, 2, 3, 5))):
            text = rng.choice(MUTATIONS)(rng, text)
        inputs.append(text)
    return inputs


def test_fuzz_the_front_end(worker: Worker) -> None:
    """Every input analyses or raises an EinderiveError with a span, in under a second."""
    started = time.perf_counter()
    kinds: Counter[str] = Counter()
    new: list[str] = []
    slowest = (0.0, "")
    for text in fuzz_inputs(FUZZ_COUNT, FUZZ_SEED):
        outcome = worker.run(text)
        kinds[outcome.kind] += 1
        slowest = max(slowest, (outcome.cpu, text[:120]))
        found = problem(text, outcome)
        if found is not None:
            new.append(f"{found}\n    input: {text[:300]!r}")
    elapsed = time.perf_counter() - started
    summary = (
        f"{FUZZ_COUNT} inputs (seed {FUZZ_SEED}) in {elapsed:.1f} s: {dict(kinds)}; "
        f"slowest {slowest[0]:.2f} s CPU on {slowest[1]!r}"
    )
    print(summary)
    assert not new, summary + "\n" + "\n".join(new[:20])
    assert kinds["ok"] and kinds["error"], summary  # the mutations reach past the parser


def test_fuzz_inputs_cover_the_issue_list() -> None:
    inputs = fuzz_inputs(2000, 0)
    assert "" in inputs
    assert any(t.count("(") >= 500 for t in inputs)  # 500-deep nesting
    assert any(t.count(",") >= 999 for t in inputs)  # thousands of indices
    assert any(re.search(r"\d{20,}", t) for t in inputs)  # huge integers
    assert any(any(c in UNICODE for c in t) for t in inputs)  # unicode
    assert any("\ufffd" in t for t in inputs)  # random bytes decoded
    assert any(re.search(r"\b(foo|sin|log2|eval)\(", t) for t in inputs)  # unknown functions


# ---- resource bounds: a pathological expression finishes, or is refused, in bounded time -------


def conv_terms(terms: int, dims: int) -> str:
    """``terms`` shifted ``dims``-D convolutions summed: ``2*dims`` indices, one kernel each."""
    out = ",".join(f"i{k}" for k in range(dims))
    kernel = ",".join(f"m{k}" for k in range(dims))

    def read(t: int) -> str:
        return ",".join(f"i{k}+m{k}+{t if k == 0 else 0}" for k in range(dims))

    return f"Y[{out}] = " + " + ".join(f"W{t}[{kernel}]*X[{read(t)}]" for t in range(terms))


DERIVE = """
import sys
import einderive as ed
try:
    derivation = ed.derive(sys.stdin.read())
    derivation.convolutions
    print("derived")
except ed.EinderiveError as error:
    print("refused:", error.message)
"""
PATHOLOGICAL = [
    # (id, text, bound in seconds of wall time); today: about 1 s of CPU each
    pytest.param(conv_terms(100, 1), 60.0, id="a-hundred-terms"),
    pytest.param(conv_terms(10, 12), 60.0, id="ten-terms-of-24-indices"),
    # the long profile: about 1 s, 15 s and 5 s of CPU today
    pytest.param(
        "Y = X[" + ",".join(f"i{k}" for k in range(64)) + "]", 60.0, id="64-indices", marks=SWEEP
    ),
    pytest.param(conv_terms(100, 12), 180.0, id="a-hundred-terms-of-24-indices", marks=SWEEP),
    # the longest sum that parsed while each '+' nested one level deeper
    pytest.param(conv_terms(450, 1), 180.0, id="four-hundred-fifty-terms", marks=SWEEP),
]


@pytest.mark.parametrize(("text", "bound"), PATHOLOGICAL)
def test_pathological_expression_is_bounded(text: str, bound: float) -> None:
    """Derivation and recognition finish within the bound, or refuse with an EinderiveError."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    started = time.perf_counter()
    try:
        finished = subprocess.run(
            [sys.executable, "-c", DERIVE],
            input=text,
            capture_output=True,
            text=True,
            timeout=bound,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"no result within {bound:.0f} s for a text of {len(text)} characters")
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.startswith(("derived", "refused:")), finished.stdout
    assert time.perf_counter() - started < bound
