"""The JAX and PyTorch calls of the generic convolution agree with its definition."""

from __future__ import annotations

import json
import sys
from importlib.util import find_spec

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import einderive as ed
from einderive.conv.calls import (
    GenericConv,
    JaxConvCall,
    TorchConvCall,
    jax_call,
    run_jax,
    run_torch,
    torch_call,
)
from einderive.errors import ArgumentError, BackendMissingError

HAS_JAX = find_spec("jax") is not None
HAS_TORCH = find_spec("torch") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
RUNNERS = [
    pytest.param(run_jax, id="jax", marks=needs_jax),
    pytest.param(run_torch, id="torch", marks=needs_torch),
]


# The reference: the generic call straight from its definition (CONTRACT section 3).


def _along(axis: int, ndim: int, index: slice | int) -> tuple[slice | int, ...]:
    return tuple(index if position == axis else slice(None) for position in range(ndim))


def reference_conv(conv: GenericConv, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Permute, flip, fill, pad or crop, then the strided dilated correlation."""
    rank = conv.rank
    if conv.permute_input:
        x = x.swapaxes(0, 1)
    if conv.permute_kernel:
        w = w.swapaxes(0, 1)
    if conv.flip_kernel:
        w = w[(slice(None), slice(None)) + (slice(None, None, -1),) * rank]
    for axis, fill in enumerate(conv.fill, start=2):
        shape = list(x.shape)
        shape[axis] = (x.shape[axis] - 1) * fill + 1
        filled = np.zeros(shape)
        filled[_along(axis, x.ndim, slice(None, None, fill))] = x
        x = filled
    for axis, (lo, hi) in enumerate(conv.padding, start=2):
        widths = [(0, 0)] * x.ndim
        widths[axis] = (max(lo, 0), max(hi, 0))
        x = np.pad(x, widths)
        end = max(x.shape[axis] - max(-hi, 0), 0)
        x = x[_along(axis, x.ndim, slice(max(-lo, 0), end))]
    batch, channels = x.shape[:2]
    out_channels, group_channels = w.shape[:2]
    groups = conv.groups
    assert channels == groups * group_channels and out_channels % groups == 0
    lengths = [
        (n - d * (k - 1) - 1) // s + 1
        for n, k, s, d in zip(x.shape[2:], w.shape[2:], conv.stride, conv.dilation, strict=True)
    ]
    if min(lengths) <= 0:
        return np.zeros((batch, out_channels, *(max(length, 0) for length in lengths)))
    x_groups = x.reshape(batch, groups, group_channels, *x.shape[2:])
    w_groups = w.reshape(groups, out_channels // groups, group_channels, *w.shape[2:])
    out = np.zeros((batch, groups, out_channels // groups, *lengths))
    for offset in np.ndindex(*w.shape[2:]):
        window = tuple(
            slice(d * m, d * m + s * (length - 1) + 1, s)
            for m, s, d, length in zip(offset, conv.stride, conv.dilation, lengths, strict=True)
        )
        out += np.einsum(
            "bgc...,goc->bgo...",
            x_groups[(slice(None),) * 3 + window],
            w_groups[(slice(None),) * 3 + offset],
        )
    return out.reshape(batch, out_channels, *lengths)


def naive_conv_1d(conv: GenericConv, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The 1-D call as one loop per index, reading the unfilled, unpadded x."""
    ((lo, hi),), (s,), (d,), (f,) = conv.padding, conv.stride, conv.dilation, conv.fill
    if conv.permute_input:
        x = x.swapaxes(0, 1)
    if conv.permute_kernel:
        w = w.swapaxes(0, 1)
    batch, _, size = x.shape
    out_channels, group_channels, kernel = w.shape
    per_group = out_channels // conv.groups
    length = ((size - 1) * f + 1 + lo + hi - d * (kernel - 1) - 1) // s + 1
    out = np.zeros((batch, out_channels, max(length, 0)))
    for b, o, i, c, m in np.ndindex(batch, out_channels, max(length, 0), group_channels, kernel):
        tap = kernel - 1 - m if conv.flip_kernel else m
        position = s * i + d * m - lo
        if position % f == 0 and 0 <= position // f < size:
            channel = (o // per_group) * group_channels + c
            out[b, o, i] += w[o, c, tap] * x[b, channel, position // f]
    return out


# Random configurations.


@st.composite
def conv_cases(draw: st.DrawFn, rank: int) -> tuple[GenericConv, np.ndarray, np.ndarray]:
    """A random generic call with a non-empty output, and its operands.

    Half of the calls have the shape of a transposed convolution (stride 1, kernel
    flipped and permuted, one group), so that torch's conv_transpose form is exercised.
    """
    max_size, max_kernel = (12, 5) if rank < 3 else (5, 3)
    transposed = draw(st.booleans())
    padding, stride, dilation, fill, kernel, size = [], [], [], [], [], []
    for _ in range(rank):
        s = 1 if transposed else draw(st.integers(1, 4))
        d, f = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        lo, hi = draw(st.integers(-3, 4)), draw(st.integers(-3, 4))
        k = draw(st.integers(1, max_kernel))
        # The smallest input whose filled, padded length holds one dilated window.
        smallest = max(1, 1 - (-(d * (k - 1) - lo - hi) // f))
        assume(smallest <= max_size)
        padding.append((lo, hi))
        stride.append(s)
        dilation.append(d)
        fill.append(f)
        kernel.append(k)
        size.append(draw(st.integers(smallest, max_size)))
    grouping = "single" if transposed else draw(st.sampled_from(["single", "depthwise", "grouped"]))
    if grouping == "single":
        groups, group_channels, out_channels = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif grouping == "depthwise":
        groups, group_channels = draw(st.integers(1, 3)), 1
        out_channels = groups * draw(st.integers(1, 2))
    else:
        groups, group_channels = 2, 2
        out_channels = groups * draw(st.integers(1, 2))
    batch = draw(st.integers(1, 3))
    conv = GenericConv(
        draw(st.sampled_from(["x", "dY"])),
        draw(st.sampled_from(["w", "W"])),
        padding=tuple(padding),
        stride=tuple(stride),
        dilation=tuple(dilation),
        fill=tuple(fill),
        flip_kernel=transposed or draw(st.booleans()),
        permute_kernel=transposed or draw(st.booleans()),
        permute_input=draw(st.booleans()),
        groups=groups,
    )
    x_shape = [batch, groups * group_channels, *size]
    w_shape = [out_channels, group_channels, *kernel]
    if conv.permute_input:
        x_shape[:2] = x_shape[1::-1]
    if conv.permute_kernel:
        w_shape[:2] = w_shape[1::-1]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return conv, rng.standard_normal(x_shape), rng.standard_normal(w_shape)


def _assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float64
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(conv_cases(1))
def test_reference_matches_naive_loops(case: tuple[GenericConv, np.ndarray, np.ndarray]) -> None:
    conv, x, w = case
    _assert_close(reference_conv(conv, x, w), naive_conv_1d(conv, x, w))


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(
    "rank, examples",
    [
        (1, 25),
        (2, 15),
        (3, 5),
        pytest.param(1, 400, marks=pytest.mark.sweep, id="sweep-1"),
        pytest.param(2, 300, marks=pytest.mark.sweep, id="sweep-2"),
        pytest.param(3, 100, marks=pytest.mark.sweep, id="sweep-3"),
    ],
)
def test_runners_match_reference(runner, rank: int, examples: int) -> None:
    @settings(max_examples=examples, deadline=None)
    @given(conv_cases(rank))
    def check(case: tuple[GenericConv, np.ndarray, np.ndarray]) -> None:
        conv, x, w = case
        _assert_close(runner(conv, x, w), reference_conv(conv, x, w))

    check()


# Table cases: which form each framework call takes, and that the printed call runs.


def _conv(padding, stride=None, dilation=None, fill=None, **flags) -> GenericConv:
    rank = len(padding)
    return GenericConv(
        flags.pop("x", "dY"),
        flags.pop("w", "W"),
        padding=padding,
        stride=stride or (1,) * rank,
        dilation=dilation or (1,) * rank,
        fill=fill or (1,) * rank,
        **flags,
    )


TRANSPOSED = dict(flip_kernel=True, permute_kernel=True)


def _case(name, conv, x_shape, w_shape, function, fill=False, pad=None, crop=None):
    """A table row: a call, its operands' shapes, and the torch form expected for it."""
    return pytest.param(conv, x_shape, w_shape, (function, fill, pad, crop), id=name)


TABLE = [
    _case("x-cot valid", _conv(((2, 2),), **TRANSPOSED), (2, 4, 6), (4, 3, 3), "conv_transpose1d"),
    _case(
        "x-cot, dilation allows output padding",
        _conv(((2, 3),), dilation=(2,), **TRANSPOSED),
        (2, 4, 6),
        (4, 3, 2),
        "conv_transpose1d",
    ),
    _case(
        "x-cot, asymmetric",
        _conv(((1, 2),), **TRANSPOSED),
        (2, 4, 6),
        (4, 3, 2),
        "conv1d",
        pad=(1, 2),
    ),
    _case(
        "w-cot valid",
        _conv(((0, 0),), permute_kernel=True, permute_input=True),
        (2, 3, 8),
        (2, 4, 6),
        "conv1d",
    ),
    _case(
        "transposed, output padding",
        _conv(((2, 3),), fill=(2,), **TRANSPOSED),
        (2, 4, 5),
        (4, 3, 3),
        "conv_transpose1d",
    ),
    _case(
        "transposed, crop",
        _conv(((-1, 0),), fill=(2,), **TRANSPOSED),
        (1, 2, 6),
        (2, 3, 3),
        "conv_transpose1d",
    ),
    _case(
        "transposed, padding past torch's",
        _conv(((3, 3),), fill=(2,), **TRANSPOSED),
        (1, 2, 6),
        (2, 3, 3),
        "conv1d",
        fill=True,
    ),
    _case(
        "fill and stride",
        _conv(((2, 1),), stride=(2,), fill=(2,), **TRANSPOSED),
        (2, 4, 7),
        (4, 3, 3),
        "conv1d",
        fill=True,
        pad=(2, 1),
    ),
    _case("crop", _conv(((-2, 1),)), (1, 2, 9), (3, 2, 2), "conv1d", pad=(0, 1), crop=(-2, 0)),
    _case("crop only", _conv(((-2, -1),)), (1, 2, 9), (3, 2, 2), "conv1d", crop=(-2, -1)),
    _case(
        "crop past the input, into the padding",
        _conv(((0, 0), (3, -2))),
        (1, 1, 2, 1),
        (1, 1, 1, 1),
        "conv2d",
        pad=(3, 0, 0, 0),
        crop=(0, -2, 0, 0),
    ),
    _case(
        "2-D, one axis symmetric",
        _conv(((1, 1), (0, 2)), stride=(2, 1), dilation=(1, 2)),
        (2, 3, 7, 6),
        (2, 3, 3, 2),
        "conv2d",
        pad=(0, 2, 0, 0),
    ),
    _case(
        "depthwise",
        _conv(((1, 1),), groups=3, flip_kernel=True),
        (2, 3, 7),
        (6, 1, 3),
        "conv1d",
    ),
    _case(
        "grouped, permuted kernel and fill",
        _conv(((2, 2),), fill=(2,), groups=2, **TRANSPOSED),
        (1, 4, 5),
        (2, 4, 3),
        "conv1d",
        fill=True,
    ),
    _case(
        "3-D transposed",
        _conv(((1, 2), (2, 2), (0, 2)), dilation=(1, 2, 1), fill=(2, 1, 3), **TRANSPOSED),
        (1, 2, 3, 4, 3),
        (2, 2, 2, 2, 2),
        "conv_transpose3d",
    ),
    _case(
        "permuted input, 2-D",
        _conv(((0, 1), (1, 0)), fill=(1, 2), permute_input=True),
        (3, 2, 4, 5),
        (2, 3, 2, 2),
        "conv2d",
        fill=True,
        pad=(1, 0, 0, 1),
    ),
]


def _eval_jax(code: str, conv: GenericConv, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    import jax

    with jax.enable_x64(True):
        namespace = {"jax": jax, conv.x: jax.numpy.asarray(x), conv.w: jax.numpy.asarray(w)}
        return np.asarray(eval(code, namespace))


def _eval_torch(code: str, conv: GenericConv, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    import torch

    namespace = {"torch": torch, conv.x: torch.from_numpy(x), conv.w: torch.from_numpy(w)}
    return eval(code, namespace).numpy()


@pytest.mark.parametrize("conv, x_shape, w_shape, torch_form", TABLE)
def test_table_forms(conv, x_shape, w_shape, torch_form) -> None:
    call = torch_call(conv, kernel_size=w_shape[2:])
    assert (call.function, call.materialize_fill, call.pad, call.crop) == torch_form
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    expected = reference_conv(conv, x, w)
    assert expected.size > 0
    if HAS_TORCH:
        _assert_close(run_torch(conv, x, w), expected)
        _assert_close(_eval_torch(str(call), conv, x, w), expected)
    if HAS_JAX:
        _assert_close(run_jax(conv, x, w), expected)
        _assert_close(_eval_jax(str(jax_call(conv)), conv, x, w), expected)


@needs_torch
@settings(max_examples=20, deadline=None)
@given(st.integers(1, 2).flatmap(conv_cases))
def test_printed_torch_call_runs(case: tuple[GenericConv, np.ndarray, np.ndarray]) -> None:
    conv, x, w = case
    call = torch_call(conv, kernel_size=w.shape[2:])
    _assert_close(_eval_torch(str(call), conv, x, w), reference_conv(conv, x, w))


def test_conv_transpose_needs_the_kernel_size() -> None:
    conv = _conv(((2, 2),), fill=(2,), **TRANSPOSED)
    assert torch_call(conv, kernel_size=(3,)).function == "conv_transpose1d"
    assert torch_call(conv).materialize_fill


def test_printed_forms() -> None:
    conv = _conv(((2, 2),), fill=(2,), x="z_cot", w="w", **TRANSPOSED)
    assert str(conv) == (
        "conv(z_cot, w, padding=((2, 2),), stride=(1,), dilation=(1,), fill=(2,), "
        "flip_kernel=True, permute_kernel=True)"
    )
    assert str(jax_call(conv)) == (
        "jax.lax.conv_general_dilated(z_cot, jax.lax.rev(w, dimensions=(2,)), "
        "window_strides=(1,), padding=((2, 2),), lhs_dilation=(2,), rhs_dilation=(1,), "
        'dimension_numbers=("NCH", "IOH", "NCH"))'
    )
    assert str(torch_call(conv, kernel_size=(3,))) == (
        "torch.nn.functional.conv_transpose1d(z_cot, w, stride=(2,), padding=(0,), "
        "output_padding=(0,), dilation=(1,), groups=1)"
    )


# Symbolic calls.

N, K, s, d, f = sp.symbols("N K s d f", integer=True, positive=True)
p_l, p_r, p = sp.symbols("p_l p_r p", integer=True, nonnegative=True)
windows = sp.floor((N - K + p_l + p_r) / s)

# (id, call, whether sympy can decide torch's form, torch function)
SYMBOLIC = [
    (
        "x-cot general",
        _conv(
            ((K - p_l - 1, N + p_l - 1 - s * windows),),
            stride=(f,),
            dilation=(d,),
            fill=(s,),
            **TRANSPOSED,
        ),
        False,
        "conv1d",
    ),
    (
        "w-cot general",
        _conv(
            ((p_l, K - N - p_l + s * windows),),
            stride=(d,),
            dilation=(s,),
            fill=(f,),
            permute_kernel=True,
            permute_input=True,
        ),
        False,
        "conv1d",
    ),
    (
        "transposed",
        _conv(
            ((d * (K - 1) - p, d * (K - 1) - p + sp.Mod(N, f)),),
            dilation=(d,),
            fill=(f,),
            **TRANSPOSED,
        ),
        True,
        "conv_transpose1d",
    ),
    (
        "2-D symmetric",
        _conv(((K - 1, K - 1), (p, p)), stride=(s, 1), flip_kernel=True),
        True,
        "conv2d",
    ),
]
VALUES = [
    {"N": 7, "K": 3, "s": 2, "d": 1, "f": 2, "p_l": 1, "p_r": 0, "p": 1},
    {"N": 9, "K": 2, "s": 3, "d": 2, "f": 1, "p_l": 0, "p_r": 2, "p": 0},
    {"N": 5, "K": 4, "s": 1, "d": 3, "f": 3, "p_l": 2, "p_r": 1, "p": 2},
    {"N": 6, "K": 1, "s": 1, "d": 1, "f": 1, "p_l": 0, "p_r": 0, "p": 0},
]


@pytest.mark.parametrize("values", VALUES, ids=lambda values: "N={N},K={K}".format(**values))
@pytest.mark.parametrize(
    "conv, certain, function", [pytest.param(*case[1:], id=case[0]) for case in SYMBOLIC]
)
def test_symbolic_calls_substitute_to_numeric_ones(conv, certain, function, values) -> None:
    numeric = conv.subs(values)
    assert not numeric.free_symbols
    assert all(type(lo) is int and type(hi) is int for lo, hi in numeric.padding)
    assert jax_call(conv).subs(values) == jax_call(numeric)
    kernel_size = (K,) * conv.rank
    symbolic_torch = torch_call(conv, kernel_size=kernel_size)
    assert symbolic_torch.function == function
    torch_numbers = symbolic_torch.subs(values)
    if certain:
        assert torch_numbers == torch_call(numeric, kernel_size=(values["K"],) * conv.rank)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 3, *(values["N"],) * conv.rank))
    w = rng.standard_normal((3, 3, *(values["K"],) * conv.rank))
    expected = reference_conv(numeric, x, w)
    if expected.size == 0:
        return
    if HAS_TORCH:
        _assert_close(_eval_torch(str(torch_numbers), numeric, x, w), expected)
    if HAS_JAX:
        _assert_close(_eval_jax(str(jax_call(conv).subs(values)), numeric, x, w), expected)


def test_symbolic_records_print_and_serialise() -> None:
    conv = SYMBOLIC[0][1]
    assert "((-K + N + p_l + p_r) // s)" in str(conv)
    for record in (conv, jax_call(conv), torch_call(conv, kernel_size=(K,))):
        compile(str(record), "<call>", "eval")
        json.dumps(record.as_dict())
    data = conv.as_dict()
    assert list(data) == [
        "x",
        "w",
        "padding",
        "stride",
        "dilation",
        "fill",
        "flip_kernel",
        "permute_kernel",
        "permute_input",
        "groups",
        "batch_groups",
    ]
    assert data["padding"] == [["K - p_l - 1", "N + p_l - s*floor((-K + N + p_l + p_r)/s) - 1"]]
    assert data["stride"] == ["f"] and data["flip_kernel"] is True
    assert conv.subs(VALUES[0]).as_dict()["padding"] == [[1, 3]]


def test_torch_pads_of_unknown_sign_add_their_zeros_then_crop() -> None:
    a, b = sp.symbols("a b", integer=True)
    call = torch_call(_conv(((a, -2), (3, b))))
    assert call.pad == (3, sp.Max(b, 0), sp.Max(a, 0), 0)
    assert call.crop == (0, sp.Min(b, 0), sp.Min(a, 0), -2)
    assert call.padding == (0, 0)
    assert call.as_dict()["crop"] == [0, "Min(0, b)", "Min(0, a)", -2]


def test_a_symbolic_pad_of_both_signs_runs_in_torch() -> None:
    """One torch pad of (4, -2) on a length-1 input crops first and fails (found by the
    oracle sweep): the printed module adds max(side, 0) zeros, then crops min(side, 0)."""
    torch = pytest.importorskip("torch")
    text = "Y[i] = W[m]*X[4-i-m]"
    module: dict = {}
    exec(ed.derive(text, shapes={"Y": (1,)}).source("torch"), module)
    for w, x in [([2.0], [1.0, 2.0, 3.0]), ([2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0])]:
        expected = sum(w[m] * x[4 - m] for m in range(len(w)) if 4 - m < len(x))
        got = module["forward"](torch.tensor(w), torch.tensor(x))
        np.testing.assert_allclose(got.numpy(), [expected])


def test_subs_accepts_symbols_and_names() -> None:
    conv = SYMBOLIC[2][1]
    assert conv.subs({K: 3, "d": 2, p: 1, N: 4, f: 2}) == conv.subs(
        {"K": 3, "d": 2, "p": 1, "N": 4, "f": 2}
    )


# Errors.


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(padding=((0, 0),), stride=(1, 1), dilation=(1,), fill=(1,)), "stride has 2"),
        (dict(padding=((0, 0.5),), stride=(1,), dilation=(1,), fill=(1,)), "whole number"),
        (dict(padding=((0, 0),), stride=(0,), dilation=(1,), fill=(1,)), "positive"),
        (dict(padding=(), stride=(), dilation=(), fill=()), "spatial axis"),
        (dict(padding=((0,),), stride=(1,), dilation=(1,), fill=(1,)), r"\(lo, hi\)"),
        (dict(padding=((0, 0),), stride=(1,), dilation=(1,), fill=(1,), w="w[0]"), "identifier"),
    ],
)
def test_bad_calls_are_rejected(arguments: dict, message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        GenericConv(arguments.pop("x", "x"), arguments.pop("w", "w"), **arguments)


@pytest.mark.parametrize("runner", RUNNERS)
def test_runners_need_numbers(runner) -> None:
    conv = _conv(((K - 1, K - 1),))
    with pytest.raises(ArgumentError, match="symbolic in K"):
        runner(conv, np.ones((1, 1, 5)), np.ones((1, 1, 3)))


@pytest.mark.parametrize(
    "runner, module", [(run_jax, "jax"), (run_torch, "torch")], ids=["jax", "torch"]
)
def test_missing_backend_says_how_to_install(runner, module: str, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(BackendMissingError, match=rf'pip install "einderive\[{module}\]"'):
        runner(_conv(((0, 0),)), np.ones((1, 1, 5)), np.ones((1, 1, 3)))


def test_records_are_typed() -> None:
    conv = _conv(((1, 1),))
    assert isinstance(jax_call(conv), JaxConvCall)
    assert isinstance(torch_call(conv), TorchConvCall)
