"""``einderive.explain``: the derivation as numbered steps (issue 7, item 1).

The steps must say what ``derive`` did: which index each delta removes, the
bounds and conditions that leaves, the convolution call and its parameters. They are
read off the trace ``derive`` keeps (``Backward.trace``), not derived again.
"""

from __future__ import annotations

import pytest
import sympy

import einderive as ed
from einderive import derive as derive_module
from einderive import ir, solve
from einderive.explain import Step, explain, explain_latex, explain_text, steps

SEED = "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"


def lines_of(found: list[Step], tensor: str | None, title: str) -> list[str]:
    """The lines of the steps of ``tensor`` whose title contains ``title``."""
    chosen = [s for s in found if s.tensor == tensor and title in s.title]
    assert chosen, f"no step {title!r} for {tensor}: {[s.title for s in found]}"
    return [line for step in chosen for line in step.lines]


@pytest.fixture(scope="module")
def seed_steps() -> list[Step]:
    return steps(ed.derive(SEED))


def test_forward_step_names_free_and_summed_indices(seed_steps):
    forward = seed_steps[0]
    assert forward.tensor is None and forward.title == "The forward"
    assert forward.lines[0] == "Y[i, j] = sum_{m,n}(W[m, n] * X[s*i + m - 1, s*j + n - 1])"
    assert "free indices: i from 0 to I - 1; j from 0 to J - 1" in forward.lines[1]
    assert "summed indices: m from 0 to M - 1; n from 0 to N - 1" in forward.lines[2]
    assert "parameters (symbolic): s" in forward.lines
    assert "    I = floor((-M + N_X0 + 1)/s) + 1" in forward.lines


def test_derivative_is_a_product_of_deltas(seed_steps):
    lines = lines_of(seed_steps, "X", "the derivative of Y with respect to one element of X")
    assert lines[0] == (
        "dY[i, j]/dX[p, q] = sum_{m,n}(W[m, n] * delta(p, s*i + m - 1) * delta(q, s*j + n - 1))"
    )
    chain = lines_of(seed_steps, "X", "the chain rule")
    assert chain[0] == "dX[p, q] = sum_{i,j}(dY[i, j] * dY[i, j]/dX[p, q])"
    assert chain[1].strip() == (
        "= sum_{i,j,m,n}(dY[i, j] * W[m, n] * delta(p, s*i + m - 1) * delta(q, s*j + n - 1))"
    )


def test_substitution_says_which_index_is_solved_for(seed_steps):
    lines = lines_of(seed_steps, "X", "the substitution")
    assert "p = s*i + m - 1 is solved for m: m = p - s*i + 1" in lines
    assert "q = s*j + n - 1 is solved for n: n = q - s*j + 1" in lines
    assert lines[-1] == "dX[p, q] = sum_{i,j}(dY[i, j] * W[p - s*i + 1, q - s*j + 1])"
    # dW: the kernel's own indices are solved for, trivially
    assert "p = m is solved for m: m = p" in lines_of(seed_steps, "W", "the substitution")


def test_bounds_come_from_the_eliminated_index_range(seed_steps):
    lines = lines_of(seed_steps, "X", "the bounds")
    assert "0 <= m <= M - 1 becomes 0 <= p - s*i + 1 <= M - 1" in lines
    assert "0 <= n <= N - 1 becomes 0 <= q - s*j + 1 <= N - 1" in lines
    assert "with 0 <= i <= I - 1; 0 <= j <= J - 1, the sum runs over:" in lines
    assert "    i from max(0, ceil((-M + p + 2)/s)) to min(I - 1, floor((p + 1)/s))" in lines
    # the same bounds as the derivation prints
    derived = str(ed.derive(SEED).pullbacks["X"])
    assert "i from max(0, ceil((-M + p + 2)/s)) to min(I - 1, floor((p + 1)/s))" in derived


