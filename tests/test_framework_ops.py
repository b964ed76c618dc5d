"""The derived ops inside PyTorch and JAX: ``--emit torch-function`` and ``--emit jax-custom-vjp``.

Each case is derived once, symbolically where it can be (sizes read from the tensors at
call time, symbolic parameters given as keywords), and its emitted module is run:

- PyTorch: ``gradcheck`` and ``gradgradcheck`` (finite differences, float64) of ``op``;
  inputs that need no gradient get ``None`` and their pullback does not run.
- JAX: the custom_vjp's first and second reverse derivatives, under ``jax.jit`` and
  ``jax.vmap`` over an added batch axis, against JAX's own autodiff of the printed
  forward; ``jax.test_util.check_grads(order=2, modes=["rev"])`` on a few cases here and
  on every case with ``-m sweep``.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import einderive as ed
from einderive.emit.framework_ops import torch_function_source
from einderive.run.load import load_source

torch = pytest.importorskip("torch")


@dataclass(frozen=True, eq=False)  # hashed by identity: cached derivations
class Op:
    id: str
    text: str
    shapes: dict[str, tuple[int, ...]]  # the tensors' shapes at call time
    call: dict[str, int] = field(default_factory=dict)  # symbolic parameters, given at call
    params: dict[str, int] | None = None  # parameters bound when deriving
    ranges: dict[str, int] | None = None
    # where a finite difference could cross a kink (max, relu), inputs are spread apart
    spread: bool = False


LAYER_NORM = """M[b] = sum_{k}(X[b,k]) / n
D[b,k] = X[b,k] - M[b]
V[b] = sum_{k}(D[b,k]**2) / n
Y[b,k] = D[b,k] / sqrt(V[b] + 0.00001) * G[k] + B[k]"""

OPS = [
    # convolutions: valid, padded, strided, dilated, general, and in NCHW
    Op("valid", "Y[i] = W[m]*X[i+m]", {"W": (3,), "X": (7,)}),
    Op("padded", "Y[i] = W[m]*X[i+m-1]", {"W": (3,), "X": (6,)}),
    Op("stride-2d", "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]", {"W": (3, 3), "X": (7, 8)}, {"s": 2}),
    Op("dilation", "Y[i] = W[m]*X[i+d*m]", {"W": (3,), "X": (9,)}, {"d": 2}),
    Op(
        "stride-dilation-padding",
        "Y[i] = W[m]*X[s*i+d*m-p]",
        {"W": (3,), "X": (10,)},
        {"s": 2, "d": 2, "p": 1},
    ),
    Op("stride-3", "Y[i] = W[m]*X[s*i+m]", {"W": (2,), "X": (11,)}, {"s": 3}),
    Op(
        "nchw",
        "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,i+m-1,j+n-1]",
        {"W": (3, 2, 3, 3), "X": (2, 2, 5, 4)},
    ),
    Op(
        "nchw-stride-bias",
        "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,2*i+m-1,2*j+n-1] + B[o]",
        {"W": (3, 2, 3, 3), "X": (2, 2, 6, 5), "B": (3,)},
    ),
    Op("conv-3d", "Y[i,j,k] = W[m,n,l]*X[i+m,j+n,k+l]", {"W": (2, 2, 2), "X": (4, 3, 4)}),
    # fill: scatter-form left-hand sides (transposed convolutions)
    Op("transposed", "Y[s*i+m] = X[i]*W[m]", {"X": (4,), "W": (3,)}, {"s": 2}),
    Op(
        "transposed-nchw",
        "Y[b,o,2*i+m,2*j+n] = X[b,c,i,j]*W[c,o,m,n]",
        {"X": (2, 2, 3, 3), "W": (2, 3, 2, 3)},
    ),
    Op(
        "fill-dilation-offsets",
        "Y[f*i+d*m-1, 2*j+n+2] = X[i,j]*W[m,n]",
        {"X": (3, 3), "W": (2, 2)},
        params={"f": 3, "d": 2},
    ),
    # depthwise and grouped
    Op(
        "depthwise",
        "Y[c,i,j] = W[c,m,n]*X[c,i+m-1,j+n-1]",
        {"W": (3, 3, 3), "X": (3, 5, 4)},
    ),
    Op(
        "depthwise-batch",
        "Y[b,c,i,j] = W[c,m,n]*X[b,c,i+m,j+n]",
        {"W": (2, 2, 2), "X": (3, 2, 4, 4)},
    ),
    Op(
        "grouped",
        "Y[b,g,o,i] = W[g,o,c,m]*X[b,g,c,i+m]",
        {"W": (2, 3, 2, 3), "X": (2, 2, 2, 6)},
    ),
    # pooling
    Op("max-pool", "Y[i] = max_{m}(X[2*i+m])", {"X": (9,)}, ranges={"m": 3}, spread=True),
    Op(
        "max-pool-nchw",
        "Y[b,c,i,j] = max_{m,n}(X[b,c,2*i+m,2*j+n])",
        {"X": (2, 2, 4, 6)},
        ranges={"m": 2, "n": 2},
        spread=True,
    ),
    Op("min-pool", "Y[i] = min_{m}(X[i+m])", {"X": (6,)}, ranges={"m": 2}, spread=True),
    Op(
        "average-pool",
        "Y[b,c,i,j] = sum_{m,n}(X[b,c,2*i+m,2*j+n]) / 4",
        {"X": (2, 2, 4, 6)},
        ranges={"m": 2, "n": 2},
    ),
    # normalisations
    Op("softmax", "Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))", {"X": (5,)}),
    Op("softmax-rows", "Y[i,k] = exp(X[i,k]) / sum_{j}(exp(X[i,j]))", {"X": (3, 4)}),
    Op("log-softmax", "Y[i] = X[i] - log(sum_{j}(exp(X[j])))", {"X": (5,)}),
    Op("layer-norm", LAYER_NORM, {"X": (3, 4), "G": (4,), "B": (4,)}, {"n": 4}),
    # contractions and programs
    Op("contraction", "Y[i,j] = A[i,k]*B[k,j]", {"A": (3, 4), "B": (4, 2)}),
    Op(
        "program-dense-relu",
        "Z[i] = W[i,k]*X[k] + B[i]; Y[i] = relu(Z[i])",
        {"W": (4, 3), "X": (3,), "B": (4,)},
        spread=True,
    ),
    Op(
        "program-mlp",
        "H[i] = tanh(sum_{k}(W[i,k]*X[k])); Y[j] = V[j,i]*H[i]",
        {"W": (4, 3), "X": (3,), "V": (2, 4)},
    ),
    Op(
        "program-conv-relu",
        "Z[b,o,i,j] = W[o,c,m,n]*X[b,c,i+m-1,j+n-1] + B[o]; Y[b,o,i,j] = relu(Z[b,o,i,j])",
        {"W": (2, 2, 3, 3), "X": (1, 2, 4, 4), "B": (2,)},
        spread=True,
    ),
    Op(
        "cross-entropy",
        "L = -sum_{b,k}(T[b,k] * (X[b,k] - log(sum_{j}(exp(X[b,j])))))",
        {"T": (2, 3), "X": (2, 3)},
    ),
    Op("shifted-product", "Y[i] = sigmoid(X[i]) * X[i+1]", {"X": (5,)}),
]


def test_there_are_enough_ops() -> None:
    assert len(OPS) >= 25


@functools.cache
def _derivation(case: Op) -> Any:
    return ed.derive(case.text, params=case.params, ranges=case.ranges)


@functools.cache
def _module(case: Op, kind: str) -> dict[str, Any]:
    return load_source(_derivation(case).source(kind), kind)


def _arrays(case: Op, seed: int | None = None) -> dict[str, np.ndarray]:
    """Random inputs; where the op has kinks, distinct values far apart (a permutation of a
    spaced grid, so that no finite difference crosses a tie or relu's zero)."""
    rng = np.random.default_rng(abs(hash(case.id)) % 2**32 if seed is None else seed)
    arrays = {}
    for name, shape in case.shapes.items():
        if case.spread:
            size = int(np.prod(shape))
            values = (rng.permutation(size) - size / 2 + 0.5) * 0.37
            arrays[name] = values.reshape(shape)
        else:
            arrays[name] = rng.standard_normal(shape)
    return arrays


# ---- PyTorch ---------------------------------------------------------------------------------


def _torch_inputs(case: Op, dtype: Any = None) -> tuple[Any, ...]:
    dtype = dtype or torch.float64
    return tuple(torch.tensor(a, dtype=dtype, requires_grad=True) for a in _arrays(case).values())


@pytest.mark.parametrize("case", OPS, ids=[c.id for c in OPS])
def test_torch_function_gradcheck_and_gradgradcheck(case: Op) -> None:
    module = _module(case, "torch-function")
    op = functools.partial(module["op"], **case.call)
    inputs = _torch_inputs(case)
    assert torch.autograd.gradcheck(op, inputs)
    assert torch.autograd.gradgradcheck(op, inputs)


@pytest.mark.parametrize("case", OPS[:3], ids=[c.id for c in OPS[:3]])
def test_torch_function_float32_matches_float64(case: Op) -> None:
    op = functools.partial(_module(case, "torch-function")["op"], **case.call)
    single, double = _torch_inputs(case, torch.float32), _torch_inputs(case)
    out32, out64 = op(*single), op(*double)
    assert out32.dtype == torch.float32
    out32.sum().backward()
    out64.sum().backward()
    for a, b in zip(single, double, strict=True):
        assert a.grad.dtype == torch.float32
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-5)


