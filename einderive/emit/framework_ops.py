"""Derived ops for models: a ``torch.autograd.Function`` and a ``jax.custom_vjp`` function.

Each module is the framework's vectorized module (``vectorized.py``: ``forward``, one
``pullback_<T>`` per input, ``vjp``) followed by the wrapper that lets autograd call it::

    class Op(torch.autograd.Function):      # PyTorch
        forward(W, X, s)                    # the printed forward
        setup_context                       # saves what the pullbacks that will run read
        backward(ctx, dY)                   # the printed pullbacks; None where not needed

    @partial(jax.custom_vjp, nondiff_argnums=(2,))   # JAX
    def _op(W, X, s): ...                   # fwd returns those reads as residuals,
                                            # bwd the cotangents in argument order

The backward is the printed pullbacks themselves, written in the framework's
differentiable operations, so a second derivative differentiates the derived code.
Symbolic parameters stay keyword-only arguments of ``op``; sizes are read from the
arrays, as in the printed functions.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import ir
from ..errors import ArgumentError
from .loops import WIDTH, _needed
from .vectorized import jax_source, torch_source

if TYPE_CHECKING:
    from ..model import Derivation


@dataclass(frozen=True)
class _Signature:
    """What the wrapper needs to know of the printed module and the derivation."""

    text: str
    inputs: tuple[str, ...]  # the forward's positional arguments, in order
    differentiable: tuple[str, ...]  # those with a pullback (all but the index arrays)
    params: tuple[str, ...]  # its keyword-only arguments (symbolic parameters)
    seed: str  # the output's cotangent, e.g. dY
    gradients: dict[str, str]  # input -> its pullback's name, e.g. X -> dX
    pullback_params: dict[str, tuple[str, ...]]  # input -> keywords of pullback_<input>
    vjp_params: tuple[str, ...]
    reads: dict[str, tuple[str, ...]]  # input -> the inputs its pullback reads
    shapes: dict[str, tuple[str, ...]]  # input -> its sizes as printed, e.g. (O, C, M, N)


def _keywords(tree: ast.Module) -> dict[str, tuple[list[str], list[str]]]:
    """The positional and keyword-only argument names of each top-level function."""
    return {
        node.name: ([a.arg for a in node.args.args], [a.arg for a in node.args.kwonlyargs])
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
    }


def _signature(derivation: Derivation, module: str, kind: str) -> _Signature:
    program, backward = derivation.program, derivation.backward
    missing = [name for name in program.differentiable if name not in derivation.pullbacks]
    if missing:
        raise ArgumentError(
            f"--emit {kind} needs the pullback of every input (autograd asks for each); "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not derived: "
            "derive without --wrt"
        )
    functions = _keywords(ast.parse(module))
    positional, params = functions["forward"]
    if tuple(positional) != tuple(program.inputs):  # the printed order is the program's
        raise AssertionError(f"forward takes {positional}, the program reads {program.inputs}")
    statements = [*program.statements, *backward.statements]
    inputs = set(program.inputs)
    reads = {}
    for tensor, pullback in derivation.pullbacks.items():
        needed = _needed(statements, pullback.name)
        read = {a.tensor for s in needed for a in ir.accesses(s.rhs)}
        read |= {name for s in needed for name in ir.index_arrays_read(s.rhs)}
        reads[tensor] = tuple(name for name in program.inputs if name in read & inputs)
    return _Signature(
        text=program.text,
        inputs=tuple(program.inputs),
        differentiable=program.differentiable,
        params=tuple(params),
        seed=backward.seeds[0],
        gradients={t: derivation.pullbacks[t].name for t in program.differentiable},
        pullback_params={t: tuple(functions[f"pullback_{t}"][1]) for t in program.differentiable},
        vjp_params=tuple(functions["vjp"][1]),
        reads=reads,
        shapes={t: tuple(str(n) for n in derivation.shapes[t]) for t in program.inputs},
    )


def _check_ranks(signature: _Signature) -> list[str]:
    """``_check_ranks(W, X)``: an input of the wrong rank names itself and the shape the
    notation reads, before the printed functions unpack its sizes (which would fail with
    Python's "not enough values to unpack")."""
    inputs = signature.inputs
    lines = [
        f"def _check_ranks({', '.join(inputs)}):",
        '    """Each input has as many axes as the notation reads."""',
    ]
    for tensor in inputs:
        sizes = signature.shapes[tensor]
        shape = f"({sizes[0]},)" if len(sizes) == 1 else f"({', '.join(sizes)})"
        message = f"{tensor} has shape {{tuple({tensor}.shape)}}; the notation reads {shape}"
        lines.append(f"    if {tensor}.ndim != {len(sizes)}:")
        raise_line = f'        raise ValueError(f"{message}")'
        if len(raise_line) <= WIDTH:
            lines.append(raise_line)
        else:
            lines += ["        raise ValueError(", f'            f"{message}"', "        )"]
    return lines


def _tuple(names: Sequence[str]) -> str:
    """``(a,)``, ``(a, b)``: a tuple display of names."""
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def _call(function: str, arguments: Sequence[str], keywords: Sequence[str]) -> str:
    return f"{function}({', '.join([*arguments, *(f'{k}={k}' for k in keywords)])})"


def _reads_comment(signature: _Signature) -> str:
    """``dW reads X; dX reads W`` (``reads only the sizes``, where a pullback reads none)."""
    parts = []
    for tensor in signature.differentiable:
        read = signature.reads[tensor]
        what = ", ".join(read) if read else "no input, only the sizes"
        parts.append(f"{signature.gradients[tensor]} reads {what}")
    return "; ".join(parts)


def _banner(title: str) -> str:
    return f"# ---- {title} ".ljust(92, "-")


# ---- PyTorch ---------------------------------------------------------------------------------


def _torch_wrapper(signature: _Signature, params_of: Sequence[str]) -> str:
    inputs, params, text = signature.inputs, signature.params, signature.text
    seed, gradients = signature.seed, signature.gradients
    differentiable = signature.differentiable  # an index array has no gradient: None
    needs = {t: f"needs_{t}" if t in differentiable else "_" for t in inputs}
    needs_line = f"{_tuple(list(needs.values()))} = ctx.needs_input_grad[:{len(inputs)}]"
    saved = [t for t in inputs if any(t in signature.reads[u] for u in differentiable)]
    save_lines = []
    for tensor in saved:
        readers = " or ".join(needs[u] for u in differentiable if tensor in signature.reads[u])
        save_lines.append(f"            {tensor} if {readers} else None,")
    arguments = ", ".join([*inputs, *params])
    lines = [
        _banner("the op: autograd runs the derived pullbacks"),
        "",
        "",
        *_check_ranks(signature),
        "",
        "",
        "def _stand_in(saved, shape, like):",
        '    """A saved input, or zeros of its shape (stride 0, no memory) where no pullback',
        '    that runs reads it: the pullbacks read its sizes only."""',
        "    return saved if saved is not None else like.new_zeros(()).expand(shape)",
        "",
        "",
        "class Op(torch.autograd.Function):",
        f'    """`{text}` as an autograd op.',
        "",
        f"    Op.apply({arguments}): the forward above; backward runs the derived pullbacks,",
        "    returns one gradient per argument (None for the parameters and where",
        "    ctx.needs_input_grad says none is wanted: that pullback does not run) and is",
        "    written in differentiable torch operations, so double backward works.",
        '    """',
        "",
        "    @staticmethod",
        f"    def forward({arguments}):",
        f"        _check_ranks({', '.join(inputs)})",
        f"        return {_call('forward', inputs, params)}",
        "",
        "    @staticmethod",
        "    def setup_context(ctx, inputs, output):",
        f"        {_tuple([*inputs, *params])} = inputs",
        f"        {needs_line}",
        f"        # saved: what the pullbacks that will run read ({_reads_comment(signature)})",
        "        ctx.save_for_backward(",
        *save_lines,
        "        )",
        f"        ctx.shapes = {_tuple([f'{t}.shape' for t in inputs])}",
    ]
    if params:
        lines.append(f"        ctx.params = {_tuple(params)}")
    lines += [
        "",
        "    @staticmethod",
        f"    def backward(ctx, {seed}):",
        f"        {needs_line}",
    ]
    if saved:
        lines.append(f"        {_tuple(saved)} = ctx.saved_tensors")
    if params:
        lines.append(f"        {_tuple(params)} = ctx.params")

    def size_only(tensor: str) -> str:  # an input no pullback reads: zeros of its shape
        return f"        {tensor} = {seed}.new_zeros(()).expand(ctx.shapes[{inputs.index(tensor)}])"

    arguments_of = [seed, *inputs]
    every = " and ".join(needs[t] for t in differentiable)
    results = [gradients[t] for t in differentiable]
    # every pullback runs: each input one reads was saved, so no stand-in is needed (the
    # common call, kept short: this is the backward autograd runs at every step)
    lines.append(f"        if {every}:  # every pullback: vjp (one call where it fuses them)")
    lines += ["    " + size_only(t) for t in inputs if t not in saved]
    lines.append(
        f"            {_tuple(results)} = {_call('vjp', arguments_of, signature.vjp_params)}"
    )
    lines.append("        else:")
    for tensor in inputs:
        if tensor in saved:
            value = f"_stand_in({tensor}, ctx.shapes[{inputs.index(tensor)}], {seed})"
            lines.append(f"            {tensor} = {value}")
        else:
            lines.append("    " + size_only(tensor))
    for tensor in differentiable:
        call = _call(f"pullback_{tensor}", arguments_of, signature.pullback_params[tensor])
        lines.append(f"            {gradients[tensor]} = {call} if {needs[tensor]} else None")
    returned = [gradients[t] if t in differentiable else "None" for t in inputs]
    lines.append(f"        return {', '.join([*returned, *(['None'] * len(params))])}")
    lines += [
        "",
        "",
        _op_function(signature, "Op.apply"),
        "",
        "",
        _torch_module(signature, params_of),
    ]
    return "\n".join(lines)


def _op_function(signature: _Signature, apply: str) -> str:
    inputs, params = signature.inputs, signature.params
    head = ", ".join([*inputs, *(["*", *params] if params else [])])
    return "\n".join(
        [
            f"def op({head}):",
            f'    """`{signature.text}`, differentiable through the derived pullbacks."""',
            f"    return {apply}({', '.join([*inputs, *params])})",
        ]
    )


def _torch_module(signature: _Signature, params_of: Sequence[str]) -> str:
    inputs, params = signature.inputs, signature.params
    learned = [t for t in inputs if t in params_of]
    arguments = [t for t in inputs if t not in params_of]
    init_head = ", ".join(["self", *learned, *(["*", *params] if params else [])])
    described = (
        f"{', '.join(learned)} {'is its parameter' if len(learned) == 1 else 'are its parameters'}"
        if learned
        else "it has no parameters"
    )
    lines = [
        "class OpModule(torch.nn.Module):",
        f'    """`{signature.text}` as a layer: {described}; call it with '
        f'{", ".join(arguments) or "nothing"}."""',
        "",
        f"    def __init__({init_head}):",
        "        super().__init__()",
    ]
    lines += [f"        self.{t} = torch.nn.Parameter(torch.as_tensor({t}))" for t in learned]
    lines += [f"        self.{p} = {p}" for p in params]
    values = [f"self.{t}" if t in params_of else t for t in inputs]
    lines += [
        "",
        f"    def forward({', '.join(['self', *arguments])}):",
        f"        return Op.apply({', '.join([*values, *(f'self.{p}' for p in params)])})",
    ]
    return "\n".join(lines)


def _check_params_of(derivation: Derivation, params_of: Sequence[str]) -> None:
    inputs = derivation.program.inputs
    arrays = [name for name in params_of if name in derivation.program.index_arrays]
    if arrays:
        raise ArgumentError(
            f"--params-of names {', '.join(map(repr, arrays))}: an index array holds "
            "integer positions, not a learned parameter"
        )
    unknown = [name for name in params_of if name not in inputs]
    if unknown:
        raise ArgumentError(
            f"--params-of names {', '.join(map(repr, unknown))}, which "
            f"{'is' if len(unknown) == 1 else 'are'} not an input; the inputs are "
            f"{', '.join(inputs)}"
        )


def torch_function_source(derivation: Derivation, params_of: Sequence[str] = ()) -> str:
    """The PyTorch module plus ``Op`` (a ``torch.autograd.Function``), ``op`` (applies it)
    and ``OpModule`` (an ``nn.Module`` whose parameters are the inputs ``params_of``)."""
    _check_params_of(derivation, params_of)
    module = torch_source(derivation)
    signature = _signature(derivation, module, "torch-function")
    return module + "\n\n" + _torch_wrapper(signature, params_of) + "\n"


# ---- JAX -------------------------------------------------------------------------------------


def _jax_wrapper(signature: _Signature) -> str:
    inputs, params, text, seed = signature.inputs, signature.params, signature.text, signature.seed
    differentiable = signature.differentiable  # an index array's cotangent is None
    read = [t for t in inputs if any(t in signature.reads[u] for u in differentiable)]
    residuals = [t if t in read else f"_sizes_of({t})" for t in inputs]
    positional = ", ".join([*inputs, *params])
    function = "op" if not params else "_op"
    lines = [
        _banner("the op: jax.custom_vjp with the derived pullbacks"),
        "",
        "",
        *_check_ranks(signature),
        "",
        "",
    ]
    if any(t not in read for t in inputs):
        lines += [
            "def _sizes_of(array):",
            '    """An empty array that carries ``array``\'s shape and dtype (a residual of',
            '    sizes only)."""',
            "    return jnp.zeros((*array.shape, 0), array.dtype)",
            "",
            "",
            "def _stand_in(sizes):",
            '    """Zeros shaped as ``_sizes_of`` recorded (the pullbacks read the sizes only)."""',
            "    return jnp.zeros(sizes.shape[:-1], sizes.dtype)",
            "",
            "",
        ]
    if params:
        indices = _tuple([str(len(inputs) + k) for k in range(len(params))])
        lines.append(f"@functools.partial(jax.custom_vjp, nondiff_argnums={indices})")
    else:
        lines.append("@jax.custom_vjp")
    lines += [f"def {function}({positional}):"]
    if not params:
        lines += [
            f'    """`{text}`, differentiable through the derived pullbacks (jax.custom_vjp)."""'
        ]
    lines += [
        f"    _check_ranks({', '.join(inputs)})",
        f"    return {_call('forward', inputs, params)}",
        "",
        "",
        f"def {function}_forward({positional}):",
        f"    _check_ranks({', '.join(inputs)})",
        f"    # residuals: what the pullbacks read ({_reads_comment(signature)})",
        f"    return {_call('forward', inputs, params)}, {_tuple(residuals)}",
        "",
        "",
        f"def {function}_backward({', '.join([*params, 'residuals', seed])}):",
        f"    {_tuple([t if t in read else f'_sizes_{t}' for t in inputs])} = residuals",
    ]
    lines += [f"    {t} = _stand_in(_sizes_{t})" for t in inputs if t not in read]
    results = [signature.gradients[t] for t in differentiable]
    returned = [signature.gradients[t] if t in differentiable else "None" for t in inputs]
    lines += [
        f"    {_tuple(results)} = {_call('vjp', [seed, *inputs], signature.vjp_params)}",
        f"    return {_tuple(returned)}",
        "",
        "",
        f"{function}.defvjp({function}_forward, {function}_backward)",
    ]
    if params:
        lines += ["", "", _op_function(signature, "_op")]
    return "\n".join(lines)


def jax_custom_vjp_source(derivation: Derivation) -> str:
    """The JAX module plus ``op``: a ``jax.custom_vjp`` function (behind a keyword-taking
    ``op`` when there are symbolic parameters) whose bwd runs the printed pullbacks."""
    module = jax_source(derivation)
    signature = _signature(derivation, module, "jax-custom-vjp")
    if signature.params and "import functools\n" not in module:
        module = module.replace("\n\nimport jax\n", "\n\nimport functools\nimport jax\n", 1)
    return module + "\n\n" + _jax_wrapper(signature) + "\n"