def test_convolution_step_gives_each_parameter_its_role(seed_steps):
    lines = lines_of(seed_steps, "X", "a convolution")
    # the padding in the input's and kernel's sizes, not the output's (I)
    assert lines[0].startswith("dX = conv(dY, W, padding=((M - 2, M + (-M + N_X0 + 1) % s - 1), ")
    assert "fill=(s, s), flip_kernel=True" in lines[0]
    assert "x = dY, the input of the call; w = W, the kernel" in lines
    # fill s: dY is read at a position divided by s
    assert (
        "at kernel position (k0, k1), dY is read at ((p - k0 + 1) / s, (q - k1 + 1) / s)" in lines
    )
    assert any(line.startswith("fill (s, s): fill - 1 zeros between") for line in lines)
    assert any(line.startswith("flip_kernel: the kernel runs backwards") for line in lines)
    assert "permute_kernel: no" in lines and "permute_input: no" in lines
    w_lines = lines_of(seed_steps, "W", "a convolution")
    assert "dilation (s, s): the kernel's taps are this far apart" in w_lines
    assert "at kernel position (k0, k1), X is read at (p + s*k0 - 1, q + s*k1 - 1)" in w_lines


def test_forward_as_convolution_and_im2col(seed_steps):
    titles = [s.title for s in seed_steps]
    assert "The forward as a convolution of X with the kernel W" in titles
    im2col = next(s for s in seed_steps if "im2col" in s.title)
    assert "X~[(m, n), (i, j)] = X[s*i + m - 1, s*j + n - 1]    (zero outside X)" in im2col.lines


def test_divisibility_condition_for_a_coefficient():
    found = steps(ed.derive("Y[i] = X[s*i]"))
    assert "p = s*i is solved for i: i = p / s, an integer only where s divides p" in lines_of(
        found, "X", "the substitution"
    )
    assert "s divides p: the solved index is an integer only there" in lines_of(
        found, "X", "a divisibility condition"
    )
    coupled = steps(ed.derive("Y[i] = X[2*i+3*m]", ranges={"m": 3}))
    substitution = lines_of(coupled, "X", "the substitution")
    assert (
        "p = 2*i + 3*m is solved for m: m = (p - 2*i) / 3, an integer only where 3 divides "
        in (substitution[0][: substitution[0].index("divides") + 8])
    )
    assert "0 <= m <= 2 becomes 0 <= (p - 2*i) / 3 <= 2" in lines_of(coupled, "X", "the bounds")


def test_conv_with_stride_two_has_fill_two():
    found = steps(ed.derive(SEED, params={"s": 2}, shapes={"X": (7, 7), "W": (3, 3)}))
    lines = lines_of(found, "X", "a convolution")
    assert "fill=(2, 2)" in lines[0] and "padding=((1, 3), (1, 3))" in lines[0]
    assert "given: s = 2" in found[0].lines


def test_diagonal_leaves_a_guard():
    found = steps(ed.derive("Y[i] = X[i,i]"))
    substitution = lines_of(found, "X", "the substitution")
    assert "p = i is solved for i: i = p" in substitution
    assert "q = p has no index left to solve for: a condition" in substitution
    assert "    where p = q" in lines_of(found, "X", "the bounds")


def test_each_read_is_explained_and_they_add_up():
    found = steps(ed.derive("Y[i] = X[i]*X[i+1]"))
    titles = [s.title for s in found]
    assert "dX: the substitution that removes the deltas (read 2 of 2: X[i + 1])" in titles
    pullback = lines_of(found, "X", "the pullback")
    assert pullback[0] == "the 2 reads add up:"
    assert pullback[1].startswith("dX[p] = dY[p] * X[p + 1] + dY[p - 1] * X[p - 1]")


def test_program_goes_through_the_intermediate():
    found = steps(ed.derive("Z[o,i] = W[o,c,m]*X[c,i+m]; A[o,i] = relu(Z[o,i])"))
    order = [s.tensor for s in found if s.tensor is not None]
    assert order.index("Z") < order.index("W") < order.index("X")
    assert "dA[o, i]/dZ[p, q] = step(Z[o, i]) * delta(p, o) * delta(q, i)" in lines_of(
        found, "Z", "the derivative"
    )
    assert "dZ[o, i]/dX[p, q] = sum_{c,m}(W[o, c, m] * delta(p, c) * delta(q, i + m))" in lines_of(
        found, "X", "the derivative"
    )
    assert any("permute_kernel: the kernel's two channel axes are swapped" in line for line in
               lines_of(found, "X", "a convolution"))  # fmt: skip


