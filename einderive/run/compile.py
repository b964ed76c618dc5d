"""Compile once, call many times: a derivation's printed module, cached per input shapes.

``compile(text, backend="numpy")`` analyses nothing until it sees arrays; the first
call with a given signature (the shape of every input) derives the pullbacks for
those sizes, prints the ``backend``'s module and compiles it (``run.load``). Every
later call with the same signature goes straight to the compiled functions, as
``jax.jit`` does per shape; a repeated call with the float64 NumPy arrays of the last
signature skips even the conversions and look-ups (its checks were made once). The
``loops`` backend is the reference interpreter
(``run.interpret``), planned once per signature the same way.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import operator
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .. import ir
from ..derive import derivation
from ..emit.outputs import source
from ..errors import ArgumentError, BackendMissingError, EinderiveError
from ..front import input_names, learnable_scalars
from ..model import Derivation
from ..parse import index_array_names
from .inputs import as_index_array, check_index_values, numeric_program
from .interpret import run_statements
from .load import load_source

BACKENDS = ("loops", "numpy", "jax", "torch")


def installed() -> list[str]:
    """The backends whose framework can be imported here."""
    return [
        name
        for name in BACKENDS
        if name in ("loops", "numpy") or importlib.util.find_spec(name) is not None
    ]


def check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise ArgumentError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name in ("jax", "torch"):
        _framework_module(name)


def _framework_module(name: str) -> Any:
    """jax or torch, imported; a missing one says which extra installs it."""
    try:
        __import__(name)
        return importlib.import_module(name)
    except ImportError as error:
        raise BackendMissingError(
            f'the {name} backend needs {name}: pip install "einderive[{name}]"'
        ) from error


@dataclass(frozen=True)
class Framework:
    """How arrays cross into one backend's modules and back."""

    name: str
    native: Callable[[Any], bool]  # is this already an array of the framework?
    to_native: Callable[[Any], Any]  # float64 array of the framework
    to_numpy: Callable[[Any], np.ndarray]
    # a result as the caller gave the matching input: the framework's array in its
    # dtype and device where the input was one, NumPy otherwise
    as_given: Callable[[Any, Any], Any]


def _float64(array: Any) -> np.ndarray:
    detach = getattr(array, "detach", None)  # a torch tensor, perhaps requiring grad
    if callable(detach):
        array = detach().cpu()
    return np.asarray(array, dtype=np.float64)


_FRAMEWORKS: dict[str, Framework] = {}


def framework(name: str) -> Framework:
    """The array conversions of a backend (jax and torch imported here, on first use)."""
    found = _FRAMEWORKS.get(name)
    if found is None:
        found = _FRAMEWORKS[name] = _make_framework(name)
    return found


def _make_framework(name: str) -> Framework:
    """The array conversions of a backend (jax and torch imported here, on first use)."""
    check_backend(name)
    if name == "torch":
        torch = _framework_module("torch")
        return Framework(
            "torch",
            torch.is_tensor,
            lambda a: (
                a.detach().to(torch.float64)
                if torch.is_tensor(a)
                else torch.from_numpy(np.array(a, dtype=np.float64))
            ),
            lambda a: a.detach().cpu().numpy(),
            lambda result, given: (
                result.to(device=given.device, dtype=given.dtype)
                if torch.is_tensor(given)
                else result.detach().cpu().numpy()
            ),
        )
    if name == "jax":
        jax = _framework_module("jax")
        jax.config.update("jax_enable_x64", True)  # as the emitted module does on import
        return Framework(
            "jax",
            lambda a: isinstance(a, jax.Array),
            lambda a: jax.numpy.asarray(a, dtype=jax.numpy.float64),
            lambda a: np.asarray(a, dtype=np.float64),
            lambda result, given: (
                result.astype(given.dtype)
                if isinstance(given, jax.Array)
                else np.asarray(result, dtype=np.float64)
            ),
        )
    return Framework(
        name,
        lambda a: isinstance(a, np.ndarray),
        _float64,
        _float64,
        lambda result, given: result,
    )


