"""A convolution over a wrapped, clamped or reflected read, as code that runs as printed.

The forward is ``pad`` (``jax.numpy.pad`` with ``mode='wrap'|'edge'|'reflect'``,
``torch.nn.functional.pad`` with PyTorch's ``mode``) and an unpadded call on the padded
input ``X_pad`` (in PyTorch also ``nn.ConvNd(padding=p, padding_mode=...)`` where that
module is the same call). Each pullback is a call of the padded forward's own derivation:
the kernel's as it is, the input's into ``dX_pad`` and then folded by the adjoint of the
padding, one line per padded axis, ``dX = zeros.at[..., source].add(dX_pad)`` with
``source`` the position each padded position reads (``arange(-lo, n + hi) % n`` for a
wrapped axis, clamped into ``[0, n - 1]`` for a replicated one, mirrored for a reflected
one), so that repeated sources add up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..conv.calls import torch_call
from ..conv.padding import NUMPY_MODES, NotPaddedConv, PaddedConv, padding_mode_call
from ..conv.recognise import ConvPullback
from .conv import Framework, framework_statement, operand_code, result_code

if TYPE_CHECKING:
    from ..model import Derivation

FRAMEWORKS: tuple[Framework, ...] = ("jax", "torch")
_ARRAYS = {"jax": "jax.numpy", "torch": "torch"}
_LABELS = {"jax": "  jax:    ", "torch": "  torch:  ", "module": "  module: "}


def pad_statement(found: PaddedConv, framework: Framework) -> str | None:
    """``X_pad = <X padded in the mode>``; None where the framework cannot pad so."""
    x, padded = found.tensor, found.padded
    rank = len(found.shape)
    if framework == "jax":
        widths = found.widths(rank)
        return f"{padded} = jax.numpy.pad({x}, {widths!r}, mode={NUMPY_MODES[found.mode]!r})"
    # torch pads the last k axes (k <= 3) in these modes, of a tensor with k + 1 or k + 2
    # axes: those before the first padded axis are given a unit axis or flattened into one
    leading = min(found.axes)
    trailing = rank - leading
    if trailing > 3:
        return None
    by_axis = dict(zip(found.axes, found.padding, strict=True))
    pad = tuple(n for axis in reversed(range(leading, rank)) for n in by_axis.get(axis, (0, 0)))
    mode = f"mode={found.mode!r}"
    if leading == 0:
        code = f"torch.nn.functional.pad({x}[None], {pad}, {mode})[0]"
    elif leading <= 2:
        code = f"torch.nn.functional.pad({x}, {pad}, {mode})"
    else:
        code = (
            f"torch.nn.functional.pad({x}.flatten(0, {leading - 2}), {pad}, {mode})"
            f".unflatten(0, {x}.shape[:{leading - 1}])"
        )
    return f"{padded} = {code}"


def module_statement(found: PaddedConv, derivation: Derivation, padding: tuple[int, ...]) -> str:
    """The forward as ``torch.nn.ConvNd(..., padding=padding, padding_mode=mode)`` with the
    kernel as its weight (``torch.func.functional_call``): ``padding`` is
    ``found.module_padding()``, where that module is the same call."""
    conv = found.conv
    call = torch_call(conv.call, conv.kernel_size)
    kernel = tuple(int(n) for n in derivation.program.shapes[conv.call.w])
    kernel_shape = np.asarray(conv.w_layout.apply(np.zeros(kernel))).shape
    if call.transpose_kernel:  # the module's weight is the call's, axes swapped
        kernel_shape = (kernel_shape[1], kernel_shape[0], *kernel_shape[2:])
    out_channels, in_channels = kernel_shape[0], kernel_shape[1] * call.groups
    kernel_size = tuple(int(n) for n in kernel_shape[2:])
    module = (
        f"torch.nn.Conv{len(kernel_size)}d({in_channels}, {out_channels}, {kernel_size}, "
        f"stride={call.stride}, padding={padding}, dilation={call.dilation}, "
        f"groups={call.groups}, bias=False, padding_mode={found.mode!r})"
    )
    x = operand_code(found.tensor, conv.x_layout, "torch")
    x += ".transpose(0, 1)" if call.transpose_input else ""
    w = operand_code(conv.call.w, conv.w_layout, "torch")
    w += ".transpose(0, 1)" if call.transpose_kernel else ""
    w += f".flip({call.flip_dims})" if call.flip_dims else ""
    applied = f"torch.func.functional_call({module}, {{'weight': {w}}}, ({x},))"
    return f"{conv.pullback} = {result_code(conv, applied, 'torch')}"


def fold_statements(found: PaddedConv, framework: Framework) -> list[str]:
    """``dX`` from ``dX_pad``: each padded axis folded back, a line each."""
    arrays = _ARRAYS[framework]
    target = f"d{found.tensor}"
    source = f"d{found.padded}"
    shape = list(found.padded_shape)
    lines = []
    for axis, (lo, hi) in zip(found.axes, found.padding, strict=True):
        size = found.shape[axis]
        shape[axis] = size
        device = f", device={source}.device" if framework == "torch" else ""
        positions = f"{arrays}.arange({-lo}, {size + hi}{device})"
        if found.mode == "circular":
            index = f"{positions} % {size}"
        elif found.mode == "replicate":
            index = (
                f"{positions}.clamp(0, {size - 1})"
                if framework == "torch"
                else f"jax.numpy.clip({positions}, 0, {size - 1})"
            )
        elif framework == "torch":
            index = f"{size - 1} - ({size - 1} - {positions}.abs()).abs()"
        else:
            index = f"{size - 1} - abs({size - 1} - abs({positions}))"
        if framework == "torch":
            lines.append(
                f"{target} = {source}.new_zeros({tuple(shape)}).index_add_({axis}, {index}, "
                f"{source})"
            )
        else:
            at = ", ".join([":"] * axis + [index])
            lines.append(
                f"{target} = jax.numpy.zeros({tuple(shape)}, {source}.dtype).at[{at}].add({source})"
            )
        source = target
    return lines


_FOLDED = {
    "circular": "the margins added onto the other end",
    "replicate": "the margins added into the edges",
    "reflect": "the margins added onto the positions they mirror",
}


def padding_mode_data(derivation: Derivation) -> dict[str, Any] | None:
    """The ``padding_mode`` entry of the JSON: null when the forward reads nothing through
    mod, clamp or reflect; ``{"reason": ...}`` when it is not one call; else the mode, the
    padding, and the code of the forward and of each pullback, per framework."""
    found = padding_mode_call(derivation)
    if found is None:
        return None
    if isinstance(found, NotPaddedConv):
        return {"reason": found.reason}
    pads = {framework: pad_statement(found, framework) for framework in FRAMEWORKS}
    # without the padded input, no line of that framework runs
    unpadded = {"code": None, "reason": _unpadded_reason(found)}
    forward: dict[str, Any] = {"generic": found.conv.call.as_dict()}
    for framework, pad in pads.items():
        forward[framework] = (
            {"code": [pad, framework_statement(found.conv, framework)]}
            if pad is not None
            else dict(unpadded)
        )
    padding = found.module_padding()
    if isinstance(padding, str):
        forward["torch"].update(module=None, module_reason=padding)
    else:
        forward["torch"]["module"] = module_statement(found, derivation, padding)
    pullbacks: dict[str, Any] = {}
    for name, recognition in found.pullbacks.items():
        folded = name == found.tensor
        entry: dict[str, Any] = {
            "name": derivation.pullbacks[name].name,
            "finish": f"folded by the adjoint of the padding: {_FOLDED[found.mode]}"
            if folded
            else "as it is",
        }
        if not isinstance(recognition, ConvPullback):
            entry.update(generic=None, jax=None, torch=None, reason=recognition.reason)
        else:
            entry["generic"] = recognition.call.as_dict()
            for framework in FRAMEWORKS:
                code = [framework_statement(recognition, framework)]
                if folded:
                    code += fold_statements(found, framework)
                entry[framework] = {"code": code} if pads[framework] else dict(unpadded)
        pullbacks[name] = entry
    return {
        "tensor": found.tensor,
        "padded": found.padded,
        "mode": found.mode,
        "axes": list(found.axes),
        "padding": [list(pair) for pair in found.padding],
        "forward": forward,
        "pullbacks": pullbacks,
    }


def _unpadded_reason(found: PaddedConv) -> str:
    return (
        f"torch.nn.functional.pad pads at most 3 trailing axes in mode {found.mode!r}; "
        f"{found.tensor}'s padded axes {found.axes} span more"
    )


def padding_mode_lines(derivation: Derivation, with_reason: bool = True) -> list[str]:
    """The section of ``--emit conv`` (and of the text output, where it is a call)."""
    data = padding_mode_data(derivation)
    if data is None or ("reason" in data and not with_reason):
        return []
    if "reason" in data:
        return [f"padding_mode: not one call: {data['reason']}"]
    widths = ", ".join(f"({lo}, {hi})" for lo, hi in data["padding"])
    axes = ", ".join(map(str, data["axes"]))
    axes = f"axes {axes}" if len(data["axes"]) > 1 else f"axis {axes}"
    forward = data["forward"]
    lines = [
        f"padding_mode={data['mode']!r}: {derivation.program.output} is an unpadded convolution "
        f"of {data['padded']}, {data['tensor']} padded by {widths} on {axes} in that mode"
    ]
    lines += _code_lines(forward)
    if forward["torch"].get("module") is not None:
        lines.append(_LABELS["module"] + forward["torch"]["module"])
    elif "module_reason" in forward["torch"]:
        lines.append(f"{_LABELS['module']}not one module: {forward['torch']['module_reason']}")
    for name, entry in data["pullbacks"].items():
        into = data["padded"] if name == data["tensor"] else f"{name} (on {data['padded']})"
        if entry["generic"] is None:
            lines.append(
                f"{entry['name']}: the call's gradient into {into} is not a convolution: "
                f"{entry['reason']}"
            )
            continue
        lines.append(f"{entry['name']}: the call's gradient into {into}, {entry['finish']}")
        lines += _code_lines(entry)
    return lines


def _code_lines(entry: dict[str, Any]) -> list[str]:
    lines = []
    for framework in FRAMEWORKS:
        if entry[framework]["code"] is None:
            lines.append(f"{_LABELS[framework]}not one call: {entry[framework]['reason']}")
            continue
        lines += [_LABELS[framework] + line for line in entry[framework]["code"]]
    return lines
