// Render LaTeX with KaTeX, one JSON string per input line, as strictly as KaTeX allows.
//
//   node render.js < lines.jsonl
//
// Each input line is a JSON string of LaTeX (math mode, without $ delimiters).
// Each output line is JSON: {"line": n, "ok": true} or {"line": n, "ok": false,
// "error": "..."}; n counts input lines from 1. Exit status 0 if every line
// rendered, 1 if one did not, 2 on a malformed input line.
"use strict";

const katex = require("katex");
const readline = require("readline");

const options = {
  displayMode: true,
  throwOnError: true,
  // LaTeX compatibility problems are errors too, not console warnings
  strict: "error",
  trust: false,
};

const input = readline.createInterface({ input: process.stdin, terminal: false });
let count = 0;
let failed = false;
let malformed = false;

input.on("line", (text) => {
  if (text.trim() === "") {
    return;
  }
  count += 1;
  let latex;
  try {
    latex = JSON.parse(text);
  } catch (error) {
    malformed = true;
    console.log(JSON.stringify({ line: count, ok: false, error: `not JSON: ${error.message}` }));
    return;
  }
  try {
    katex.renderToString(String(latex), options);
    console.log(JSON.stringify({ line: count, ok: true }));
  } catch (error) {
    failed = true;
    console.log(JSON.stringify({ line: count, ok: false, error: String(error.message || error) }));
  }
});

input.on("close", () => {
  process.exitCode = malformed ? 2 : failed ? 1 : 0;
});
