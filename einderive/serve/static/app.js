// The page of `einderive serve`: sends the form to /api/derive and /api/verify, shows the answer.
// The state (expression, parameters, shapes, ranges, code tab) lives in the URL's query string.
"use strict";

// the example buttons are /static/examples.json (tests/test_serve.py derives and verifies each)
const FIELDS = ["expression", "params", "shapes", "ranges"];
const URL_KEYS = { expression: "e", params: "p", shapes: "s", ranges: "r" };
// a tab per kind of code the server sends (d.source(kind)), in its order
const CODE_TITLES = { loops: "Loops", numpy: "NumPy", jax: "JAX", torch: "PyTorch" };
const PALETTE = [
  "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac", "#86bcb6", "#d37295", "#8cd17d", "#f1ce63", "#a0cbe8", "#ffbe7d",
];

const $ = (id) => document.getElementById(id);
const state = { answer: null, tab: "numpy", request: 0, controller: null };

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function tex(latex, target, display = true) {
  try {
    katex.render(latex, target, { displayMode: display, throwOnError: false, strict: "ignore" });
  } catch (error) {
    target.textContent = latex;
  }
}

// ---- the form and the URL --------------------------------------------------------------------

function formValues() {
  const values = {};
  for (const field of FIELDS) values[field] = $(field).value;
  return values;
}

function setForm(values) {
  for (const field of FIELDS) $(field).value = values[field] || "";
  clearErrorMarks();
}

function urlFromForm(values) {
  const query = new URLSearchParams();
  for (const field of FIELDS) if (values[field]) query.set(URL_KEYS[field], values[field]);
  if (state.tab !== "numpy") query.set("tab", state.tab);
  return `${location.pathname}?${query.toString()}`;
}

function formFromUrl() {
  const query = new URLSearchParams(location.search);
  const values = {};
  for (const field of FIELDS) values[field] = query.get(URL_KEYS[field]) || "";
  const tab = query.get("tab");
  if (tab && /^[\w-]+$/.test(tab)) state.tab = tab;
  return values;
}

// ---- talking to the server -------------------------------------------------------------------

async function post(path, values, signal) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(values),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") return { aborted: true };
    return { error: { kind: "ServerError", message: "the server does not answer; is `einderive serve` running?" } };
  }
  try {
    return await response.json();
  } catch (error) {
    return { error: { kind: "ServerError", message: `the server answered ${response.status} without JSON` } };
  }
}

async function derive(pushUrl = true) {
  const values = formValues();
  const number = ++state.request;
  // a newer request makes the older one's answers useless: stop waiting for them
  if (state.controller) state.controller.abort();
  const controller = (state.controller = new AbortController());
  const url = urlFromForm(values);
  if (pushUrl && url !== location.pathname + location.search) history.pushState(null, "", url);
  clearErrorMarks();
  $("derive").disabled = true;
  showStatus("Deriving…");
  const answer = await post("/api/derive", values, controller.signal);
  if (number !== state.request || answer.aborted) return; // a newer request has been sent
  $("derive").disabled = false;
  showStatus(null);
  if (answer.error) {
    showError(answer.error, values);
    return;
  }
  $("error").hidden = true;
  render(answer);
  setBadge("pending", "verifying…", null);
  const verification = await post("/api/verify", values, controller.signal);
  if (number !== state.request || verification.aborted) return;
  showVerification(verification);
}

function showStatus(text) {
  $("status").hidden = !text;
  $("status").textContent = text || "";
}

// ---- errors: the message, and the column marked in the input itself ---------------------------

