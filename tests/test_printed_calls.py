"""Every printed convolution call runs exactly as printed.

``--emit conv`` prints, for each pullback that is a convolution, one JAX and one
PyTorch statement (``dX = jax.lax.conv_general_dilated(...)``); the JSON carries
the same statements under ``conv.jax.code`` and ``conv.torch.code``. Each is
executed here with the tensors bound as framework arrays, and its result is checked
against the forward alone: the forward is linear in each tensor it convolves, so
``<dT, V> = <dY, f(T + V) - f(T)>`` for every direction ``V`` (the adjoint identity,
exact up to rounding), with ``f`` evaluated by the reference interpreter.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from importlib.util import find_spec
from typing import Any

import numpy as np
import pytest
import sympy

import einderive as ed
from einderive.conv.padding import NotPaddedConv, PaddedConv
from einderive.emit.outputs import as_json, conv

needs_jax = pytest.mark.skipif(find_spec("jax") is None, reason="jax is not installed")
needs_torch = pytest.mark.skipif(find_spec("torch") is None, reason="torch is not installed")

# (expression, shapes): the conv families and layouts.
CASES = [
    # 1-D, single channel: unit axes inserted around both operands
    ("Y[i] = W[m]*X[i+m]", {"X": (9,), "W": (3,)}),
    ("Y[i] = W[m]*X[2*i+m-1]", {"X": (10,), "W": (3,)}),
    ("Y[i] = W[m]*X[i+2*m-2]", {"X": (9,), "W": (3,)}),
    # negative padding: the window starts inside the input
    ("Y[i] = W[m]*X[2*i+m+1]", {"X": (12,), "W": (3,)}),
    # fill: a transposed convolution in scatter form
    ("Y[2*i+m] = X[i]*W[m]", {"X": (5,), "W": (3,)}),
    # 2-D, batch and channels, stride, padding, bias
    (
        "Y[b,o,i,j] = W[o,c,m,n]*X[b,c,2*i+m-1,2*j+n-1] + B[o]",
        {"X": (2, 3, 8, 8), "W": (4, 3, 3, 3)},
    ),  # noqa: E501
    ("Y[b,o,i,j] = W[o,c,m,n]*X[b,c,i+2*m,j+2*n]", {"X": (2, 2, 8, 7), "W": (3, 2, 2, 2)}),
    # depthwise: the kernel gets a unit axis, groups = channels
    ("Y[b,c,i,j] = W[c,m,n]*X[b,c,2*i+m-1,2*j+n-1]", {"X": (2, 3, 8, 8), "W": (3, 3, 3)}),
    # (with a batch: the kernel's pullback sums each channel's own batch, batch groups)
    ("Y[b,c,i] = W[c,m]*X[b,c,i+m-1]", {"X": (2, 3, 7), "W": (3, 3)}),
    # 3-D
    (
        "Y[b,o,i,j,k] = W[o,c,m,n,l]*X[b,c,i+m,j+n,k+l]",
        {"X": (1, 2, 4, 5, 4), "W": (2, 2, 2, 2, 2)},
    ),  # noqa: E501
    # batch and channels permuted, channels last
    ("Y[o,b,i] = W[c,o,m]*X[c,b,i+m-1]", {"X": (3, 2, 7), "W": (3, 4, 3)}),
    ("Y[b,i,o] = W[m,c,o]*X[b,2*i+m,c]", {"X": (2, 9, 3), "W": (3, 3, 4)}),
    # no batch axis: channels only
    ("Y[o,i] = W[o,c,m]*X[c,i+m]", {"X": (3, 8), "W": (2, 3, 3)}),
    # grouped, several channels per group: operands merged, the result split back
    ("Y[b,g,o,i] = W[g,o,c,m]*X[b,g,c,i+m]", {"X": (2, 2, 2, 6), "W": (2, 3, 2, 3)}),
    # an input read reversed on one axis (the output's shape declared)
    ("Y[i,j] = W[m,n]*X[i-m+2, 7-j-n]", {"X": (6, 8), "W": (3, 3), "Y": (6, 8)}),
]


def _printed_statements(derivation: ed.Derivation, framework: str) -> dict[str, list[str]]:
    """The framework's statement of every convolution pullback, from the text and the JSON."""
    label = {"jax": "    jax:   ", "torch": "    torch: "}[framework]
    lines = conv(derivation).splitlines()
    from_text = [line[len(label) :] for line in lines if line.startswith(label)]
    data = json.loads(as_json(derivation))["pullbacks"]
    from_json = [p["conv"][framework]["code"] for p in data.values() if p["conv"][framework]]
    assert len(from_text) == len(from_json) > 0
    return {"text": from_text, "json": from_json}


