"""A bounded load on ``einderive serve`` (loopback only): 200 requests from 20 concurrent
clients, mixing valid, invalid and slow inputs; every one answered as its kind expects, and
the server still serving afterwards. ``benchmarks/serve_load.py`` is the same, with timings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"


def _load_module():
    spec = importlib.util.spec_from_file_location("serve_load", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_200_requests_from_20_clients() -> None:
    load = _load_module()
    server, thread = load.start_server(time_limit=20.0)
    try:
        assert server.server_address[0] == "127.0.0.1"
        result = load.run_load(server.url, requests=200, clients=20)
        assert result.answered == 200
        assert not result.wrong, "\n".join(result.wrong[:10])
        kinds = {kind: len(times) for kind, times in result.latencies.items()}
        assert kinds.keys() == {"valid", "invalid", "slow"}, kinds
        # the slow ones were stopped at the limit, and the pool replaced their workers
        assert result.statuses[504] == kinds["slow"]
        assert load.still_serving(server.url)
        print(result.table())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