function escapeHtml(text) {
  return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

function clearErrorMarks() {
  $("backdrop").textContent = "";
  $("editor").classList.remove("invalid");
  for (const field of ["params", "shapes", "ranges"]) $(field).classList.remove("invalid");
}

function markSpan(text, start, end) {
  end = Math.max(end, start + 1);
  const before = escapeHtml(text.slice(0, start));
  const marked = escapeHtml(text.slice(start, end)) || " ";
  const after = escapeHtml(text.slice(end));
  $("backdrop").innerHTML = `${before}<mark class="error-mark">${marked}</mark>${after}\n`;
  syncBackdrop();
}

function showError(error, values) {
  $("output").hidden = true;
  $("empty").hidden = true;
  const box = $("error");
  box.hidden = false;
  box.textContent = "";
  let where = "";
  if (error.field === "expression" && error.span) {
    const [start, end] = error.span;
    markSpan(values.expression, start, end);
    $("editor").classList.add("invalid");
    where = `line ${error.line}, column ${error.column}: `;
    const lineText = values.expression.split("\n")[error.line - 1] || "";
    const width = Math.max(1, Math.min(end, start + lineText.length) - start);
    const context = `${lineText}\n${" ".repeat(error.column - 1)}${"^".repeat(width)}`;
    box.append(el("span", { class: "where", text: where }), error.message, el("pre", { text: context }));
    const input = $("expression");
    input.focus();
    input.setSelectionRange(start, start); // the caret at the column; the mark stays visible
    return;
  }
  if (["params", "shapes", "ranges"].includes(error.field)) {
    $(error.field).classList.add("invalid");
    where = `${error.field}: `;
  }
  box.append(el("span", { class: "where", text: where }), error.message);
}

function syncBackdrop() {
  $("backdrop").scrollTop = $("expression").scrollTop;
}

// ---- the answer ------------------------------------------------------------------------------

function render(answer) {
  state.answer = answer;
  const data = answer.derivation;
  $("empty").hidden = true;
  $("output").hidden = false;
  const problems = $("problems");
  problems.hidden = !(answer.problems && answer.problems.length);
  problems.textContent = (answer.problems || []).join("\n");
  const forward = $("forward");
  forward.textContent = "";
  if (answer.latex.forward) tex(`\\begin{array}{l}${answer.latex.forward}\\end{array}`, forward);
  else tex(answer.latex.backward, forward);
  $("cotangent-note").textContent =
    `${data.cotangent} is the cotangent of ${data.output}; reads out of range are zero`;
  renderPullbacks(answer);
  renderSteps(answer.steps);
  renderTabs(answer.sources);
  renderJacobians(answer.jacobians, data);
}

function copyButton(getText) {
  const button = el("button", { type: "button", class: "small copy", text: "Copy" });
  button.addEventListener("click", () => copy(getText(), button));
  return button;
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {
    const area = el("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = "Copied";
  button.classList.add("copied");
  setTimeout(() => {
    button.textContent = label;
    button.classList.remove("copied");
  }, 1200);
}

function callBox(title, code) {
  return el(
    "div",
    { class: "call" },
    el("div", { class: "call-head" }, el("span", { text: title }), copyButton(() => code)),
    el("pre", { text: code }),
  );
}

// [[1, "M - 2"], [1, 3]] -> "((1, M - 2), (1, 3))", as the calls print it
function tuple(value) {
  return Array.isArray(value) ? `(${value.map(tuple).join(", ")})` : String(value);
}

function convParameters(generic) {
  const shown = [
    ["x", generic.x],
    ["w", generic.w],
    ["padding", tuple(generic.padding)],
    ["stride", tuple(generic.stride)],
    ["dilation", tuple(generic.dilation)],
    ["fill", tuple(generic.fill)],
  ];
  for (const flag of ["flip_kernel", "permute_kernel", "permute_input"]) {
    if (generic[flag]) shown.push([flag, "true"]);
  }
  const row = el("div", { class: "conv-params" });
  for (const [name, value] of shown) row.append(el("span", {}, `${name} `, el("b", { text: value })));
  return row;
}

function renderPullbacks(answer) {
  const data = answer.derivation;
  const list = $("pullbacks");
  list.textContent = "";
  if (data.intermediates.length) {
    const names = data.intermediates.map((s) => s.notation.split(/[[ =]/, 1)[0]).join(", ");
    const whole = el("details", { class: "pullback" }, el("summary", {
      text: `The whole backward pass in order, with the intermediates' cotangents (${names})`,
    }));
    const math = el("div", { class: "math-block" });
    tex(answer.latex.backward, math);
    whole.append(math);
    list.append(whole);
  }
  for (const [tensor, pullback] of Object.entries(data.pullbacks)) {
    const item = el("div", { class: "pullback", "data-tensor": tensor });
    item.append(el("div", { class: "pullback-head" }, el("h3", { text: pullback.name }),
      el("span", { class: "hint", text: `the pullback into ${tensor}` })));
    const math = el("div", { class: "math-block" });
    tex(pullback.latex, math);
    item.append(math);
    const block = answer.conv[tensor] || {};
    if (pullback.conv.generic) {
      item.append(convParameters(pullback.conv.generic));
      const calls = el("div", { class: "calls" });
      if (block.generic) {
        calls.append(callBox("generic conv", [...(block.definitions || []), block.generic].join("\n")));
      }
      // the JSON's runnable statements where it has them, else the lines of --emit conv
      const jax = (pullback.conv.jax && pullback.conv.jax.code) || block.jax;
      const torch = (pullback.conv.torch && pullback.conv.torch.code) || block.torch;
      if (jax) calls.append(callBox("JAX", jax));
      if (torch) calls.append(callBox("PyTorch", torch));
      item.append(calls);
    } else {
      const reason = pullback.conv.reason || "not a convolution";
      item.append(el("p", { class: "not-conv", text: `${pullback.name}: not a convolution: ${reason}` }));
    }
    list.append(item);
  }
}

function renderSteps(steps) {
  const list = $("steps");
  list.textContent = "";
  for (const step of steps) {
    const math = el("div", { class: "math-block" });
    tex(`\\begin{array}{l}${step.latex}\\end{array}`, math);
    list.append(el("li", {}, el("div", { class: "step-title", text: step.title }), math));
  }
}

// ---- code tabs -------------------------------------------------------------------------------

function renderTabs(sources) {
  const tabs = $("tabs");
  tabs.textContent = "";
  const kinds = Object.keys(sources);
  for (const kind of kinds) {
    const title = CODE_TITLES[kind] || kind;
    const button = el("button", { type: "button", role: "tab", "data-kind": kind, text: title });
    button.addEventListener("click", () => selectTab(kind));
    tabs.append(button);
  }
  selectTab(kinds.includes(state.tab) ? state.tab : kinds[0], sources);
}

function selectTab(kind, sources = state.answer.sources) {
  state.tab = kind;
  for (const button of $("tabs").children) {
    button.setAttribute("aria-selected", String(button.dataset.kind === kind));
  }
  const source = sources[kind] || { error: "not available" };
  $("code").textContent = source.code || `# ${source.error}`;
  const url = urlFromForm(formValues());
  if (state.answer && url !== location.pathname + location.search) history.replaceState(null, "", url);
}

function currentCode() {
  const source = state.answer.sources[state.tab];
  return source.code || "";
}

function download() {
  const blob = new Blob([currentCode()], { type: "text/x-python" });
  const link = el("a", { href: URL.createObjectURL(blob), download: `pullbacks_${state.tab}.py` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// ---- the Jacobian picture --------------------------------------------------------------------

function unravel(flat, shape) {
  const index = [];
  for (let axis = shape.length - 1; axis >= 0; axis--) {
    index.unshift(flat % shape[axis]);
    flat = Math.floor(flat / shape[axis]);
  }
  return index;
}

function elementName(name, shape, flat) {
  return shape.length ? `${name}[${unravel(flat, shape).join(", ")}]` : name;
}

function cellColours(jacobian) {
  if (jacobian.cells) {
    const names = [...new Set(jacobian.cells.filter((c) => c !== "0"))];
    const colour = new Map(names.map((name, k) => [name, PALETTE[k % PALETTE.length]]));
    return { colours: jacobian.cells.map((c) => (c === "0" ? null : colour.get(c))), names, colour };
  }
  const bound = Math.max(...jacobian.values.map(Math.abs), 1e-300);
  const colours = jacobian.values.map((v) => {
    if (v === 0) return null;
    const t = Math.min(1, Math.abs(v) / bound);
    const [r, g, b] = v > 0 ? [178, 34, 34] : [33, 102, 172];
    const mix = (c) => Math.round(255 + (c - 255) * (0.15 + 0.85 * t));
    return `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`;
  });
  return { colours, names: [], colour: new Map() };
}

function drawJacobian(jacobian) {
  const { rows, columns } = jacobian;
  const cell = Math.max(2, Math.min(22, Math.floor(560 / Math.max(rows, columns))));
  const canvas = el("canvas", { width: columns * cell + 1, height: rows * cell + 1 });
  const context = canvas.getContext("2d");
  const { colours, names, colour } = cellColours(jacobian);
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  colours.forEach((fill, k) => {
    if (!fill) return;
    context.fillStyle = fill;
    context.fillRect((k % columns) * cell, Math.floor(k / columns) * cell, cell, cell);
  });
  if (cell >= 6) {
    context.strokeStyle = "rgba(29, 36, 51, 0.12)";
    context.lineWidth = 1;
    context.beginPath();
    for (let c = 0; c <= columns; c++) {
      context.moveTo(c * cell + 0.5, 0);
      context.lineTo(c * cell + 0.5, rows * cell);
    }
    for (let r = 0; r <= rows; r++) {
      context.moveTo(0, r * cell + 0.5);
      context.lineTo(columns * cell, r * cell + 0.5);
    }
    context.stroke();
  }
  if (cell >= 16 && jacobian.cells) {
    context.fillStyle = "#fff";
    context.font = `${Math.floor(cell * 0.45)}px sans-serif`;
    context.textAlign = "center";
    context.textBaseline = "middle";
    jacobian.cells.forEach((text, k) => {
      if (text === "0" || text.length > 3) return;
      context.fillText(text, (k % columns) * cell + cell / 2, Math.floor(k / columns) * cell + cell / 2);
    });
  }
  canvas.addEventListener("mousemove", (event) => hoverCell(event, canvas, jacobian, cell));
  canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  return { canvas, names, colour };
}

function describeCell(jacobian, row, column) {
  const k = row * jacobian.columns + column;
  const output = elementName(jacobian.output, jacobian.output_shape, row);
  const input = elementName(jacobian.wrt, jacobian.wrt_shape, column);
  let entry;
  if (jacobian.cells) {
    const text = jacobian.cells[k];
    entry = jacobian.legend[text] ? `${text} = ${jacobian.legend[text]}` : text;
  } else {
    entry = String(jacobian.values[k]);
  }
  return `row ${row}: ${output}\ncolumn ${column}: ${input}\n∂${output} / ∂${input} = ${entry}`;
}

function hoverCell(event, canvas, jacobian, cell) {
  const box = canvas.getBoundingClientRect();
  const column = Math.floor((event.clientX - box.left) / cell);
  const row = Math.floor((event.clientY - box.top) / cell);
  const tooltip = $("tooltip");
  if (row < 0 || column < 0 || row >= jacobian.rows || column >= jacobian.columns) {
    tooltip.hidden = true;
    return;
  }
  tooltip.textContent = describeCell(jacobian, row, column);
  tooltip.hidden = false;
  tooltip.style.left = `${event.clientX + 14}px`;
  tooltip.style.top = `${event.clientY + 14}px`;
}

function renderJacobians(jacobians, data) {
  const target = $("jacobians");
  target.textContent = "";
  const entries = Object.entries(jacobians);
  if (!entries.length) {
    target.append(el("p", { class: "hint",
      text: "Give every size a number (Shapes, and the parameters) to see the Jacobian of the forward " +
        "in each input: the convolution as a matrix, whose transpose is the pullback." }));
    return;
  }
  for (const [wrt, jacobian] of entries) {
    const figure = el("figure", { class: "jacobian", "data-wrt": wrt });
    figure.style.margin = "0 24px 12px 0";
    if (jacobian.skipped) {
      figure.append(el("p", { class: "hint", text: `∂${data.output}/∂${wrt}: ${jacobian.skipped}` }));
      target.append(figure);
      continue;
    }
    const caption = el("figcaption", { class: "caption" });
    caption.append(el("b", { text: `∂ vec(${jacobian.output}) / ∂ vec(${wrt})` }),
      `: ${jacobian.rows} × ${jacobian.columns}, rows ${jacobian.output} and columns ${wrt} ` +
      `flattened row-major. d${wrt} = Jᵀ d${jacobian.output}` +
      (jacobian.affine ? "." : "; the forward is not affine in it: J at a random point."));
    const { canvas, names, colour } = drawJacobian(jacobian);
    figure.append(caption, canvas);
    if (names.length && names.length <= 32) {
      const legend = el("div", { class: "conv-params" });
      for (const name of names) {
        const swatch = el("span", { text: "■ " });
        swatch.style.color = colour.get(name);
        legend.append(el("span", {}, swatch, el("b", { text: name }),
          jacobian.legend[name] ? ` ${jacobian.legend[name]}` : ""));
      }
      figure.append(legend);
    }
    target.append(figure);
  }
}

// ---- the verification badge ------------------------------------------------------------------

function setBadge(kind, text, report) {
  const badge = $("badge");
  badge.className = `badge ${kind}`;
  badge.textContent = text;
  $("verify-details").hidden = !report;
  $("verify-details").open = kind === "bad"; // what failed, in view
  $("verify-report").textContent = report || "";
}

function showVerification(answer) {
  if (answer.error) {
    // not a failed check: the verification did not run to the end (a time limit, a busy server)
    setBadge("warn", `not verified: ${answer.error.message}`, null);
    return;
  }
  const v = answer.verification;
  if (v.ok) {
    const worst = typeof v.worst_error === "number" ? v.worst_error.toExponential(1) : v.worst_error;
    setBadge("ok", `✓ verified: ${v.checks.length} checks (${v.backends.join(", ")}), ` +
      `largest rel. error ${worst}`, v.report);
  } else {
    setBadge("bad", `✗ verification failed: ${v.failures.length} of ${v.checks.length} checks`, v.report);
  }
}

// ---- start -----------------------------------------------------------------------------------

async function showExamples() {
  let examples = [];
  try {
    examples = await (await fetch("/static/examples.json")).json();
  } catch (error) {
    return; // the page works without them
  }
  const buttons = $("examples");
  for (const example of examples) {
    const button = el("button", { type: "button", text: example.label });
    button.addEventListener("click", () => {
      setForm(example);
      derive();
    });
    buttons.append(button);
  }
}

function start() {
  showExamples();
  $("form").addEventListener("submit", (event) => {
    event.preventDefault();
    derive();
  });
  $("expression").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      derive();
    }
  });
  for (const field of FIELDS) $(field).addEventListener("input", clearErrorMarks);
  $("expression").addEventListener("scroll", syncBackdrop);
  $("copy-code").addEventListener("click", (event) => copy(currentCode(), event.currentTarget));
  $("download-code").addEventListener("click", download);
  window.addEventListener("popstate", () => {
    setForm(formFromUrl());
    if ($("expression").value.trim()) derive(false);
  });
  const values = formFromUrl();
  setForm(values);
  if (values.expression.trim()) derive(false);
}

document.addEventListener("DOMContentLoaded", start);