def _inputs(derivation: ed.Derivation, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = derivation.program.shapes
    return {
        name: rng.standard_normal(tuple(int(n) for n in shapes[name]))
        for name in derivation.program.inputs
    }


Arrays = dict[str, np.ndarray]


def _check_adjoint(
    text: str, inputs: Arrays, cotangent: np.ndarray, pullbacks: Arrays, declared: dict
) -> None:
    rng = np.random.default_rng(7)
    base = ed.evaluate(text, inputs, shapes=declared)
    for name, pullback in pullbacks.items():
        assert pullback.shape == inputs[name].shape, name
        direction = rng.standard_normal(inputs[name].shape)
        moved = ed.evaluate(text, {**inputs, name: inputs[name] + direction}, shapes=declared)
        expected = float(np.sum(cotangent * (moved - base)))
        got = float(np.sum(pullback * direction))
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), name


def _run(
    framework: str, statement: str, arrays: Arrays, sizes: dict[str, int] | None = None
) -> np.ndarray:
    """Execute one printed statement with ``arrays`` bound as the framework's arrays (and
    ``sizes``, the size symbols of a symbolic call, as Python ints)."""
    namespace: dict[str, object]
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        namespace = {"jax": jax, **{k: jnp.asarray(v) for k, v in arrays.items()}}
    else:
        import torch

        namespace = {"torch": torch, **{k: torch.from_numpy(v.copy()) for k, v in arrays.items()}}
    namespace.update(sizes or {})
    exec(statement, namespace)  # noqa: S102 - the printed line, as a user pastes it
    target = statement.split(" = ", 1)[0]
    return np.asarray(namespace[target], dtype=np.float64)


def _sizes(derivation: ed.Derivation, inputs: Arrays) -> dict[str, int]:
    """Every size symbol's value for these arrays: the given sizes, then the derived ones."""
    values: dict[sympy.Symbol, int] = {}
    for name in derivation.program.inputs:
        for size, n in zip(derivation.program.shapes[name], inputs[name].shape, strict=True):
            if isinstance(size, sympy.Symbol):
                values[size] = n
    for symbol, definition in derivation.program.definitions.items():
        values[symbol] = int(definition.subs(values))
    return {symbol.name: n for symbol, n in values.items()}


FRAMEWORKS = [pytest.param("jax", marks=needs_jax), pytest.param("torch", marks=needs_torch)]


# symbolic sizes too, for a few (each costs a symbolic derivation and recognition)
SYMBOLIC = {CASES[k][0] for k in (1, 3, 4, 7, 9, 11)}
RUNS = [
    pytest.param(text, shapes, symbolic, id=f"{text}{' symbolic' if symbolic else ''}")
    for text, shapes in CASES
    for symbolic in (False, True)
    if not symbolic or text in SYMBOLIC
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("text", "shapes", "symbolic"), RUNS)
def test_printed_call_runs_as_pasted(
    framework: str, text: str, shapes: dict, symbolic: bool
) -> None:
    """With numbers, the lines hold numbers; symbolic, they hold the sizes' names (bound
    here to the arrays' sizes, the derived ones by their printed definitions)."""
    derivation = ed.derive(text, shapes=None if symbolic else shapes)
    inputs = _inputs(ed.derive(text, shapes=shapes), 0)
    sizes = _sizes(derivation, inputs) if symbolic else {}
    declared = {k: v for k, v in shapes.items() if k not in inputs}  # an output's shape
    output = ed.evaluate(text, inputs, shapes=declared)
    cotangent = np.random.default_rng(1).standard_normal(output.shape)
    seed = derivation.backward.seeds[0]
    names = {derivation.pullbacks[n].name: n for n in derivation.pullbacks}
    context: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if framework == "jax":
        import jax

        context = jax.enable_x64(True)
    with context:
        for source, statements in _printed_statements(derivation, framework).items():
            pullbacks = {}
            for statement in statements:
                target = statement.split(" = ", 1)[0]
                arrays = {**inputs, seed: cotangent}
                pullbacks[names[target]] = _run(framework, statement, arrays, sizes)
            assert pullbacks, source
            _check_adjoint(text, inputs, cotangent, pullbacks, declared)


