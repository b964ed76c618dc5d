"""``einderive serve``: the page and its JSON API, on the standard library's HTTP server.

Routes:

- ``GET /`` the page; ``GET /static/...`` its scripts, styles and fonts (KaTeX
  included), shipped inside the package, so the page needs no network;
- ``POST /api/derive`` with ``{"expression", "params", "shapes", "ranges"}``
  (the last three as typed on the command line: ``"s=2"``, ``"X=7x7, W=3x3"``,
  ``"m=3"``) answers what ``--emit json`` prints under ``"derivation"``, with
  the steps, the code and the Jacobians beside it; ``POST /api/verify`` answers
  ``ed.verify``'s report; ``GET /api/health`` says the server is up.

Bad input answers 400 with ``{"error": {"message", "field", "line", "column",
"span"}}``; a derivation past the time limit answers 504 and its worker is
stopped; the body is at most ``MAX_BODY`` bytes.
"""

from __future__ import annotations

import json
import mimetypes
import signal
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from .work import FIELDS
from .workers import PoolError, WorkerPool

MAX_BODY = 64 * 1024
DRAIN_LIMIT = 1024 * 1024
CACHE_SIZE = 256
# the page loads only what the server sends; KaTeX sets inline styles on what it renders
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".woff2": "font/woff2",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}


def _static_file(path: str) -> tuple[bytes, str] | None:
    """The bytes and type of a file under ``static/``, or None (no way out of the folder)."""
    parts = [part for part in path.split("/") if part]
    if not parts or any(part in (".", "..") or part.startswith(".") for part in parts):
        return None
    node = resources.files(__package__).joinpath("static", *parts)
    if not node.is_file():
        return None
    suffix = "." + parts[-1].rsplit(".", 1)[-1] if "." in parts[-1] else ""
    kind = STATIC_TYPES.get(suffix) or mimetypes.guess_type(parts[-1])[0]
    return node.read_bytes(), kind or "application/octet-stream"


class _Pending:
    """A request being computed: the threads asking for the same wait for its response."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: tuple[int, bytes] | None = None


class PageServer(ThreadingHTTPServer):
    """A threaded HTTP server with a pool of derivation workers and a cache of answers."""

    daemon_threads = True
    # the listen backlog: socketserver's default of 5 resets the connections of a burst
    # of clients (20 at once in the load test) before a thread can accept them
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], pool: WorkerPool) -> None:
        self.pool = pool  # before binding: a failed bind closes the server, and the pool
        super().__init__(address, PageHandler)
        self._cache: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}/"

    def answer(self, kind: str, request: Mapping[str, Any]) -> tuple[int, bytes]:
        """The status and JSON body for job ``kind``.

        An answered request is answered again from the cache; a request that is
        being computed is waited for, not computed twice (20 clients asking for
        the same derivation at once occupy one worker, not all of them).
        """
        key = json.dumps([kind, request], sort_keys=True)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            pending = self._pending.get(key)
            owner = pending is None
            if pending is None:
                pending = self._pending[key] = _Pending()
        if not owner:
            pending.done.wait()
            assert pending.response is not None
            return pending.response
        try:
            pending.response = self._compute(kind, request, key)
        finally:
            with self._cache_lock:
                del self._pending[key]
            if pending.response is None:
                failure = {"error": {"kind": "ServerError", "message": "the request failed"}}
                pending.response = (500, _json(failure))
            pending.done.set()
        return pending.response

    def _compute(self, kind: str, request: Mapping[str, Any], key: str) -> tuple[int, bytes]:
        try:
            result = self.pool.run(kind, request)
        except PoolError as error:
            # not cached: a timeout or a busy server may go otherwise next time
            return error.status, _json({"error": {"kind": "ServerError", "message": error.message}})
        status = HTTPStatus.BAD_REQUEST if "error" in result else HTTPStatus.OK
        if result.get("error", {}).get("kind") == "InternalError":
            status = HTTPStatus.INTERNAL_SERVER_ERROR
        response = (int(status), _json(result))
        with self._cache_lock:
            self._cache[key] = response
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return response

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a page that stopped waiting (a newer request, a closed tab) is not an error to print
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        self.pool.close()


def _json(data: Any) -> bytes:
    return json.dumps(data, allow_nan=False).encode()


class PageHandler(BaseHTTPRequestHandler):
    server: PageServer
    server_version = "einderive"
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a connection may sit idle or send slowly

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # one line per request would drown the address the command prints

    def _send(self, status: int, body: bytes, kind: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        body = _json({"error": {"kind": "ServerError", "message": message}})
        self._send(status, body, "application/json")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/api/health":
            from einderive import __version__

            self._send(200, _json({"ok": True, "version": __version__}), "application/json")
            return
        if path in ("/", "/index.html"):
            path = "/static/index.html"
        found = _static_file(path.removeprefix("/static/")) if path.startswith("/static/") else None
        if found is None:
            self._error(404, f"no such page: {path}")
            return
        body, kind = found
        self._send(200, body, kind, cache=not kind.startswith("text/html"))

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        kind = {"/api/derive": "derive", "/api/verify": "verify"}.get(path)
        if kind is None:
            self._error(404, f"no such endpoint: {path}")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "the request needs a Content-Length")
            return
        if length < 0 or length > MAX_BODY:
            # read what a client may reasonably send, so that it gets the answer, not a reset
            if 0 < length <= DRAIN_LIMIT:
                self.rfile.read(length)
            self.close_connection = True
            self._error(413, f"the request is {length} bytes; the server takes {MAX_BODY}")
            return
        try:
            request = json.loads(self.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError):
            self._error(400, "the request is not JSON")
            return
        if not isinstance(request, dict):
            self._error(400, 'expected a JSON object: {"expression": "...", ...}')
            return
        fields = {name: request[name] for name in FIELDS if name in request}
        status, body = self.server.answer(kind, fields)
        self._send(status, body, "application/json")


def make_server(
    host: str = "127.0.0.1",
    port: int = 8765,
    workers: int = 2,
    time_limit: float = 30.0,
    warm: bool = True,
) -> PageServer:
    """A server bound to ``host:port`` (port 0: any free port), its workers starting."""
    pool = WorkerPool(size=workers, time_limit=time_limit, warm=warm)
    try:
        return PageServer((host, port), pool)
    except BaseException:
        pool.close()
        raise


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    open_browser: bool = False,
    workers: int = 2,
    time_limit: float = 30.0,
) -> None:
    """Serve the page until interrupted, printing its address first."""
    server = make_server(host, port, workers, time_limit)
    if threading.current_thread() is threading.main_thread():
        # a plain `kill` stops the workers too, as Ctrl+C does
        signal.signal(signal.SIGTERM, _interrupt)
    print(f"einderive: serving the page at {server.url} (Ctrl+C stops it)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