def test_max_pooling_sends_the_cotangent_to_the_argmax():
    found = steps(ed.derive("Y[i] = max_{m}(X[2*i+m])", ranges={"m": 3}))
    substitution = lines_of(found, "X", "the substitution")
    assert "p = 2*i + m is solved for m: m = p - 2*i" in substitution
    assert "argmax" in substitution[-1]
    assert lines_of(found, "X", "not a convolution")


def test_explain_reads_the_trace_and_derives_nothing_again(monkeypatch):
    """The steps come from the trace ``derive`` kept: with the core's backprop and gather
    broken after deriving, explain prints the same steps."""
    texts = [
        SEED,
        "Z[o,i] = W[o,c,m]*X[c,i+m]; A[o,i] = relu(Z[o,i])",
        "Y[i] = max_{m}(X[2*i+m])",
        "Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))",
    ]
    derivations = [ed.derive(text, ranges={"m": 3} if "max" in text else None) for text in texts]
    expected = [explain_text(d) for d in derivations]

    def broken(*args, **kwargs):
        raise AssertionError("explain derived again")

    for module in (derive_module, solve):
        for name in ("backprop", "gather", "pullbacks", "derivation"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, broken)
    assert [explain_text(d) for d in derivations] == expected


def test_the_trace_is_what_derive_did():
    derivation = ed.derive(SEED)
    backward = derivation.backward
    assert [t.name for t in backward.trace] == [s.target for s in backward.statements]
    (dx,) = [t for t in backward.trace if t.tensor == "X"]
    (read,) = dx.reads
    assert read.access.tensor == "X" and read.cotangent == "dY"
    assert read.statement is derivation.program.statements[-1]
    # the pivots gather chose: the kernel's indices, solved through coefficient 1
    assert [str(var).rstrip("0123456789") for var, _, _ in read.solved] == ["m", "n"]
    assert all(condition is None for _, _, condition in read.solved)
    assert dx.targets == derivation.pullbacks["X"].indices
    with pytest.raises(AttributeError):
        read.term = ir.ZERO  # type: ignore[misc]
    # a coefficient: the pivot carries its divisibility condition
    (strided,) = ed.derive("Y[i] = X[s*i]").backward.trace[0].reads
    ((_, _, condition),) = strided.solved
    assert condition is not None and condition.kind == "div"


def test_a_derivation_with_numbers_put_in_has_no_trace_to_explain():
    from einderive.verify import instantiate

    derivation = ed.derive("Y[i] = W[m]*X[i+m]")
    sizes = {s: sympy.Integer(3) for s in derivation.program.sizes}
    with pytest.raises(ed.EinderiveError, match="kept no trace"):
        explain(instantiate(derivation, sizes))


def test_each_term_keeps_its_own_summed_index():
    """``k`` of the second term is its own sum, as the forward prints it, not ``k1``."""
    found = steps(ed.derive("C[i,j] = A[i,k]*B[k,j] + A[j,k]*B[k,i]"))
    titles = [s.title for s in found if s.tensor == "A"]
    assert "dA: the substitution that removes the deltas (read 2 of 2: A[j, k])" in titles
    assert "q = k is solved for k: k = q" in lines_of(found, "A", "read 2 of 2")


def test_grouped_convolution_says_what_a_group_is():
    grouped = steps(ed.derive("Y[b,g,o,i] = W[g,o,c,m]*X[b,g,c,i+m]"))
    lines = lines_of(grouped, "X", "a convolution")
    assert "groups=G" in lines[0]
    assert (
        "groups G: the input's channels form G groups, and each output channel reads only "
        "the channels of its own group" in lines
    )
    assert not any("every channel has its own kernel" in line for line in lines)
    # depthwise: one channel per group
    depthwise = steps(ed.derive("Y[b,c,i] = W[c,m]*X[b,c,i+m]"))
    assert "groups C: every channel has its own kernel" in lines_of(depthwise, "X", "a convolution")