# ---------------------------------------------------------------- one derivation


class Runner:
    """A numeric derivation made runnable by one backend: forward, pullbacks, vjp."""

    def __init__(
        self, derivation: Derivation, backend: str, source: str | None, namespace: dict[str, Any]
    ) -> None:
        self.derivation = derivation
        self.backend = backend
        self.source = source  # the printed module (None: the interpreter)
        self.namespace = namespace
        program = derivation.program
        self.inputs = tuple(program.inputs)
        self.pullbacks = tuple(derivation.pullbacks)
        self.output_shape = tuple(int(n) for n in program.shapes[program.output])
        self._vjp = namespace.get("vjp")
        self._forward = namespace.get("forward")
        self._ops: dict[str, Callable[..., Any]] = {}

    def op(self, kind: str) -> Callable[..., Any]:
        """The ``op`` of the module ``kind`` prints ("torch-function", "jax-custom-vjp"):
        the framework's differentiable op over the printed pullbacks, loaded once."""
        found = self._ops.get(kind)
        if found is None:
            found = self._ops[kind] = load_source(source(self.derivation, kind), kind)["op"]
        return found

    def forward(self, arrays: Mapping[str, Any]) -> Any:
        if self._forward is None:
            program = self.derivation.program
            values = run_statements(program.statements, program.shapes, arrays)
            return values[program.output]
        return self._forward(*[arrays[name] for name in self.inputs])

    def vjp(self, cotangent: Any, arrays: Mapping[str, Any]) -> dict[str, Any]:
        if self._vjp is None:
            return _interpret_vjp(self.derivation, arrays, cotangent)
        results = self._vjp(cotangent, *[arrays[name] for name in self.inputs])
        return dict(zip(self.pullbacks, results, strict=True))

    def vjp_of(self, cotangent: Any, arrays: Sequence[Any]) -> dict[str, Any]:
        """``vjp`` with the arrays in the order of ``inputs`` (the compiled hot path)."""
        if self._vjp is None:
            named = dict(zip(self.inputs, arrays, strict=True))
            return _interpret_vjp(self.derivation, named, cotangent)
        return dict(zip(self.pullbacks, self._vjp(cotangent, *arrays), strict=True))

    def forward_of(self, arrays: Sequence[Any]) -> Any:
        """``forward`` with the arrays in the order of ``inputs``."""
        if self._forward is None:
            return self.forward(dict(zip(self.inputs, arrays, strict=True)))
        return self._forward(*arrays)

    def pullback(self, tensor: str, cotangent: Any, arrays: Mapping[str, Any]) -> Any:
        if self.source is None:
            return _interpret_vjp(self.derivation, arrays, cotangent)[tensor]
        function = self.namespace[f"pullback_{tensor}"]
        return function(cotangent, *[arrays[name] for name in self.inputs])


def _interpret_vjp(
    derivation: Derivation, arrays: Mapping[str, Any], cotangent: Any
) -> dict[str, np.ndarray]:
    """Every pullback by the interpreter: forward intermediates, then the backward."""
    program, backward = derivation.program, derivation.backward
    values = dict(arrays)
    written = {s.target for s in program.statements}
    read = {a.tensor for s in backward.statements for a in ir.accesses(s.rhs)}
    if read & written:
        values = run_statements(program.statements, program.shapes, values)
    values[backward.seeds[0]] = cotangent
    values = run_statements(backward.statements, derivation.shapes, values)
    return {name: values[p.name] for name, p in derivation.pullbacks.items()}


_RUNNERS: OrderedDict[tuple[int, str], Runner] = OrderedDict()
_RUNNERS_KEPT = 64


