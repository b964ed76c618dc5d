"""The regenerated cheat sheet: every derived row reproduces the pullbacks on the whole sweep,
applied by the tests' own brute-force implementation of the generic call; the seed table's
rows are judged as the README says."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sympy
from test_conv_calls import naive_conv_1d, reference_conv

import einderive as ed
from einderive import table
from einderive.cli import run
from einderive.conv.calls import GenericConv
from einderive.conv.recognise import ConvPullback
from einderive.run.compile import run as run_backend
from einderive.verify import draw_values, instantiate


@pytest.fixture(scope="module")
def rows() -> list[table.Row]:
    return table.build()


def test_every_derived_row_is_verified(rows: list[table.Row]) -> None:
    assert [row.family.key for row in rows] == [f.key for f in table.FAMILIES]
    for row in rows:
        assert row.derived.ok, row.derived.counterexample
        assert row.derived.configurations == 2 * len(table.samples(row.family))


def test_the_seed_rows_verdicts(rows: list[table.Row]) -> None:
    verdicts = {row.family.key: row for row in rows}
    for key in ("valid", "kernel", "padding", "strided", "transposed"):
        assert verdicts[key].seed["x_cot"].ok and verdicts[key].seed["w_cot"].ok
    # (N+K)%s should be (N-K)%s: wrong for N=1, K=1, s=3
    strided = verdicts["strided-valid"]
    assert not strided.seed["x_cot"].ok and "x_cot" not in strided.seed_interpretation
    assert "N=1, K=1, p_l=0, p_r=0, s=3" in strided.seed["x_cot"].counterexample
    # the dilated row's input padding holds only with K the dilated size
    dilated = verdicts["dilated"]
    assert dilated.seed_interpretation["x_cot"].startswith("K means the dilated kernel size")
    assert dilated.seed["w_cot"].ok
    general = verdicts["general"]
    for which in ("x_cot", "w_cot"):
        assert "N the filled input size" in general.seed_interpretation[which]


def _numbers(call: GenericConv, config: dict) -> GenericConv:
    mapping = {symbol: sympy.Integer(value) for symbol, value in config.items()}
    numeric = call.subs(mapping)
    ((lo, hi),) = numeric.padding
    return GenericConv(
        call.x,
        call.w,
        padding=((int(lo), int(hi)),),
        stride=(int(numeric.stride[0]),),
        dilation=(int(numeric.dilation[0]),),
        fill=(int(numeric.fill[0]),),
        flip_kernel=call.flip_kernel,
        permute_kernel=call.permute_kernel,
        permute_input=call.permute_input,
    )


def _check_by_brute_force(family: table.Family, step: int) -> None:
    x_cot, w_cot = table.derived_calls(family)
    for config, data in table.samples(family)[::step]:
        operands = {"X": data["X"], "W": data["W"], "dY": data["dY"]}
        for conv, expected in ((x_cot, data["x_cot"]), (w_cot, data["w_cot"])):
            call = _numbers(conv.call, config)
            x = operands[call.x][None, None]
            w = operands[call.w][None, None]
            result = naive_conv_1d(call, x, w)[0, 0]
            assert result.shape == expected.shape, (family.key, config)
            np.testing.assert_allclose(result, expected, atol=1e-10)


@pytest.mark.parametrize("family", table.FAMILIES, ids=[f.key for f in table.FAMILIES])
def test_derived_numbers_by_the_tests_brute_force_call(family: table.Family) -> None:
    """1-D, one channel: the call computed by a loop per index from the generic call's definition.

    The whole sweep for every family but the general one, whose 30 700 configurations are
    taken every 7th here and all of them under ``-m sweep``.
    """
    _check_by_brute_force(family, 7 if family.key == "general" else 1)


@pytest.mark.sweep
def test_general_family_on_the_whole_sweep() -> None:
    _check_by_brute_force(table.FAMILIES[-1], 1)


SAMPLES_2D = [
    ("Y[b,o,i,j] = W[o,c,m,n]*X[b,c,2*i+2*m-1, j+n-2]", {"X": (2, 3, 9, 8), "W": (4, 3, 2, 3)}),
    ("Y[b,o,i,j] = W[o,c,m,n]*X[b,c,3*i+m, 2*j+2*n-1]", {"X": (1, 2, 10, 9), "W": (3, 2, 3, 2)}),
    ("Y[b,o,2*i+m,2*j+n] = X[b,c,i,j]*W[c,o,m,n]", {"X": (2, 3, 4, 3), "W": (3, 2, 3, 2)}),
]


@pytest.mark.parametrize("text, shapes", SAMPLES_2D)
def test_two_dimensional_multichannel_calls(text: str, shapes: dict) -> None:
    """2-D with channels: the recognised call, by the tests' brute force, equals the pullback."""
    derivation = ed.derive(text, shapes=shapes)
    rng = np.random.default_rng(3)
    numeric = instantiate(derivation, draw_values(derivation.program, random.Random(0)))
    program = numeric.program
    arrays = {
        n: rng.standard_normal(tuple(int(k) for k in program.shapes[n])) for n in program.inputs
    }
    cotangent = rng.standard_normal(tuple(int(k) for k in program.shapes[program.output]))
    expected = run_backend("loops", numeric, arrays, cotangent)
    tensors = {**arrays, numeric.backward.seeds[0]: cotangent}
    for name, recognition in numeric.convolutions.items():
        assert isinstance(recognition, ConvPullback), str(recognition)
        call = recognition.call
        x = recognition.x_layout.apply(tensors[call.x])
        w = recognition.w_layout.apply(tensors[call.w])
        out = reference_conv(call.subs({}), np.asarray(x), np.asarray(w))
        out = out[tuple(0 if a is None else slice(None) for a in recognition.out_axes)]
        if recognition.transpose is not None:
            out = out.transpose(recognition.transpose)
        np.testing.assert_allclose(out, expected[name], atol=1e-10)


def test_cli_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, rows: list[table.Row]
) -> None:
    monkeypatch.setattr(table, "build", lambda: rows)  # built once, by the fixture
    assert run(["table", "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| Description | Primal |")
    assert out.count("\n") >= len(table.FAMILIES) + 1
    assert "WRONG" in out and "holds only if" in out


def test_the_rendered_table_names_nothing_unshipped(rows: list[table.Row]) -> None:
    from test_documents import UNSHIPPED

    for text in (table.render_text(rows), table.render_markdown(rows)):
        assert not UNSHIPPED.search(text), UNSHIPPED.findall(text)
    assert "Cheat sheet's row" in table.render_markdown(rows)


def test_the_readme_shows_the_table_as_printed(rows: list[table.Row]) -> None:
    from test_readme import README

    readme = README.read_text().splitlines()
    start = readme.index(next(line for line in readme if line.startswith("| Description |")))
    shown = []
    for line in readme[start:]:
        if not line.startswith("|"):
            break
        shown.append(line)
    assert shown == table.render_markdown(rows).splitlines()
