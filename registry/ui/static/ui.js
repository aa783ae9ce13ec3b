// registry web page: the only script. Copy buttons for the snippets, and the storage
// page's "gc would free" (a dry run of gc lists the whole store, so the page does not
// wait for it). Filtering, sorting and paging are links the server answers.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const source = document.getElementById(button.dataset.target);
  if (!source) return;
  const text = source.textContent;
  const done = (label) => {
    button.textContent = label;
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => done("Copied"), () => select(source, done));
  } else {
    select(source, done);
  }
});

function select(source, done) {
  const range = document.createRange();
  range.selectNodeContents(source);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  done(document.execCommand && document.execCommand("copy") ? "Copied" : "Selected");
}

function size(bytes) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes, unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
}

document.addEventListener("DOMContentLoaded", () => {
  const target = document.querySelector("[data-gc]");
  if (!target) return;
  fetch(target.dataset.gc, { credentials: "same-origin" })
    .then((response) => response.json().then((body) => ({ ok: response.ok, body })))
    .then(({ ok, body }) => {
      if (!ok) throw new Error(body.error || "the dry run failed");
      let text = `${size(body.bytes_freed)}: ${body.blobs_removed.toLocaleString()} unused tensors, ` +
        `${body.packs_removed.toLocaleString()} packs to delete, ${body.packs_rewritten.toLocaleString()} to rewrite`;
      if (body.orphan_files_removed) text += `, ${body.orphan_files_removed.toLocaleString()} leftover files`;
      target.textContent = text;
      target.dataset.bytes = String(body.bytes_freed);
      target.classList.add("done");
    })
    .catch((error) => { target.textContent = `could not ask: ${error.message}`; target.classList.add("failed"); });
});