# ---- a convolution over a wrapped, clamped or reflected read: PyTorch's padding_mode -------
#
# The forward (pad, then the unpadded call; and the nn.ConvNd module) and both pullbacks (the
# call on the padded input, the input's folded back by the padding's adjoint), each line as
# printed by the text output, --emit conv and the JSON, executed in order with the tensors
# bound, against torch.nn.Conv1d/Conv2d with that padding_mode and torch.autograd (float64).

PADDED_READS = {
    "circular": "mod({e}, {n})",
    "replicate": "clamp({e}, 0, {n} - 1)",
    "reflect": "reflect({e}, {n})",
}
_LABEL = {"jax": "  jax:    ", "torch": "  torch:  ", "module": "  module: "}


def _padded_case(mode: str, stride: int, dims: int) -> tuple[str, dict]:
    """2-D with a batch (``X[b, c, ...]``), 1-D without one (``X[c, ...]``, unbatched)."""
    sizes = (7, 6)[:dims]
    reads = ", ".join(
        PADDED_READS[mode].format(e=f"{stride}*{u}+{k}-1", n=n)
        for u, k, n in zip("ij", "mn", sizes, strict=False)
    )
    out = tuple((n - 1) // stride + 1 for n in sizes)  # PyTorch's, with padding 1
    if dims == 2:
        text = f"Y[b,o,i,j] = W[o,c,m,n]*X[b, c, {reads}]"
        return text, {"X": (2, 2, *sizes), "W": (3, 2, 3, 3), "Y": (2, 3, *out)}
    text = f"Y[o,i] = W[o,c,m]*X[c, {reads}]"
    return text, {"X": (2, *sizes), "W": (3, 2, 3), "Y": (3, *out)}


def _padded_reference(
    mode: str, stride: int, dims: int, arrays: Arrays, padding: int = 1, length: int = 0
) -> Arrays:
    """The module's forward (its first ``length`` positions along the last axis, if given)
    and both gradients by ``torch.autograd``."""
    import torch

    module = getattr(torch.nn, f"Conv{dims}d")(
        2, 3, 3, stride=stride, padding=padding, padding_mode=mode, bias=False
    )
    x = torch.tensor(arrays["X"], requires_grad=True)
    w = torch.tensor(arrays["W"], requires_grad=True)
    y = torch.func.functional_call(module, {"weight": w}, (x,))
    y = y[..., :length] if length else y
    dx, dw = torch.autograd.grad(y, (x, w), torch.tensor(arrays["dY"]))
    return {"Y": y.detach().numpy(), "X": dx.numpy(), "W": dw.numpy()}


def _padded_printed(derivation: ed.Derivation, framework: str) -> dict[str, list[list[str]]]:
    """Each printed form's runs (lines executed together, in order): the calls of the text
    output and of --emit conv, the JSON's; and the nn.ConvNd module's line alone."""
    runs: dict[str, list[list[str]]] = {}
    for source, printed in (("text", str(derivation)), ("conv", conv(derivation))):
        lines = printed.splitlines()
        start = next(k for k, line in enumerate(lines) if line.startswith("padding_mode="))
        section = lines[start:]
        runs[source] = [[line[10:] for line in section if line.startswith(_LABEL[framework])]]
        module = [line[10:] for line in section if line.startswith(_LABEL["module"])]
        if framework == "torch" and not module[0].startswith("not one module: "):
            runs[source].append(module)
    data = json.loads(as_json(derivation))["padding_mode"]
    code = data["forward"][framework]["code"]
    code += [line for p in data["pullbacks"].values() for line in p[framework]["code"]]
    runs["json"] = [code]
    if framework == "torch" and data["forward"]["torch"]["module"] is not None:
        runs["json"].append([data["forward"]["torch"]["module"]])
    return runs


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mode", list(PADDED_READS))
def test_padding_mode_calls_run_as_printed(mode: str, stride: int, dims: int, framework: str):
    text, shapes = _padded_case(mode, stride, dims)
    _check_padding_mode_lines(text, shapes, mode, framework, lambda arrays: (stride, dims, 1, 0))


# reads 2 before the start and none after, the output declared shorter than the module's:
# F.pad by (2, 0), then a call that crops (the module's line says why it is not the call)
CROPPED = [
    ("Y[o,i] = W[o,c,m]*X[c, reflect(i+m-2, 5)]", "reflect"),
    ("Y[o,i] = W[o,c,m]*X[c, mod(i+m-2, 5)]", "circular"),
    ("Y[o,i] = W[o,c,m]*X[c, clamp(i+m-2, 0, 4)]", "replicate"),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("text", "mode"), CROPPED)
def test_padding_mode_calls_that_crop_run_as_printed(text: str, mode: str, framework: str):
    shapes = {"X": (2, 5), "W": (3, 2, 3), "Y": (3, 3)}
    _check_padding_mode_lines(text, shapes, mode, framework, lambda arrays: (1, 1, 2, 3))


def _check_padding_mode_lines(
    text: str, shapes: dict, mode: str, framework: str, reference: Callable[[Arrays], tuple]
) -> None:
    """Every printed run of ``text`` against the module: ``reference`` gives its stride,
    dimensions, padding and the output's length (0: the module's own)."""
    derivation = ed.derive(text, shapes=shapes)
    assert derivation.padding_mode is not None and derivation.padding_mode.mode == mode
    rng = np.random.default_rng(3)
    arrays = {name: rng.standard_normal(shapes[name]) for name in ("X", "W")}
    arrays["dY"] = rng.standard_normal(shapes["Y"])
    expected = _padded_reference(mode, *reference(arrays)[:2], arrays, *reference(arrays)[2:])
    # the derivation's own pullbacks are the reference's too
    grads = ed.vjp(text, {"X": arrays["X"], "W": arrays["W"]}, arrays["dY"], shapes=shapes)
    for name in ("X", "W"):
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-10, atol=1e-12)
    context: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if framework == "jax":
        import jax

        context = jax.enable_x64(True)
    runs = _padded_printed(derivation, framework)
    assert len(runs["text"]) == len(runs["conv"]) == len(runs["json"])
    assert runs["text"] == runs["conv"]
    with context:
        for source, sources_runs in runs.items():
            for lines in sources_runs:
                assert lines, source
                results = _run_lines(framework, lines, arrays)
                # the module's line computes the forward only; the calls compute all three
                checked = ("Y",) if "functional_call" in lines[0] else ("Y", "dW", "dX")
                for name in checked:
                    np.testing.assert_allclose(
                        results[name],
                        expected[name.removeprefix("d")],
                        rtol=1e-10,
                        atol=1e-12,
                        err_msg=f"{source} {framework} {name}: {lines}",
                    )