# bfloat16 keeps 8 significant bits (unit roundoff 2**-8): a result within a few roundings
# of the largest entry. Eight: the derived formulas subtract in bfloat16 where they
# subtract (tanh's 1 - H**2 near saturation, softmax's dX): on the fixed inputs below
# program-mlp is off by 4.5 roundings, softmax by 2.7; on other inputs such cases reach
# 10-30, as torch autograd's own bfloat16 backward does (program-mlp: 13).
BFLOAT16_TOLERANCE = 8 * 2.0**-8


def _close_in_bfloat16(ours: Any, reference: Any) -> None:
    """``ours`` (bfloat16) within a few bfloat16 roundings of ``reference`` (float64,
    computed from the same bfloat16 values), relative to the largest entry."""
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference)
    scale = max(float(np.abs(reference).max()), 1e-30)
    assert float(np.abs(ours - reference).max()) <= BFLOAT16_TOLERANCE * scale


@pytest.mark.parametrize("case", OPS, ids=[c.id for c in OPS])
def test_torch_function_bfloat16_runs_in_bfloat16(case: Op) -> None:
    """In bfloat16 the op computes in bfloat16 (the output and every gradient), within a
    few roundings of the float64 op (gradchecked above) on the same bfloat16 values."""
    op = functools.partial(_module(case, "torch-function")["op"], **case.call)
    seed = zlib.crc32(case.id.encode())  # fixed inputs: the bound is met, not met by luck
    rounded = [torch.tensor(a, dtype=torch.bfloat16) for a in _arrays(case, seed).values()]
    results = {}
    for dtype in (torch.bfloat16, torch.float64):
        inputs = [t.to(dtype).clone().requires_grad_() for t in rounded]
        out = op(*inputs)
        rng = np.random.default_rng(1)
        cotangent = torch.tensor(rng.standard_normal(tuple(out.shape)), dtype=torch.bfloat16)
        out.backward(cotangent.to(dtype))
        assert out.dtype == dtype and all(t.grad.dtype == dtype for t in inputs)
        results[dtype] = [out.detach(), *(t.grad for t in inputs)]
    for ours, reference in zip(results[torch.bfloat16], results[torch.float64], strict=True):
        _close_in_bfloat16(ours.double().numpy(), reference.numpy())


