"""Everything einderive computes, against an oracle that owes nothing to it (tests/oracle.py).

The issue's repros one by one, then a sweep of random programs: every backend, the
four emitted modules (forward, each pullback, vjp), from numeric and from symbolic
derivations, and every reported convolution call, run by a call built in the test.
The long sweep is ``python benchmarks/sweep.py --oracle --count 5000``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("jax")

from oracle import cases, check, parse_case  # noqa: E402

import einderive as ed  # noqa: E402
from einderive.conv.recognise import NotConvolution, recognise  # noqa: E402

# (text, input shapes, declared shapes, ranges)
REPROS = {
    "band": ("Y[i,j] = X[i]*W[j-i]", {"X": (3,), "W": (2,)}, None, {"j": 4}),
    "scatter-diagonal": ("Y[i, 2*i+m] = X[i]*W[m]", {"X": (3,), "W": (2,)}, None, None),
    "locally-connected": ("Y[i] = A[i,j]*X[i+j]", {"A": (4, 3), "X": (6,)}, None, None),
    "locally-connected-tanh": (
        "Z[i] = A[i,m]*X[i+m]; Y[i] = tanh(Z[i])",
        {"A": (4, 3), "X": (6,)},
        None,
        None,
    ),
    "locally-connected-strided": (
        "Z[i] = A[i,m]*X[2*i+m]; Y[i] = Z[i]*W[i]",
        {"A": (4, 3), "X": (9,), "W": (4,)},
        None,
        None,
    ),
    "declared-reversed": ("Y[i] = X[9-i]", {"X": (7,)}, {"Y": (10,)}, None),
    "declared-sum": ("Y[i,j] = X[i+j]", {"X": (7,)}, {"Y": (4, 4)}, None),
    "depthwise-batch": (
        "Y[b,c,i] = W[c,m]*X[b,c,i+m-1]",
        {"W": (3, 3), "X": (2, 3, 6)},
        None,
        None,
    ),
    "grouped": (
        "Y[b,g,o,i] = W[g,o,c,m]*X[b,g,c,i+m]",
        {"W": (2, 3, 2, 3), "X": (2, 2, 2, 6)},
        None,
        None,
    ),
    "reversed-input": (
        "Y[i,j] = W[m,n]*X[i-m+2, 7-j-n]",
        {"W": (3, 3), "X": (6, 8)},
        {"Y": (6, 8)},
        None,
    ),
}


@pytest.mark.parametrize("name", list(REPROS))
def test_repro_against_the_oracle(name: str) -> None:
    case = parse_case(*REPROS[name])
    outcome = check(case, seed=1)
    assert outcome.symbolic > 0


def _recognised(name: str) -> dict:
    text, inputs, declared, ranges = REPROS[name]
    return ed.derive(text, shapes={**inputs, **(declared or {})}, ranges=ranges).convolutions


@pytest.mark.parametrize(
    ("name", "reason"),
    [("band", "diagonal"), ("scatter-diagonal", "diagonal")],
)
def test_a_diagonal_is_not_a_convolution(name: str, reason: str) -> None:
    recognition = _recognised(name)["X"]
    assert isinstance(recognition, NotConvolution)
    assert reason in recognition.reason and "\n" not in recognition.reason


def test_a_kernel_per_output_position_is_not_a_convolution() -> None:
    text, inputs, _, _ = REPROS["locally-connected"]
    derivation = ed.derive(text, shapes=inputs)
    forward = recognise(derivation.program.statements[0], derivation.shapes)
    assert isinstance(forward, NotConvolution)
    assert "A is indexed by the output position i" in forward.reason
    assert "locally connected" in forward.reason


def test_a_declared_output_shape_bounds_what_no_read_bounds() -> None:
    y = ed.evaluate("Y[i] = X[9-i]", {"X": np.arange(7.0)}, shapes={"Y": (10,)})
    np.testing.assert_array_equal(y, [0, 0, 0, 6, 5, 4, 3, 2, 1, 0])
    y = ed.evaluate("Y[i,j] = X[i+j]", {"X": np.arange(7.0)}, shapes={"Y": (4, 4)})
    np.testing.assert_array_equal(y, np.add.outer(np.arange(4.0), np.arange(4.0)))


def test_a_declared_output_shape_on_the_command_line(capsys: pytest.CaptureFixture) -> None:
    from einderive.cli import run

    assert run(["Y[i,j] = X[i+j]", "--shape", "Y=4x4", "--shape", "X=7"]) == 0
    out = capsys.readouterr().out
    assert "Y: (4, 4)" in out and "dX[p] = sum_{j}(dY[p - j, j])" in out


SWEEP = 300  # CI; ``benchmarks/sweep.py --oracle`` runs thousands, every check on each
BLOCKS = 12


@pytest.mark.parametrize("block", range(BLOCKS))
def test_random_programs_against_the_oracle(block: int) -> None:
    """Random programs: every backend, the NumPy and PyTorch modules and every conv call on
    each; the loops module, a symbolic derivation and a second printing of the numeric
    modules on every sixth (the others check the modules the backends ran), JAX (which
    compiles per shape) on every twentieth."""
    size = SWEEP // BLOCKS
    for seed, case in cases(size, seed=1000 + block * size):
        full = seed % 6 == 0
        check(case, seed, with_jax=seed % 20 == 0, full=full, reprint=full)


@pytest.mark.parametrize("block", range(2))
def test_random_reads_against_the_oracle(block: int) -> None:
    """Issue 18's reads only: wrapped, clamped, reflected and padded convolutions, max
    pooling padded with a value, // and mod, index comparisons (the sweep's ``--families
    reads``)."""
    for seed, case in cases(12, seed=5000 + 12 * block, families="reads"):
        check(case, seed, with_jax=seed % 6 == 0, full=seed % 3 == 0)


def test_a_depthwise_kernel_pullback_with_a_batch_is_a_call_in_batch_groups() -> None:
    from einderive.conv.calls import jax_call, torch_call
    from einderive.conv.recognise import ConvPullback

    recognition = _recognised("depthwise-batch")["W"]
    assert isinstance(recognition, ConvPullback)
    call = recognition.call
    assert (call.x, call.w, call.batch_groups, call.groups) == ("X", "dY", 3, 1)
    assert "batch_groups=3" in str(call)
    assert jax_call(call).batch_group_count == 3
    assert "batch_group_count=3" in str(jax_call(call))
    torch = torch_call(call, recognition.kernel_size)
    assert torch.groups == 3 and ".flatten(1, 2)" in str(torch)


def test_a_grouped_convolution_with_channels_in_each_group_is_one_grouped_call() -> None:
    from einderive.conv.recognise import ConvPullback

    recognised = _recognised("grouped")
    for name in ("X", "W"):
        recognition = recognised[name]
        assert isinstance(recognition, ConvPullback), recognition
        assert recognition.call.groups == 2
    # dX = conv(dY as (B, G*O, N), W as (G*C, O, K)), the output split into (G, C)
    assert recognised["X"].x_layout.axes == (0, (1, 2), 3)
    assert recognised["X"].w_layout.axes == ((0, 2), 1, 3)
    assert recognised["X"].out_axes == (0, (1, 2), 3)


def test_an_input_read_reversed_is_a_convolution_of_the_flipped_input() -> None:
    from einderive.conv.recognise import ConvPullback

    text, inputs, declared, _ = REPROS["reversed-input"]
    derivation = ed.derive(text, shapes={**inputs, **declared})
    forward = recognise(derivation.program.statements[0], derivation.shapes, ["W"])
    assert isinstance(forward, ConvPullback), forward
    assert (forward.call.x, forward.x_layout.flips) == ("X", (1,))
    for name in ("X", "W"):
        assert isinstance(derivation.convolutions[name], ConvPullback)
