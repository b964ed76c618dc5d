"""Worker processes that run derivations with a time limit, and are stopped when they pass it.

A derivation is pure Python and can take long on a pathological input; a
thread cannot be stopped, a process can. The pool keeps a few warm workers
(einderive and its backends imported); a request takes an idle one, and if the
answer does not come within the time limit, the worker is killed and a fresh
one started in its place, so the server keeps serving.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

READY = "ready"
START_TIMEOUT = 300.0  # seconds for a new worker to import everything (a busy 2-core machine)


class PoolError(Exception):
    """A request the pool could not run: ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _serve_jobs(connection: Connection, warm: bool) -> None:
    """A worker's life: import, warm up, then answer one job at a time until told to stop."""
    from . import work

    if warm:
        work.warm_up()
    connection.send(READY)
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return
        if job is None:
            return
        kind, request = job
        connection.send(work.JOBS[kind](request))


class _Worker:
    def __init__(self, process: BaseProcess, connection: Connection) -> None:
        self.process = process
        self.connection = connection

    def stop(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()


class WorkerPool:
    """``size`` worker processes; ``run`` answers within ``time_limit`` seconds or raises."""

    def __init__(
        self,
        size: int = 2,
        time_limit: float = 30.0,
        queue_timeout: float = 60.0,
        warm: bool = True,
    ) -> None:
        self.size = size
        self.time_limit = time_limit
        self.queue_timeout = queue_timeout
        self.warm = warm
        # forkserver: workers start from a clean process that has einderive imported, not as a
        # fork of this threaded server
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["einderive.serve.work", "torch", "jax"])
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        # the first start waits for the fork server to import einderive, torch and jax: in the
        # background, so that the server can say its address at once (requests wait for a worker)
        threading.Thread(target=self._launch_all, daemon=True).start()

    def _launch_all(self) -> None:
        for _ in range(self.size):
            if not self._closed:
                self._launch()

    def _launch(self) -> None:
        """Start a worker; it joins the idle queue once it has said it is ready."""
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve_jobs, args=(child, self.warm), daemon=True, name="einderive-worker"
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        with self._lock:
            self._workers.add(worker)
        threading.Thread(target=self._await_ready, args=(worker,), daemon=True).start()

    def _await_ready(self, worker: _Worker) -> None:
        try:
            ready = worker.connection.poll(START_TIMEOUT) and worker.connection.recv() == READY
        except (EOFError, OSError):
            ready = False
        if ready and not self._closed:
            self._idle.put(worker)
        elif not self._closed:
            self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.discard(worker)
        worker.stop()
        if not self._closed:
            self._launch()

    def run(self, kind: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """The answer of job ``kind`` (see ``work.JOBS``) on ``request``."""
        if self._closed:
            raise PoolError("the server is shutting down", 503)
        try:
            worker = self._idle.get(timeout=self.queue_timeout)
        except queue.Empty:
            raise PoolError(
                f"the server is busy: no worker was free within {self.queue_timeout:g} s", 503
            ) from None
        try:
            worker.connection.send((kind, dict(request)))
            if worker.connection.poll(self.time_limit):
                answer = worker.connection.recv()
                self._idle.put(worker)
                return answer
        except (EOFError, OSError):
            self._replace(worker)
            raise PoolError("the worker stopped unexpectedly; try again", 500) from None
        self._replace(worker)
        raise PoolError(
            f"stopped after {self.time_limit:g} s: this takes too long for the page "
            "(try smaller shapes, or the command line)",
            504,
        )

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.stop()