@pytest.mark.parametrize("case", OPS, ids=[c.id for c in OPS])
def test_torch_function_runs_on_the_inputs_device_and_dtype(case: Op) -> None:
    """On the meta device (shapes only, no data), any tensor the op made on the CPU, or a
    NumPy round trip, is an error: the code is the one a GPU runs. Float32 stays float32."""
    op = functools.partial(_module(case, "torch-function")["op"], **case.call)
    meta = [
        torch.empty(s, device="meta", dtype=torch.float32, requires_grad=True)
        for s in case.shapes.values()
    ]
    out = op(*meta)
    grads = torch.autograd.grad(out, meta, torch.ones_like(out), create_graph=True)
    assert out.device.type == "meta" and out.dtype == torch.float32
    assert all(g.device.type == "meta" and g.dtype == torch.float32 for g in grads)


def _counting(module: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Wrap every pullback and vjp of an emitted module with a counter of its calls."""
    calls: dict[str, int] = {}
    for name in [n for n in module if n.startswith("pullback_") or n == "vjp"]:
        original = module[name]

        def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args, **kw)

        monkeypatch.setitem(module, name, counted)
    return calls


def test_torch_function_skips_the_pullbacks_not_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    case = next(c for c in OPS if c.id == "nchw-stride-bias")
    module = _module(case, "torch-function")
    calls = _counting(module, monkeypatch)
    W, X, B = _torch_inputs(case)
    X.requires_grad_(False)
    module["op"](W, X, B).square().sum().backward()
    assert calls == {"pullback_W": 1, "pullback_B": 1}
    assert X.grad is None and W.grad is not None and B.grad is not None
    calls.clear()
    W.grad = None
    B.requires_grad_(False)
    module["op"](W, X, B).sum().backward()
    assert calls == {"pullback_W": 1}
    calls.clear()
    X.requires_grad_(True)
    B.requires_grad_(True)
    module["op"](W, X, B).sum().backward()
    # every gradient wanted: one call of vjp (which runs each pullback once, or fuses them)
    assert calls.pop("vjp") == 1 and set(calls.values()) <= {1}


def test_torch_function_backward_returns_none_where_not_needed() -> None:
    case = OPS[2]  # the strided convolution, s given at call time
    Op_ = _module(case, "torch-function")["Op"]
    W, X = _torch_inputs(case)

    class Context:
        needs_input_grad = (False, True, False)
        saved_tensors: tuple = ()
        shapes: tuple = ()
        params: tuple = ()

        def save_for_backward(self, *tensors: Any) -> None:
            self.saved_tensors = tensors

    ctx = Context()
    Y = Op_.forward(W, X, 2)
    Op_.setup_context(ctx, (W, X, 2), Y)
    assert ctx.saved_tensors[0] is W and ctx.saved_tensors[1] is None  # dX reads W only
    dW, dX, ds = Op_.backward(ctx, torch.ones_like(Y))
    assert dW is None and ds is None and dX.shape == X.shape


def test_torch_function_module_learns_the_named_parameters() -> None:
    derivation = ed.derive("Y[b,o,i] = W[o,c,m]*X[b,c,s*i+m] + B[o]")
    source = torch_function_source(derivation, params_of=["W", "B"])
    module = load_source(source, "module")
    rng = np.random.default_rng(3)
    W0, B0 = torch.tensor(rng.standard_normal((4, 2, 3))), torch.tensor(rng.standard_normal(4))
    layer = module["OpModule"](W0.clone(), B0.clone(), s=2)
    assert sorted(name for name, _ in layer.named_parameters()) == ["B", "W"]
    X = torch.tensor(rng.standard_normal((2, 2, 9)))
    layer(X).square().sum().backward()
    expected = torch.nn.functional.conv1d(X, W0, B0, stride=2)
    np.testing.assert_allclose(layer(X).detach().numpy(), expected.numpy(), atol=1e-12)
    W1, B1 = W0.clone().requires_grad_(), B0.clone().requires_grad_()
    torch.nn.functional.conv1d(X, W1, B1, stride=2).square().sum().backward()
    np.testing.assert_allclose(layer.W.grad.numpy(), W1.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(layer.B.grad.numpy(), B1.grad.numpy(), atol=1e-10)


def test_a_wrong_shape_names_the_tensor() -> None:
    module = load_source(ed.derive(STRIDED).source("torch-function"), "shapes")
    W, X, B = torch.ones(3, 2, 3, 3), torch.ones(1, 2, 7, 7), torch.ones(4)
    with pytest.raises(AssertionError, match=r"B has shape \(4,\), not \(3,\)"):
        module["op"](W, X, B, s=2)
    with pytest.raises(ed.EinderiveError, match="'c' indexes axis 1 of 'X' \\(2 vs 3\\)"):
        ed.compile(STRIDED, params={"s": 2}, backend="torch").function(W, torch.ones(1, 3, 7, 7), B)


WRONG_RANK = r"W has shape \(3, 2, 3\); the notation reads \(O, C, M, N\)"


def test_a_wrong_rank_names_the_tensor_and_its_shape() -> None:
    """Not Python's "not enough values to unpack": the emitted op, its nn.Module and
    ``Compiled.function`` say which input has which shape, and what the notation reads."""
    module = load_source(ed.derive(STRIDED).source("torch-function"), "ranks")
    W, X, B = torch.ones(3, 2, 3), torch.ones(1, 2, 7, 7), torch.ones(3)
    with pytest.raises(ValueError, match=WRONG_RANK):
        module["op"](W, X, B, s=2)
    with pytest.raises(ValueError, match=r"B has shape \(3, 1\); the notation reads \(O,\)"):
        module["op"](torch.ones(3, 2, 3, 3), X, B[:, None], s=2)
    with pytest.raises(ValueError, match=WRONG_RANK):
        module["OpModule"](s=2)(W, X, B)
    compiled = ed.compile(STRIDED, params={"s": 2}, backend="torch")
    with pytest.raises(ed.EinderiveError, match=r"'W' is read with 4 indexes but its shape"):
        compiled.function(W, X, B)


def test_params_of_names_inputs_only() -> None:
    derivation = ed.derive("Y[i] = W[m]*X[i+m]")
    with pytest.raises(ed.EinderiveError, match="'V', which is not an input; the inputs are W, X"):
        torch_function_source(derivation, params_of=["V"])


def test_every_input_needs_its_pullback() -> None:
    derivation = ed.derive("Y[i] = W[m]*X[i+m]", wrt=["X"])
    with pytest.raises(ed.EinderiveError, match="W is not derived: derive without --wrt"):
        derivation.source("torch-function")


# ---- JAX -------------------------------------------------------------------------------------

jax = pytest.importorskip("jax")
jnp = jax.numpy


def _jax_checks(case: Op) -> None:
    """The custom_vjp's vjp and the vjp of its vjp, under one ``jax.jit``, unbatched and
    ``jax.vmap``-ed over a batch axis of two, against JAX's autodiff of the printed forward."""
    module = _module(case, "jax-custom-vjp")
    op = functools.partial(module["op"], **case.call)
    plain = functools.partial(module["forward"], **case.call)
    arrays = [jnp.asarray(a) for a in _arrays(case).values()]
    batched = [jnp.stack([a, a[::-1] * 0.5]) for a in arrays]
    rng = np.random.default_rng(1)

    def draws(f: Any, args: list[Any]) -> tuple[Any, list[Any]]:
        out = jax.eval_shape(f, *args)
        cotangent = jnp.asarray(rng.standard_normal(out.shape))
        return cotangent, [jnp.asarray(rng.standard_normal(a.shape)) for a in args]

    def derivatives(f: Any, args: list[Any], cotangent: Any, directions: list[Any]) -> list[Any]:
        def backward(*args: Any) -> Any:
            return jax.vjp(f, *args)[1](cotangent)

        def along(*args: Any) -> Any:  # <vjp(f)(cotangent), directions>
            grads = backward(*args)
            return sum(jnp.vdot(g, v) for g, v in zip(grads, directions, strict=True))

        second = jax.grad(along, argnums=tuple(range(len(args))))(*args)
        return [*backward(*args), *second]

    single, double = draws(op, arrays), draws(jax.vmap(op), batched)

    @jax.jit
    def every(arrays: list[Any], batched: list[Any]) -> list[list[Any]]:
        return [
            derivatives(f, args, *drawn)
            for f, args, drawn in [
                (op, arrays, single),
                (plain, arrays, single),
                (jax.vmap(op), batched, double),
                (jax.vmap(plain), batched, double),
            ]
        ]

    ours, theirs, ours_batched, theirs_batched = every(arrays, batched)
    for a, b in [*zip(ours, theirs, strict=True), *zip(ours_batched, theirs_batched, strict=True)]:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", OPS, ids=[c.id for c in OPS])
def test_jax_custom_vjp_second_order_under_jit_and_vmap(case: Op) -> None:
    _jax_checks(case)


def _check_grads(case: Op) -> None:
    from jax.test_util import check_grads

    op = functools.partial(_module(case, "jax-custom-vjp")["op"], **case.call)
    arrays = [jnp.asarray(a) for a in _arrays(case).values()]
    check_grads(jax.jit(op), arrays, order=2, modes=["rev"])
    batched = [jnp.stack([a, a[::-1] * 0.5]) for a in arrays]
    check_grads(jax.jit(jax.vmap(op)), batched, order=2, modes=["rev"])


CHECK_GRADS = ["stride-2d"]


@pytest.mark.parametrize("case", [c for c in OPS if c.id in CHECK_GRADS], ids=CHECK_GRADS)
def test_jax_check_grads_under_jit_and_vmap(case: Op) -> None:
    _check_grads(case)


@pytest.mark.sweep
@pytest.mark.parametrize("case", OPS, ids=[c.id for c in OPS])
def test_jax_check_grads_every_op(case: Op) -> None:
    _check_grads(case)


def test_jax_a_wrong_rank_names_the_tensor_and_its_shape() -> None:
    module = load_source(ed.derive(STRIDED).source("jax-custom-vjp"), "ranks")
    W, X, B = jnp.ones((3, 2, 3)), jnp.ones((1, 2, 7, 7)), jnp.ones(3)
    op = functools.partial(module["op"], s=2)
    with pytest.raises(ValueError, match=WRONG_RANK):
        op(W, X, B)
    with pytest.raises(ValueError, match=WRONG_RANK):  # the custom_vjp's fwd, traced
        jax.jit(jax.grad(lambda *a: jnp.sum(op(*a))))(W, X, B)
    with pytest.raises(ValueError, match=WRONG_RANK):  # vmap strips the batch axis
        jax.vmap(op, in_axes=(None, 0, None))(W, X[None], B)
    compiled = ed.compile(STRIDED, params={"s": 2}, backend="jax")
    with pytest.raises(ed.EinderiveError, match=r"'W' is read with 4 indexes but its shape"):
        compiled.function(W, X, B)


def _instructions(compiled_text: str) -> list[str]:
    """The instructions of a compiled XLA program, without names or source metadata, sorted."""
    import re

    kept = []
    for line in compiled_text.splitlines():
        if " = " not in line or "{file_" in line:  # not an instruction, or a stack frame
            continue
        line = re.sub(r", metadata=\{[^}]*\}", "", line)
        kept.append(re.sub(r"%[\w.-]+", "%", line).strip())
    return sorted(kept)


@pytest.mark.parametrize("stride", [1, 2])
def test_jax_custom_vjp_in_jax_vjp_compiles_to_jax_autodiffs_program(stride: int) -> None:
    """Inside a jitted ``jax.vjp`` the custom_vjp of a strided, padded 2-D convolution is,
    instruction for instruction, the program of JAX's own autodiff of
    ``lax.conv_general_dilated`` (the same convolutions, transposes, copies; no extra pad
    or transpose): the benchmark's row for it differs from JAX's by noise alone."""
    x_shape, w_shape = (2, 4, 12, 12), (5, 4, 3, 3)
    y_shape = (2, 5, 12 // stride, 12 // stride)
    text = f"Y[b,o,i,j] = W[o,c,m,n]*X[b,c,{stride}*i+m-1,{stride}*j+n-1]"
    derivation = ed.derive(text, shapes={"X": x_shape, "W": w_shape, "Y": y_shape})
    custom = load_source(derivation.source("jax-custom-vjp"), "program")["op"]

    def conv(x: Any, w: Any) -> Any:
        spec = ("NCHW", "OIHW", "NCHW")
        return jax.lax.conv_general_dilated(
            x, w, (stride, stride), [(1, 1)] * 2, dimension_numbers=spec
        )

    x, w, dy = (np.ones(s, np.float32) for s in (x_shape, w_shape, y_shape))
    theirs = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)).lower(x, w, dy)
    ours = jax.jit(lambda x, w, dy: jax.vjp(custom, w, x)[1](dy)[::-1]).lower(x, w, dy)
    expected = _instructions(theirs.compile().as_text())
    assert sum("convolution(" in line for line in expected) == 2
    assert _instructions(ours.compile().as_text()) == expected