def runner(derivation: Derivation, backend: str) -> Runner:
    """The runner of a numeric derivation; its printed module is compiled once."""
    key = (id(derivation), backend)
    found = _RUNNERS.get(key)
    if found is not None and found.derivation is derivation:
        _RUNNERS.move_to_end(key)
        return found
    check_backend(backend)
    if backend == "loops":
        made = Runner(derivation, backend, None, {})
    else:
        text = source(derivation, backend)
        made = Runner(derivation, backend, text, load_source(text, backend))
    _RUNNERS[key] = made  # the runner holds the derivation, so its id stays its own
    while len(_RUNNERS) > _RUNNERS_KEPT:
        _RUNNERS.popitem(last=False)
    return made


def run(
    backend: str, derivation: Derivation, arrays: Mapping[str, Any], cotangent: Any
) -> dict[str, np.ndarray]:
    """The pullbacks of ``cotangent`` into every input, by the named backend, as NumPy."""
    convert = framework(backend)
    made = runner(derivation, backend)
    index_arrays = derivation.program.index_arrays  # integer positions: NumPy in every backend
    native = {
        name: a if name in index_arrays else convert.to_native(a) for name, a in arrays.items()
    }
    results = made.vjp(convert.to_native(cotangent), native)
    shapes = derivation.shapes
    return {
        name: convert.to_numpy(value).reshape(tuple(int(n) for n in shapes[name]))
        for name, value in results.items()
    }


# ---------------------------------------------------------------- compile

# the module kind whose ``op`` a backend's ``Compiled.function`` applies
OP_KINDS = {"torch": "torch-function", "jax": "jax-custom-vjp"}


_NDARRAY = np.ndarray
_FLOAT64 = np.dtype(np.float64)  # NumPy's float64 descriptor; arrays share it


class _Hot(NamedTuple):
    """The last signature of float64 NumPy arrays a ``Compiled`` ran, checked once.

    A later call by the same names with float64 ndarrays of the same shapes (and a
    cotangent of the output's shape) goes straight to the printed functions: its names,
    values and sizes were checked when the signature was first seen, so nothing is
    converted or looked up again."""

    runner: Runner
    arity: int  # how many arrays the call gave: exactly the runner's inputs
    take: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # those arrays, in reading order
    shapes: list[tuple[int, ...]]  # each one's shape
    cotangent: tuple[int, ...]  # the output's shape
    vjp: Callable[..., Any] | None  # the printed ``vjp`` (None: the interpreter)
    pullbacks: tuple[str, ...]  # the names of its results, in order


