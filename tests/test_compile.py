"""``ed.compile``: the printed module compiled once per input shapes, and the backends on it.

References owe nothing to the printed modules: the forward written here with NumPy,
and torch autograd of the same forward.
"""

from __future__ import annotations

import linecache
import traceback

import numpy as np
import pytest

import einderive as ed
from einderive.run import compile as compile_module

CONV = "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,2*i+m-1,2*j+n-1]"


def conv_forward(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The forward of CONV, written directly: one zero of padding before each axis."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 0), (1, 0)))
    out_h = (padded.shape[2] - w.shape[2]) // 2 + 1
    out_w = (padded.shape[3] - w.shape[3]) // 2 + 1
    y = np.zeros((x.shape[0], w.shape[0], out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, :, 2 * i : 2 * i + w.shape[2], 2 * j : 2 * j + w.shape[3]]
            y[:, :, i, j] = np.einsum("bcmn,ocmn->bo", window, w)
    return y


def torch_vjp(x: np.ndarray, w: np.ndarray, dy: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (1, 0, 1, 0)), tw, stride=2)
    gx, gw = torch.autograd.grad(y, (tx, tw), torch.from_numpy(dy))
    return {"X": gx.numpy(), "W": gw.numpy()}


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3))
    return x, w, rng.standard_normal(conv_forward(x, w).shape)


@pytest.mark.parametrize("backend", ["loops", "numpy", "jax", "torch"])
def test_compiled_forward_and_vjp_match_independent_references(backend: str, data) -> None:
    x, w, dy = data
    compiled = ed.compile(CONV, backend=backend)
    np.testing.assert_allclose(compiled.forward(X=x, W=w), conv_forward(x, w), atol=1e-12)
    expected = torch_vjp(x, w, dy)
    grads = compiled.vjp(dy, X=x, W=w)
    assert set(grads) == {"W", "X"}
    for name in grads:
        assert isinstance(grads[name], np.ndarray)
        np.testing.assert_allclose(grads[name], expected[name], atol=1e-10)
    np.testing.assert_allclose(compiled.pullback("X", dy, X=x, W=w), expected["X"], atol=1e-10)


def test_a_backend_runs_exactly_the_printed_module(data) -> None:
    x, w, dy = data
    compiled = ed.compile(CONV, backend="numpy")
    compiled.vjp(dy, X=x, W=w)
    printed = ed.derive(CONV, shapes={"X": x.shape, "W": w.shape}).source("numpy")
    assert compiled.source == printed


def test_planned_once_per_signature(monkeypatch: pytest.MonkeyPatch, data) -> None:
    x, w, dy = data
    made: list[object] = []
    real = compile_module.runner

    def counting(derivation, backend):  # type: ignore[no-untyped-def]
        made.append(derivation)
        return real(derivation, backend)

    monkeypatch.setattr(compile_module, "runner", counting)
    compiled = compile_module.Compiled(CONV, backend="numpy")
    for _ in range(3):
        compiled.vjp(dy, X=x, W=w)
    assert len(made) == 1
    smaller = x[:, :, :7, :7]
    compiled.forward(X=smaller, W=w)
    assert len(made) == 2  # a new signature: planned again, the first kept
    compiled.vjp(dy, X=x, W=w)
    assert len(made) == 2


def test_compile_is_cached_per_text_parameters_shapes_and_backend() -> None:
    first = ed.compile("Y[i] = W[m]*X[s*i+m]", params={"s": 2})
    assert ed.compile("Y[i] = W[m]*X[s*i+m]", params={"s": 2}) is first
    assert ed.compile("Y[i] = W[m]*X[s*i+m]", params={"s": 1}) is not first
    assert ed.compile("Y[i] = W[m]*X[s*i+m]", params={"s": 2}, backend="loops") is not first


def test_given_shapes_compile_at_once() -> None:
    compiled = ed.compile("Y[i] = W[m]*X[i+m]", shapes={"X": (5,), "W": (2,)})
    assert "def vjp(" in compiled.source
    with pytest.raises(ed.ArgumentError, match="nothing is compiled yet"):
        _ = ed.compile("Y[i] = W[m]*X[i+m+1]").source


def test_a_traceback_shows_the_printed_lines() -> None:
    compiled = ed.compile("Y[i] = W[m]*X[i+m]", backend="numpy")
    with pytest.raises(AssertionError) as caught:
        # the right shapes for the signature, the wrong one for the printed assert
        compiled._prepare({"W": np.ones(2), "X": np.ones(4)})[0].namespace["forward"](
            np.ones(3), np.ones(4)
        )
    frames = traceback.extract_tb(caught.value.__traceback__)
    printed = frames[-1]
    assert printed.filename.startswith("<einderive-numpy-")
    assert "assert" in linecache.getline(printed.filename, printed.lineno)


def test_framework_arrays_in_give_framework_arrays_out(data) -> None:
    import jax.numpy as jnp
    import torch

    x, w, dy = data
    expected = torch_vjp(x, w, dy)
    grads = ed.vjp(CONV, {"X": torch.from_numpy(x), "W": torch.from_numpy(w)}, dy, backend="torch")
    assert all(torch.is_tensor(g) for g in grads.values())
    np.testing.assert_allclose(grads["X"].numpy(), expected["X"], atol=1e-10)
    grads = ed.vjp(CONV, {"X": jnp.asarray(x), "W": jnp.asarray(w)}, dy, backend="jax")
    assert all(not isinstance(g, np.ndarray) for g in grads.values())
    np.testing.assert_allclose(np.asarray(grads["W"]), expected["W"], atol=1e-10)


