"""Load on ``einderive serve``: many concurrent clients, valid, invalid and slow inputs.

    python benchmarks/serve_load.py [--requests 200] [--clients 20] [--time-limit 20]

starts the server on a free loopback port (nothing leaves 127.0.0.1), sends the
requests from the clients (each request's kind drawn from a fixed mix), checks
that every one is answered with the status its kind expects and that the server
still serves afterwards, and prints the p50/p95 latency per kind.
tests/test_serve_load.py runs the same function.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from einderive.serve import PageServer, make_server  # noqa: E402

# (kind, path, body, the statuses that count as the right answer)
VALID = [
    {"expression": "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"},
    {
        "expression": "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]",
        "params": "s=2",
        "shapes": "X=7x7, W=3x3",
    },
    {"expression": "Y[i] = max_{m}(X[2*i+m])", "ranges": "m=3"},
    {"expression": "Y[s*i+m] = X[i]*W[m]", "params": "s=2", "shapes": "X=4, W=3"},
    {"expression": "Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))", "shapes": "X=5"},
    {"expression": "C[i,j] = A[i,k]*B[k,j]"},
]
# verified too: those that verify in about a second (a symbolic max pooling or softmax takes
# several, compiling JAX per drawn shape, which a busy machine may stretch past the limit)
VERIFIED = [VALID[1], VALID[3], VALID[5]]
INVALID = [
    {"expression": "Y[i,j] = X[i*j]"},
    {"expression": "Y[i] = X[i"},
    {"expression": "Y[i] = foo(X[i])"},
    {"expression": "Y[i] = X[i]", "shapes": "X=7y7"},
    {"expression": ""},
]
# a numerical verification of a large convolution: seconds of Python loops, past the limit
SLOW = {"expression": "Y[i,j] = W[m,n]*X[i+m,j+n]", "shapes": "X=200x200, W=5x5"}
OVERSIZE = b'{"expression": "' + b"Y" * (70 * 1024) + b'"}'


@dataclass
class LoadResult:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)

    @property
    def answered(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def percentile(self, kind: str, q: float) -> float:
        values = sorted(self.latencies.get(kind, []))
        if not values:
            return float("nan")
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    def table(self) -> str:
        lines = [f"{'kind':9} {'count':>5} {'p50 (s)':>8} {'p95 (s)':>8}"]
        kinds = [*sorted(self.latencies), "all"]
        everything = [x for values in self.latencies.values() for x in values]
        for kind in kinds:
            values = everything if kind == "all" else self.latencies[kind]
            ordered = sorted(values)
            p50 = statistics.median(ordered)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            lines.append(f"{kind:9} {len(values):5d} {p50:8.3f} {p95:8.3f}")
        return "\n".join(lines)


def _request(url: str, path: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url.rstrip("/") + path, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _plan(requests: int, seed: int) -> list[tuple[str, str, bytes, tuple[int, ...]]]:
    """Each request's kind, path, body and expected statuses: 73% valid, 25% invalid, 2% slow."""
    rng = random.Random(seed)
    plan = []
    for _ in range(requests):
        draw = rng.random()
        if draw < 0.02:
            plan.append(("slow", "/api/verify", json.dumps(SLOW).encode(), (504,)))
        elif draw < 0.25:
            if rng.random() < 0.2:
                plan.append(("invalid", "/api/derive", OVERSIZE, (413,)))
            else:
                body = json.dumps(rng.choice(INVALID)).encode()
                plan.append(("invalid", "/api/derive", body, (400,)))
        else:
            if rng.random() < 0.3:
                path, body = "/api/verify", json.dumps(rng.choice(VERIFIED))
            else:
                path, body = "/api/derive", json.dumps(rng.choice(VALID))
            plan.append(("valid", path, body.encode(), (200,)))
    return plan


def run_load(url: str, requests: int = 200, clients: int = 20, seed: int = 0) -> LoadResult:
    """Send ``requests`` requests from ``clients`` threads; every answer timed and checked."""
    result = LoadResult()
    lock = threading.Lock()

    def send(item: tuple[str, str, bytes, tuple[int, ...]]) -> None:
        kind, path, body, expected = item
        start = time.perf_counter()
        try:
            status, answer = _request(url, path, body)
        except (OSError, ValueError) as error:
            status, answer = -1, {"error": {"message": repr(error)}}
        elapsed = time.perf_counter() - start
        with lock:
            result.latencies.setdefault(kind, []).append(elapsed)
            result.statuses[status] += 1
            if status not in expected:
                result.wrong.append(f"{kind} {path}: {status} {str(answer)[:200]}")

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(send, _plan(requests, seed)))
    return result


def still_serving(url: str) -> bool:
    status, answer = _request(url, "/api/derive", json.dumps(VALID[0]).encode())
    return status == 200 and "derivation" in answer


def start_server(time_limit: float, workers: int = 2) -> tuple[PageServer, threading.Thread]:
    server = make_server("127.0.0.1", 0, workers=workers, time_limit=time_limit)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=20.0)
    args = parser.parse_args()
    server, thread = start_server(args.time_limit)
    try:
        start = time.perf_counter()
        result = run_load(server.url, args.requests, args.clients)
        wall = time.perf_counter() - start
        statuses = dict(sorted(result.statuses.items()))
        print(
            f"{result.answered} of {args.requests} requests answered in {wall:.1f} s "
            f"by {args.clients} clients; statuses {statuses}"
        )
        print(result.table())
        serving = still_serving(server.url)
        print("still serving afterwards:", serving)
        for line in result.wrong:
            print("unexpected:", line)
        return 0 if serving and not result.wrong and result.answered == args.requests else 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