def test_second_order_derivations_are_explained():
    from einderive.higher import derive_twice

    derivation = derive_twice("Y[i] = W[m]*X[s*i+m-1]", "X", ["W", "dY"])
    found = steps(derivation)
    assert found[0].lines[0] == "dX[p] = sum_{i}(dY[i] * W[p - s*i + 1])"
    # d(dX[p])/dW[p1], the partial of the first pullback
    assert "ddX[p]/dW[p1] = sum_{i}(dY[i] * delta(p1, p - s*i + 1))" in lines_of(
        found, "W", "the derivative of dX"
    )
    assert "p1 = p - s*i + 1 is solved for p: p = p1 + s*i - 1" in lines_of(
        found, "W", "the substitution"
    )
    pullback = lines_of(found, "W", "the pullback")
    assert derivation.pullbacks["W"].notation() == "dW[p1] = sum_{i}(ddX[p1 + s*i - 1] * dY[i])"
    assert pullback[0].startswith("dW[p1] = sum_{i}(ddX[p1 + s*i - 1] * dY[i])")


def test_bound_indices_keep_their_forward_names():
    derivation = ed.derive("D[i,l] = A[i,j]*B[j,k]*C[k,l]")
    lines = lines_of(steps(derivation), "A", "the pullback")
    assert lines[0].startswith("dA[p, q] = sum_{k,l}(dD[p, l] * B[q, k] * C[k, l])")
    assert not any("other names for its bound indices" in line for line in lines)
    assert (
        derivation.pullbacks["A"].notation() == "dA[p, q] = sum_{k,l}(dD[p, l] * B[q, k] * C[k, l])"
    )


def test_text_latex_and_notebook_forms():
    derivation = ed.derive(SEED)
    explanation = explain(derivation)
    text = explain_text(derivation)
    assert text == str(explanation)
    assert text.startswith("1. The forward\n   Y[i, j] = ")
    assert "\n\n14. dX: the pullback\n" in text
    latex = explain_latex(derivation)
    assert latex == explanation.latex()
    assert latex.startswith(r"\begin{array}{l}\textbf{1. The forward}")
    assert r"\delta_{p,\, s i + m - 1}" in latex
    assert r"\frac{\partial Y_{i, j}}{\partial X_{p, q}}" in latex
    assert explanation._repr_latex_().startswith("$$")
    assert explanation.steps[0]._repr_latex_().startswith(r"$$\begin{array}{l}\textbf{")


def test_steps_are_frozen_records():
    step = steps(ed.derive("Y[i] = X[i+1]"))[0]
    with pytest.raises(AttributeError):
        step.title = "changed"  # type: ignore[misc]


# ---- the student's view: a strided convolution's input pullback is a transposed one ---------

STRIDED = "Y[i] = W[m]*X[2*i+m-1]"


def test_strided_input_pullback_is_called_a_transposed_convolution():
    found = steps(ed.derive(STRIDED))
    (step,) = [s for s in found if s.tensor == "X" and "convolution" in s.title]
    assert step.title == "dX: a convolution, the forward's transposed"
    text = "\n".join(step.lines)
    assert "dX is the transposed convolution of the forward" in text
    assert "its fill (2) is the forward's stride (2)" in text
    assert "its flip is the kernel's reversal: the pullback reads W[p - 2*i + 1]" in text
    # a role swap of ones is not worth a line: stride 1 of the forward's fill, dilation 1
    assert "its dilation" not in text and "its stride" not in text
    # the kernel's pullback is a convolution, not the transposed one
    (kernel,) = [s for s in found if s.tensor == "W" and "convolution" in s.title]
    assert kernel.title == "dW: a convolution" and "transposed" not in "\n".join(kernel.lines)
    assert r"\text{its fill (}2\text{) is the forward's stride (}2" in explain_latex(
        ed.derive(STRIDED)
    )


def test_dilated_symbolic_stride_says_which_roles_swap():
    found = steps(ed.derive("Y[b,o,i] = W[o,c,m]*X[b,c,s*i+d*m-1]"))
    text = "\n".join(lines_of(found, "X", "transposed"))
    assert "its fill (s) is the forward's stride (s)" in text
    assert "its dilation (d) is the forward's" in text
    unit = "\n".join(lines_of(steps(ed.derive("Y[i] = W[m]*X[i+m-1]")), "X", "transposed"))
    assert "(conv_transpose in PyTorch)" in unit and "its fill" not in unit
    filled = "\n".join(lines_of(steps(ed.derive("Y[i] = W[m]*X[2*i+m-1]")), "X", "transposed"))
    assert "strided" in filled