def test_jax_custom_vjp_is_a_custom_vjp_without_parameters() -> None:
    module = _module(OPS[0], "jax-custom-vjp")
    assert isinstance(module["op"], jax.custom_vjp)


# ---- in the API: ed.compile(...).function and .module ------------------------------------

STRIDED = "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,s*i+m-1,s*j+n-1] + B[o]"


def _conv_reference(X: Any, W: Any, B: Any) -> Any:
    # X[b,c,2*i+m-1, ...] pads one zero in front; the output ends where reads would run past X
    return torch.nn.functional.conv2d(torch.nn.functional.pad(X, (1, 0, 1, 0)), W, B, stride=2)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_torch_function_matches_torch_autograd(dtype: str) -> None:
    compiled = ed.compile(STRIDED, params={"s": 2}, backend="torch")
    rng = np.random.default_rng(5)
    for x_shape in [(2, 2, 7, 7), (1, 2, 6, 9)]:  # one op per signature
        arrays = [rng.standard_normal(s) for s in [(3, 2, 3, 3), x_shape, (3,)]]
        ours = [torch.tensor(a, dtype=getattr(torch, dtype), requires_grad=True) for a in arrays]
        theirs = [t.detach().clone().requires_grad_() for t in ours]
        out = compiled.function(*ours)
        expected = _conv_reference(theirs[1], theirs[0], theirs[2])
        assert out.dtype == expected.dtype and out.shape == expected.shape
        cotangent = torch.tensor(rng.standard_normal(tuple(out.shape)), dtype=out.dtype)
        out.backward(cotangent)
        expected.backward(cotangent)
        tolerance = 1e-12 if dtype == "float64" else 1e-4
        torch.testing.assert_close(out, expected, rtol=tolerance, atol=tolerance)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=tolerance, atol=tolerance)
    inputs = [
        torch.tensor(rng.standard_normal(s), requires_grad=True)
        for s in [(2, 1, 3, 3), (1, 1, 5, 5), (2,)]
    ]
    assert torch.autograd.gradgradcheck(compiled.function, inputs)