def _run_lines(framework: str, lines: list[str], arrays: Arrays) -> Arrays:
    """Execute printed lines in order, the tensors bound as the framework's arrays."""
    namespace: dict[str, object]
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        namespace = {"jax": jax, **{k: jnp.asarray(v) for k, v in arrays.items()}}
    else:
        import torch

        namespace = {"torch": torch, **{k: torch.from_numpy(v.copy()) for k, v in arrays.items()}}
    for line in lines:
        exec(line, namespace)  # noqa: S102 - the printed line, as a user pastes it
    return {
        name: np.asarray(namespace[name], dtype=np.float64)
        for name in ("Y", "dW", "dX")
        if name in namespace and name not in arrays
    }


NOT_ONE_CALL = [
    # (expression, shapes, the line --emit conv prints)
    (
        "Y[i,j] = W[m,n]*X[mod(i+m-1, 6), clamp(j+n-1, 0, 5)]",
        {"X": (6, 6), "W": (3, 3), "Y": (6, 6)},
        "padding_mode: not one call: padding modes differ between axes",
    ),
    (
        "Y[i] = W[m]*X[reflect(i+m-4, 4)]",
        {"X": (4,), "W": (3,), "Y": (4,)},
        "padding_mode: not one call: PyTorch reflects once: the padding must be smaller than "
        "the size",
    ),
    (
        "Y[i] = W[m]*X[mod(i+m-1, N_X)]",
        {"Y": (8,)},
        "padding_mode: not one call: the sizes are symbolic; with every size given, it is "
        "recognised",
    ),
    # the F.pad form is the call; the module cannot pad 2 before and none after
    (
        "Y[i] = W[m]*X[mod(i+m-2, 8)]",
        {"X": (8,), "W": (3,), "Y": (8,)},
        "  module: not one module: torch.nn.Conv1d pads as much before as after, and its "
        "output is as long as that allows; here the padding is (2, 0) on axis 0 and the output "
        "8 long (the F.pad form is the call)",
    ),
]


@pytest.mark.parametrize(("text", "shapes", "line"), NOT_ONE_CALL)
def test_where_it_is_not_one_call_it_says_why_in_one_line(text: str, shapes: dict, line: str):
    derivation = ed.derive(text, shapes=shapes)
    assert line in conv(derivation).splitlines()
    data = json.loads(as_json(derivation))["padding_mode"]
    reason = re.split("not one (?:call|module): ", line)[-1]
    module = data.get("forward", {}).get("torch", {}).get("module_reason")
    assert reason in (data.get("reason"), module)
    recognised = "reason" not in data
    assert ("padding_mode=" in str(derivation)) == recognised  # the text shows calls only
    found = derivation.padding_mode
    assert isinstance(found, PaddedConv if recognised else NotPaddedConv)
    assert recognised or found.reason == data["reason"]  # type: ignore[union-attr]


