"""The command line: ``einderive EXPR [options]`` (also ``python -m einderive``)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import __version__
from .errors import ArgumentError, EinderiveError, ImplicitSumWarning, VerificationError
from .options import parse_params, parse_ranges, parse_shapes

if TYPE_CHECKING:
    from .api import Derivation
    from .verify import Report

EXAMPLES = """\
examples:
  einderive table [--format md]
      the convolution pullback table, derived, verified, and compared with a cheat sheet
  einderive serve [--port 8765] [--host 127.0.0.1] [--open]
      a page to try it in a browser (local, no network needed)
  einderive "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"
      both pullbacks of a strided 2-D convolution, with the stride s symbolic
  einderive "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]" --param s=2 --shape X=7x7 --shape W=3x3
      the same with numbers for the stride and the sizes
  einderive "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]" --explain
      the derivation step by step: deltas, the substitution, the bounds, the convolution
  einderive "Y[i,j] = K[p,q]*X[i+p,j+q]" --shape X=3x3 --shape K=2x2 --wrt X --matrix
      the convolution as a matrix over the flattened tensors (--png FILE for a picture)
  einderive "Y[i] = X[i,i]" --wrt X --emit latex
      the pullback of a diagonal read, in LaTeX
  einderive "Y[i] = max_{m}(X[2*i+m])" --range m=3 --verify
      max pooling; --verify checks every pullback numerically
  einderive "Y[i] = W[m]*X[s*i+m-1]" --wrt X --then W --then dY --verify
      second order: the pullback dX differentiated again (a gradient penalty's backward)
  einderive "Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))" --jvp
      forward mode: the tangent of a softmax
  echo "C[i,j] = A[i,k]*B[k,j]" | einderive -
      read the expression from standard input

exit status:
  0  success
  1  a numerical verification failed
  2  bad input (the message names the problem and points at its column)
"""


USAGE = """\
einderive [-h] [--version] EXPR [--wrt T] [--param s=2] [--shape X=7x7] [--range m=3]
                 [--emit FORMAT] [--verify] [--trials N] [--jvp] [--then T] [--order 2]
                 [--explain] [--matrix [--transpose] [--png FILE]]
       einderive table [--format text|md]
       einderive serve [--port 8765] [--host 127.0.0.1] [--open]"""


GENERIC_CONVOLUTION = """\
the generic convolution:
  conv(x, w, padding=(lo, hi), stride=s, dilation=d, fill=f,
       flip_kernel, permute_kernel, permute_input)
  x has shape (B, C_in, N...), w has shape (C_out, C_in, K...). In order:
    permute_input   swaps the first two axes of x
    permute_kernel  swaps the first two axes of w
    flip_kernel     reverses w along every spatial axis
    fill            puts f - 1 zeros between neighbouring samples of x (input dilation)
    padding         adds lo zeros before and hi after, per spatial axis (negative: crops)
  then out[b, o, i] = sum_{c, m} w[o, c, m] * x'[b, c, s*i + d*m] for every i whose
  window fits: jax.lax.conv_general_dilated with window_strides=s, lhs_dilation=f,
  rhs_dilation=d. K is the kernel's own size (its dilated size is (K-1)*d + 1).
  In the table: 1-D, z = conv(x, w) with x of length N, w of length K, padding (p_l, p_r);
  x_cot and w_cot are the pullbacks of z_cot into x and w.
"""


def _emitters() -> dict[str, Callable[..., str]]:
    from .emit import outputs

    return outputs.EMITTERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="einderive",
        usage=USAGE,
        description=(
            "Derive the backward pass (pullbacks) of an index-notation expression, "
            "in gather form, checked numerically."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("expression", help="the forward, e.g. 'Y[i] = W[m]*X[i+m]'; - reads stdin")
    parser.add_argument("--version", action="version", version=f"einderive {__version__}")
    parser.add_argument(
        "--wrt", action="append", default=[], metavar="T", help="only the pullback into T"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="s=2",
        help="a parameter's value (or just its name, to declare it a symbolic parameter)",
    )
    parser.add_argument(
        "--shape", action="append", default=[], metavar="X=7x7", help="a tensor's shape"
    )
    parser.add_argument(
        "--range", action="append", default=[], metavar="m=3", help="an index's extent"
    )
    parser.add_argument(
        "--emit",
        default="text",
        metavar="FORMAT",
        help="what to print: " + ", ".join(_emitters()) + " (default: text)",
    )
    parser.add_argument(
        "--params-of",
        default="",
        metavar="W,B",
        help="with --emit torch-function: the inputs that are the nn.Module's parameters",
    )
    parser.add_argument(
        "--then",
        action="append",
        default=[],
        metavar="T",
        help="differentiate the pullback of --wrt again, into T (second order; repeatable)",
    )
    parser.add_argument(
        "--order",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: the pullbacks of the --wrt pullback into every input (as --then for all)",
    )
    parser.add_argument(
        "--jvp", action="store_true", help="forward mode: the tangent of every statement"
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="show the derivation step by step (with --emit latex: in LaTeX)",
    )
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="print the Jacobian in each input (or --wrt T) over the flattened tensors and "
        "check that the pullback is its transpose; needs numeric --shape/--param",
    )
    parser.add_argument("--png", metavar="FILE", help="with --matrix: also save it as a picture")
    parser.add_argument(
        "--transpose",
        action="store_true",
        help="with --matrix: show J^T, the pullback's own matrix (dX = J^T dY), instead of J",
    )
    parser.add_argument(
        "--verify", action="store_true", help="check every pullback numerically and report"
    )
    parser.add_argument(
        "--trials", type=int, default=3, help="random draws for --verify (default: 3)"
    )
    return parser


def run_table(argv: Sequence[str]) -> int:
    """``einderive table``: the convolution pullback table, derived and verified."""
    parser = argparse.ArgumentParser(
        prog="einderive table",
        description=(
            "The convolution pullback cheat sheet: eight families of the generic 1-D\n"
            "convolution, both pullbacks derived by einderive, each row verified on a sweep\n"
            "of sizes, and the rows of a hand-written cheat sheet (shipped with einderive)\n"
            "checked on the same sweep."
        ),
        epilog=GENERIC_CONVOLUTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--format", choices=("text", "md"), default="text")
    args = parser.parse_args(argv)
    from .table import build, render_markdown, render_text

    rows = build()
    print(render_markdown(rows) if args.format == "md" else render_text(rows))
    return 0 if all(row.derived.ok for row in rows) else 1


def run_serve(argv: Sequence[str]) -> int:
    """``einderive serve``: the page, on a local server, until interrupted."""
    parser = argparse.ArgumentParser(
        prog="einderive serve",
        description=(
            "Serve a page to type an expression and see its pullbacks (KaTeX), the steps, the "
            "convolution calls, the code, the Jacobian and the verification. It needs no network."
        ),
    )
    parser.add_argument("--port", type=int, default=8765, help="default: 8765 (0: any free port)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)"
    )
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    parser.add_argument(
        "--workers", type=int, default=2, help="derivations run at once (default: 2)"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a derivation or verification is stopped after this long (default: 30)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1 or args.time_limit <= 0:
        parser.error("--workers and --time-limit must be positive")
    from .serve import serve

    try:
        serve(args.host, args.port, args.open, args.workers, args.time_limit)
    except OSError as error:  # the port is taken, or the host is not this machine's
        print(
            f"einderive: error: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr
        )
        return 2
    return 0


def _derive_and_print(
    args: argparse.Namespace,
    text: str,
    params: dict,
    shapes: dict,
    ranges: dict,
    emitters: dict,
) -> Report | None:
    """Print what --emit asks for (first order, second order or forward mode); the report."""
    if args.jvp:
        from .jvp import derive_jvp, verify_jvp

        if args.emit not in ("text", "latex"):
            raise ArgumentError("--jvp prints text or latex only")
        if args.explain:
            raise ArgumentError(
                "--explain shows the steps of reverse mode (the pullbacks); --jvp prints "
                "the tangents only"
            )
        tangent = derive_jvp(text, params, shapes, ranges, wrt=args.wrt or None)
        print(tangent.latex() if args.emit == "latex" else tangent)
        return verify_jvp(text, params, shapes, ranges, trials=args.trials) if args.verify else None
    if args.then or args.order == 2:
        from .higher import derive_twice, verify_twice

        if len(args.wrt) != 1:
            raise ArgumentError("second order (--then, --order 2) needs exactly one --wrt")
        second = args.then or None
        derivation = derive_twice(text, args.wrt[0], second, params, shapes, ranges)
        report = (
            verify_twice(text, args.wrt[0], second, params, shapes, ranges, args.trials)
            if args.verify
            else None
        )
        if args.explain:
            from .explain import explain

            explanation = explain(derivation)
            print(explanation.latex() if args.emit == "latex" else explanation.text())
        else:
            print(_emitted(args.emit, derivation, report, emitters))
        return report
    from .api import derive
    from .verify import verify

    derivation = derive(text, params, shapes, ranges, wrt=args.wrt or None)
    if (args.png or args.transpose) and not args.matrix:
        raise ArgumentError("--png FILE and --transpose go with --matrix")
    if args.explain:
        from .explain import explain

        explanation = explain(derivation)
        print(explanation.latex() if args.emit == "latex" else explanation.text())
    elif args.matrix:
        from .matrix import matrix_report

        matrix = matrix_report(derivation, args.wrt or None, png=args.png, transpose=args.transpose)
        print(matrix)
        if not matrix.ok:
            raise VerificationError("the pullback is not the transpose of the Jacobian")
    else:
        report = (
            verify(text, params, shapes, ranges, trials=args.trials, wrt=args.wrt or None)
            if args.verify
            else None
        )
        if args.params_of:
            from .emit.framework_ops import torch_function_source

            params_of = [name.strip() for name in args.params_of.split(",") if name.strip()]
            print(torch_function_source(derivation, params_of))
        else:
            print(_emitted(args.emit, derivation, report, emitters))
        return report
    if not args.verify:
        return None
    return verify(text, params, shapes, ranges, trials=args.trials, wrt=args.wrt or None)


def _emitted(emit: str, derivation: Derivation, report: Report | None, emitters: dict) -> str:
    """What --emit prints; JSON carries the verification's outcome when there is one."""
    if emit != "json" or report is None:
        return str(emitters[emit](derivation))
    from .emit.outputs import as_data

    return json.dumps({**as_data(derivation), "verification": report.as_dict()}, indent=2)


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["table"]:
        return run_table(argv[1:])
    if argv[:1] == ["serve"]:
        return run_serve(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    text = args.expression
    if text == "-":
        text = sys.stdin.read().strip()
    try:
        params = parse_params(args.param)
        shapes = parse_shapes(args.shape)
        ranges = parse_ranges(args.range)
        emitters = _emitters()
        if args.emit not in emitters:
            raise ArgumentError(f"--emit {args.emit!r}: choose one of {', '.join(emitters)}")
        if args.params_of and args.emit != "torch-function":
            raise ArgumentError("--params-of goes with --emit torch-function")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ImplicitSumWarning)
            report = _derive_and_print(args, text, params, shapes, ranges, emitters)
        # each note once, although --verify and second order analyse the text again
        notes = [w for w in caught if issubclass(w.category, ImplicitSumWarning)]
        for note in dict.fromkeys(str(w.message) for w in notes):
            print(f"einderive: note: {note}", file=sys.stderr)
        for other in caught:
            if other not in notes:
                warnings.showwarning(other.message, other.category, other.filename, other.lineno)
        if report is not None:
            print(report, file=sys.stdout if args.emit == "text" else sys.stderr)
            if not report.ok:
                return 1
    except VerificationError as error:
        print(f"einderive: verification failed: {error}", file=sys.stderr)
        return 1
    except EinderiveError as error:
        print(f"einderive: error: {error}", file=sys.stderr)
        return 2
    return 0


def main() -> None:
    try:
        sys.exit(run())
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        sys.exit(0)
