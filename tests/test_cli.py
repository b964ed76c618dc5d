"""The command line: output, exit status (0 success, 1 failed check, 2 bad input), help."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from einderive.cli import main, run

SEED = "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"
DX_SEED = "dX[p, q] = sum_{i,j}(dY[i, j] * W[p - s*i + 1, q - s*j + 1])"
NUMBERS = ["--param", "s=2", "--shape", "X=7x7", "--shape", "W=3x3"]
REPOSITORY = Path(__file__).resolve().parent.parent


def _lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines()]


def test_seed_prints_both_pullbacks(capsys):
    assert run([SEED]) == 0
    out, err = capsys.readouterr()
    assert DX_SEED in _lines(out)
    assert "dW[p, q] = sum_{i,j}(dY[i, j] * X[p + s*i - 1, q + s*j - 1])" in out
    assert err == ""


def test_wrt_prints_only_that_pullback(capsys):
    assert run([SEED, "--wrt", "X"]) == 0
    out = capsys.readouterr().out
    assert DX_SEED in _lines(out)
    assert "dW[" not in out


def test_dash_reads_the_expression_from_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("C[i,j] = A[i,k]*B[k,j]\n"))
    assert run(["-"]) == 0
    out = capsys.readouterr().out
    assert "dA[p, q] = sum_{j}(dC[p, j] * B[q, j])" in out
    assert "dB[p, q] = sum_{i}(dC[i, q] * A[i, p])" in out


def test_numbers_for_parameters_and_shapes(capsys):
    assert run([SEED, *NUMBERS]) == 0
    out = capsys.readouterr().out
    assert "dX[p, q] = sum_{i,j}(dY[i, j] * W[p - 2*i + 1, q - 2*j + 1])" in out
    assert "Y: (3, 3)" in out
    assert "s*" not in out


def test_range_gives_an_index_its_extent(capsys):
    assert run(["Y[i] = sum_{m}(X[i+m])", "--range", "m=3"]) == 0
    out = capsys.readouterr().out
    assert "m from 0 to 2" in out
    assert "dX[p] = sum_{i : i <= p, i >= p - 2}(dY[i])" in out


def test_emit_json(capsys):
    assert run([SEED, "--emit", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pullbacks"]["X"]["notation"] == DX_SEED
    assert data["pullbacks"]["X"]["latex"].startswith(r"\mathrm{dX}_{p, q} = \sum")
    assert set(data["pullbacks"]) == {"W", "X"}


def test_emit_json_stays_json_with_verify(capsys, loops_only):
    assert run([SEED, *NUMBERS, "--emit", "json", "--verify", "--trials", "1"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["pullbacks"]["X"]["notation"].startswith("dX[p, q] = ")
    assert "all checks passed" in err


def test_emit_latex(capsys):
    assert run([SEED, "--wrt", "X", "--emit", "latex"]) == 0
    out = capsys.readouterr().out
    assert r"\mathrm{dX}_{p, q} = \sum" in out
    assert r"W_{p - s i + 1, q - s j + 1}" in out


def test_verify_passes(capsys, loops_only):
    assert run([SEED, *NUMBERS, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out
    assert "FAILED" not in out


def test_failed_verification_exits_1(capsys, monkeypatch, loops_only):
    # every check fails when no error is small enough
    monkeypatch.setattr(loops_only, "TOLERANCE", -1.0)
    monkeypatch.setattr(loops_only, "ROUNDING", -1.0)
    assert run(["Y[i] = W[m]*X[i+m]", "--verify", "--trials", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert "all checks passed" not in out


@pytest.mark.parametrize(
    "argv, message, column, underlined",
    [
        (["Y[i] = X[i*j"], "this '[' is never closed: expected ']'", 9, "["),
        (["Y[i] = X[i] $ 2"], "unexpected character '$'", 13, "$"),
        (["Y[i,j] = X[i*j]"], "index expressions must be affine", 12, "i*j"),
        (["Y[i] = X[i]", "--shape", "X=3x3"], "'X' is read with 1 index", 8, "X[i]"),
        (["Y[i] = sum_{m}(X[i+m])"], "declare it (ranges={'m': n}, or --range m=n)", 13, "m"),
        (["Y[i] = foo(X[i])"], "unknown function 'foo'", 8, "foo"),
    ],
    ids=["syntax", "character", "non-affine", "shape", "no-extent", "function"],
)
def test_bad_text_exits_2_with_a_caret(argv, message, column, underlined, capsys, caret):
    assert run(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("einderive: error: ") and message in err.splitlines()[0]
    assert caret(err) == (argv[0], column, underlined)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--param", "s=1", "--param", "s=2"], "parameter 's' is given twice"),
        (["--param", "s=abc"], "--param s: 'abc' is not a number"),
        (["--shape", "X=7y"], "--shape X=7y: sizes are integers, like 7x7"),
        (["--range", "m=0"], "range of 'm' must be a positive integer, not 0"),
        (["--range", "m=x"], "--range m: expected m=3 (a positive integer)"),
        (["--emit", "bogus"], "--emit 'bogus': choose one of text"),
        (["--wrt", "Z"], "cannot differentiate with respect to 'Z'"),
    ],
    ids=["param-twice", "param-value", "shape", "range-zero", "range-value", "emit", "wrt"],
)
def test_bad_options_exit_2(options, message, capsys):
    assert run(["Y[i] = W[m]*X[s*i+m]", *options]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("einderive: error: ") and message in err
    assert err.count("\n") == 1  # one line: nothing in the text to point at


def test_missing_expression_exits_2(capsys):
    with pytest.raises(SystemExit) as exited:
        run([])
    assert exited.value.code == 2
    assert "the following arguments are required: expression" in capsys.readouterr().err


def test_help_lists_examples_and_exit_status(capsys):
    with pytest.raises(SystemExit) as exited:
        run(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f'einderive "{SEED}"' in out
    assert "| einderive -" in out
    assert "exit status:" in out
    for line in ("0  success", "1  a numerical verification failed", "2  bad input"):
        assert line in out
    for option in ("--wrt", "--param", "--shape", "--range", "--emit", "--verify"):
        assert option in out


def test_zero_trials_is_bad_input(capsys, loops_only):
    assert run(["Y[i] = X[i]", "--verify", "--trials", "0"]) == 2


def test_python_dash_m_runs_the_cli():
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "einderive", SEED],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert DX_SEED in _lines(done.stdout)
    assert done.stderr == ""


@pytest.mark.parametrize(
    "expression, status", [(SEED, 0), ("Y[i] = X[i] $ 2", 2)], ids=["success", "bad-input"]
)
def test_main_exits_with_the_status(expression, status, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["einderive", expression])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == status


# ---- the small things a newcomer trips on ---------------------------------------------------


def test_version(capsys):
    from einderive import __version__

    with pytest.raises(SystemExit) as stop:
        run(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"einderive {__version__}"


def test_usage_names_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        run(["--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "einderive table" in usage and "einderive serve" in usage and "--version" in usage


def test_json_carries_the_verification(capsys):
    assert run(["Y[i] = W[m]*X[i+m]", "--emit", "json", "--verify"]) == 0
    data = json.loads(capsys.readouterr().out)
    verification = data["verification"]
    assert verification["ok"] is True
    assert {c["name"] for c in verification["checks"]} == {"dW", "dX"}
    assert all(c["ok"] and c["relative_error"] < 1e-6 for c in verification["checks"])


def test_json_carries_a_second_order_verification(capsys):
    argv = ["Y[i] = W[m]*X[i+m]", "--wrt", "X", "--then", "W", "--emit", "json", "--verify"]
    assert run(argv) == 0
    assert json.loads(capsys.readouterr().out)["verification"]["ok"] is True


def test_json_without_verify_has_no_verification(capsys):
    assert run(["Y[i] = W[m]*X[i+m]", "--emit", "json"]) == 0
    assert "verification" not in json.loads(capsys.readouterr().out)


def test_explain_shows_the_second_derivation(capsys):
    """--explain with --then explains the pullbacks of dX (it was ignored)."""
    assert run(["Y[i] = W[m]*X[i+m]", "--wrt", "X", "--then", "W", "--explain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. The forward\n   dX[p] = sum_{i}(dY[i] * W[p - i])\n")
    assert "ddX[p]/dW[p1] = sum_{i}(dY[i] * delta(p1, p - i))" in out
    assert "dW: the pullback" in out
    assert (
        run(["Y[i] = W[m]*X[i+m]", "--wrt", "X", "--order", "2", "--explain", "--emit", "latex"])
        == 0
    )
    assert capsys.readouterr().out.startswith(r"\begin{array}{l}\textbf{1. The forward}")


def test_explain_with_jvp_says_it_shows_reverse_mode(capsys):
    assert run(["Y[i] = W[m]*X[i+m]", "--jvp", "--explain"]) == 2
    assert "--explain shows the steps of reverse mode" in capsys.readouterr().err