def test_compiled_torch_function_in_bfloat16_against_torch_autograd() -> None:
    compiled = ed.compile(STRIDED, params={"s": 2}, backend="torch")
    rng = np.random.default_rng(9)
    arrays = [rng.standard_normal(s) for s in [(3, 2, 3, 3), (2, 2, 7, 7), (3,)]]
    ours = [torch.tensor(a, dtype=torch.bfloat16, requires_grad=True) for a in arrays]
    theirs = [t.detach().double().requires_grad_() for t in ours]  # the same values
    out = compiled.function(*ours)
    expected = _conv_reference(theirs[1], theirs[0], theirs[2])
    cotangent = torch.tensor(rng.standard_normal(tuple(out.shape)), dtype=torch.bfloat16)
    out.backward(cotangent)
    expected.backward(cotangent.double())
    assert out.dtype == torch.bfloat16
    _close_in_bfloat16(out.detach().double().numpy(), expected.detach().numpy())
    for a, b in zip(ours, theirs, strict=True):
        assert a.grad.dtype == torch.bfloat16
        _close_in_bfloat16(a.grad.double().numpy(), b.grad.numpy())


def test_compiled_torch_function_takes_inputs_by_name() -> None:
    compiled = ed.compile("Y[i] = W[m]*X[i+m]", backend="torch")
    W, X = torch.ones(2, dtype=torch.float64), torch.arange(4.0, dtype=torch.float64)
    torch.testing.assert_close(compiled.function(X=X, W=W), compiled.function(W, X))
    with pytest.raises(ed.EinderiveError, match="'V' is not an input; the inputs are W, X"):
        compiled.function(W, V=X)
    with pytest.raises(ed.EinderiveError, match="no array given for 'X'"):
        compiled.function(W)