def _taker(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """``given -> tuple(given[n] for n in names)``, by one C-level look-up."""
    if len(names) == 1:
        (only,) = names
        return lambda given: (given[only],)
    if not names:
        return lambda given: ()
    return operator.itemgetter(*names)  # type: ignore[return-value]


def _bind(names: Sequence[str], arrays: Sequence[Any], named: Mapping[str, Any]) -> list[Any]:
    """Positional and keyword arrays, in the order of ``names`` (an error names a
    missing, repeated or unknown one)."""
    if len(arrays) > len(names):
        raise ArgumentError(f"{len(arrays)} arrays given; the op takes {', '.join(names)}")
    given = dict(zip(names, arrays, strict=False))  # checked: no more arrays than names
    for name, value in named.items():
        if name not in names:
            raise ArgumentError(f"{name!r} is not an input; the inputs are {', '.join(names)}")
        if name in given:
            raise ArgumentError(f"{name!r} given twice")
        given[name] = value
    missing = [name for name in names if name not in given]
    if missing:
        raise ArgumentError(f"no array given for {', '.join(map(repr, missing))}")
    return [given[name] for name in names]


def _frozen(mapping: Mapping | None) -> tuple | None:
    """A hashable key for a mapping of names (TypeError if its values are not hashable)."""
    if mapping is None:
        return None
    if not isinstance(mapping, Mapping):
        raise ArgumentError(f"expected a mapping of names, not {mapping!r}")
    key = tuple(
        sorted(
            ((k, tuple(v) if isinstance(v, list | tuple) else v) for k, v in mapping.items()),
            key=lambda item: str(item[0]),
        )
    )
    hash(key)
    return key


class Compiled:
    """``text`` compiled for one backend: ``forward``, ``vjp`` and each pullback.

    Planned once per input signature (the shapes of the inputs) and cached, so
    repeated calls cost the printed module's own time plus a dictionary look-up.

    >>> import numpy as np
    >>> c = compile("Y[i] = W[m]*X[i+m]", backend="numpy")
    >>> c.vjp(np.ones(2), W=np.array([1.0, 2.0]), X=np.array([1.0, 0.0, 3.0]))["X"]
    array([1., 3., 2.])
    """

    def __init__(
        self,
        text: str,
        params: Mapping[str, Any] | None = None,
        shapes: Mapping[str, Any] | None = None,
        ranges: Mapping[str, Any] | None = None,
        backend: str = "numpy",
        out_of_range: str = "zero",
    ) -> None:
        if not isinstance(text, str):
            raise ArgumentError(f"the expression must be a string, not {type(text).__name__}")
        check_backend(backend)
        if out_of_range not in ("zero", "raise"):
            raise ArgumentError(f"out_of_range is 'zero' or 'raise', not {out_of_range!r}")
        # an index array's value outside the axis it reads: a zero read, or an error
        self.out_of_range = out_of_range
        self._framework = framework(backend)
        self._numpy = backend in ("numpy", "loops")  # float64 ndarrays pass as they are
        self.text = text
        self.backend = backend
        self.params = dict(params) if params is not None else None
        self.shapes = dict(shapes) if shapes is not None else None
        self.ranges = dict(ranges) if ranges is not None else None
        try:
            self._names = tuple(input_names(text))
        except EinderiveError as error:
            raise error.with_text(text) from None
        self._name_set = frozenset(self._names)
        self._index_arrays = frozenset(index_array_names(text))
        self._runners: dict[tuple, Runner] = {}
        self._last: Runner | None = None
        self._hot: _Hot | None = None
        self._function: Callable[..., Any] | None = None
        if self.shapes is not None and all(name in self.shapes for name in self._names):
            given = {name: tuple(self.shapes[name]) for name in self._names}
            if all(isinstance(n, int) for shape in given.values() for n in shape):
                self._last = self._runner_for(given)

    def __repr__(self) -> str:
        return f"Compiled({self.text!r}, backend={self.backend!r})"

    # the planning, once per signature

    def _runner_for(self, signature_shapes: Mapping[str, tuple[int, ...]]) -> Runner:
        placeholders = {name: np.empty(shape) for name, shape in signature_shapes.items()}
        program = numeric_program(self.text, placeholders, self.params, self.shapes, self.ranges)
        missing = [name for name in program.inputs if name not in signature_shapes]
        if missing:
            raise ArgumentError(f"no array given for {', '.join(map(repr, missing))}")
        made = runner(derivation(program), self.backend)
        self._runners[self._key(signature_shapes)] = made
        return made

    def _key(self, shapes: Mapping[str, tuple[int, ...]]) -> tuple:
        """The cache key of a signature: the shapes, and the names where not all are given."""
        key = tuple(shapes.values())
        return key if tuple(shapes) == self._names else (tuple(shapes), key)

    def _prepare(self, inputs: Mapping[str, Any]) -> tuple[Runner, dict[str, Any], bool]:
        """The runner for these inputs, the inputs as the backend's arrays, and whether
        the caller gave the backend's own arrays (then results stay in the framework)."""
        names = self._names
        if inputs.keys() != self._name_set:
            names = self._given(inputs)
        convert = self._framework
        native = True
        arrays = {}
        for name in names:
            value = inputs[name]
            if name in self._index_arrays:  # integer positions: NumPy, or int64 torch tensors
                native = native and convert.native(value)
                arrays[name] = as_index_array(name, value, keep_tensor=self.backend == "torch")
                continue
            if self._numpy and type(value) is np.ndarray and value.dtype == np.float64:
                arrays[name] = value  # already what the module takes: no conversion
                continue
            native = native and convert.native(value)
            try:
                arrays[name] = convert.to_native(value)
            except (ValueError, TypeError):
                raise ArgumentError(f"{name!r} must be a numeric array") from None
        signature = tuple([a.shape for a in arrays.values()])
        made = self._runners.get(signature if names is self._names else (names, signature))
        if made is None:
            made = self._runner_for(dict(zip(names, signature, strict=True)))
        self._last = made
        if self.out_of_range == "raise":
            check_index_values(made.derivation.program, arrays)
        if self._numpy:
            self._hot = self._hot_of(made, inputs, arrays)
        return made, arrays, native

    def _hot_of(
        self, made: Runner, inputs: Mapping[str, Any], arrays: Mapping[str, Any]
    ) -> _Hot | None:
        """The hot path of this signature, if the call gave the runner's inputs, each a
        float64 ndarray taken as it is (else the next call is checked in full)."""
        if len(inputs) != len(made.inputs) or self._index_arrays:
            return None  # index arrays are checked on every call (their values are positions)
        for name in made.inputs:
            if name not in inputs or arrays.get(name) is not inputs[name]:
                return None  # missing, or converted: a later call must convert it too
            if inputs[name].dtype is not _FLOAT64:
                return None  # an equal descriptor of its own: the identity test would fail
        shapes = [tuple(inputs[name].shape) for name in made.inputs]
        take = _taker(made.inputs)
        return _Hot(made, len(inputs), take, shapes, made.output_shape, made._vjp, made.pullbacks)

    def _hot_arrays(self, hot: _Hot, inputs: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The arrays of a call that fits the hot signature, in reading order, or None."""
        if len(inputs) != hot.arity:
            return None
        try:
            arrays = hot.take(inputs)
        except KeyError:
            return None  # a name missing: the full check says which
        # an array that is not a float64 ndarray drops out, and the list differs
        shapes = [a.shape for a in arrays if type(a) is _NDARRAY and a.dtype is _FLOAT64]
        return arrays if shapes == hot.shapes else None

    def _given(self, inputs: Mapping[str, Any]) -> tuple[str, ...]:
        """The names given, in reading order; an error names one the text does not read.

        A tensor the text reads may be left out where the program does not need it
        (``0*B[j]`` folds away); planning then says if it was needed."""
        extra = [name for name in inputs if name not in self._name_set]
        # an array for a parameter used as a value makes it a 0-d input (a learnable scalar)
        scalars = learnable_scalars(self.text, extra) if extra else ()
        unread = [name for name in extra if name not in scalars]
        if unread:
            raise ArgumentError(
                f"arrays given for {', '.join(map(repr, unread))}, "
                "which the expression does not read"
            )
        return tuple(name for name in self._names if name in inputs) + tuple(
            name for name in extra if name in scalars
        )

    def _cotangent(self, made: Runner, cotangent: Any) -> Any:
        if self._numpy and type(cotangent) is np.ndarray and cotangent.dtype == np.float64:
            value = cotangent
        else:
            try:
                value = self._framework.to_native(cotangent)
            except (ValueError, TypeError):
                raise ArgumentError("the cotangent must be a numeric array") from None
        if tuple(value.shape) != made.output_shape:
            raise ArgumentError(
                f"the cotangent has shape {tuple(value.shape)}; the output "
                f"{made.derivation.program.output!r} has shape {made.output_shape}"
            )
        return value

    def _out(self, value: Any, native: bool) -> Any:
        return value if native else self._framework.to_numpy(value)

    # the calls

    def forward(self, **inputs: Any) -> Any:
        """The output of the last statement."""
        hot = self._hot
        if hot is not None:
            given = self._hot_arrays(hot, inputs)
            if given is not None:
                return hot.runner.forward_of(given)
        made, arrays, native = self._prepare(inputs)
        result = self._out(made.forward(arrays), native)
        if native and not self._numpy:
            # in the dtype and on the device of the data, as the pullbacks come back
            data = [inputs[name] for name in arrays if name not in self._index_arrays]
            if data:
                return self._framework.as_given(result, data[0])
        return result

    def vjp(self, cotangent: Any, /, **inputs: Any) -> dict[str, Any]:
        """Every pullback of ``cotangent`` (shaped like the output), by input name."""
        hot = self._hot
        if hot is not None and len(inputs) == hot.arity:
            # the checks of _hot_arrays, inlined: this is the call users repeat
            try:
                given = hot.take(inputs)
                fits = (
                    [a.shape for a in given if type(a) is _NDARRAY and a.dtype is _FLOAT64]
                    == hot.shapes
                    and type(cotangent) is _NDARRAY
                    and cotangent.dtype is _FLOAT64
                    and cotangent.shape == hot.cotangent
                )
            except KeyError:
                fits = False  # a name missing: the full check says which
            if fits:
                if hot.vjp is None:
                    return hot.runner.vjp_of(cotangent, given)
                return dict(zip(hot.pullbacks, hot.vjp(cotangent, *given), strict=True))
        made, arrays, native = self._prepare(inputs)
        results = made.vjp(self._cotangent(made, cotangent), arrays)
        if self.backend in ("numpy", "loops"):
            return results
        as_given = self._framework.as_given
        return {name: as_given(value, inputs[name]) for name, value in results.items()}

    def pullback(self, tensor: str, cotangent: Any, /, **inputs: Any) -> Any:
        """One pullback: ``d<tensor>`` given the output's cotangent."""
        if tensor not in self._name_set:
            raise ArgumentError(
                f"{tensor!r} is not an input; the inputs are {', '.join(self._names)}"
            )
        made, arrays, _ = self._prepare(inputs)
        result = made.pullback(tensor, self._cotangent(made, cotangent), arrays)
        return self._framework.as_given(result, inputs[tensor])

    @property
    def function(self) -> Callable[..., Any]:
        """The op autograd differentiates: ``function(*inputs)`` (or by name).

        PyTorch: applies the ``torch.autograd.Function`` of ``--emit torch-function``;
        JAX: calls the ``jax.custom_vjp`` function of ``--emit jax-custom-vjp`` (it works
        under ``jax.jit``, ``jax.grad`` and ``jax.vmap``). The arrays stay the
        framework's, on their device and in their dtype; each signature (the inputs'
        shapes, static under ``jit`` and per example under ``vmap``) gets its own op,
        derived for those sizes once.
        """
        if self.backend not in OP_KINDS:
            raise ArgumentError(
                f"the {self.backend} backend has no autograd op; .function needs "
                'backend="torch" or backend="jax"'
            )
        if self._function is None:
            kind, names = OP_KINDS[self.backend], self._names

            def function(*arrays: Any, **named: Any) -> Any:
                given = _bind(names, arrays, named)
                signature = tuple(tuple(int(n) for n in a.shape) for a in given)
                made = self._runners.get(signature)
                if made is None:
                    made = self._runner_for(dict(zip(names, signature, strict=True)))
                self._last = made
                if self.out_of_range == "raise" and self.backend == "torch":
                    # (JAX: under jit the index arrays are tracers, with no values to check)
                    indices = {n: a for n, a in zip(names, given, strict=True)}
                    check_index_values(made.derivation.program, indices)
                return made.op(kind)(*given)

            function.__name__ = function.__qualname__ = "op"
            function.__doc__ = f"`{self.text}` as a differentiable {self.backend} op."
            self._function = function
        return self._function

    def module(self, params_of: Sequence[str] = ()) -> type:
        """A ``torch.nn.Module`` class of the op whose parameters are the inputs
        ``params_of``: construct it with their initial values (positional, in that
        order, or by name); call it with the other inputs.

        >>> import torch
        >>> Layer = compile("Y[i] = W[m]*X[i+m]", backend="torch").module(params_of=["W"])
        >>> layer = Layer(torch.ones(2, dtype=torch.float64))
        >>> layer(torch.arange(4.0, dtype=torch.float64))
        tensor([1., 3., 5.], dtype=torch.float64, grad_fn=<OpBackward>)
        """
        if self.backend != "torch":
            raise ArgumentError('.module needs backend="torch" (an nn.Module)')
        unknown = [name for name in params_of if name not in self._name_set]
        if unknown:
            raise ArgumentError(
                f"params_of names {', '.join(map(repr, unknown))}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not an input; the inputs are "
                f"{', '.join(self._names)}"
            )
        return _module_class(self, tuple(params_of))

    @property
    def derivation(self) -> Derivation:
        """The numeric derivation of the last signature run (or of ``shapes=``)."""
        return self._ready().derivation

    @property
    def source(self) -> str:
        """The printed module that runs (of the last signature, or of ``shapes=``)."""
        made = self._ready()
        if made.source is None:
            return source(made.derivation, "loops")
        return made.source

    def _ready(self) -> Runner:
        if self._last is None:
            raise ArgumentError(
                "nothing is compiled yet: call forward or vjp once, or give shapes= for "
                f"every input ({', '.join(self._names)})"
            )
        return self._last


def _module_class(compiled: Compiled, learned: tuple[str, ...]) -> type:
    """An ``nn.Module`` subclass: ``learned`` as its parameters, the rest call arguments."""
    torch = _framework_module("torch")
    function = compiled.function
    names = compiled._names
    arguments = tuple(name for name in names if name not in learned)

    class OpModule(torch.nn.Module):  # type: ignore[misc, name-defined]
        __doc__ = (
            f"`{compiled.text}` as a layer: parameters {', '.join(learned) or '(none)'}; "
            f"call it with {', '.join(arguments) or 'nothing'}."
        )

        def __init__(self, *initial: Any, **named: Any) -> None:
            super().__init__()
            for name, value in zip(learned, _bind(learned, initial, named), strict=True):
                self.register_parameter(name, torch.nn.Parameter(torch.as_tensor(value)))

        def forward(self, *arrays: Any, **named: Any) -> Any:
            given = dict(zip(arguments, _bind(arguments, arrays, named), strict=True))
            return function(*[getattr(self, n) if n in learned else given[n] for n in names])

    return OpModule


@functools.lru_cache(maxsize=256)
def _compiled(
    text: str,
    params: tuple | None,
    shapes: tuple | None,
    ranges: tuple | None,
    backend: str,
    out_of_range: str = "zero",
) -> Compiled:
    def unfrozen(key: tuple | None) -> dict | None:
        return dict(key) if key is not None else None

    return Compiled(
        text, unfrozen(params), unfrozen(shapes), unfrozen(ranges), backend, out_of_range
    )


def compile(  # noqa: A001 - the name users expect, as re.compile
    text: str,
    params: Mapping[str, Any] | None = None,
    shapes: Mapping[str, Any] | None = None,
    ranges: Mapping[str, Any] | None = None,
    backend: str = "numpy",
    out_of_range: str = "zero",
) -> Compiled:
    """``text`` compiled for ``backend``, cached per text, parameters, shapes and backend."""
    if params is None and shapes is None and ranges is None and type(text) is str:
        # ``ed.vjp`` in a loop: no keys
        return _compiled(text, None, None, None, backend, out_of_range)
    try:
        key = (_frozen(params), _frozen(shapes), _frozen(ranges))
    except TypeError:
        return Compiled(text, params, shapes, ranges, backend, out_of_range)
    if not isinstance(text, str):
        raise ArgumentError(f"the expression must be a string, not {type(text).__name__}")
    return _compiled(text, *key, backend, out_of_range)