def test_no_wrapped_read_no_padding_mode() -> None:
    derivation = ed.derive("Y[i] = W[m]*X[i+m-1]", shapes={"X": (8,), "W": (3,)})
    assert derivation.padding_mode is None and derivation.padding_mode_calls() is None
    assert json.loads(as_json(derivation))["padding_mode"] is None
    assert "padding_mode" not in conv(derivation) + str(derivation)


def _depthwise(x: Any, w: Any) -> Any:
    import torch

    module = torch.nn.Conv2d(
        3, 3, 3, stride=(1, 2), padding=1, groups=3, padding_mode="reflect", bias=False
    )
    return torch.func.functional_call(module, {"weight": w[:, None]}, (x,))


def _channels_last(x: Any, w: Any) -> Any:
    import torch

    module = torch.nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular", bias=False)
    inputs = (x.permute(0, 3, 1, 2),)
    return torch.func.functional_call(module, {"weight": w.permute(3, 2, 0, 1)}, inputs)


def _grouped(x: Any, w: Any) -> Any:
    import torch

    module = torch.nn.Conv1d(4, 6, 3, padding=1, groups=2, padding_mode="replicate", bias=False)
    weight = w.reshape(6, 2, 3)
    return torch.func.functional_call(module, {"weight": weight}, (x.reshape(2, 4, 6),))


# (expression, shapes, the module written by hand on the arranged tensors, its output back
# in the expression's axes): depthwise, channels last, and grouped (torch pads the flattened
# leading axes)
LAYOUTS = [
    (
        "Y[b,c,i,j] = W[c,m,n]*X[b, c, reflect(i+m-1, 6), reflect(2*j+n-1, 7)]",
        {"X": (2, 3, 6, 7), "W": (3, 3, 3), "Y": (2, 3, 6, 4)},
        _depthwise,
        lambda y: y,
    ),
    (
        "Y[b,i,j,o] = W[m,n,c,o]*X[b, mod(i+m-1, 6), mod(j+n-1, 5), c]",
        {"X": (2, 6, 5, 2), "W": (3, 3, 2, 4), "Y": (2, 6, 5, 4)},
        _channels_last,
        lambda y: y.permute(0, 2, 3, 1),
    ),
    (
        "Y[b,g,o,i] = W[g,o,c,m]*X[b, g, c, clamp(i+m-1, 0, 5)]",
        {"X": (2, 2, 2, 6), "W": (2, 3, 2, 3), "Y": (2, 2, 3, 6)},
        _grouped,
        lambda y: y.reshape(2, 2, 3, 6),
    ),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("text", "shapes", "module", "back"), LAYOUTS)
def test_padding_mode_calls_of_other_layouts_run_as_printed(
    text: str, shapes: dict, module: Callable, back: Callable, framework: str
) -> None:
    import torch

    derivation = ed.derive(text, shapes=shapes)
    rng = np.random.default_rng(5)
    arrays = {name: rng.standard_normal(shapes[name]) for name in ("X", "W")}
    arrays["dY"] = rng.standard_normal(shapes["Y"])
    x = torch.tensor(arrays["X"], requires_grad=True)
    w = torch.tensor(arrays["W"], requires_grad=True)
    y = back(module(x, w))
    dx, dw = torch.autograd.grad(y, (x, w), torch.tensor(arrays["dY"]))
    expected = {"Y": y.detach().numpy(), "dX": dx.numpy(), "dW": dw.numpy()}
    context: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if framework == "jax":
        import jax

        context = jax.enable_x64(True)
    runs = _padded_printed(derivation, framework)
    if framework == "torch":  # each has its module line
        assert all(len(r) == 2 for r in runs.values()), runs
    with context:
        for source, source_runs in runs.items():
            for lines in source_runs:
                results = _run_lines(framework, lines, arrays)
                assert set(results) == ({"Y"} if len(lines) == 1 else {"Y", "dX", "dW"})
                for name, value in results.items():
                    np.testing.assert_allclose(
                        value, expected[name], rtol=1e-10, atol=1e-12, err_msg=f"{source} {name}"
                    )