def test_paddings_are_in_the_input_and_kernel_sizes():
    derivation = ed.derive(STRIDED)
    found = steps(derivation)
    for tensor in ("X", "W"):
        lines = lines_of(found, tensor, "convolution")
        padding = next(line for line in lines if line.strip().startswith("padding"))
        assert "I" not in padding.replace("input", ""), padding  # not the output's size
    dx = next(line.strip() for line in lines_of(found, "X", "convolution") if "padding ((" in line)
    assert dx.startswith("padding ((M - 2, M + mod(-M + N_X + 1, 2) - 1))")
    # the same numbers as the output-size form, for every size
    from einderive.emit.conv import in_given_sizes

    definitions = derivation.program.definitions
    for recognition in derivation.convolutions.values():
        for entry in (e for pair in recognition.call.padding for e in pair):
            entry = sympy.sympify(entry)
            written = in_given_sizes(entry, definitions)
            for size_x in range(1, 12):
                for size_w in range(1, size_x + 1):
                    sizes = {"M": size_w, "N_X": size_x}
                    by_name = {s: sizes[s.name] for s in written.free_symbols}
                    output = {s: d.subs({t: sizes[t.name] for t in d.free_symbols})
                              for s, d in definitions.items()}  # fmt: skip
                    direct = entry.subs(output).subs(
                        {s: sizes[s.name] for s in entry.free_symbols if s.name in sizes}
                    )
                    assert written.subs(by_name) == direct, (entry, size_x, size_w)


def test_bounds_derive_added_against_inf_times_zero_are_explained():
    """A term holding 1/sqrt of a read is kept where its factor read is inside its tensor
    (derive adds that guard): the steps show the bounds derive gave, and why."""
    derivation = ed.derive("Y[i] = sqrt(W[m]*X[i+m-1])")
    found = steps(derivation)
    bounds = lines_of(found, "W", "the bounds")
    assert (
        "the reads the term multiplies stay inside their tensors: p + i >= 1, p + i <= N_X "
        "(outside, a read is zero, and 1/x or log(x) of it would make the term inf * 0)"
    ) in bounds
    assert "    i from max(0, 1 - p) to min(I - 1, N_X - p)" in bounds
    assert "i from max(0, 1 - p) to min(I - 1, N_X - p)" in str(derivation.pullbacks["W"])
    # softmax's guards are the output's box already: nothing to add
    softmax = steps(ed.derive("Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))"))
    assert not any("stay inside" in line for step in softmax for line in step.lines)


def test_the_pullback_step_says_when_the_printed_pullback_names_its_indices_otherwise():
    """The steps call the argmax's index m1 (m is summed beside it); the printed pullback,
    with m gone, calls it m: the last step gives that form (it is not renamed apart)."""
    derivation = ed.derive("Y[i] = max_{m}(X[2*i+m])", ranges={"m": 3})
    lines = lines_of(steps(derivation), "X", "the pullback")
    assert "argmax_{m1}" in lines[0]
    printed = derivation.pullbacks["X"].notation()
    assert "argmax_{m}(" in printed
    assert lines[-1] == f"(einderive prints it with other names for its bound indices: {printed})"


def test_the_forward_as_a_convolution_keeps_its_other_terms():
    """``Y = conv(X, W)`` alone is not the forward of a convolution with a bias, nor of
    one plus other reads: the step adds them after the call."""
    found = steps(ed.derive("Y[o,i] = W[o,c,m]*X[c,i+m-1] + B[o]"))
    (step,) = [s for s in found if s.title.startswith("The forward as a convolution")]
    assert step.lines[0].startswith("Y = conv(X, W, ")
    assert step.lines[1] == "    + B[o]: the statement's other terms, added to the call's result"
    assert r"\quad + B_{o}\text{: the statement's other terms" in step.latex
    shifted = steps(ed.derive("Y[i] = X[i] + W[m]*X[i+m] + X[i+1]"))
    (step,) = [s for s in shifted if s.title.startswith("The forward as a convolution")]
    assert (
        step.lines[1]
        == "    + X[i] + X[i + 1]: the statement's other terms, added to the call's result"
    )
    # a plain convolution has no other term
    (plain,) = [s for s in steps(ed.derive(SEED)) if s.title.startswith("The forward as a conv")]
    assert not any("other terms" in line for line in plain.lines)
