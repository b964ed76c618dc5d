"""``einderive serve``'s HTTP API, on a real server on a free loopback port.

The page's answers are compared with what the public API gives on its own
(``--emit json``, ``d.source``, ``ed.verify``), and the Jacobian's element names
with the seed's pullback written out by hand.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import einderive as ed
from einderive import cli
from einderive.serve import PageServer, make_server

ROOT = Path(__file__).resolve().parents[1]
SEED = "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"
STATIC = ROOT / "einderive" / "serve" / "static"


@contextlib.contextmanager
def running(**options) -> Iterator[PageServer]:
    server = make_server("127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def server() -> Iterator[PageServer]:
    with running(workers=2, time_limit=120.0) as page:
        yield page


def call(server: PageServer, path: str, body: object = None, raw: bytes | None = None):
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url.rstrip("/") + path, data=data)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def answer(server: PageServer, path: str, body: object) -> tuple[int, dict]:
    status, _, data = call(server, path, body)
    return status, json.loads(data)


def cli_json(*argv: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.run([*argv, "--emit", "json"]) == 0
    return json.loads(out.getvalue())


def test_binds_to_loopback_by_default() -> None:
    server = make_server(port=0, workers=1, warm=False)
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert server.url.startswith("http://127.0.0.1:")
    finally:
        server.server_close()


def test_derive_answers_the_json_of_the_command_line(server: PageServer) -> None:
    request = {"expression": SEED, "params": "s = 2", "shapes": "X=7x7; W=3x3"}
    status, page = answer(server, "/api/derive", request)
    assert status == 200, page
    expected = cli_json(SEED, "--param", "s=2", "--shape", "X=7x7", "--shape", "W=3x3")
    assert page["derivation"] == expected
    derivation = ed.derive(SEED, {"s": 2}, {"X": (7, 7), "W": (3, 3)})
    for kind in ("loops", "numpy", "jax", "torch"):
        assert page["sources"][kind]["code"] == derivation.source(kind)
    assert "def pullback_X" in page["sources"]["numpy"]["code"]
    assert [s["title"] for s in page["steps"]] == [s.title for s in derivation.explain().steps]
    assert page["latex"]["backward"] == derivation.latex()
    assert page["text"] == str(derivation)
    # the calls of --emit conv, one block per pullback
    assert page["conv"]["X"]["generic"].startswith("dX = out[0, 0], out = conv(dY, W,")
    assert "jax.lax.conv_general_dilated(dY" in page["conv"]["X"]["jax"]
    assert "torch.nn.functional.conv" in page["conv"]["X"]["torch"]
    assert page["conv"]["W"]["generic"].startswith("dW = ")


def test_a_padding_mode_call_is_in_the_json_not_in_a_pullback_block(server: PageServer) -> None:
    text = "Y[i] = W[m]*X[mod(i+m-1, 8)]"
    request = {"expression": text, "shapes": "X=8, W=3, Y=8"}
    status, page = answer(server, "/api/derive", request)
    assert status == 200, page
    assert page["derivation"]["padding_mode"]["mode"] == "circular"
    (line,) = page["conv"]["X"]["lines"]  # the section after it is no line of dX's block
    assert line.startswith("dX: not a convolution: ")
    assert page["conv"]["W"]["lines"][0].startswith("dW: not a convolution: ")


def test_jacobian_cells_name_the_elements_of_the_seed(server: PageServer) -> None:
    status, page = answer(
        server, "/api/derive", {"expression": SEED, "params": "s=2", "shapes": "X=5x5, W=3x3"}
    )
    assert status == 200, page
    picture = page["jacobians"]["X"]
    assert (picture["rows"], picture["columns"]) == (4, 25)  # Y is 2x2, X is 5x5
    matrix = np.array(picture["values"]).reshape(4, 25)
    reference = ed.derive(SEED, {"s": 2}, {"X": (5, 5), "W": (3, 3)}).jacobian("X").matrix
    np.testing.assert_allclose(matrix, reference, atol=1e-6)
    # the seed by hand: dY[i,j]/dX[p,q] = W[p - 2i + 1, q - 2j + 1] where that is inside W
    cells = np.array(picture["cells"]).reshape(4, 25)
    for row in range(4):
        i, j = divmod(row, 2)
        for column in range(25):
            p, q = divmod(column, 5)
            m, n = p - 2 * i + 1, q - 2 * j + 1
            if 0 <= m < 3 and 0 <= n < 3:
                assert picture["legend"][cells[row, column]] == f"W[{m}, {n}]"
            else:
                assert cells[row, column] == "0"
    symbolic = answer(server, "/api/derive", {"expression": SEED})[1]
    assert symbolic["jacobians"] == {}


EXAMPLES = json.loads((STATIC / "examples.json").read_text())


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["label"] for e in EXAMPLES])
def test_every_example_button_derives_and_verifies(server: PageServer, example: dict) -> None:
    request = {name: example.get(name, "") for name in ("expression", "params", "shapes", "ranges")}
    status, page = answer(server, "/api/derive", request)
    assert status == 200, page
    assert page["derivation"]["pullbacks"]
    status, page = answer(server, "/api/verify", request)
    assert status == 200, page
    assert page["verification"]["ok"], page["verification"]["report"]


def test_the_examples_are_the_ones_the_issue_lists() -> None:
    labels = " ".join(e["label"].lower() for e in EXAMPLES)
    for name in ("strided", "max pooling", "transposed", "softmax", "layer norm", "sigmoid"):
        assert name in labels, name
    assert EXAMPLES[0]["expression"] == SEED


def test_verify_answers_the_report(server: PageServer) -> None:
    status, page = answer(server, "/api/verify", {"expression": "Y[i] = W[m]*X[2*i+m]"})
    assert status == 200, page
    verification = page["verification"]
    report = ed.verify("Y[i] = W[m]*X[2*i+m]")
    assert verification["ok"] is True
    assert len(verification["checks"]) == len(report.checks)
    assert verification["worst_error"] == max(c.error for c in report.checks)
    assert set(verification["backends"]) == {c.backend for c in report.checks}


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"expression": "Y[i,j] = X[i*j]"}, "expression"),
        ({"expression": "Y[i] = X[i"}, "expression"),
        ({"expression": "Y[i] = X[i]\nZ[i] = foo(Y[i])"}, "expression"),
        ({"expression": "Y[i] = X[i]", "shapes": "X=7y7"}, "shapes"),
        ({"expression": "Y[i] = X[i]", "params": "s=two"}, "params"),
        ({"expression": "Y[i] = X[i]", "ranges": "m=-1"}, "ranges"),
        ({"expression": "   "}, "expression"),
        ({"expression": ["Y[i] = X[i]"]}, "expression"),
    ],
)
def test_bad_input_names_the_field_and_the_column(
    server: PageServer, request_body: dict, field: str
) -> None:
    text = request_body["expression"]
    located = None
    if field == "expression" and isinstance(text, str) and text.strip():
        with pytest.raises(ed.EinderiveError) as raised:
            ed.derive(text)
        located = raised.value
    for path in ("/api/derive", "/api/verify"):
        status, page = answer(server, path, request_body)
        assert status == 400, page
        error = page["error"]
        assert error["field"] == field and error["message"]
        if located is None:
            assert error.get("column") is None and error.get("span") is None
        else:
            assert error["message"] == located.message
            assert (error["line"], error["column"]) == (located.line, located.column)
            assert error["span"] == list(located.span)
            start, end = error["span"]
            assert text[start:end].strip()  # the marked text is not empty


def test_the_seed_error_marks_the_product_of_two_indices(server: PageServer) -> None:
    error = answer(server, "/api/derive", {"expression": "Y[i,j] = X[i*j]"})[1]["error"]
    assert error["kind"] == "IndexNotationError"
    assert (error["line"], error["column"], error["span"]) == (1, 12, [11, 14])


def test_limits_on_the_input(server: PageServer) -> None:
    status, _, data = call(server, "/api/derive", raw=b"{" + b" " * (65 * 1024) + b"}")
    assert status == 413 and "bytes" in json.loads(data)["error"]["message"]
    long = {"expression": "Y[i] = " + " + ".join(["X[i]"] * 1200)}
    status, page = answer(server, "/api/derive", long)
    assert status == 400 and page["error"]["field"] == "expression"
    big = {"expression": "Y[i] = X[i]", "shapes": "X=2000x2000"}
    status, page = answer(server, "/api/derive", big)
    assert status == 400 and page["error"]["field"] == "shapes"
    status, _, data = call(server, "/api/derive", raw=b"not json")
    assert status == 400 and "JSON" in json.loads(data)["error"]["message"]
    status, _, data = call(server, "/api/derive", raw=b"[1, 2]")
    assert status == 400
    status, _, _ = call(server, "/api/nothing", {"expression": "Y[i] = X[i]"})
    assert status == 404


def test_large_numeric_shapes_skip_the_picture(server: PageServer) -> None:
    request = {"expression": "Y[i] = W[m]*X[i+m]", "shapes": "X=3000, W=3"}
    status, page = answer(server, "/api/derive", request)
    assert status == 200, page
    assert "too large to draw" in page["jacobians"]["X"]["skipped"]


def test_a_slow_request_is_stopped_and_the_server_keeps_serving() -> None:
    slow = {"expression": "Y[i,j] = W[m,n]*X[i+m,j+n]", "shapes": "X=200x200, W=5x5"}
    with running(workers=1, time_limit=5.0) as page:
        results: list[tuple[int, dict]] = []
        threads = [
            threading.Thread(target=lambda: results.append(answer(page, "/api/verify", slow)))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for status, body in results:
            assert status == 504 and "stopped after 5 s" in body["error"]["message"]
        # the worker was replaced: the next request is answered
        status, body = answer(page, "/api/derive", {"expression": "Y[i] = W[m]*X[i+m]"})
        assert status == 200 and "derivation" in body
        assert json.loads(call(page, "/api/health")[2])["ok"] is True


def test_static_files_and_no_way_out_of_them(server: PageServer) -> None:
    status, headers, body = call(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b'src="/static/katex/katex.min.js"' in body
    status, headers, body = call(server, "/static/katex/fonts/KaTeX_Main-Regular.woff2")
    assert status == 200 and headers["Content-Type"] == "font/woff2" and len(body) > 1000
    for path in (
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/katex/../../work.py",
        "/static/.hidden",
        "/server.py",
    ):
        assert call(server, path)[0] == 404, path


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for name in ("index.html", "app.js", "app.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", text), name
        assert 'fetch("http' not in text and "import(" not in text, name
    css = (STATIC / "katex" / "katex.min.css").read_text()
    for font in re.findall(r"url\((fonts/[^)]+\.woff2)\)", css):
        assert (STATIC / "katex" / font).is_file(), font


def test_the_script_parses() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the KaTeX test needs it too)")
    subprocess.run([node, "--check", str(STATIC / "app.js")], check=True)


def test_katex_is_the_version_the_latex_test_uses() -> None:
    shipped = re.search(r'version:"([0-9.]+)"', (STATIC / "katex" / "katex.min.js").read_text())
    lock = json.loads((ROOT / "tests" / "katex" / "package-lock.json").read_text())
    assert shipped is not None
    assert shipped.group(1) == lock["packages"]["node_modules/katex"]["version"]


def test_serve_command_line() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        cli.run(["serve", "--help"])
    assert done.value.code == 0
    assert "--port" in out.getvalue() and "--open" in out.getvalue()
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as done:
        cli.run(["serve", "--workers", "0"])
    assert done.value.code == 2


def test_serve_on_a_taken_port_says_so(server: PageServer) -> None:
    port = server.server_address[1]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.run(["serve", "--port", str(port), "--workers", "1"]) == 2
    assert f"cannot serve on 127.0.0.1:{port}" in err.getvalue()


def test_a_part_that_fails_is_named_and_the_rest_still_shows(monkeypatch) -> None:
    from einderive.serve import work

    def broken(*args, **kwargs):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(ed.Derivation, "explain", broken)
    monkeypatch.setattr(ed.Derivation, "jacobian", broken)
    page = work.derive_answer({"expression": SEED, "params": "s=2", "shapes": "X=5x5, W=3x3"})
    assert "error" not in page
    assert page["steps"] == [] and page["latex"]["forward"] is None
    assert page["problems"] == [
        "the derivation steps could not be shown: RuntimeError: broken on purpose "
        "(a bug in einderive: please report it)"
    ]
    assert "broken on purpose" in page["jacobians"]["X"]["skipped"]
    assert set(page["derivation"]["pullbacks"]) == {"W", "X"}
    assert "def pullback_X" in page["sources"]["numpy"]["code"]
