"""The numpy, jax and torch backends: array operations and convolution runners per framework.

jax and torch are imported only when their backend runs; a missing one raises
BackendMissingError naming the extra to install.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..conv.calls import jax_call, torch_call
from ..conv.recognise import ConvPullback
from ..errors import BackendMissingError
from . import vectorized
from .dense import ArrayOps, numpy_ops
from .numpy_conv import arrange, finish, run_conv

if TYPE_CHECKING:
    from ..derivation import Derivation


def run_numpy(
    derivation: Derivation, arrays: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    def einsum(subscripts: str, *operands: np.ndarray) -> np.ndarray:
        return np.einsum(subscripts, *operands, optimize=True)

    return vectorized.run(derivation, arrays, cotangent, numpy_ops(), run_conv, einsum, np.asarray)


def _import(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError as error:
        raise BackendMissingError(
            f'the {name} backend needs {name}: pip install "einderive[{name}]"'
        ) from error


def jax_ops(jnp: Any) -> ArrayOps:
    import jax

    return ArrayOps(
        name="jax",
        asarray=lambda a: jnp.asarray(a, dtype=jnp.float64),
        gather=lambda a, flat: jnp.ravel(a)[jnp.asarray(flat)],
        where=jnp.where,
        sum=lambda a, axes: jnp.sum(a, axis=axes),
        maximum=lambda a, axes: jnp.max(a, axis=axes),
        minimum=lambda a, axes: jnp.min(a, axis=axes),
        functions={
            "exp": jnp.exp,
            "log": jnp.log,
            "sqrt": jnp.sqrt,
            "abs": jnp.abs,
            "tanh": jnp.tanh,
            "sigmoid": jax.nn.sigmoid,
            "relu": lambda a: jnp.maximum(a, 0.0),
            "step": lambda a: (a > 0).astype(jnp.float64),
            "sign": jnp.sign,
        },
        broadcast=jnp.broadcast_to,
        mask=jnp.asarray,
    )


def run_jax(
    derivation: Derivation, arrays: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    jax = _import("jax")
    jnp = jax.numpy

    def conv(recognised: ConvPullback, x: Any, w: Any) -> Any:
        def permute(array: Any, axes: list[int]) -> Any:
            return jnp.transpose(array, axes)

        call = jax_call(recognised.call)
        out = call.apply(
            arrange(x, recognised.x_layout, permute, jnp.flip),
            arrange(w, recognised.w_layout, permute, jnp.flip),
        )
        return finish(out, recognised, permute)

    def einsum(subscripts: str, *operands: Any) -> Any:
        return jnp.einsum(subscripts, *operands)

    with jax.enable_x64(True):
        return vectorized.run(
            derivation,
            arrays,
            cotangent,
            jax_ops(jnp),
            conv,
            einsum,
            lambda a: np.asarray(a, dtype=np.float64),
        )


def torch_ops(torch: Any) -> ArrayOps:
    def reduce(function: Any) -> Any:
        def apply(a: Any, axes: tuple[int, ...]) -> Any:
            for axis in sorted(axes, reverse=True):
                a = function(a, dim=axis)
                a = a.values if hasattr(a, "values") else a
            return a

        return apply

    def where(mask: Any, a: Any, b: Any) -> Any:
        a = a if torch.is_tensor(a) else torch.tensor(a, dtype=torch.float64)
        b = b if torch.is_tensor(b) else torch.tensor(b, dtype=torch.float64)
        return torch.where(mask, a, b)

    return ArrayOps(
        name="torch",
        asarray=lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)),
        gather=lambda a, flat: a.reshape(-1)[torch.as_tensor(np.array(flat))],
        where=where,
        sum=lambda a, axes: torch.sum(a, dim=axes) if axes else a,
        maximum=reduce(torch.max),
        minimum=reduce(torch.min),
        functions={
            "exp": torch.exp,
            "log": torch.log,
            "sqrt": torch.sqrt,
            "abs": torch.abs,
            "tanh": torch.tanh,
            "sigmoid": torch.sigmoid,
            "relu": torch.relu,
            "step": lambda a: (a > 0).to(torch.float64),
            "sign": torch.sign,
        },
        broadcast=lambda a, shape: (
            a if torch.is_tensor(a) else torch.tensor(a, dtype=torch.float64)
        ).expand(shape),
        mask=lambda m: torch.as_tensor(np.array(m)),
    )


def run_torch(
    derivation: Derivation, arrays: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    torch = _import("torch")

    def permute(array: Any, axes: list[int]) -> Any:
        return array.permute(*axes)

    def flip(array: Any, axes: tuple[int, ...]) -> Any:
        return array.flip(axes)

    def conv(recognised: ConvPullback, x: Any, w: Any) -> Any:
        operand_x = arrange(x, recognised.x_layout, permute, flip)
        operand_w = arrange(w, recognised.w_layout, permute, flip)
        call = torch_call(recognised.call, kernel_size=tuple(operand_w.shape[2:]))
        return finish(call.apply(operand_x, operand_w), recognised, permute)

    def einsum(subscripts: str, *operands: Any) -> Any:
        return torch.einsum(subscripts, *operands)

    return vectorized.run(
        derivation,
        arrays,
        cotangent,
        torch_ops(torch),
        conv,
        einsum,
        lambda a: a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a),
    )