def test_compiled_torch_module() -> None:
    compiled = ed.compile(STRIDED, params={"s": 2}, backend="torch")
    Layer = compiled.module(params_of=["W", "B"])
    rng = np.random.default_rng(8)
    W0, B0 = torch.tensor(rng.standard_normal((4, 2, 3, 3))), torch.tensor(rng.standard_normal(4))
    layer = Layer(W0, B=B0)
    assert sorted(name for name, _ in layer.named_parameters()) == ["B", "W"]
    X = torch.tensor(rng.standard_normal((2, 2, 8, 8)))
    layer(X).square().sum().backward()
    W1, B1 = W0.clone().requires_grad_(), B0.clone().requires_grad_()
    _conv_reference(X, W1, B1).square().sum().backward()
    torch.testing.assert_close(layer.W.grad, W1.grad)
    torch.testing.assert_close(layer.B.grad, B1.grad)
    with pytest.raises(ed.EinderiveError, match="params_of names 'Z', which is not an input"):
        compiled.module(params_of=["Z"])


def test_compiled_jax_function_under_jit_grad_and_vmap() -> None:
    compiled = ed.compile(STRIDED, params={"s": 2}, backend="jax")
    rng = np.random.default_rng(6)
    W, X, B = (jnp.asarray(rng.standard_normal(s)) for s in [(3, 2, 3, 3), (2, 2, 7, 7), (3,)])

    def reference(W: Any, X: Any, B: Any) -> Any:
        out = jax.lax.conv_general_dilated(X, W, (2, 2), ((1, 0), (1, 0)))
        return out + B[None, :, None, None]

    def loss(f: Any) -> Any:
        return jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=(0, 1, 2)))

    for a, b in zip(loss(compiled.function)(W, X, B), loss(reference)(W, X, B), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    per_example = jax.vmap(compiled.function, in_axes=(None, 0, None))(W, X[:, None], B)
    np.testing.assert_allclose(
        np.asarray(per_example[:, 0]), np.asarray(reference(W, X, B)), atol=1e-12
    )


def test_compiled_jax_function_in_bfloat16_against_jax_autodiff() -> None:
    compiled = ed.compile(STRIDED, params={"s": 2}, backend="jax")
    rng = np.random.default_rng(10)
    ours = [
        jnp.asarray(rng.standard_normal(s), dtype=jnp.bfloat16)
        for s in [(3, 2, 3, 3), (2, 2, 7, 7), (3,)]
    ]

    def reference(W: Any, X: Any, B: Any) -> Any:
        out = jax.lax.conv_general_dilated(X, W, (2, 2), ((1, 0), (1, 0)))
        return out + B[None, :, None, None]

    out, pullback = jax.vjp(jax.jit(compiled.function), *ours)
    theirs = [a.astype(jnp.float64) for a in ours]  # the same values
    expected, expected_pullback = jax.vjp(reference, *theirs)
    cotangent = jnp.asarray(rng.standard_normal(out.shape), dtype=jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    _close_in_bfloat16(out, expected)
    grads = pullback(cotangent)
    for a, b in zip(grads, expected_pullback(cotangent.astype(jnp.float64)), strict=True):
        assert a.dtype == jnp.bfloat16
        _close_in_bfloat16(a, b)


@pytest.mark.parametrize("case", OPS, ids=[c.id for c in OPS])
def test_jax_custom_vjp_keeps_bfloat16(case: Op) -> None:
    """The custom_vjp's output and cotangents, and the second derivative, stay bfloat16
    (abstract evaluation: dtypes and shapes, no arithmetic)."""
    op = functools.partial(_module(case, "jax-custom-vjp")["op"], **case.call)
    specs = [jax.ShapeDtypeStruct(s, jnp.bfloat16) for s in case.shapes.values()]
    argnums = tuple(range(len(specs)))

    def loss(*arrays: Any) -> Any:
        return jnp.sum(op(*arrays) ** 2)

    def second(*arrays: Any) -> Any:
        return sum(jnp.sum(g**2) for g in jax.grad(loss, argnums)(*arrays))

    out = jax.eval_shape(op, *specs)
    assert out.dtype == jnp.bfloat16
    for grad in [*jax.eval_shape(jax.grad(loss, argnums), *specs)]:
        assert grad.dtype == jnp.bfloat16
    for grad in [*jax.eval_shape(jax.grad(second, argnums), *specs)]:
        assert grad.dtype == jnp.bfloat16


def test_only_framework_backends_have_ops() -> None:
    with pytest.raises(ed.EinderiveError, match='needs backend="torch" or backend="jax"'):
        ed.compile("Y[i] = X[i]", backend="numpy").function  # noqa: B018 - the property raises
    with pytest.raises(ed.EinderiveError, match='.module needs backend="torch"'):
        ed.compile("Y[i] = X[i]", backend="jax").module(params_of=["X"])


# ---- the command line --------------------------------------------------------------------


def test_cli_emits_a_torch_function_with_parameters(capsys: pytest.CaptureFixture) -> None:
    from einderive.cli import run

    assert run([STRIDED, "--emit", "torch-function", "--params-of", "W,B"]) == 0
    module = load_source(capsys.readouterr().out, "cli")
    rng = np.random.default_rng(9)
    W0, B0 = torch.tensor(rng.standard_normal((3, 2, 3, 3))), torch.tensor(rng.standard_normal(3))
    layer = module["OpModule"](W0, B0, s=2)
    X = torch.tensor(rng.standard_normal((1, 2, 5, 5)))
    torch.testing.assert_close(layer(X), _conv_reference(X, W0, B0))
    assert run([STRIDED, "--emit", "jax", "--params-of", "W"]) == 2
    assert "--params-of goes with --emit torch-function" in capsys.readouterr().err


# ---- the README's section ----------------------------------------------------------------


def _readme_section() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = text.index("## Use it in PyTorch / JAX")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_python_examples_run(capsys: pytest.CaptureFixture) -> None:
    blocks = _readme_section().split("```python\n")[1:]
    assert len(blocks) == 2
    for block in blocks:
        code = block.split("```")[0]
        exec(compile(code, "<README>", "exec"), {})
        printed = capsys.readouterr().out.strip()
        expected = next(line for line in code.splitlines() if line.startswith("print("))
        assert printed == expected.split("# ")[-1].strip()


def test_readme_commands_print_working_modules(
    tmp_path: Any, capsys: pytest.CaptureFixture
) -> None:
    import shlex

    from einderive.cli import run

    commands = _readme_section().split("```\n")[1].split("```")[0].strip().splitlines()
    assert len(commands) == 2
    for command in commands:
        words, target = shlex.split(command.split(" > ")[0]), command.split(" > ")[1]
        assert words[0] == "einderive" and run(words[1:]) == 0
        (tmp_path / target).write_text(capsys.readouterr().out)
    torch_module = load_source((tmp_path / "conv_op.py").read_text(), "readme")
    jax_module = load_source((tmp_path / "conv_vjp.py").read_text(), "readme")
    rng = np.random.default_rng(2)
    W0, B0, X = (rng.standard_normal(s) for s in [(3, 2, 3, 3), (3,), (2, 2, 7, 7)])
    layer = torch_module["OpModule"](torch.tensor(W0), torch.tensor(B0), s=2)
    expected = torch.nn.functional.conv2d(torch.tensor(X), torch.tensor(W0), torch.tensor(B0), 2)
    torch.testing.assert_close(layer(torch.tensor(X)), expected)
    out = jax_module["op"](jnp.asarray(W0), jnp.asarray(X), jnp.asarray(B0), s=2)
    np.testing.assert_allclose(np.asarray(out), expected.numpy(), atol=1e-12)
