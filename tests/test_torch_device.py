"""The PyTorch code keeps the tensors' device and dtype, reads through index arrays too.

Every PyTorch path (the ``--emit torch`` module, the ``--emit torch-function`` op,
``ed.compile(..., backend="torch").function`` and ``.module``, and its ``forward`` and
``vjp`` given tensors) computes in torch on the
device of its inputs, in their dtype: index grids are ``torch.arange`` on that device,
the values of an index array stay a tensor there, a scatter-add is ``index_add`` in the
values' dtype. Checked three ways:

- float32 and float64 results keep their dtype and match ``torch.autograd`` of the same
  forward written with torch operations in this file (an embedding, ``torch.gather``, a
  scatter-add with repeated positions, a convolution at data-dependent offsets, a
  message-passing step, out-of-range values reading zero);
- on the meta device (shapes, no data) every path runs: a ``.cpu()``, ``.numpy()``,
  ``.item()`` or a tensor made on the CPU fails there;
- under a ``TorchFunctionMode`` that refuses ``.numpy()``, ``.cpu()``, ``.tolist()``,
  ``.item()`` and NumPy's ``__array__`` on real CPU tensors (where ``.cpu()`` would
  otherwise pass silently).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import einderive as ed
from einderive.run.load import load_source

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")


@dataclass(frozen=True, eq=False)
class Case:
    id: str
    text: str
    floats: dict[str, tuple[int, ...]]  # the float inputs' shapes
    indices: dict[str, list[Any]]  # the index arrays' values
    reference: Callable[[dict[str, Any]], Any]  # the same forward in torch operations
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # declared outputs


def _zeros(like: Any, *shape: int) -> Any:
    return like.new_zeros(shape)


def _windows(t: dict[str, Any]) -> Any:
    """``Y[b,o,i] = W[o,c,m] * X[b,c,idx[i] + m - 1]``: the windows of X padded by one on
    the left and M - 1 on the right, at the starts ``idx``."""
    w, x, idx = t["W"], t["X"], t["idx"]
    size = w.shape[2]
    padded = F.pad(x, (1, size - 1))
    windows = padded[:, :, idx[:, None] + torch.arange(size)[None, :]]  # (B, C, I, M)
    return torch.einsum("ocm,bcim->boi", w, windows)


def _inside(values: Any, size: int) -> Any:
    return (values >= 0) & (values < size)


CASES = [
    Case(  # an embedding lookup, tokens repeated
        "embedding",
        "Y[b,d] = E[tok[b], d]",
        {"E": (7, 3)},
        {"tok": [0, 2, 2, 5, 1, 2, 6, 0, 0]},
        lambda t: F.embedding(t["tok"], t["E"]),
    ),
    Case(  # torch.gather along axis 1
        "gather",
        "Y[i,j] = X[i, idx[i,j]]",
        {"X": (4, 5)},
        {"idx": [[0, 4, 4, 1, 2, 3], [1, 1, 1, 0, 2, 4], [3, 2, 1, 0, 4, 4], [0, 0, 2, 2, 3, 1]]},
        lambda t: torch.gather(t["X"], 1, t["idx"]),
    ),
    Case(  # a scatter-add, positions repeated
        "scatter-add",
        "Y[idx[i], d] = X[i, d]",
        {"X": (6, 3)},
        {"idx": [1, 1, 0, 3, 1, 0]},
        lambda t: _zeros(t["X"], 4, 3).index_add(0, t["idx"], t["X"]),
        {"Y": (4, 3)},
    ),
    Case(  # a convolution at data-dependent starts (one zero of padding on the left)
        "conv-at-offsets",
        "Y[b,o,i] = W[o,c,m] * X[b,c,idx[i] + m - 1]",
        {"W": (3, 2, 3), "X": (2, 2, 8)},
        {"idx": [0, 3, 3, 7, 5]},
        _windows,
    ),
    Case(  # a message-passing step: a lookup, then a scatter-add
        "message-passing",
        "M[e,d] = H[src[e], d] * W[d]; A[dst[e], d] = M[e, d]",
        {"H": (5, 3), "W": (3,)},
        {"src": [0, 1, 1, 4, 2, 0, 3], "dst": [1, 1, 0, 2, 4, 4, 4]},
        lambda t: _zeros(t["H"], 5, 3).index_add(0, t["dst"], t["H"][t["src"]] * t["W"]),
        {"A": (5, 3)},
    ),
    Case(  # token values outside the table read zero (and their gradient is dropped)
        "out-of-range-values",
        "Y[b,d] = E[tok[b], d]",
        {"E": (4, 3)},
        {"tok": [0, -1, 3, 4, 2, -5, 3]},
        lambda t: F.embedding(t["tok"].clamp(0, 3), t["E"]) * _inside(t["tok"], 4)[:, None],
    ),
    Case(  # the index array read past its end (the declared output is longer): zero there
        "index-array-read-outside",
        "Y[i] = X[idx[i+1]]",
        {"X": (5,)},
        {"idx": [4, 0, 2, 2, 1]},
        lambda t: torch.cat([t["X"][t["idx"][1:]], t["X"].new_zeros(1)]),
        {"Y": (5,)},
    ),
]

DTYPES = [torch.float32, torch.float64]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


@functools.cache
def _derivation(case: Case) -> ed.Derivation:
    shapes = dict(case.floats) | {k: np.shape(v) for k, v in case.indices.items()} | case.shapes
    return ed.derive(case.text, shapes=shapes)


@functools.cache
def _module(case: Case, kind: str) -> dict[str, Any]:
    return load_source(_derivation(case).source(kind), kind)


def _tensors(case: Case, dtype: Any, device: str = "cpu") -> dict[str, Any]:
    """The inputs in the order the module takes them: floats drawn at random, index
    arrays int64, all on ``device``."""
    rng = np.random.default_rng(7)
    found = {}
    for name in _derivation(case).program.inputs:
        if name in case.indices:
            found[name] = torch.tensor(case.indices[name], dtype=torch.int64, device=device)
        else:
            values = rng.standard_normal(case.floats[name])
            found[name] = torch.tensor(values, dtype=dtype, device=device)
    return found


def _expected(case: Case, dtype: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The reference forward, a cotangent, and the gradients by ``torch.autograd``."""
    tensors = _tensors(case, dtype)
    floats = [n for n in tensors if n not in case.indices]
    for name in floats:
        tensors[name].requires_grad_(True)
    output = case.reference(tensors)
    generator = torch.Generator().manual_seed(3)
    cotangent = torch.randn(output.shape, generator=generator, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(output, [tensors[n] for n in floats], cotangent)
    return output.detach(), cotangent, dict(zip(floats, grads, strict=True))


def _close(ours: Any, reference: Any, dtype: Any) -> None:
    assert ours.dtype == dtype, (ours.dtype, dtype)
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(
        ours.detach().double().numpy(), reference.double().numpy(), rtol=tolerance, atol=tolerance
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_emitted_torch_module_keeps_the_dtype(case: Case, dtype: Any) -> None:
    output, cotangent, grads = _expected(case, dtype)
    module = _module(case, "torch")
    tensors = _tensors(case, dtype)
    arrays = list(tensors.values())
    _close(module["forward"](*arrays), output, dtype)
    results = module["vjp"](cotangent, *arrays)
    for name, grad in zip(_derivation(case).pullbacks, results, strict=True):
        _close(grad, grads[name], dtype)
        _close(module[f"pullback_{name}"](cotangent, *arrays), grads[name], dtype)


def _run_op(op: Callable[..., Any], case: Case, tensors: dict[str, Any], cotangent: Any) -> Any:
    floats = [n for n in tensors if n not in case.indices]
    for name in floats:
        tensors[name].requires_grad_(True)
    output = op(*tensors.values())
    grads = torch.autograd.grad(output, [tensors[n] for n in floats], cotangent)
    return output, dict(zip(floats, grads, strict=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_torch_function_and_compiled_function_keep_the_dtype(case: Case, dtype: Any) -> None:
    expected, cotangent, expected_grads = _expected(case, dtype)
    compiled = ed.compile(case.text, shapes=case.shapes or None, backend="torch")
    for op in (_module(case, "torch-function")["op"], compiled.function):
        output, grads = _run_op(op, case, _tensors(case, dtype), cotangent)
        _close(output, expected, dtype)
        for name, grad in grads.items():
            _close(grad, expected_grads[name], dtype)


def test_compiled_module_keeps_the_dtype() -> None:
    case = next(c for c in CASES if c.id == "conv-at-offsets")
    dtype = torch.float32
    expected, cotangent, expected_grads = _expected(case, dtype)
    tensors = _tensors(case, dtype)
    layer = ed.compile(case.text, backend="torch").module(params_of=["W"])(tensors["W"])
    x = tensors["X"].requires_grad_(True)
    output = layer(x, tensors["idx"])
    output.backward(cotangent)
    _close(output, expected, dtype)
    _close(layer.W.grad, expected_grads["W"], dtype)
    _close(x.grad, expected_grads["X"], dtype)


def _paths(case: Case) -> dict[str, Callable[..., Any]]:
    """Each PyTorch path as ``run(tensors, cotangent) -> (output, gradients)``."""
    module = _module(case, "torch")

    def emitted(tensors: dict[str, Any], cotangent: Any) -> tuple[Any, list[Any]]:
        arrays = list(tensors.values())
        return module["forward"](*arrays), list(module["vjp"](cotangent, *arrays))

    def through(op: Callable[..., Any]) -> Callable[..., Any]:
        def run(tensors: dict[str, Any], cotangent: Any) -> tuple[Any, list[Any]]:
            output, grads = _run_op(op, case, tensors, cotangent)
            return output, list(grads.values())

        return run

    compiled = ed.compile(case.text, shapes=case.shapes or None, backend="torch")

    def compiled_vjp(tensors: dict[str, Any], cotangent: Any) -> tuple[Any, list[Any]]:
        output = compiled.forward(**tensors)
        grads = compiled.vjp(cotangent, **tensors)
        return output, [grads[name] for name in tensors if name not in case.indices]

    return {
        "torch": emitted,
        "torch-function": through(_module(case, "torch-function")["op"]),
        "compiled-function": through(compiled.function),
        "compiled-vjp": compiled_vjp,  # ed.compile's forward and vjp, given tensors
    }


PATHS = ["torch", "torch-function", "compiled-function", "compiled-vjp"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_path_runs_on_the_meta_device(case: Case, path: str) -> None:
    """The meta device has shapes and no data: a ``.cpu()`` or ``.numpy()`` of a tensor, a
    value read back to Python, or a CPU tensor meeting the data there, is an error."""
    tensors = _tensors(case, torch.float32, device="meta")
    output_shape = _expected(case, torch.float32)[0].shape
    cotangent = torch.empty(output_shape, dtype=torch.float32, device="meta")
    output, grads = _paths(case)[path](tensors, cotangent)
    for value in [output, *grads]:
        assert value.device.type == "meta"
        # ed.compile's forward and vjp compute in float64 (the oracle's precision)
        assert value.dtype == torch.float32 or path == "compiled-vjp"


class _NoHostCopies(torch.overrides.TorchFunctionMode):
    """Refuses every call that brings tensor data to the host or to NumPy."""

    refused = {
        torch.Tensor.numpy,
        torch.Tensor.cpu,
        torch.Tensor.tolist,
        torch.Tensor.item,
        torch.Tensor.__array__,
    }

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        if func in self.refused:
            raise AssertionError(f"{getattr(func, '__name__', func)} called on a tensor")
        return func(*args, **(kwargs or {}))


def test_the_mode_refuses_a_host_copy() -> None:
    """The mode below catches what the meta device cannot: ``.cpu()`` of a CPU tensor."""
    with _NoHostCopies(), pytest.raises(AssertionError, match="cpu"):
        torch.ones(2).cpu()
    with _NoHostCopies(), pytest.raises(AssertionError, match="__array__|numpy"):
        np.asarray(torch.ones(2))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_no_path_copies_tensors_to_the_host(case: Case, path: str) -> None:
    expected, cotangent, expected_grads = _expected(case, torch.float64)
    run = _paths(case)[path]
    run(_tensors(case, torch.float64), cotangent)  # planned outside: compiling is not the call
    tensors = _tensors(case, torch.float64)
    with _NoHostCopies():
        output, grads = run(tensors, cotangent)
    _close(output, expected, torch.float64)
    for grad, reference in zip(grads, expected_grads.values(), strict=True):
        _close(grad, reference, torch.float64)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_torch_module_does_not_use_numpy(case: Case) -> None:
    source = _derivation(case).source("torch")
    assert "import numpy" not in source and "np." not in source


def test_out_of_range_raise_reads_torch_index_arrays() -> None:
    """``out_of_range="raise"`` checks an index tensor where it is (its ``forward``, ``vjp``
    and ``.function``); values inside pass, and read as they do by default."""
    text = "Y[b,d] = E[tok[b], d]"
    compiled = ed.compile(text, backend="torch", out_of_range="raise")
    table = torch.ones(3, 2, dtype=torch.float32)
    bad = torch.tensor([[0], [1], [3]]).reshape(-1)
    message = r"tok\[2\] = 3 is outside axis 0 of 'E'"
    with pytest.raises(ed.EinderiveError, match=message):
        compiled.forward(E=table, tok=bad)
    with pytest.raises(ed.EinderiveError, match=message):
        compiled.vjp(torch.ones(3, 2), E=table, tok=bad)
    with pytest.raises(ed.EinderiveError, match=message):
        compiled.function(table, bad)
    good = torch.tensor([0, 2, 2])
    output = compiled.function(table.requires_grad_(True), good)
    assert output.dtype == torch.float32
    (grad,) = torch.autograd.grad(output, table, torch.ones(3, 2))
    np.testing.assert_array_equal(grad.numpy(), [[1, 1], [0, 0], [2, 2]])
    with pytest.raises(ed.EinderiveError, match="index array: it must hold integers, not float32"):
        compiled.vjp(torch.ones(3, 2), E=table, tok=good.float())