def test_bad_calls_are_argument_errors(data) -> None:
    x, w, dy = data
    compiled = ed.compile(CONV)
    with pytest.raises(ed.ArgumentError, match="no array given for 'W'"):
        compiled.forward(X=x)
    with pytest.raises(ed.ArgumentError, match="which the expression does not read"):
        compiled.forward(X=x, W=w, V=w)
    with pytest.raises(ed.ArgumentError, match="the cotangent has shape"):
        compiled.vjp(dy[:1], X=x, W=w)
    with pytest.raises(ed.ArgumentError, match="'X' must be a numeric array"):
        compiled.forward(X="abc", W=w)
    with pytest.raises(ed.ArgumentError, match="is not an input"):
        compiled.pullback("Y", dy, X=x, W=w)
    with pytest.raises(ed.ArgumentError, match="unknown backend 'cuda'"):
        ed.compile(CONV, backend="cuda")
    with pytest.raises(ed.ArgumentError, match="give a number for every parameter"):
        ed.compile("Y[i] = W[m]*X[s*i+m]").forward(W=np.ones(2), X=np.ones(5))


def test_the_hot_path_of_a_signature_checks_what_it_skips(data) -> None:
    """After one call, a call with the same float64 shapes skips the checks; any other
    call is checked in full (a new signature, a conversion, an error naming the array)."""
    x, w, dy = data
    expected = torch_vjp(x, w, dy)
    compiled = compile_module.Compiled(CONV, backend="numpy")
    for _ in range(2):  # the first call plans, the second takes the hot path
        grads = compiled.vjp(dy, X=x, W=w)
        for name in grads:
            np.testing.assert_allclose(grads[name], expected[name], atol=1e-10)
        np.testing.assert_allclose(compiled.forward(X=x, W=w), conv_forward(x, w), atol=1e-12)
    assert compiled._hot is not None
    # other dtypes and containers are converted, not passed to the module as they are
    grads = compiled.vjp(dy.astype(np.float32), X=x.astype(np.float32), W=w.tolist())
    np.testing.assert_allclose(grads["X"], expected["X"], atol=1e-5)
    assert grads["X"].dtype == np.float64
    # another signature is planned, and the hot path follows it
    smaller, small_dy = x[:, :, :7, :7], dy[:, :, :3, :3]
    np.testing.assert_allclose(
        compiled.vjp(small_dy, X=smaller, W=w)["W"],
        torch_vjp(np.ascontiguousarray(smaller), w, small_dy)["W"],
        atol=1e-10,
    )
    np.testing.assert_allclose(compiled.vjp(dy, X=x, W=w)["W"], expected["W"], atol=1e-10)
    with pytest.raises(ed.ArgumentError, match="the cotangent has shape"):
        compiled.vjp(dy[:1], X=x, W=w)
    with pytest.raises(ed.ArgumentError, match="the cotangent must be a numeric array"):
        compiled.vjp("dY", X=x, W=w)
    with pytest.raises(ed.ArgumentError, match="'V', which the expression does not read"):
        compiled.vjp(dy, X=x, V=w)
    with pytest.raises(ed.ArgumentError, match="no array given for 'W'"):
        compiled.vjp(dy, X=x)
    with pytest.raises(ed.ArgumentError, match="'W' must be a numeric array"):
        compiled.vjp(dy, X=x, W="abc")
    with pytest.raises(ed.ExtentError, match="'W' is read with 4 indexes but its shape"):
        compiled.vjp(dy, X=x, W=w[0])
    with pytest.raises(ed.ExtentError, match="'X' is read with 4 indexes but its shape"):
        compiled.forward(X=x[0], W=w)

    # a subclass of ndarray is not taken for one (np.matrix would keep its own product)
    class Marked(np.ndarray):
        pass

    grads = compiled.vjp(dy, X=x.view(Marked), W=w)
    assert type(grads["X"]) is np.ndarray
    np.testing.assert_allclose(grads["X"], expected["X"], atol=1e-10)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_forward_comes_back_as_the_pullbacks_do(backend: str) -> None:
    """Given float32 framework arrays, ``forward`` answers in float32 like ``vjp`` (it
    answered float64), and with the numbers of the framework's own convolution."""
    if backend == "torch":
        torch = pytest.importorskip("torch")
        x, w = torch.arange(7.0), torch.tensor([1.0, -2.0, 0.5])
        expected = torch.nn.functional.conv1d(x[None, None], w[None, None])[0, 0].numpy()
    else:
        jnp = pytest.importorskip("jax.numpy")
        x, w = jnp.arange(7.0, dtype=jnp.float32), jnp.array([1.0, -2.0, 0.5], jnp.float32)
        expected = np.correlate(np.arange(7.0), np.array([1.0, -2.0, 0.5]), mode="valid")
    compiled = ed.compile("Y[i] = W[m]*X[i+m]", backend=backend)
    y = compiled.forward(X=x, W=w)
    grads = compiled.vjp(y, X=x, W=w)
    assert y.dtype == x.dtype == grads["X"].dtype
    assert type(y) is type(grads["X"])
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-6)
